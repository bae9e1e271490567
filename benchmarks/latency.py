#!/usr/bin/env python3
"""Single-image LiteRT latency of a derived network, float32 and int8, on this CPU.

  python benchmarks/latency.py --genotype=DARTS_V2 --layers=8 --init_channels=16   # random weights
  python benchmarks/latency.py --tflite=exports/darts-tflite/1/model.tflite,exports/darts-tflite_int8/1/model.tflite

Latency is the wall time of one `invoke()` on one image (batch 1, as a phone runs it), median and
90th percentile over `--runs` after `--warmup` untimed runs, with `--threads` interpreter threads.
The last line printed is one JSON object.

Function boundary for other benchmarks (e.g. a per-candidate-op latency table): `tflite_latency`
times any .tflite model (bytes or path) on random inputs; `network_tflite` converts a derived
network. Neither depends on the other.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from keras_darts.errors import quiet_import, run  # noqa: E402

_GENOTYPE = flags.DEFINE_string("genotype", "DARTS_V2", "Published name or genotype.json.")
_LAYERS = flags.DEFINE_integer("layers", 8, "Cells.")
_CHANNELS = flags.DEFINE_integer("init_channels", 16, "Initial channels.")
_CLASSES = flags.DEFINE_integer("num_classes", 10, "Classes.")
_IMAGE = flags.DEFINE_integer("image_size", 32, "Square image size.")
_TFLITE = flags.DEFINE_list("tflite", None, "Time these .tflite files instead of converting a "
                            "random-weight network.")
_RUNS = flags.DEFINE_integer("runs", 200, "Timed invocations.")
_WARMUP = flags.DEFINE_integer("warmup", 20, "Untimed invocations first.")
_THREADS = flags.DEFINE_integer("threads", 1, "LiteRT interpreter threads.")


def tflite_latency(model, runs=200, warmup=20, num_threads=1, seed=0):
    """{"ms_median", "ms_p90", "ms_min"} of single invocations of a .tflite model (bytes or path).

    Every input gets random values of its dtype and shape (dynamic dims set to 1).
    """
    import numpy as np

    from keras_darts.export.tflite import interpreter

    interp = interpreter(model, num_threads=num_threads)
    for d in interp.get_input_details():
        shape = [1 if s < 0 else int(s) for s in d["shape_signature"]]
        interp.resize_tensor_input(d["index"], shape)
    interp.allocate_tensors()
    rng = np.random.default_rng(seed)
    for d in interp.get_input_details():
        dtype = np.dtype(d["dtype"])
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            value = rng.integers(max(info.min, -128), min(info.max, 255) + 1, d["shape"]).astype(dtype)
        else:
            value = rng.standard_normal(d["shape"]).astype(dtype)
        interp.set_tensor(d["index"], value)
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    times = np.sort(times)
    return {"ms_median": float(np.median(times)), "ms_p90": float(np.percentile(times, 90)),
            "ms_min": float(times[0])}


def network_tflite(genotype, layers, init_channels, num_classes, image_size, quantize, seed=0):
    """.tflite bytes of a random-weight derived network (int8: calibrated on random images)."""
    import numpy as np

    from keras_darts.api import build_model
    from keras_darts.export.tflite import convert

    model = build_model(genotype, num_classes, (image_size, image_size, 3), layers, init_channels,
                        seed=seed)
    shape = (image_size, image_size, 3)
    calibration = None
    if quantize:
        calibration = np.random.default_rng(seed).integers(0, 256, (32, *shape), dtype=np.uint8)
    tflite, _ = convert(model, shape, [0.5] * 3, [0.25] * 3, calibration)
    return tflite


def main(argv):
    del argv
    quiet_import("tensorflow")
    results = {}
    if _TFLITE.value:
        for path in _TFLITE.value:
            results[path] = tflite_latency(path, _RUNS.value, _WARMUP.value, _THREADS.value)
    else:
        for name, quantize in (("float32", False), ("int8", True)):
            t0 = time.time()
            tflite = network_tflite(_GENOTYPE.value, _LAYERS.value, _CHANNELS.value,
                                    _CLASSES.value, _IMAGE.value, quantize)
            results[name] = {**tflite_latency(tflite, _RUNS.value, _WARMUP.value, _THREADS.value),
                             "model_bytes": len(tflite), "convert_s": round(time.time() - t0, 1)}
    for name, r in results.items():
        print(f"{name}: {r['ms_median']:.3f} ms median, {r['ms_p90']:.3f} ms p90 (1 image, "
              f"{_THREADS.value} thread(s))")
    config = {"genotype": _GENOTYPE.value, "layers": _LAYERS.value,
              "init_channels": _CHANNELS.value, "image_size": _IMAGE.value,
              "threads": _THREADS.value, "runs": _RUNS.value}
    print(json.dumps({"latency": results, "config": config}))


if __name__ == "__main__":
    run(main)
