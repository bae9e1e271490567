"""`--select_on=heldout`: a validation split cut from the training split, so that settings can be
compared without ever looking at the test split (issue 15: "do not tune on the test split").

The last `size` training images become the held-out "test" split of a new npz dir; the searches
and the retrains of every cell then train on the rest and the retrains score on the held-out part.
"""

import os

import numpy as np

from keras_darts.errors import UserError, quiet_import
from keras_darts.io_utils import atomic_write_json
from keras_darts.search_vs_random.summary import read_json

META_FILE = "heldout.json"


def split_indices(n, size, flag="--heldout_size"):
    """(train, held-out) index ranges: the last `size` of `n` images are held out."""
    if not 0 < size < n:
        raise UserError(f"{flag}={size}: must be in 1..{n - 1} (the training split has {n} images)")
    return np.arange(n - size), np.arange(n - size, n)


def _save_npz(path, x, y, class_names):
    # np.savez appends .npz to names without it; write beside, then rename (atomic).
    tmp = path[:-len(".npz")] + ".tmp.npz"
    extra = {"class_names": np.asarray(class_names)} if class_names else {}
    np.savez(tmp, x=x, y=y, **extra)
    os.replace(tmp, path)


def make_heldout_dir(directory, dataset, data_dir, size):
    """Writes DIRECTORY/{train,test}.npz once (checked by DIRECTORY/heldout.json); returns it."""
    meta = {"dataset": dataset, "data_dir": data_dir, "heldout_size": size}
    previous = read_json(os.path.join(directory, META_FILE))
    if previous is not None:
        if previous != meta:
            raise UserError(f"{directory}: holds a held-out split of {previous}; use a new "
                            "--work_dir or the same --dataset/--heldout_size")
        return directory
    # TensorFlow (fd 2 muted during its import): loaded only when the split is made.
    data = quiet_import("keras_darts.data").load_image_data(dataset, data_dir)
    train, held = split_indices(len(data.x_train), size)
    os.makedirs(directory, exist_ok=True)
    _save_npz(os.path.join(directory, "train.npz"), data.x_train[train], data.y_train[train],
              data.class_names)
    _save_npz(os.path.join(directory, "test.npz"), data.x_train[held], data.y_train[held],
              data.class_names)
    atomic_write_json(os.path.join(directory, META_FILE), meta)  # last: marks the split complete
    return directory
