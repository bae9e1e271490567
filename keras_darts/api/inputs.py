"""Python inputs -> the `ImageData` the search and retrain loops take.

`train_data` may be a `--dataset` string (loaded exactly as the CLI loads it), a pair of numpy
arrays `(x, y)`, or a `tf.data.Dataset` of `(image, label)` elements, batched or not. Arrays and
datasets are held in host memory as uint8 (the loops' data model: DARTS-scale data sets), and
checked with one-line errors that name the argument.
"""

import numpy as np

from keras_darts.errors import UserError


def _from_dataset(dataset, where):
    import tensorflow as tf

    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise UserError(f"{where}: a tf.data.Dataset must yield (image, label) pairs, got "
                        f"elements {spec}")
    if spec[0].shape.rank == 4 or (spec[0].shape.rank == 3 and spec[1].shape.rank == 1):
        dataset = dataset.unbatch()  # batched (N, H, W, C) or grayscale (N, H, W)
    xs, ys = [], []
    for image, label in dataset.as_numpy_iterator():
        xs.append(image)
        ys.append(label)
    if not xs:
        raise UserError(f"{where}: the tf.data.Dataset is empty")
    if tf.as_dtype(spec[0].dtype) != tf.uint8:
        raise UserError(f"{where}: images must be uint8 pixels 0..255, got {spec[0].dtype.name} "
                        "(map the dataset through tf.cast(image, tf.uint8) if they are)")
    return np.stack(xs), np.asarray(ys)


def _check_arrays(x, y, where):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[..., None]  # (N, H, W) grayscale
    if x.ndim != 4 or len(x) == 0 or min(x.shape[1:]) == 0:
        raise UserError(f"{where}: images must have shape (N, H, W, C) or (N, H, W), got {x.shape}")
    if x.dtype != np.uint8:
        hint = ""
        if np.issubdtype(x.dtype, np.floating) and x.size and 0 <= x.min() and x.max() <= 1:
            hint = " (these look like [0, 1] floats: pass (x * 255).round().astype('uint8'))"
        raise UserError(f"{where}: images must be uint8 pixels 0..255, got {x.dtype}{hint}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise UserError(f"{where}: labels must be integers of shape (N,), got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise UserError(f"{where}: {len(x)} images but {len(y)} labels")
    if y.min() < 0:
        raise UserError(f"{where}: negative label {int(y.min())}; labels must be 0..num_classes-1")
    return x, y.astype(np.int64)


def as_arrays(data, where):
    """(x uint8 (N, H, W, C), y int64 (N,)) of an `(x, y)` pair or a tf.data.Dataset."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif type(data).__name__.endswith("Dataset") and hasattr(data, "element_spec"):
        x, y = _from_dataset(data, where)
    else:
        raise UserError(f"{where}: expected a --dataset string, an (x, y) pair of arrays or a "
                        f"tf.data.Dataset of (image, label), got {type(data).__name__}")
    return _check_arrays(x, y, where)


def describe(data):
    """What config.json records as the `dataset` of in-memory data."""
    if isinstance(data, str):
        return data
    kind = "tf.data.Dataset" if hasattr(data, "element_spec") else "arrays"
    return f"<in-memory {kind}>"


def to_image_data(train_data, test_data=None, class_names=None, need_test=False):
    """The `ImageData` for in-memory train (and test) data.

    Args:
      train_data, test_data: `(x, y)` arrays or tf.data.Datasets (see the module docstring).
      class_names: names indexed by label (optional; kept in config.json and the exports).
      need_test: a retrain evaluates on a test split, so it must be given.

    Raises:
      UserError: one line naming `train_data`/`test_data` and what is wrong.
    """
    from keras_darts.data import ImageData

    x_train, y_train = as_arrays(train_data, "train_data")
    x_test = y_test = None
    if test_data is not None:
        x_test, y_test = as_arrays(test_data, "test_data")
        if x_test.shape[1:] != x_train.shape[1:]:
            raise UserError(f"test_data: images are {x_test.shape[1:]} but train_data's are "
                            f"{x_train.shape[1:]}")
    elif need_test:
        raise UserError("test_data: a retrain evaluates on a test split; pass test_data=(x, y)")
    if class_names is not None:
        class_names = tuple(str(n) for n in class_names)
        top = max(int(y.max()) for y in (y_train, y_test) if y is not None)
        if top >= len(class_names):
            raise UserError(f"class_names: {len(class_names)} names but a label {top}")
    if len(np.unique(y_train)) < 2:
        raise UserError(f"train_data: a single class (all labels are {int(y_train[0])}); "
                        "classification needs at least 2")
    return ImageData(describe(train_data), x_train, y_train, x_test, y_test, class_names)
