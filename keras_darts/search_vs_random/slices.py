"""The benchmark's own data dirs: a slice of the training split, and a held-out part of it.

`--train_images=N` keeps the first N training images (the issue's experiment uses the first 10,000
of CIFAR-10) and the full test split. `--select_on=heldout` holds out the last `--heldout_size`
of those training images as the "test" split, so that settings can be compared without ever
looking at the test split (issue 15: "do not tune on the test split"); the searches and the
retrains of every cell then train on the rest. Either way the dir is written once, as
DIR/{train,test}.npz, and checked against DIR/slice.json on every rerun.
"""

import os

import numpy as np

from keras_darts.errors import UserError, quiet_import
from keras_darts.io_utils import atomic_write_json
from keras_darts.search_vs_random.summary import read_json

META_FILE = "slice.json"


def split_indices(n, size, flag="--heldout_size"):
    """(train, held-out) index ranges: the last `size` of `n` images are held out."""
    if not 0 < size < n:
        raise UserError(f"{flag}={size}: must be in 1..{n - 1} (the training images number {n})")
    return np.arange(n - size), np.arange(n - size, n)


def _save_npz(path, x, y, class_names):
    # np.savez appends .npz to names without it; write beside, then rename (atomic).
    tmp = path[:-len(".npz")] + ".tmp.npz"
    extra = {"class_names": np.asarray(class_names)} if class_names else {}
    np.savez(tmp, x=x, y=y, **extra)
    os.replace(tmp, path)


def make_data_dir(directory, dataset, data_dir, train_images=None, heldout_size=None):
    """Writes DIRECTORY/{train,test}.npz once; returns DIRECTORY.

    Args:
      train_images: keep the first this many training images (None: all).
      heldout_size: if set, the test split is the last this many of the kept training images
        (and they leave the training split); otherwise it is the dataset's test split.
    """
    meta = {"dataset": dataset, "data_dir": data_dir, "train_images": train_images,
            "heldout_size": heldout_size}
    previous = read_json(os.path.join(directory, META_FILE))
    if previous is not None:
        if previous != meta:
            raise UserError(f"{directory}: holds a data slice of {previous}; use a new --work_dir "
                            "or the same --dataset/--train_images/--heldout_size")
        return directory
    # TensorFlow (fd 2 muted during its import): loaded only when the dir is made.
    data_lib = quiet_import("keras_darts.data")
    # cache: folders, TFRecord and tfds stream by default; the slice is written from arrays.
    data = data_lib.load_image_data(dataset, data_dir, need_test=heldout_size is None,
                                    options=data_lib.DataOptions(cache=True))
    n = len(data.x_train)
    if train_images is not None and not 0 < train_images <= n:
        raise UserError(f"--train_images={train_images}: must be in 1..{n} (the training split "
                        f"of --dataset={dataset} has {n} images)")
    x, y = data.x_train[:train_images], data.y_train[:train_images]
    if heldout_size is None:
        train, test = (x, y), (data.x_test, data.y_test)
    else:
        kept, held = split_indices(len(x), heldout_size)
        train, test = (x[kept], y[kept]), (x[held], y[held])
    os.makedirs(directory, exist_ok=True)
    _save_npz(os.path.join(directory, "train.npz"), *train, data.class_names)
    _save_npz(os.path.join(directory, "test.npz"), *test, data.class_names)
    atomic_write_json(os.path.join(directory, META_FILE), meta)  # last: marks the dir complete
    return directory
