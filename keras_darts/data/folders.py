"""Folders of class folders: the file list (the only thing held in memory) and cheap checks.

Listing reads each file's first and last bytes only: a file that is no JPEG/PNG/BMP/GIF, or lost
its end (truncated), is refused here, by name, before anything is written. Damage inside an image
is found while decoding (decode.guard names the file), or up front with --skip_corrupt, which
decodes every image once and drops the bad ones.
"""

import os
import struct

import numpy as np
import tensorflow as tf

from keras_darts.data.examples import FileExamples
from keras_darts.data.npz import at, short
from keras_darts.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_TAIL = 64


def is_image(name):
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def header_problem(path):
    """Why `path` is not a whole JPEG/PNG/BMP/GIF file (from its first and last bytes), or None."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(32)
            f.seek(max(size - _TAIL, 0))
            tail = f.read()
    except OSError as e:
        return f"cannot read it ({short(e)})"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None if tail.endswith(b"IEND\xaeB`\x82") else "truncated PNG (no IEND chunk)"
    if head.startswith(b"\xff\xd8\xff"):
        return None if b"\xff\xd9" in tail else "truncated JPEG (no end-of-image marker)"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return None if b";" in tail else "truncated GIF (no trailer)"
    if head.startswith(b"BM") and len(head) >= 6:
        declared = struct.unpack("<I", head[2:6])[0]
        return None if size >= declared else f"truncated BMP ({size} of {declared} bytes)"
    return "not a JPEG, PNG, BMP or GIF image"


def list_folders(root, where, skip_corrupt=False, class_names=None):
    """Lists <root>/<class>/<image> files; returns (FileExamples, class names, skipped files).

    `class_names`: the training classes (for a test split): each folder must be one of them and
    its label is that class's index there.
    """
    try:
        classes = sorted(
            e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise UserError(f"{where}: cannot list {root} ({short(e)})") from e
    if not classes:
        raise UserError(f"{at(where, root)}no class sub-folders (expected <class>/<image>.png "
                        "folders, or train.npz)")
    if class_names is not None:
        unknown = [c for c in classes if c not in class_names]
        if unknown:
            raise UserError(f"{at(where, root)}class {unknown[0]!r} is not a training class "
                            f"(training classes: {', '.join(class_names)})")
    labels_of = {c: i for i, c in enumerate(class_names or classes)}
    paths, labels, skipped = [], [], []
    for cls in classes:
        folder = os.path.join(root, cls)
        try:
            names = sorted(n for n in os.listdir(folder) if is_image(n))
        except OSError as e:
            raise UserError(f"{where}: cannot list {folder} ({short(e)})") from e
        if not names:
            raise UserError(f"{where}: class folder {folder} holds no images "
                            f"({', '.join(IMAGE_EXTENSIONS)})")
        for n in names:
            file = os.path.join(folder, n)
            problem = header_problem(file)
            if problem and not skip_corrupt:
                raise UserError(f"{where}: cannot read image {file} ({problem}); remove it or "
                                "pass --skip_corrupt")
            if problem:
                skipped.append(file)
                continue
            paths.append(file)
            labels.append(labels_of[cls])
    if not paths:
        raise UserError(f"{at(where, root)}no images ({', '.join(IMAGE_EXTENSIONS)}) in the "
                        "class folders")
    examples = FileExamples(np.array(paths), np.array(labels, np.int64))
    if skip_corrupt:
        bad = undecodable(examples.paths)
        if len(bad):
            skipped += list(examples.paths[bad])
            keep = np.setdiff1d(np.arange(len(examples)), bad)
            examples = examples.subset(keep)
    return examples, (tuple(class_names) if class_names else tuple(classes)), skipped


def undecodable(paths):
    """Indices of `paths` tf.io cannot decode: one parallel decode pass (ignore_errors drops the
    failures; the survivors' indices tell which)."""

    def probe(i):
        image = tf.io.decode_image(tf.io.read_file(tf.gather(tensor, i)), channels=0,
                                   expand_animations=False)
        return i, tf.shape(image)[0]

    tensor = tf.constant(paths.astype(str))
    ds = tf.data.Dataset.range(len(paths)).map(probe, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.ignore_errors().map(lambda i, _: i).batch(4096)
    good = np.concatenate([b for b in ds.as_numpy_iterator()] or [np.zeros(0, np.int64)])
    return np.setdiff1d(np.arange(len(paths)), good)


def first_image(path):
    """(height, width, channels) of a file as decoded (channels: 1 for gray, else 3)."""
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)
    except tf.errors.OpError as e:
        raise UserError(f"cannot decode image {path} ({short(e.message)})") from None
    h, w, c = image.shape
    return int(h), int(w), 1 if c in (1, 2) else 3
