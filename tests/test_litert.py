"""LiteRT (TFLite) export: float32 outputs against the SavedModel's, int8 full-integer and its
agreement with float, the layout and metadata, and bad input (unknown format, calibration data of
the wrong shape, an op LiteRT cannot convert) with nothing written."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_darts
from keras_darts.errors import UserError
from keras_darts.export import tflite as tflite_lib
from keras_darts.genotype import DARTS_V2
from keras_darts.network import NetworkCIFAR
from keras_darts.ops import strided_slices, subsample

pytest.importorskip("ai_edge_litert")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (8, 8, 3)
MEAN = [0.49, 0.48, 0.45]
STD = [0.25, 0.24, 0.26]
NAMES = ["airplane", "bird", "cat", "deer", "frog"]
# A random tiny network's logits are close together, so int8 rounding flips some argmaxes; the
# benchmark figure for a trained CIFAR model is in BUILD_NOTES ("LiteRT export").
INT8_AGREEMENT_MIN = 0.75
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]


def _images(n, seed):
    return np.random.RandomState(seed).randint(0, 256, (n, *SHAPE)).astype(np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("exports"))
    model = NetworkCIFAR(DARTS_V2, num_classes=5, layers=3, init_channels=4, seed=1)
    model.build((None, *SHAPE))
    # Training-mode passes move the BN statistics off their identity initialisation.
    for seed in range(3):
        model(np.random.RandomState(seed).standard_normal((8, *SHAPE)).astype(np.float32) * 2,
              training=True)
    paths = keras_darts.export(model, export_dir, "saved_model,tflite,tflite_int8", mean=MEAN,
                               std=STD, class_names=NAMES, calibration_data=_images(200, 1),
                               calibration_images=100)
    return model, export_dir, paths


def _tflite(paths, fmt):
    with open(os.path.join(paths[fmt], "model.tflite"), "rb") as f:
        return f.read()


def test_float_litert_matches_the_saved_model(exported):
    _, _, paths = exported
    images = _images(16, 7)
    served = tf.saved_model.load(paths["saved_model"]).signatures["serving_default"](
        images=tf.constant(images))
    lite = tflite_lib.run_signature(_tflite(paths, "tflite"), images)
    for name in ("logits", "probabilities"):
        np.testing.assert_allclose(lite[name], served[name].numpy(), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(lite["classes"], served["classes"].numpy())


def test_int8_is_full_integer_on_raw_pixels_and_agrees_with_float(exported):
    _, _, paths = exported
    tflite = _tflite(paths, "tflite_int8")
    runner = tflite_lib.interpreter(tflite).get_signature_runner()
    (inp,) = runner.get_input_details().values()
    assert inp["dtype"] == np.uint8 and inp["quantization"] == (1.0, 0)  # pixels go in as they are
    out = runner.get_output_details()
    assert out["logits"]["dtype"] == np.int8 and out["probabilities"]["dtype"] == np.int8
    # Full integer: the network computes in int8; only the `classes` head dequantises the logits
    # for its ARG_MAX (the converter's choice; argmax is the same on either side).
    interp = tflite_lib.interpreter(tflite)
    ops = interp._get_ops_details()
    float_ops = [op["op_name"] for op in ops
                 if any(interp._get_tensor_details(t, 0)["dtype"] == np.float32
                        for t in list(op["inputs"]) + list(op["outputs"]) if t >= 0)]
    assert float_ops == ["DEQUANTIZE", "ARG_MAX"] and len(ops) > 20

    images = _images(64, 11)
    q = tflite_lib.run_signature(tflite, images)
    f = tflite_lib.run_signature(_tflite(paths, "tflite"), images)
    assert np.mean(q["classes"] == f["classes"]) >= INT8_AGREEMENT_MIN
    scale, zero = out["probabilities"]["quantization"]
    probabilities = (q["probabilities"].astype(np.float32) - zero) * scale
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.05)


def test_layout_labels_and_metadata(exported):
    _, export_dir, paths = exported
    assert sorted(os.listdir(export_dir)) == ["darts", "darts-tflite", "darts-tflite_int8"]
    for fmt in ("tflite", "tflite_int8"):
        assert paths[fmt] == os.path.join(export_dir, f"darts-{fmt}", "1")
        assert sorted(os.listdir(os.path.dirname(paths[fmt]))) == ["1"]  # no .tmp leftovers
        with open(os.path.join(paths[fmt], "labels.txt")) as f:
            assert f.read().splitlines() == NAMES
        with open(os.path.join(paths[fmt], "keras_darts_export.json")) as f:
            info = json.load(f)
        assert info["image_shape"] == list(SHAPE) and info["mean"] == MEAN and info["std"] == STD
        assert info["class_names"] == NAMES and info["genotype"] == DARTS_V2.to_dict()
        assert info["inputs"]["images"]["shape"] == [-1, *SHAPE]
    assert info["calibration_images"] == 100
    assert info["outputs"]["logits"]["dtype"] == "int8"


def test_calibration_subset_is_seeded_and_checked():
    images = _images(10, 3)
    a = tflite_lib.calibration_subset(images, 4, SHAPE)
    b = tflite_lib.calibration_subset(images, 4, SHAPE)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 4 and all(any((row == im).all() for im in images) for row in a)
    assert tflite_lib.calibration_subset(images, 500, SHAPE) is not None
    with pytest.raises(UserError, match=r"^calibration data has shape \(10, 8, 8, 1\); the model "
                                        r"takes \(N, 8, 8, 3\) images$"):
        tflite_lib.calibration_subset(images[..., :1], 4, SHAPE)
    with pytest.raises(UserError, match=r"^--calibration_images=0: must be a positive integer$"):
        tflite_lib.calibration_subset(images, 0, SHAPE)
    with pytest.raises(UserError, match="uint8 pixels"):
        tflite_lib.calibration_subset(images.astype(np.float32) - 300, 4, SHAPE)


def test_wrong_calibration_shape_writes_nothing(exported, tmp_path):
    model, _, _ = exported
    with pytest.raises(UserError, match=r"calibration data has shape \(4, 16, 16, 3\)"):
        keras_darts.export(model, str(tmp_path / "out"), "saved_model,tflite_int8", mean=MEAN,
                           std=STD, calibration_data=np.zeros((4, 16, 16, 3), np.uint8))
    assert not os.path.exists(tmp_path / "out")


class IgammaNet(keras.Model):
    """A classifier with an op LiteRT has no kernel for (Igamma)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(3)

    def call(self, x, training=False):
        return self.dense(tf.math.igamma(tf.reduce_mean(x, axis=[1, 2]) + 2.0, 2.0))


def test_an_op_litert_cannot_convert_is_named_and_nothing_is_written(tmp_path):
    model = IgammaNet()
    model(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(UserError) as e:
        keras_darts.export(model, str(tmp_path / "out"), "tflite", image_shape=(4, 4, 3))
    assert str(e.value).startswith("--format=tflite: LiteRT cannot convert op Igamma of this model")
    assert "\n" not in str(e.value)
    assert not os.path.exists(tmp_path / "out")


def test_unconvertible_op_names_are_parsed_from_converter_and_calibrator_messages():
    mlir = ("<unknown>:0: error: loc(fused[\"Igamma:\"]): 'tf.Igamma' op is neither a custom op "
            "nor a flex op\n<unknown>:0: note: see current operation")
    calibrator = ("tensorflow/lite/kernels/slice.cc Slice op only supports 1D-5D input arrays."
                  "Node number 378 (SLICE) failed to prepare.")
    assert tflite_lib._unconvertible_ops(mlir) == ["Igamma"]
    assert tflite_lib._unconvertible_ops(calibrator) == ["SLICE"]
    assert tflite_lib._unconvertible_ops("something else") == []


def test_strided_slices_switch_gives_the_same_values():
    x = np.random.RandomState(0).standard_normal((2, 7, 6, 3)).astype(np.float32)
    for strides, offset in ((2, 0), (2, 1)):
        # x[:, o::s, o::s] with ceil(size / s) rows and columns, zeros past the edge.
        padded = np.pad(x[:, offset:, offset:], ((0, 0), (0, offset), (0, offset), (0, 0)))
        expected = padded[:, ::strides, ::strides]
        np.testing.assert_array_equal(subsample(tf.constant(x), strides, offset).numpy(), expected)
        with strided_slices():
            np.testing.assert_array_equal(subsample(tf.constant(x), strides, offset).numpy(),
                                          expected)


def test_bin_export_unknown_format_is_one_line_before_tensorflow(tmp_path):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bin", "export"), f"--checkpoint_dir={tmp_path}",
         f"--export_dir={tmp_path / 'out'}", "--format=onnx"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: --format=onnx: unknown format 'onnx'; must be one of saved_model, tflite, "
        "tflite_int8, keras (or several, comma-separated)"]
    assert not os.path.exists(tmp_path / "out")


def test_bin_retrain_exports_full_integer_litert(cifar_dir, tmp_path):
    """`bin/retrain --format=tflite_int8`: the export goes to <model_name>-tflite_int8/1 with the
    class names beside it, takes raw uint8 pixels, is calibrated on --calibration_images training
    images, and its classes agree with the retrained Keras model's on the test images (a barely
    trained tiny net has near-tied logits, hence the low bound)."""
    from helpers import (GENOTYPE_1NODE, RETRAIN_TINY, check_ok, read_json, run_cli,
                         write_cifar_slice, write_json)

    from keras_darts.network import build_network_from_config

    data = write_cifar_slice(cifar_dir, str(tmp_path / "data"), 64, 40)
    with np.load(os.path.join(data, "train.npz")) as f:
        x, y = f["x"], f["y"]
    np.savez(os.path.join(data, "train.npz"), x=x, y=y, class_names=np.array(CIFAR_NAMES))
    genotype = write_json(str(tmp_path / "genotype.json"), GENOTYPE_1NODE)
    run, export_dir = str(tmp_path / "run"), str(tmp_path / "exports")
    result = run_cli("retrain", f"--genotype={genotype}", f"--dataset={data}", f"--output_dir={run}",
                     *RETRAIN_TINY, "--epochs=2", "--steps_per_epoch=4", f"--export_dir={export_dir}",
                     "--model_name=tiny", "--format=tflite_int8", "--calibration_images=24")
    check_ok(result)
    path = os.path.join(export_dir, "tiny-tflite_int8", "1")
    assert f"exported LiteRT int8: {path}" in result.stdout.splitlines()
    assert sorted(os.listdir(export_dir)) == ["tiny-tflite_int8"]
    with open(os.path.join(path, "labels.txt")) as f:
        assert f.read().splitlines() == CIFAR_NAMES
    info = read_json(os.path.join(path, "keras_darts_export.json"))
    assert info["calibration_images"] == 24 and info["image_shape"] == [32, 32, 3]
    with open(os.path.join(path, "model.tflite"), "rb") as f:
        tflite = f.read()
    (inp,) = tflite_lib.interpreter(tflite).get_signature_runner().get_input_details().values()
    assert inp["dtype"] == np.uint8

    record = read_json(os.path.join(run, "config.json"))
    model = build_network_from_config(record)
    tf.train.Checkpoint(model=model).restore(
        tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))).expect_partial()
    with np.load(os.path.join(data, "test.npz")) as f:
        images = f["x"]
    normalised = (images / 255.0 - np.array(record["mean"])) / np.array(record["std"])
    logits = model(normalised.astype(np.float32), training=False)
    logits = logits[0] if isinstance(logits, (list, tuple)) else logits
    agreement = np.mean(tflite_lib.run_signature(tflite, images)["classes"]
                        == np.argmax(logits.numpy(), axis=1))
    print(f"int8 vs Keras top-1 agreement on {len(images)} test images: {agreement:.3f}")
    assert agreement >= INT8_AGREEMENT_MIN
