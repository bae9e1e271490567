"""What every export format shares: argument checks, version folders, atomic publishing.

Each format writes `<export_dir>/<folder>/<version>/`; the folder is `model_name` for SavedModels
(what TF Serving watches) and `model_name-<format>` for the others, so a .tflite or .keras version
never becomes the "latest version" of a served model. Contents are written to a `.tmp-*` folder
beside the versions (which TF Serving and `versions()` ignore) and renamed into place only once
complete and verified: a crash or an error never leaves a half-written numeric version.
"""

import json
import os
import shutil
import tempfile

import numpy as np

from keras_darts.errors import UserError

METADATA_FILE = "keras_darts_export.json"
LABELS_FILE = "labels.txt"


def model_folder(model_name, fmt):
    """The folder under export_dir that holds the numbered versions of one format."""
    return model_name if fmt == "saved_model" else f"{model_name}-{fmt}"


def check_name_and_version(model_name, version):
    if not model_name or model_name.startswith(".") or model_name != os.path.basename(model_name):
        raise UserError(f"--model_name={model_name!r}: must be a plain folder name not starting with '.'")
    if version is not None and (isinstance(version, bool) or not isinstance(version, (int, np.integer))
                                or version < 1):
        raise UserError(f"--version={version}: must be a positive integer")


def _check_per_channel(name, values, channels):
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 1:
        values = np.repeat(values, channels)
    if values.size != channels or not np.all(np.isfinite(values)):
        raise UserError(f"{name} must be one finite number or {channels} (one per channel), "
                        f"got {values.tolist()}")
    return [float(v) for v in values]


def check_preprocessing(image_shape, mean, std):
    """(image_shape tuple, mean list, std list), each checked; UserError naming what is wrong."""
    try:
        image_shape = tuple(int(d) for d in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"image_shape must be (height, width, channels), got {image_shape!r}") from None
    channels = image_shape[2]
    mean = _check_per_channel("mean", mean, channels)
    std = _check_per_channel("std", std, channels)
    if min(std) <= 0:
        raise UserError(f"std must be positive, got {std}")
    return image_shape, mean, std


def num_classes_of(model, image_shape):
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        num_classes = model(np.zeros((1, *image_shape), np.float32), training=False).shape[-1]
    return int(num_classes)


def check_class_names(class_names, num_classes):
    if class_names is None:
        return None
    class_names = [str(n) for n in class_names]
    if len(class_names) != num_classes:
        raise UserError(f"class_names has {len(class_names)} names but the model has "
                        f"{num_classes} classes")
    if any("\n" in n or "\r" in n for n in class_names):
        raise UserError("class_names must not contain line breaks")
    return class_names


def json_safe(obj):
    """Model configs may hold numpy scalars or dtype-policy objects; keep what JSON can hold."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def model_metadata(model):
    """The model's part of keras_darts_export.json (genotype, class, config)."""
    return {
        "genotype": model.genotype.to_dict() if hasattr(model, "genotype") else None,
        "model_class": type(model).__name__,
        "model_config": json_safe(model.get_config()),
    }


def write_metadata(path, info):
    with open(path, "w") as f:
        json.dump(json_safe(info), f, indent=2, sort_keys=True)
        f.write("\n")


def write_labels(path, class_names):
    with open(path, "w") as f:
        f.write("".join(n + "\n" for n in class_names))


def versions(model_dir):
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(n) for n in os.listdir(model_dir)
                  if n.isdigit() and os.path.isdir(os.path.join(model_dir, n)))


def check_version_free(export_dir, model_name, version, overwrite, formats=("saved_model",)):
    """Fails early (before hours of training) when an explicit --version already exists."""
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise UserError(f"--export_dir={export_dir}: exists and is not a directory")
    if version is None or overwrite:
        return
    for fmt in formats:
        final = os.path.join(export_dir, model_folder(model_name, fmt), str(version))
        if os.path.exists(final):
            raise UserError(f"--version={version}: {final} already exists; pass --overwrite to "
                            "replace it")


def publish_version(export_dir, folder, version, overwrite, write):
    """Creates `<export_dir>/<folder>/<version>/` atomically.

    Args:
      folder: see `model_folder`.
      version: positive int; None: 1 + the largest existing numeric version (or 1).
      write: `write(path, version)` fills the (not yet existing) directory `path`; it may also use
        `dirname(path)` for scratch files. Anything it raises leaves no version behind.

    Returns:
      The version folder's path.
    """
    model_dir = os.path.join(export_dir, folder)
    if version is None:
        version = (versions(model_dir) or [0])[-1] + 1
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final) and not overwrite:
        raise UserError(f"--version={version}: {final} already exists; pass --overwrite to replace it")
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise UserError(f"--export_dir={export_dir}: exists and is not a directory")
    os.makedirs(model_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir)
    try:
        out = os.path.join(tmp, "out")
        write(out, version)
        _rename_into_place(out, final, overwrite, version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _rename_into_place(out, final, overwrite, version):
    """With overwrite the old version is renamed aside first (to a `.tmp-*` name Serving ignores)
    and deleted only after the new one is in place; between the two renames the version is briefly
    absent, never half-written."""
    model_dir = os.path.dirname(final)
    old = None
    if os.path.exists(final):
        if not overwrite:  # appeared while we were writing
            raise UserError(f"--version={version}: {final} already exists; pass --overwrite to "
                            "replace it")
        old = tempfile.mkdtemp(prefix=f".tmp-old-{version}-", dir=model_dir)
        os.replace(final, os.path.join(old, "previous"))
    try:
        os.replace(out, final)
    except BaseException:
        if old is not None:  # put the previous version back
            os.replace(os.path.join(old, "previous"), final)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
