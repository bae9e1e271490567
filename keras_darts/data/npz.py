"""`.npz` files: arrays `x` (N,H,W[,C]) uint8 and `y` integer labels (optionally `class_names`),
read whole into memory, and the validation shared by every in-memory split."""

import dataclasses
import os
import zipfile
import zlib

import numpy as np

from keras_darts.errors import UserError

_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


@dataclasses.dataclass
class Split:
    """One split while loading: `examples` (set once read) and its class names."""

    where: str  # "--flag=value" or "--flag=value: file", the prefix of error messages.
    x: np.ndarray = None
    y: np.ndarray = None
    class_names: tuple = None
    examples: object = None  # FileExamples / RecordExamples for streamed sources.
    skipped: list = dataclasses.field(default_factory=list)  # Files --skip_corrupt dropped.


def at(where, path):
    """The message prefix "--flag=value: path: ", not repeating a path the flag already names."""
    same = os.path.abspath(os.path.expanduser(where.split("=", 1)[-1])) == os.path.abspath(path)
    return f"{where}: " if same else f"{where}: {path}: "


def check_xy(x, y, where):
    """Validates images and labels; returns (uint8 (N,H,W,C), int64 (N,))."""
    if x.ndim == 3:
        x = x[..., None]  # (N, H, W) grayscale.
    if x.ndim != 4:
        raise UserError(f"{where}: x must be images (N,H,W,C) or (N,H,W), got shape {x.shape}")
    if x.dtype != np.uint8:
        raise UserError(f"{where}: x must be uint8 pixels 0..255, got {x.dtype}")
    if len(x) == 0 or min(x.shape[1:]) == 0:
        raise UserError(f"{where}: holds no images (x has shape {x.shape})")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(f"{where}: y must be labels of shape (N,), got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise UserError(f"{where}: labels must be integers, got {y.dtype}")
    if len(x) != len(y):
        raise UserError(f"{where}: {len(x)} images but {len(y)} labels")
    if y.min() < 0:
        raise UserError(f"{where}: negative label {int(y.min())}; labels must be 0..num_classes-1")
    return x, y.astype(np.int64)


def shape_str(shape):
    return "x".join(str(d) for d in shape)


def short(error):
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# --- .npz ---


def npz_split(path, where):
    where = at(where, path)[:-2]
    if not os.access(path, os.R_OK):
        raise UserError(f"{where}: not readable (permission denied)")
    try:
        if not zipfile.is_zipfile(path):
            raise UserError(f"{where}: not an .npz archive (expected arrays x and y saved with "
                            "numpy.savez, a folder holding train.npz, or a folder of class "
                            "folders)")
        archive = np.load(path, allow_pickle=False)
        with archive:
            keys = set(archive.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise UserError(f"{where}: missing array(s) {', '.join(missing)} "
                                f"(found: {', '.join(sorted(keys)) or 'none'})")
            x, y = archive["x"], archive["y"]
            names = archive["class_names"] if "class_names" in keys else None
    except _NPZ_ERRORS as e:
        raise UserError(f"{where}: cannot read .npz ({short(e)})") from e
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise UserError(f"{where}: class_names must be a 1-D array of strings")
        names = tuple(str(n) for n in names)
    return Split(where, x, y, names)
