"""LiteRT (TFLite) export: float32 or full-integer int8 `model.tflite` with preprocessing inside.

Layout: `<export_dir>/<model_name>-tflite[_int8]/<version>/`
  model.tflite               signature `serving_default`: images uint8 (N, H, W, C), 0..255 ->
                             logits, probabilities (N, num_classes), classes int64 (N,)
  labels.txt                 one class name per line (LiteRT models carry no string tables)
  keras_darts_export.json    shapes, normalisation, class names, genotype, input/output quantisation

Float32: the graph casts the uint8 pixels and normalises as the SavedModel does, so its outputs
match the SavedModel's to float round-off. Int8: post-training full-integer quantisation, every op
int8, calibrated on a representative set of training images. Its input is still the raw uint8
pixels: a fake-quant node with range [0, 255] in front of the normalisation fixes the input
quantisation at scale 1, zero point 0 whatever the calibration images hold. Logits and
probabilities come out int8 (dequantise: (q - zero_point) * scale, both in the metadata); the
converter computes the `classes` head (ARG_MAX) on dequantised logits, the one float op.

Checked before publishing with the LiteRT interpreter (`ai-edge-litert`): the float model must
reproduce the in-memory Keras model within 1e-4, the int8 model must run and give valid classes.
"""

import contextlib
import os
import re
import sys

import numpy as np
import tensorflow as tf

from keras_darts import ops
from keras_darts.errors import UserError
from keras_darts.export.publish import (LABELS_FILE, METADATA_FILE, check_class_names,
                                        check_name_and_version, check_preprocessing, model_folder,
                                        model_metadata, num_classes_of, publish_version,
                                        write_labels, write_metadata)

MODEL_FILE = "model.tflite"
SIGNATURE = "serving_default"
IMAGES_INPUT = "images"
FLOAT_TOLERANCE = 1e-4
CALIBRATION_SEED = 0


def interpreter(model_path_or_bytes, num_threads=None):
    """A LiteRT interpreter for a .tflite file or its bytes (`ai-edge-litert`)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise UserError("LiteRT export needs the LiteRT interpreter: pip install ai-edge-litert") from None
    if isinstance(model_path_or_bytes, (bytes, bytearray)):
        return Interpreter(model_content=bytes(model_path_or_bytes), num_threads=num_threads)
    return Interpreter(model_path=model_path_or_bytes, num_threads=num_threads)


class _LiteModule(tf.Module):
    """Preprocessing + network in one tf.function for the converter.

    The converter freezes the variables this module tracks; it must hold the backing tf.Variables,
    not Keras' wrappers (with the wrappers the weights stay resource variables that LiteRT never
    initialises: NaN outputs).
    """

    def __init__(self, model, image_shape, mean, std, quantized):
        super().__init__(name="keras_darts_litert")
        self.weights = [v.value for v in model.variables]
        self._model = model
        self._mean = tf.constant(mean, tf.float32)
        self._std = tf.constant(std, tf.float32)
        # Int8: the converter quantises float inputs, so the graph takes float pixels that the
        # fake-quant pins to [0, 255] in steps of 1 (= uint8 pixels at scale 1, zero point 0).
        dtype = tf.float32 if quantized else tf.uint8
        spec = tf.TensorSpec((None, *image_shape), dtype, IMAGES_INPUT)
        self._quantized = quantized
        with ops.strided_slices():
            self.function = tf.function(self._predict, input_signature=[spec]).get_concrete_function()

    def _predict(self, images):
        x = tf.cast(images, tf.float32)
        if self._quantized:
            x = tf.quantization.fake_quant_with_min_max_args(x, min=0.0, max=255.0, num_bits=8)
        x = (x / 255.0 - self._mean) / self._std
        logits = tf.cast(self._model(x, training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1),
                "classes": tf.argmax(logits, axis=-1, output_type=tf.int64)}


def calibration_subset(images, count, image_shape, flag="--calibration_images"):
    """`count` images of `images` (a seeded random choice when there are more), checked."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise UserError(f"{flag}={count}: must be a positive integer")
    if images is None:
        raise UserError("--format=tflite_int8 needs calibration images (training images of the "
                        "model's input shape)")
    images = np.asarray(images)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape) or len(images) == 0:
        raise UserError(f"calibration data has shape {tuple(images.shape)}; the model takes "
                        f"(N, {', '.join(str(d) for d in image_shape)}) images")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.number) or np.any(images < 0) or np.any(images > 255):
            raise UserError(f"calibration data must be uint8 pixels (0..255), got dtype {images.dtype}")
        images = np.round(images).astype(np.uint8)
    if len(images) > count:
        pick = np.random.default_rng(CALIBRATION_SEED).choice(len(images), count, replace=False)
        images = images[np.sort(pick)]
    return images


def _unconvertible_ops(message):
    """Op names a converter/calibrator error message blames, in order, without repeats."""
    names = re.findall(r"'(?:tf|tfl)\.(\w+)' op", message)
    names += re.findall(r"\(([A-Z][A-Z0-9_]+)\) failed to (?:prepare|invoke)", message)
    names += re.findall(r"[Oo]p (?:type )?not supported:? ?'?(\w+)", message)
    return list(dict.fromkeys(names))


def convert(model, image_shape, mean, std, calibration_images=None):
    """The .tflite bytes: float32 when `calibration_images` is None, else full-integer int8.

    Raises:
      UserError: the converter refuses an op (named in the message).
    """
    quantized = calibration_images is not None
    module = _LiteModule(model, image_shape, mean, std, quantized)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.function], module)
    fmt = "tflite_int8" if quantized else "tflite"
    if quantized:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [image[None].astype(np.float32)] for image in calibration_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.int8
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        with _muted_fd2():
            return converter.convert(), module
    except Exception as e:  # ConverterError, or a RuntimeError from the calibrator
        message = " ".join(str(e).split())
        names = _unconvertible_ops(message)
        what = f"op {', '.join(names)}" if names else "an op"
        # MLIR diagnostics: "<file>:<line>:<col>: error: <why>" then source lines; keep <why>.
        reasons = [line.split("error: ", 1)[1].strip() for line in str(e).splitlines()
                   if "error: " in line]
        reason = reasons[0] if reasons else message
        raise UserError(f"--format={fmt}: LiteRT cannot convert {what} of this model "
                        f"({reason[:200]})") from None


@contextlib.contextmanager
def _muted_fd2():
    """The converter's C++ side prints MLIR diagnostics and logs straight to fd 2; the error that
    matters is re-raised as one line, so they are muted (as errors.quiet_import does)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def run_signature(tflite, images):
    """{output name: array} of the model's serving_default signature on `images`, one at a time
    (the batch dimension is dynamic; one image per call is how a phone runs it)."""
    runner = interpreter(tflite).get_signature_runner(SIGNATURE)
    outs = [runner(**{IMAGES_INPUT: image[None]}) for image in images]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _io_details(tflite):
    runner = interpreter(tflite).get_signature_runner(SIGNATURE)

    def describe(details):
        return {name: {"dtype": np.dtype(d["dtype"]).name, "shape": [int(s) for s in d["shape_signature"]],
                       "quantization": [float(d["quantization"][0]), int(d["quantization"][1])]}
                for name, d in details.items()}

    return describe(runner.get_input_details()), describe(runner.get_output_details())


def _verify(tflite, module, image_shape, num_classes, quantized):
    images = np.random.RandomState(0).randint(0, 256, (2, *image_shape)).astype(np.uint8)
    got = run_signature(tflite, images)
    if quantized:
        classes = got["classes"]
        if classes.shape != (2,) or classes.min() < 0 or classes.max() >= num_classes:
            raise RuntimeError(f"int8 LiteRT model gave invalid classes {classes.tolist()}")
        return
    expected = module.function(tf.constant(images))
    for name in ("logits", "probabilities"):
        diff = np.max(np.abs(got[name] - expected[name].numpy()))
        if not diff <= FLOAT_TOLERANCE:
            raise RuntimeError(f"LiteRT model does not reproduce the Keras model ({name}: max abs "
                               f"diff {diff})")


def export_tflite(model, export_dir, model_name="darts", version=None, *, image_shape, mean, std,
                  class_names=None, calibration_data=None, calibration_images=500, quantize=False,
                  overwrite=False, metadata=None, verify=True):
    """Exports `model` as `<export_dir>/<model_name>-tflite[_int8]/<version>/model.tflite`.

    Args: as `export_saved_model`, plus
      quantize: full-integer int8 (needs `calibration_data`) instead of float32.
      calibration_data: uint8 images (N, H, W, C), normally training images; `calibration_images`
        of them (a seeded random choice) calibrate the int8 ranges.

    Returns:
      The version folder's path.
    """
    check_name_and_version(model_name, version)
    image_shape, mean, std = check_preprocessing(image_shape, mean, std)
    num_classes = num_classes_of(model, image_shape)
    class_names = check_class_names(class_names, num_classes)
    fmt = "tflite_int8" if quantize else "tflite"
    calibration = (calibration_subset(calibration_data, calibration_images, image_shape)
                   if quantize else None)
    # Convert before creating any folder: a refused op leaves the export dir untouched.
    tflite, module = convert(model, image_shape, mean, std, calibration)
    if verify:
        _verify(tflite, module, image_shape, num_classes, quantize)
    inputs, outputs = _io_details(tflite)

    def write(out, version):
        os.makedirs(out)
        with open(os.path.join(out, MODEL_FILE), "wb") as f:
            f.write(tflite)
        if class_names is not None:
            write_labels(os.path.join(out, LABELS_FILE), class_names)
        write_metadata(os.path.join(out, METADATA_FILE), {
            "format": f"keras_darts LiteRT export v1 ({'int8' if quantize else 'float32'})",
            "model_name": model_name, "version": version, "signature": SIGNATURE,
            "inputs": inputs, "outputs": outputs, "image_shape": list(image_shape), "mean": mean,
            "std": std, "num_classes": num_classes, "class_names": class_names,
            "labels_file": LABELS_FILE if class_names is not None else None,
            "calibration_images": None if calibration is None else len(calibration),
            **model_metadata(model), **(metadata or {})})

    return publish_version(export_dir, model_folder(model_name, fmt), version, overwrite, write)
