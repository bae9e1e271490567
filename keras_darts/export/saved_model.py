"""SavedModel export for TF Serving: `<export_dir>/<model_name>/<version>/`.

The exported graph takes raw images and does all preprocessing itself, so clients send pixels or
encoded files, never normalised floats. Two signatures:

  serving_default  images: uint8 (None, H, W, C)                       -> outputs
  serving_bytes    image_bytes: string (None,), encoded JPEG/PNG/BMP/GIF -> outputs

outputs = {"probabilities": float32 (None, num_classes), "classes": int64 (None,),
           "logits": float32 (None, num_classes)} plus, when class names are given,
          "class_names": string (None,), the name of the predicted class.

The bytes input name ends in `_bytes` so TF Serving's REST API accepts `{"b64": ...}` for it.
Layout (TF Serving loads only numeric version folders):

  <version>/saved_model.pb, variables/, assets/class_names.txt,
  assets.extra/keras_darts_export.json   (shapes, normalisation, class names, genotype, model config)

The SavedModel is written to a `.tmp-*` folder beside the versions and renamed into place only when
complete and verified, so a crash never leaves a half-written numeric version for Serving to load.
"""

import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from keras_darts.errors import UserError

SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
CLASS_NAMES_FILE = "class_names.txt"
METADATA_FILE = "keras_darts_export.json"
EXTRA_DIR = "assets.extra"


class ServingModule(tf.Module):
    """Wraps a Keras classifier with in-graph decoding, resizing and normalisation.

    Args:
      model: Keras model; `model(x, training=False)` maps normalised float32 (N, H, W, C) images to
        logits (N, num_classes).
      image_shape: (H, W, C) the model expects.
      mean, std: per-channel (or scalar) normalisation in [0, 1] scale: x = (pixels/255 - mean) / std.
      class_names_path: optional text file, one class name per line (tracked as an asset).
    """

    def __init__(self, model, image_shape, mean, std, class_names_path=None):
        super().__init__(name="keras_darts_serving")
        # Track the weights, not the Keras model: saving the model object itself makes
        # tf.saved_model.save serialise every Keras layer (several times slower, nothing gained).
        self.model_variables = list(model.variables)
        self._model_fn = lambda x: model(x, training=False)
        self.image_shape = tuple(int(d) for d in image_shape)
        self._mean = tf.constant(mean, tf.float32)
        self._std = tf.constant(std, tf.float32)
        self.class_names_file = None
        self._class_table = None
        if class_names_path is not None:
            # An Asset is copied into assets/ and its path is rewritten when the export moves.
            self.class_names_file = tf.saved_model.Asset(class_names_path)
            self._class_table = tf.lookup.StaticHashTable(
                tf.lookup.TextFileInitializer(self.class_names_file, tf.int64,
                                              tf.lookup.TextFileIndex.LINE_NUMBER, tf.string,
                                              tf.lookup.TextFileIndex.WHOLE_LINE),
                default_value="")
        h, w, c = self.image_shape
        images = tf.function(self._predict,
                             input_signature=[tf.TensorSpec((None, h, w, c), tf.uint8, IMAGES_INPUT)])
        image_bytes = tf.function(self._serve_bytes,
                                  input_signature=[tf.TensorSpec((None,), tf.string, BYTES_INPUT)])
        # A plain dict set past the tracking: tf.functions found as attributes would be traced a
        # second time by tf.saved_model.save; as signatures each is traced once.
        object.__setattr__(self, "_signatures", {
            SERVING_DEFAULT: images.get_concrete_function(),
            SERVING_BYTES: image_bytes.get_concrete_function(),
        })

    @property
    def signatures(self):
        """{signature name: concrete function} for `tf.saved_model.save(..., signatures=...)`."""
        return dict(self._signatures)

    def _serve_bytes(self, image_bytes):
        h, w, c = self.image_shape
        images = tf.map_fn(self._decode, image_bytes,
                           fn_output_signature=tf.TensorSpec((h, w, c), tf.uint8))
        return self._predict(images)

    def _decode(self, encoded):
        h, w, c = self.image_shape
        image = tf.io.decode_image(encoded, channels=c, dtype=tf.uint8, expand_animations=False)

        def resize():
            resized = tf.image.resize(image, (h, w), method="bilinear")
            return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

        # Right-sized images skip the resize, so they give exactly what serving_default gives.
        size = tf.shape(image)[:2]
        same = tf.logical_and(tf.equal(size[0], h), tf.equal(size[1], w))
        image = tf.cond(same, lambda: image, resize)
        return tf.ensure_shape(image, (h, w, c))

    def _predict(self, images):
        x = (tf.cast(images, tf.float32) / 255.0 - self._mean) / self._std
        logits = tf.cast(self._model_fn(x), tf.float32)
        probabilities = tf.nn.softmax(logits, axis=-1)
        classes = tf.argmax(logits, axis=-1, output_type=tf.int64)
        outputs = {"probabilities": probabilities, "classes": classes, "logits": logits}
        if self._class_table is not None:
            outputs["class_names"] = self._class_table.lookup(classes)
        return outputs


def _check_per_channel(name, values, channels):
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 1:
        values = np.repeat(values, channels)
    if values.size != channels or not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be one finite number or {channels} (one per channel), "
                         f"got {values.tolist()}")
    return [float(v) for v in values]


def _versions(model_dir):
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(n) for n in os.listdir(model_dir)
                  if n.isdigit() and os.path.isdir(os.path.join(model_dir, n)))


def check_version_free(export_dir, model_name, version, overwrite):
    """Fails early (before hours of training) when an explicit --version already exists."""
    if version is None or overwrite:
        return
    final = os.path.join(export_dir, model_name, str(version))
    if os.path.exists(final):
        raise UserError(f"--version={version}: {final} already exists; pass --overwrite to replace it")
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise UserError(f"--export_dir={export_dir}: exists and is not a directory")


def _json_safe(obj):
    """Model configs may hold numpy scalars or dtype-policy objects; keep what JSON can hold."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def export_saved_model(model, export_dir, model_name="darts", version=None, *, image_shape, mean,
                       std, class_names=None, overwrite=False, metadata=None, verify=True):
    """Exports `model` as `<export_dir>/<model_name>/<version>/` for TF Serving.

    Args:
      model: Keras classifier on normalised float images (e.g. a NetworkCIFAR); called with
        training=False, so no auxiliary head and no drop path.
      export_dir: the TF Serving model base path's parent.
      model_name: folder under export_dir (TF Serving's MODEL_NAME).
      version: positive int; None: 1 + the largest existing numeric version (or 1).
      image_shape: (H, W, C) of the serving_default input.
      mean, std: normalisation in [0, 1] scale (per channel or scalar).
      class_names: optional list of num_classes names, written to assets/class_names.txt.
      overwrite: replace an existing version folder.
      metadata: optional dict merged into assets.extra/keras_darts_export.json.
      verify: reload the written SavedModel and check it reproduces the in-memory outputs before
        publishing the version.

    Returns:
      The version folder's path.

    Raises:
      UserError: the version exists and overwrite is False, or bad arguments.
    """
    if not model_name or model_name.startswith(".") or model_name != os.path.basename(model_name):
        raise UserError(f"--model_name={model_name!r}: must be a plain folder name not starting with '.'")
    if version is not None and (isinstance(version, bool) or not isinstance(version, (int, np.integer))
                                or version < 1):
        raise UserError(f"--version={version}: must be a positive integer")
    try:
        image_shape = tuple(int(d) for d in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"image_shape must be (height, width, channels), got {image_shape!r}") from None
    channels = image_shape[2]
    try:
        mean = _check_per_channel("mean", mean, channels)
        std = _check_per_channel("std", std, channels)
    except ValueError as e:
        raise UserError(str(e)) from None
    if min(std) <= 0:
        raise UserError(f"std must be positive, got {std}")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        num_classes = model(np.zeros((1, *image_shape), np.float32), training=False).shape[-1]
    num_classes = int(num_classes)
    if class_names is not None:
        class_names = [str(n) for n in class_names]
        if len(class_names) != num_classes:
            raise UserError(f"class_names has {len(class_names)} names but the model has "
                            f"{num_classes} classes")
        if any("\n" in n or "\r" in n for n in class_names):
            raise UserError("class_names must not contain line breaks")

    model_dir = os.path.join(export_dir, model_name)
    if version is None:
        version = (_versions(model_dir) or [0])[-1] + 1
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final) and not overwrite:
        raise UserError(f"--version={version}: {final} already exists; pass --overwrite to replace it")
    os.makedirs(model_dir, exist_ok=True)

    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir)
    try:
        source_dir = os.path.join(tmp, "source")  # outside the SavedModel; save() copies assets in
        saved = os.path.join(tmp, "saved_model")
        class_names_path = None
        if class_names is not None:
            os.makedirs(source_dir)
            class_names_path = os.path.join(source_dir, CLASS_NAMES_FILE)
            with open(class_names_path, "w") as f:
                f.write("".join(n + "\n" for n in class_names))
        module = ServingModule(model, image_shape, mean, std, class_names_path)
        tf.saved_model.save(module, saved, signatures=module.signatures)

        info = {
            "format": "keras_darts SavedModel export v1",
            "model_name": model_name,
            "version": version,
            "signatures": {
                SERVING_DEFAULT: {"inputs": {IMAGES_INPUT: ["uint8", [-1, *image_shape]]}},
                SERVING_BYTES: {"inputs": {BYTES_INPUT: ["string", [-1]]}},
            },
            "outputs": ["probabilities", "classes", "logits"] + (["class_names"] if class_names else []),
            "image_shape": list(image_shape),
            "mean": mean,
            "std": std,
            "num_classes": num_classes,
            "class_names": class_names,
            "genotype": model.genotype.to_dict() if hasattr(model, "genotype") else None,
            "model_class": type(model).__name__,
            "model_config": _json_safe(model.get_config()),
        }
        info.update(_json_safe(metadata or {}))
        os.makedirs(os.path.join(saved, EXTRA_DIR))
        with open(os.path.join(saved, EXTRA_DIR, METADATA_FILE), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)
            f.write("\n")
        if verify:
            _verify(module, saved, image_shape)
        _publish(saved, final, overwrite, version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _verify(module, saved, image_shape):
    """Reloads the SavedModel and checks it reproduces the in-memory module on a fixed batch."""
    images = np.random.RandomState(0).randint(0, 256, (2, *image_shape)).astype(np.uint8)
    expected = module.signatures[SERVING_DEFAULT](images=tf.constant(images))["probabilities"].numpy()
    loaded = tf.saved_model.load(saved)
    got = loaded.signatures[SERVING_DEFAULT](images=tf.constant(images))["probabilities"].numpy()
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-5):
        raise RuntimeError(f"exported model does not reproduce the in-memory model (max abs diff "
                           f"{np.max(np.abs(got - expected)) if got.shape == expected.shape else got.shape})")


def _publish(saved, final, overwrite, version):
    """Renames the finished SavedModel to its numeric version folder.

    With overwrite the old version is renamed aside first (to a `.tmp-*` name Serving ignores) and
    deleted only after the new one is in place; between the two renames the version is briefly
    absent, never half-written.
    """
    model_dir = os.path.dirname(final)
    old = None
    if os.path.exists(final):
        if not overwrite:  # appeared while we were saving
            raise UserError(f"--version={version}: {final} already exists; pass --overwrite to "
                            "replace it")
        old = tempfile.mkdtemp(prefix=f".tmp-old-{version}-", dir=model_dir)
        os.replace(final, os.path.join(old, "previous"))
    try:
        os.replace(saved, final)
    except BaseException:
        if old is not None:  # put the previous version back
            os.replace(os.path.join(old, "previous"), final)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def export_from_run(run_dir, export_dir, model_name="darts", version=None, overwrite=False):
    """Exports the latest checkpoint of a retrain run.

    `run_dir/config.json` describes the model (see `network.build_network_from_config`) and the
    preprocessing (`image_shape`, `mean`, `std`, optional `class_names`); `run_dir/checkpoints/`
    holds `tf.train.Checkpoint(model=model, ...)` checkpoints of a `tf.train.CheckpointManager`.

    Returns:
      The version folder's path.

    Raises:
      UserError: missing run dir, config or checkpoint; a config the model cannot be built from; a
        checkpoint that does not fit that model; a version clash.
    """
    from keras_darts.network import build_network_from_config

    if not os.path.isdir(run_dir):
        raise UserError(f"--checkpoint_dir={run_dir}: no such directory")
    config_path = os.path.join(run_dir, "config.json")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except FileNotFoundError:
        raise UserError(f"--checkpoint_dir={run_dir}: no config.json (is it a retrain output "
                        "directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{config_path}: cannot read JSON ({e})") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_path}: expected a JSON object")
    for key in ("mean", "std"):
        if key not in config:
            raise UserError(f"{config_path}: missing key {key!r}")
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    latest = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
    if latest is None:
        raise UserError(f"--checkpoint_dir={run_dir}: no checkpoint in {ckpt_dir}")
    try:
        model = build_network_from_config(config)
    except (ValueError, TypeError) as e:
        raise UserError(f"{config_path}: {e}") from None

    try:
        status = tf.train.Checkpoint(model=model).restore(latest).expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        first = " ".join(str(e).split())[:200]
        raise UserError(f"{latest}: checkpoint does not match the model config.json describes "
                        f"({first})") from None
    return export_saved_model(
        model, export_dir, model_name, version,
        image_shape=config["image_shape"], mean=config["mean"], std=config["std"],
        class_names=config.get("class_names"), overwrite=overwrite,
        metadata={"run_dir": os.path.abspath(run_dir), "checkpoint": os.path.abspath(latest),
                  "retrain_config": config},
    )
