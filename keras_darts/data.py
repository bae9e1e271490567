"""Image data: loading (tfds, .npz, folders of class folders) and deterministic tf.data pipelines.

Loading returns an `ImageData` of uint8 numpy arrays held in host memory, whatever the source: the
DARTS datasets (CIFAR, MNIST, SVHN) are small, and arrays make the search-train/search-val split of
the reference (`indices[:split]`, `indices[split:]`) a plain slice. Folder and .npz data are read
whole into memory too, so a folder must fit in RAM.

Pipelines are functions of (seed, epoch, start_step) only:

* the epoch order is `np.random.default_rng([seed, epoch]).permutation(n)`;
* each example's augmentation (crop offset, flip, cutout centre) is row `i` of a table drawn from
  `np.random.default_rng([seed, epoch, 1])`, `i` being the example's index in `x`, so an example
  gets the same augmentation whatever the batch size, replica count or resume point;
* resuming at step s drops the first s*batch_size indices before any image is touched.

Augmentation follows the reference's CIFAR transform: RandomCrop(32, padding=4) with zero (black)
padding, RandomHorizontalFlip, ToTensor, Normalize, then Cutout on the normalised tensor.
"""

import dataclasses
import difflib
import functools
import os
import zipfile
import zlib

import numpy as np
import tensorflow as tf

from keras_darts.config import AUGMENT_CHOICES
from keras_darts.errors import UserError

PAD = 4  # Pixels of zero padding before the random crop (reference: RandomCrop(32, padding=4)).
# Datasets whose mirror image is another class or no class at all (digits, letters).
NO_FLIP_DATASETS = frozenset({"mnist", "fashion_mnist", "emnist", "kmnist", "svhn_cropped"})
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_GRAY_MODES = frozenset({"1", "L", "LA"})
_AUG_STREAM = 1  # Third seed word: keeps the augmentation draws apart from the epoch permutation.
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


# === ImageData ===


@dataclasses.dataclass(frozen=True, eq=False)
class ImageData:
    """A labelled image dataset held in host memory.

    Attributes:
      name: the tfds name or the path it was loaded from.
      x_train, x_test: uint8 arrays (N, H, W, C); `x_test` is None when there is no test split.
      y_train, y_test: int64 labels (N,).
      class_names: tuple of names indexed by label, or None when the source has none.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray = None
    y_test: np.ndarray = None
    class_names: tuple = None

    @functools.cached_property
    def num_classes(self):
        if self.class_names:
            return len(self.class_names)
        labels = [self.y_train] + ([self.y_test] if self.y_test is not None else [])
        return int(max(int(y.max()) for y in labels if len(y))) + 1

    @property
    def image_shape(self):
        return tuple(int(d) for d in self.x_train.shape[1:])

    @functools.cached_property
    def _stats(self):
        return channel_stats(self.x_train)

    @property
    def mean(self):
        """Per-channel mean of `x_train` in [0, 1]: what `Normalize` subtracts."""
        return self._stats[0]

    @property
    def std(self):
        """Per-channel (population) std of `x_train` in [0, 1]."""
        return self._stats[1]


def channel_stats(x, chunk=2048):
    """Per-channel mean and std of uint8 images in [0, 1] scale, as tuples of floats.

    Sums run in float64 over chunks, so 50k CIFAR images never become a 1.2 GB float copy; the sums
    of integer pixels are exact in float64.
    """
    channels = x.shape[-1]
    total, total_sq, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].reshape(-1, channels).astype(np.float64)
        total += part.sum(axis=0)
        total_sq += np.einsum("ij,ij->j", part, part)
        count += len(part)
    mean = total / count
    var = np.maximum(total_sq / count - mean * mean, 0.0)
    return tuple(float(m) for m in mean / 255.0), tuple(float(s) for s in np.sqrt(var) / 255.0)


def synthetic_image_data(num_train, num_test, image_shape=(32, 32, 3), num_classes=10, seed=0):
    """Random uint8 images with balanced random labels, for tests and benchmarks."""
    rng = np.random.default_rng(seed)

    def split(n):
        x = rng.integers(0, 256, size=(n, *image_shape), dtype=np.uint8)
        y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
        return x, y

    x_train, y_train = split(num_train)
    x_test, y_test = split(num_test) if num_test else (None, None)
    names = tuple(f"class_{i}" for i in range(num_classes))
    return ImageData("synthetic", x_train, y_train, x_test, y_test, names)


# === Loading ===


def load_image_data(dataset, data_dir=None, test_dataset=None, need_test=False, flag="--dataset"):
    """Loads a dataset named by a flag into host memory.

    Args:
      dataset: a tfds name (cifar10, cifar100, mnist, fashion_mnist, svhn_cropped, ...), a .npz file
        with `x` (N,H,W[,C]) uint8 and `y` integer labels (and optionally `class_names`), a folder
        holding train.npz [and test.npz], or a folder of class sub-folders of images, either inside
        `train/` [and `test/`] or directly (then there is no test split).
      data_dir: the tfds data directory (tfds names only).
      test_dataset: the test data given explicitly (.npz, folder with test.npz, or class folders).
      need_test: raise `UserError` when no test split is found.
      flag: the flag name used in error messages.

    Raises:
      UserError: one line naming the flag or file and what is wrong with it.
    """
    path = os.path.expanduser(dataset)
    if os.path.exists(path):
        name = path
        train, test = _sources_for_path(path, f"{flag}={dataset}", with_test=not test_dataset)
    elif path.endswith(".npz") or os.sep in path or path.startswith((".", "~")):
        raise UserError(f"{flag}={dataset}: no such file or directory")
    elif _is_tfds_name(dataset):
        name = dataset
        train, test = _load_tfds(dataset, data_dir, flag, with_test=not test_dataset,
                                 need_test=need_test)
    else:
        raise UserError(f"{flag}={dataset}: unknown dataset: not a tfds name nor an existing path"
                        f"{_suggestion(dataset)}")
    if test_dataset:
        test_path = os.path.expanduser(test_dataset)
        if not os.path.exists(test_path):
            raise UserError(f"--test_dataset={test_dataset}: no such file or directory")
        test = _test_source_for_path(test_path, f"--test_dataset={test_dataset}")
    train, test = _read_sources(train, test)
    if test is None and need_test:
        raise UserError(f"{flag}={dataset}: no test split found (expected test.npz next to "
                        "train.npz or a test/ folder); pass --test_dataset")
    return _assemble(name, train, test, f"{flag}={dataset}")


@dataclasses.dataclass
class _Split:
    """One split while loading: arrays, or a folder still to be read (`folder` set, `x` None)."""

    where: str  # "--flag=value" or "--flag=value: file", the prefix of error messages.
    x: np.ndarray = None
    y: np.ndarray = None
    class_names: tuple = None
    folder: object = None  # A _FolderScan, read once train and test are both known.


def _sources_for_path(path, where, with_test):
    """The train split and the test split found beside it (None without one, or if not wanted)."""
    if os.path.isfile(path):
        sibling = os.path.join(os.path.dirname(path), "test.npz")
        has_test = os.path.basename(path) == "train.npz" and os.path.isfile(sibling)
        return _npz_split(path, where), (
            _npz_split(sibling, where) if has_test and with_test else None)
    if not os.path.isdir(path):
        raise UserError(f"{where}: neither a file nor a directory")
    npz_train, npz_test = os.path.join(path, "train.npz"), os.path.join(path, "test.npz")
    if os.path.isfile(npz_train):
        return _npz_split(npz_train, where), (
            _npz_split(npz_test, where) if os.path.isfile(npz_test) and with_test else None)
    train_dir, test_dir = os.path.join(path, "train"), os.path.join(path, "test")
    if os.path.isdir(train_dir):
        train = _Split(where, folder=_scan_folders(train_dir, where))
        has_test = os.path.isdir(test_dir) and with_test
        return train, _Split(where, folder=_scan_folders(test_dir, where)) if has_test else None
    return _Split(where, folder=_scan_folders(path, where)), None


def _test_source_for_path(path, where):
    if os.path.isfile(path):
        return _npz_split(path, where)
    if os.path.isfile(os.path.join(path, "test.npz")):
        return _npz_split(os.path.join(path, "test.npz"), where)
    if os.path.isdir(os.path.join(path, "test")):
        path = os.path.join(path, "test")
    return _Split(where, folder=_scan_folders(path, where))


def _read_sources(train, test):
    """Reads folder splits; grayscale is kept only if every image of both splits is grayscale."""
    folders = [s.folder for s in (train, test) if s is not None and s.folder is not None]
    gray = all(f.gray for f in folders)
    for split in (train, test):
        if split is not None and split.folder is not None:
            split.x, split.y = _read_images(split.folder, gray, split.where)
            split.class_names = split.folder.class_names
    return train, test


def _assemble(name, train, test, where):
    x_train, y_train = _check_xy(train.x, train.y, train.where)
    x_test = y_test = None
    if test is not None:
        x_test, y_test = _check_xy(test.x, test.y, test.where)
        if x_test.shape[1:] != x_train.shape[1:]:
            raise UserError(f"{test.where}: test images are {_shape_str(x_test.shape[1:])} but "
                            f"train images are {_shape_str(x_train.shape[1:])}")
        if train.class_names and test.class_names and test.class_names != train.class_names:
            raise UserError(f"{test.where}: test class names {list(test.class_names)} differ from "
                            f"the train class names {list(train.class_names)}")
    class_names = train.class_names or (test.class_names if test is not None else None)
    if class_names:
        for split, y in ((train, y_train), (test, y_test)):
            if y is not None and len(y) and y.max() >= len(class_names):
                raise UserError(f"{split.where}: label {int(y.max())} but only "
                                f"{len(class_names)} class names")
    data = ImageData(name, x_train, y_train, x_test, y_test,
                     tuple(class_names) if class_names else None)
    if data.num_classes < 2 or len(np.unique(y_train)) < 2:
        raise UserError(f"{where}: a dataset with a single class (all train labels are "
                        f"{int(y_train[0])}); classification needs at least 2")
    return data


def _check_xy(x, y, where):
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


def _shape_str(shape):
    return "x".join(str(d) for d in shape)


def _short(error):
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# --- .npz ---


def _npz_split(path, where):
    where = _at(where, path)[:-2]
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
        raise UserError(f"{where}: cannot read .npz ({_short(e)})") from e
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise UserError(f"{where}: class_names must be a 1-D array of strings")
        names = tuple(str(n) for n in names)
    return _Split(where, x, y, names)


# --- folders of class folders ---


@dataclasses.dataclass
class _FolderScan:
    class_names: tuple
    files: list  # (path, label)
    size: tuple  # (width, height)
    gray: bool


def _at(where, path):
    """The message prefix "--flag=value: path: ", not repeating a path the flag already names."""
    same = os.path.abspath(os.path.expanduser(where.split("=", 1)[-1])) == os.path.abspath(path)
    return f"{where}: " if same else f"{where}: {path}: "


def _is_image(name):
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _scan_folders(root, where):
    """Lists class folders and images, checking that every image opens and all share one size."""
    from PIL import Image  # pylint: disable=import-outside-toplevel

    try:
        classes = sorted(
            e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise UserError(f"{where}: cannot list {root} ({_short(e)})") from e
    if not classes:
        raise UserError(f"{_at(where, root)}no class sub-folders (expected <class>/<image>.png "
                        "folders, or train.npz)")
    files, size, first, gray = [], None, None, True
    for label, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        try:
            names = sorted(n for n in os.listdir(folder) if _is_image(n))
        except OSError as e:
            raise UserError(f"{where}: cannot list {folder} ({_short(e)})") from e
        for n in names:
            file = os.path.join(folder, n)
            try:
                with Image.open(file) as img:
                    img_size, mode = img.size, img.mode
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise UserError(f"{where}: cannot read image {file} ({_short(e)})") from e
            if size is None:
                size, first = img_size, file
            elif img_size != size:
                raise UserError(f"{where}: mixed image sizes: {file} is {_shape_str(img_size)} "
                                f"but {first} is {_shape_str(size)} (width x height); resize "
                                "them first")
            gray = gray and mode in _GRAY_MODES
            files.append((file, label))
    if not files:
        raise UserError(f"{_at(where, root)}no images ({', '.join(IMAGE_EXTENSIONS)}) in the "
                        "class folders")
    return _FolderScan(tuple(classes), files, size, gray)


def _read_images(scan, gray, where):
    from PIL import Image  # pylint: disable=import-outside-toplevel

    width, height = scan.size
    x = np.empty((len(scan.files), height, width, 1 if gray else 3), np.uint8)
    for i, (file, _) in enumerate(scan.files):
        try:
            with Image.open(file) as img:
                pixels = np.asarray(img.convert("L" if gray else "RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise UserError(f"{where}: cannot read image {file} ({_short(e)})") from e
        if pixels.shape[:2] != (height, width):  # The file changed since the scan.
            raise UserError(f"{where}: image {file} is {_shape_str(pixels.shape[1::-1])}, "
                            f"expected {width}x{height}")
        x[i] = pixels.reshape(height, width, -1)
    return x, np.array([label for _, label in scan.files], np.int64)


# --- tfds ---


def _is_tfds_name(name):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    return name.split(":")[0].split("/")[0] in tfds.list_builders()


def _suggestion(name):
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

        close = difflib.get_close_matches(name, tfds.list_builders(), n=1)
    except Exception:  # pylint: disable=broad-except
        close = []
    return f" (did you mean {close[0]}?)" if close else " (a .npz file, a folder, or e.g. cifar10)"


def _load_tfds(name, data_dir, flag, with_test, need_test):
    """Loads the train and test splits of a tfds dataset, refusing fast when it is not prepared.

    absl warnings are muted meanwhile: a failed download logs "Variant folder ... has no
    dataset_info.json" to stderr, and a user error must stay one line there.
    """
    from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        return _load_tfds_splits(name, data_dir, flag, with_test, need_test)
    finally:
        absl_logging.set_verbosity(verbosity)


def _load_tfds_splits(name, data_dir, flag, with_test, need_test):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    where = f"{flag}={name}"
    shown_dir = data_dir or "(default ~/tensorflow_datasets)"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"{where}: cannot open the tfds dataset ({_short(e)})") from e
    if not builder.is_prepared():
        try:
            builder.download_and_prepare()
        except Exception as e:  # pylint: disable=broad-except  # Offline: any error, fast.
            raise UserError(
                f"{where}: could not fetch the data (no network?) and no prepared copy in "
                f"--data_dir={shown_dir} ({_short(e)}); point --data_dir at a prepared tfds data "
                f"directory or pass {flag}=/path/to/train.npz (or a folder of class sub-folders)"
            ) from e
    splits = set(builder.info.splits.keys())
    train = _tfds_split(tfds, builder, "train", where)
    test = None
    if not with_test:
        pass
    elif not splits or "test" in splits:  # Splits are unknown under tfds.testing.mock_data.
        test = _tfds_split(tfds, builder, "test", where)
    elif need_test:
        raise UserError(f"{where}: has no test split (splits: {', '.join(sorted(splits))}); "
                        "pass --test_dataset")
    names = None
    try:
        names = tuple(builder.info.features["label"].names)
    except (KeyError, AttributeError):  # No ClassLabel named "label": labels stay unnamed.
        pass
    train.class_names = names
    if test is not None:
        test.class_names = names
    return train, test


def _tfds_split(tfds, builder, split, where):
    # Batches of 8192 rather than tfds' batch_size=-1: the latter needs the split size from the
    # metadata (absent under tfds.testing.mock_data, where it aborts the process).
    try:
        ds = builder.as_dataset(split=split, as_supervised=True)
        parts = list(tfds.as_numpy(ds.batch(8192)))
    except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"{where}: cannot read the {split} split ({_short(e)})") from e
    if not parts:
        raise UserError(f"{where}: the {split} split is empty")
    return _Split(f"{where} ({split} split)", np.concatenate([p[0] for p in parts]),
                  np.concatenate([p[1] for p in parts]))


# === Splits and steps ===


def split_train_val(n, train_portion):
    """The reference's search split: the first floor(portion * n) indices train, the rest validate.

    No shuffle, as the reference's `indices[:split]` / `indices[split:]`.
    """
    if not 0.0 < train_portion < 1.0:
        raise UserError(f"--train_portion={train_portion}: must be strictly between 0 and 1")
    split = int(np.floor(train_portion * n))
    if split < 1 or split >= n:
        raise UserError(f"--train_portion={train_portion}: splits {n} examples into {split} and "
                        f"{n - split}; both parts need at least one")
    indices = np.arange(n)
    return indices[:split], indices[split:]


def steps_per_epoch(n, batch_size, cap=None):
    """Full batches in an epoch of `n` examples, at most `cap` (partial batches are dropped)."""
    if batch_size < 1:
        raise UserError(f"--batch_size={batch_size}: must be at least 1")
    if cap is not None and cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    steps = n // batch_size
    if steps == 0:
        raise UserError(f"--batch_size={batch_size}: larger than the {n} examples of this split, "
                        "so an epoch has no full batch")
    return min(steps, cap) if cap is not None else steps


# === Pipelines ===


def resolve_augment(augment, image_shape, name=None):
    """Turns `augment` into "none", "crop" or "crop_flip".

    "auto" flips only 3-channel images of datasets where a mirror image keeps its class (not
    digits or letters).
    """
    if augment not in AUGMENT_CHOICES:
        raise UserError(f"--augment={augment}: expected one of {', '.join(AUGMENT_CHOICES)}")
    if augment != "auto":
        return augment
    base = (name or "").split(":")[0].split("/")[0].lower()
    if image_shape[-1] == 1 or base in NO_FLIP_DATASETS:
        return "crop"
    return "crop_flip"


def epoch_order(n, seed, epoch):
    """The order of epoch `epoch`: a permutation of range(n) depending only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def augment_params(n, seed, epoch, image_shape):
    """Per-example augmentation draws, int32 (n, 5): crop row/col offset, flip, cutout centre y/x.

    Row i depends only on (seed, epoch, i) (rows are filled in order), and all five are drawn
    whatever the mode, so e.g. adding cutout does not change the crops. Drawn in numpy for the
    whole epoch: a few milliseconds, and bit-stable across TF versions and devices.
    """
    height, width = image_shape[:2]
    draws = np.random.default_rng([seed, epoch, _AUG_STREAM]).random((n, 5))
    return np.floor(draws * [2 * PAD + 1, 2 * PAD + 1, 2, height, width]).astype(np.int32)


def make_train_dataset(x, y, batch_size, seed, epoch, mean, std, augment="auto", cutout_length=0,
                       start_step=0, image_shape=None, name=None):
    """One epoch of global training batches, deterministic and resumable.

    Args:
      x, y: uint8 images (N, H, W, C) and integer labels (N,).
      seed, epoch: the only sources of randomness (order and augmentation); use a different seed
        for each stream that should not mirror another (e.g. search-train and search-val).
      mean, std: per-channel normalisation, (x / 255 - mean) / std.
      augment: "auto", "none", "crop" or "crop_flip" (see `resolve_augment`).
      cutout_length: side of the square zeroed after normalisation (0: no cutout).
      start_step: first batch to yield; batches before it cost nothing.
      image_shape, name: used by `resolve_augment` (default: x.shape[1:], no name).

    Returns:
      A dataset of (float32 (B,H,W,C), int32 (B,)) with B = batch_size, the last partial batch
      dropped.
    """
    image_shape = tuple(image_shape or x.shape[1:])
    if tuple(x.shape[1:]) != image_shape:
        raise ValueError(f"x has images of shape {x.shape[1:]}, expected {image_shape}")
    mode = resolve_augment(augment, image_shape, name)
    steps = steps_per_epoch(len(x), batch_size)
    if not 0 <= start_step <= steps:
        raise ValueError(f"start_step={start_step} is outside an epoch of {steps} steps")
    if cutout_length < 0:
        raise UserError(f"--cutout_length={cutout_length}: must be 0 (off) or positive")
    if seed < 0 or epoch < 0:  # numpy seeds must be non-negative.
        raise UserError(f"--seed={seed}: must be non-negative" if seed < 0 else
                        f"epoch must be non-negative, got {epoch}")
    order = epoch_order(len(x), seed, epoch)[start_step * batch_size : steps * batch_size]
    params = augment_params(len(x), seed, epoch, image_shape)[order]
    images, labels = _host_tensors(x, y)
    # Only index batches are sliced; images are gathered per batch from one host tensor, instead of
    # from_tensor_slices(x[perm]): no per-epoch 150 MB copy, no per-example slicing, and a
    # vectorised augmentation of whole batches.
    ds = tf.data.Dataset.from_tensor_slices(
        (order.reshape(-1, batch_size), params.reshape(-1, batch_size, 5)))
    scale, shift = _normaliser(mean, std, image_shape[-1])

    def batch(idx, p):
        pixels = tf.gather(images, idx)
        if mode != "none":
            flip = p[:, 2] if mode == "crop_flip" else tf.zeros_like(p[:, 2])
            pixels = _crop_flip(pixels, p[:, 0], p[:, 1], flip)
        out = tf.cast(pixels, tf.float32) * scale + shift
        if cutout_length:
            out = _cutout(out, p[:, 3], p[:, 4], cutout_length)
        return out, tf.gather(labels, idx)

    ds = ds.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(x, y, batch_size, mean, std):
    """Normalised (images, labels) batches in the stored order, keeping the last partial batch."""
    if batch_size < 1:
        raise UserError(f"--batch_size={batch_size}: must be at least 1")
    images, labels = _host_tensors(x, y)
    scale, shift = _normaliser(mean, std, x.shape[-1])

    def batch(idx):
        pixels = tf.cast(tf.gather(images, idx), tf.float32)
        return pixels * scale + shift, tf.gather(labels, idx)

    ds = tf.data.Dataset.range(len(x)).batch(batch_size)
    ds = ds.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _host_tensors(x, y):
    with tf.device("/cpu:0"):
        return tf.constant(x, tf.uint8), tf.constant(np.asarray(y, np.int32))


def _normaliser(mean, std, channels):
    """(x/255 - mean)/std as x * scale + shift, in float32."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if mean.shape != (channels,) or std.shape != (channels,):
        raise ValueError(f"mean/std need {channels} values, got {mean.tolist()} / {std.tolist()}")
    return tf.constant(1.0 / (255.0 * std), tf.float32), tf.constant(-mean / std, tf.float32)


def _crop_flip(pixels, dy, dx, flip):
    """Zero-pads by PAD, crops each image back to (H, W) at (dy, dx), then mirrors it if `flip`.

    The flip is folded into the column indices (crop column j reads padded column dx + W-1-j), one
    gather instead of a reverse and a select, which cost more than the crop itself.
    """
    height, width = pixels.shape[1], pixels.shape[2]
    padded = tf.pad(pixels, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]])
    j = tf.range(width)[None, :]
    rows = dy[:, None] + tf.range(height)[None, :]
    cols = dx[:, None] + tf.where(flip[:, None] == 1, width - 1 - j, j)
    return tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)


def _cutout(images, cy, cx, length):
    """Zeroes rows [cy - L//2, cy + L//2) x cols [cx - L//2, cx + L//2), clipped (the reference's).

    Odd lengths give a square of side L - 1, exactly as the reference `Cutout` does.
    """
    half = length // 2
    rows = tf.range(images.shape[1])[None, :]
    cols = tf.range(images.shape[2])[None, :]
    in_rows = (rows >= cy[:, None] - half) & (rows < cy[:, None] + half)
    in_cols = (cols >= cx[:, None] - half) & (cols < cx[:, None] + half)
    mask = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    return tf.where(mask, tf.zeros_like(images), images)
