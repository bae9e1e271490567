"""Keras `.keras` export: the network with its preprocessing, for `keras.saving.load_model`.

Layout: `<export_dir>/<model_name>-keras/<version>/`
  model.keras               a functional model: uint8 images (N, H, W, C) -> logits; the first
                            layer is a Rescaling computing (pixels / 255 - mean) / std
  labels.txt                class names, one per line (when known)
  keras_darts_export.json   shapes, normalisation, class names, genotype

Loading needs the keras_darts layers registered: `import keras_darts.network` (or any API call)
before `keras.saving.load_model(path)`.
"""

import os

import keras
import numpy as np

from keras_darts.export.publish import (LABELS_FILE, METADATA_FILE, check_class_names,
                                        check_name_and_version, check_preprocessing, model_folder,
                                        model_metadata, num_classes_of, publish_version,
                                        write_labels, write_metadata)

MODEL_FILE = "model.keras"


def with_preprocessing(model, image_shape, mean, std):
    """uint8 pixels -> Rescaling((x / 255 - mean) / std) -> `model` in inference mode -> logits."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    images = keras.Input(image_shape, dtype="uint8", name="images")
    # One Keras layer, per-channel: x * 1/(255 std) - mean/std.
    x = keras.layers.Rescaling(scale=(1.0 / (255.0 * std)).tolist(), offset=(-mean / std).tolist(),
                               name="normalise")(images)
    logits = model(x, training=False)
    return keras.Model(images, logits, name=f"{model.name}_with_preprocessing")


def export_keras(model, export_dir, model_name="darts", version=None, *, image_shape, mean, std,
                 class_names=None, overwrite=False, metadata=None, verify=True):
    """Exports `model` with its preprocessing as `<export_dir>/<model_name>-keras/<version>/`.

    Args: as `export_saved_model`. `verify` reloads the file and compares the outputs (1e-5).

    Returns:
      The version folder's path.
    """
    check_name_and_version(model_name, version)
    image_shape, mean, std = check_preprocessing(image_shape, mean, std)
    num_classes = num_classes_of(model, image_shape)
    class_names = check_class_names(class_names, num_classes)
    wrapped = with_preprocessing(model, image_shape, mean, std)

    def write(out, version):
        os.makedirs(out)
        path = os.path.join(out, MODEL_FILE)
        wrapped.save(path)
        if verify:
            images = np.random.RandomState(0).randint(0, 256, (2, *image_shape)).astype(np.uint8)
            expected = np.asarray(wrapped(images, training=False))
            got = np.asarray(keras.saving.load_model(path)(images, training=False))
            if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-5):
                raise RuntimeError("the saved .keras model does not reproduce the in-memory model")
        if class_names is not None:
            write_labels(os.path.join(out, LABELS_FILE), class_names)
        write_metadata(os.path.join(out, METADATA_FILE), {
            "format": "keras_darts Keras export v1", "model_name": model_name, "version": version,
            "inputs": {"images": ["uint8", [-1, *image_shape]]}, "outputs": ["logits"],
            "image_shape": list(image_shape), "mean": mean, "std": std,
            "num_classes": num_classes, "class_names": class_names, **model_metadata(model),
            **(metadata or {})})

    return publish_version(export_dir, model_folder(model_name, "keras"), version, overwrite, write)
