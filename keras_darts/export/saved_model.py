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

import os

import numpy as np
import tensorflow as tf

from keras_darts.export.publish import (METADATA_FILE, check_class_names, check_name_and_version,
                                        check_preprocessing, model_folder, model_metadata,
                                        num_classes_of, publish_version, write_labels,
                                        write_metadata)

SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
CLASS_NAMES_FILE = "class_names.txt"
EXTRA_DIR = "assets.extra"


class ServingModule(tf.Module):
    """Wraps a Keras classifier with in-graph decoding, resizing and normalisation.

    Args:
      model: Keras model; `model(x, training=False)` maps normalised float32 (N, H, W, C) images to
        logits (N, num_classes).
      image_shape: (H, W, C) the model expects.
      mean, std: per-channel (or scalar) normalisation in [0, 1] scale: x = (pixels/255 - mean) / std.
      class_names_path: optional text file, one class name per line (tracked as an asset).
      crop: None (bytes of another size are resized to (H, W)) or {"eval_resize": int or None}
        for models trained with --image_size: bytes are resized and centre-cropped exactly as the
        evaluation pipeline does (`keras_darts.data.augment.eval_transform`).
    """

    def __init__(self, model, image_shape, mean, std, class_names_path=None, crop=None):
        super().__init__(name="keras_darts_serving")
        self._crop = crop is not None
        self._eval_resize = (crop or {}).get("eval_resize")
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
        if self._crop:
            from keras_darts.data.augment import eval_transform

            return tf.ensure_shape(eval_transform(image, (h, w), self._eval_resize), (h, w, c))

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


def export_saved_model(model, export_dir, model_name="darts", version=None, *, image_shape, mean,
                       std, class_names=None, overwrite=False, metadata=None, verify=True,
                       crop=None):
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
    check_name_and_version(model_name, version)
    image_shape, mean, std = check_preprocessing(image_shape, mean, std)
    num_classes = num_classes_of(model, image_shape)
    class_names = check_class_names(class_names, num_classes)

    def write(saved, version):
        # Class names start outside the SavedModel; save() copies the asset in.
        class_names_path = None
        if class_names is not None:
            class_names_path = os.path.join(os.path.dirname(saved), CLASS_NAMES_FILE)
            write_labels(class_names_path, class_names)
        module = ServingModule(model, image_shape, mean, std, class_names_path, crop)
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
            **model_metadata(model),
            **(metadata or {}),
        }
        os.makedirs(os.path.join(saved, EXTRA_DIR))
        write_metadata(os.path.join(saved, EXTRA_DIR, METADATA_FILE), info)
        if verify:
            _verify(module, saved, image_shape)

    return publish_version(export_dir, model_folder(model_name, "saved_model"), version, overwrite,
                           write)


def _verify(module, saved, image_shape):
    """Reloads the SavedModel and checks it reproduces the in-memory module on a fixed batch."""
    images = np.random.RandomState(0).randint(0, 256, (2, *image_shape)).astype(np.uint8)
    expected = module.signatures[SERVING_DEFAULT](images=tf.constant(images))["probabilities"].numpy()
    loaded = tf.saved_model.load(saved)
    got = loaded.signatures[SERVING_DEFAULT](images=tf.constant(images))["probabilities"].numpy()
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-5):
        raise RuntimeError(f"exported model does not reproduce the in-memory model (max abs diff "
                           f"{np.max(np.abs(got - expected)) if got.shape == expected.shape else got.shape})")
