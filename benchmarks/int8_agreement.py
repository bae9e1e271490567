#!/usr/bin/env python3
"""LiteRT exports of a retrain run against its SavedModel, on test images.

  python benchmarks/int8_agreement.py --checkpoint_dir=runs/retrain \
      --test_data=../shared/data/cifar10/test.npz --images=1000

Exports the run's latest checkpoint as saved_model, tflite and tflite_int8 (calibrated on
`--calibration_images` training images of the run's dataset, as `bin/export` does) into a
temporary dir, runs `--images` test images through all three and prints: the float LiteRT
model's largest deviation from the SavedModel (logits, probabilities), top-1 agreement of int8 with
float, and the accuracy of each. The last line printed is one JSON object.
"""

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from keras_darts.errors import quiet_import, run  # noqa: E402

_RUN = flags.DEFINE_string("checkpoint_dir", None, "Retrain output directory.")
_TEST = flags.DEFINE_string("test_data", None, ".npz with x (N, H, W, C) uint8 and y.")
_IMAGES = flags.DEFINE_integer("images", 1000, "Test images used (the first N).")
_CALIBRATION = flags.DEFINE_integer("calibration_images", 500, "int8 calibration images.")


def main(argv):
    del argv
    import numpy as np

    tf = quiet_import("tensorflow")
    export = quiet_import("keras_darts.export")
    with np.load(_TEST.value) as f:
        x, y = f["x"][:_IMAGES.value], f["y"][:_IMAGES.value].reshape(-1)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        paths = export.export_from_run(_RUN.value, tmp, format="saved_model,tflite,tflite_int8",
                                       calibration_images=_CALIBRATION.value)
        export_s = time.time() - t0
        served = tf.saved_model.load(paths["saved_model"]).signatures["serving_default"]
        ref = {k: np.concatenate([served(images=tf.constant(x[i:i + 100]))[k].numpy()
                                  for i in range(0, len(x), 100)])
               for k in ("logits", "probabilities", "classes")}
        lite = {}
        for fmt in ("tflite", "tflite_int8"):
            with open(os.path.join(paths[fmt], "model.tflite"), "rb") as f:
                lite[fmt] = export.run_signature(f.read(), x)
    result = {
        "images": len(x),
        "float_max_abs_diff_logits": float(np.max(np.abs(lite["tflite"]["logits"] - ref["logits"]))),
        "float_max_abs_diff_probabilities": float(np.max(np.abs(
            lite["tflite"]["probabilities"] - ref["probabilities"]))),
        "float_top1_agreement_with_saved_model": float(np.mean(lite["tflite"]["classes"] == ref["classes"])),
        "int8_top1_agreement_with_float": float(np.mean(
            lite["tflite_int8"]["classes"] == lite["tflite"]["classes"])),
        "saved_model_accuracy": float(np.mean(ref["classes"] == y)),
        "tflite_accuracy": float(np.mean(lite["tflite"]["classes"] == y)),
        "tflite_int8_accuracy": float(np.mean(lite["tflite_int8"]["classes"] == y)),
        "export_s": round(export_s, 1),
    }
    for k, v in result.items():
        print(f"{k}: {v}")
    print(json.dumps(result))


if __name__ == "__main__":
    flags.mark_flags_as_required(["checkpoint_dir", "test_data"])
    run(main)
