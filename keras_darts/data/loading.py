"""`load_image_data`: a dataset named by a flag -> ImageData (in memory or streamed).

Sources: a tfds name (streamed with tfds' as_dataset), a .npz file or a folder holding train.npz
[and test.npz] (in memory), a folder of class folders of images, either inside train/ [and test/]
or directly (streamed: only the file list is held), TFRecord files (a file, a glob, or a folder of
train*/test* files; streamed). `--cache` reads a streamed source into memory once.
"""

import dataclasses
import os

import numpy as np

from keras_darts.data import folders as folders_lib
from keras_darts.data import npz as npz_lib
from keras_darts.data import records as records_lib
from keras_darts.data import stats as stats_lib
from keras_darts.data import tfds_source
from keras_darts.data.examples import ArrayExamples, ImageData
from keras_darts.data.npz import Split, check_xy, shape_str
from keras_darts.data.spec import Spec
from keras_darts.errors import UserError


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """How to read images; field names are the flags' (defaults: today's behaviour)."""

    image_size: tuple = None  # (H, W); None: every image must have the first image's size.
    channels: int = None  # 1 or 3; None: the data's (arrays) or the first image's.
    cache: bool = False
    skip_corrupt: bool = False
    image_feature: str = "image/encoded"
    label_feature: str = "image/class/label"
    stats_sample: int = 10_000
    mean: tuple = None
    std: tuple = None

    @classmethod
    def from_config(cls, config):
        """The options of a SearchConfig/RetrainConfig (fields it lacks keep their defaults)."""
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)
                  if getattr(config, f.name, None) is not None}
        for key in ("image_size", "mean", "std"):
            if key in values:
                values[key] = parse_numbers(values[key], key)
        if "image_size" in values:
            values["image_size"] = tuple(int(v) for v in values["image_size"])
            if len(values["image_size"]) == 1:
                values["image_size"] *= 2
        return cls(**values)


def parse_numbers(value, flag):
    """"32" / "32,24" / (32, 24) -> a tuple of floats; a one-line UserError otherwise."""
    if isinstance(value, (int, float)):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    try:
        return tuple(float(v) for v in str(value).split(","))
    except ValueError:
        raise UserError(f"--{flag}={value}: expected numbers separated by commas") from None


def load_image_data(dataset, data_dir=None, test_dataset=None, need_test=False, flag="--dataset",
                    options=None):
    """Loads (or opens, for streamed sources) a dataset named by a flag.

    Raises:
      UserError: one line naming the flag or file and what is wrong with it.
    """
    options = options or DataOptions()
    path = os.path.expanduser(dataset)
    where = f"{flag}={dataset}"
    if os.path.exists(path) or "*" in path:
        name = path
        train, test = _sources_for_path(path, where, not test_dataset, options)
    elif path.endswith(".npz") or os.sep in path or path.startswith((".", "~")):
        raise UserError(f"{where}: no such file or directory")
    elif tfds_source.is_tfds_name(dataset):
        name = dataset
        train, test = tfds_source.load_tfds(dataset, data_dir, flag, not test_dataset, need_test)
    else:
        raise UserError(f"{where}: unknown dataset: not a tfds name nor an existing path"
                        f"{tfds_source.suggestion(dataset)}")
    if test_dataset:
        test_path = os.path.expanduser(test_dataset)
        test_where = f"--test_dataset={test_dataset}"
        if not os.path.exists(test_path) and "*" not in test_path:
            raise UserError(f"{test_where}: no such file or directory")
        test = _test_source(test_path, test_where, options, train.class_names)
    if test is None and need_test:
        raise UserError(f"{where}: no test split found (expected test.npz next to "
                        "train.npz or a test/ folder); pass --test_dataset")
    return _assemble(name, train, test, where, options)


def _sources_for_path(path, where, with_test, options):
    if os.path.isfile(path) and not records_lib.is_tfrecord(path) or (
            os.path.isdir(path) and os.path.isfile(os.path.join(path, "train.npz"))):
        file = path if os.path.isfile(path) else os.path.join(path, "train.npz")
        sibling = os.path.join(os.path.dirname(file), "test.npz")
        has_test = os.path.basename(file) == "train.npz" and os.path.isfile(sibling) and with_test
        return npz_lib.npz_split(file, where), npz_lib.npz_split(sibling, where) if has_test else None
    if os.path.isfile(path) or "*" in path:
        return _tfrecord_split(records_lib.tfrecord_files(path), where, options), None
    if not os.path.isdir(path):
        raise UserError(f"{where}: neither a file nor a directory")
    if records_lib.tfrecord_files(path, "train"):
        train = _tfrecord_split(records_lib.tfrecord_files(path, "train"), where, options)
        test_files = records_lib.tfrecord_files(path, "test") if with_test else []
        return train, _tfrecord_split(test_files, where, options) if test_files else None
    train_dir, test_dir = os.path.join(path, "train"), os.path.join(path, "test")
    if not os.path.isdir(test_dir) and os.path.isdir(os.path.join(path, "val")):
        test_dir = os.path.join(path, "val")  # ImageNet's layout: train/ and val/.
    if os.path.isdir(train_dir):
        train = _folder_split(train_dir, where, options)
        has_test = os.path.isdir(test_dir) and with_test
        return train, _folder_split(test_dir, where, options, train) if has_test else None
    return _folder_split(path, where, options), None


def _test_source(path, where, options, train_classes):
    if records_lib.is_tfrecord(path) or "*" in path:
        return _tfrecord_split(records_lib.tfrecord_files(path), where, options)
    if os.path.isfile(path):
        return npz_lib.npz_split(path, where)
    if os.path.isfile(os.path.join(path, "test.npz")):
        return npz_lib.npz_split(os.path.join(path, "test.npz"), where)
    if records_lib.tfrecord_files(path, "test"):
        return _tfrecord_split(records_lib.tfrecord_files(path, "test"), where, options)
    if os.path.isdir(os.path.join(path, "test")):
        path = os.path.join(path, "test")
    return _folder_split(path, where, options, Split(where, class_names=train_classes))


def _folder_split(root, where, options, train=None):
    classes = train.class_names if train is not None else None
    examples, names, skipped = folders_lib.list_folders(root, where, options.skip_corrupt, classes)
    return Split(where, examples=examples, class_names=names, skipped=skipped)


def _tfrecord_split(files, where, options):
    if not files:
        raise UserError(f"{where}: no TFRecord files found ({', '.join(records_lib.TFRECORD_SUFFIXES)})")
    examples, skipped = records_lib.tfrecord_examples(
        files, where, options.image_feature, options.label_feature, options.skip_corrupt)
    return Split(where, examples=examples, skipped=skipped)


def _assemble(name, train, test, where, options):
    streamed = train.examples is not None
    splits = [s for s in (train, test) if s is not None]
    for s in splits:
        if s.examples is None:
            x, y = check_xy(s.x, s.y, s.where)
            s.examples = ArrayExamples(_convert(x, options.channels), y)
        elif not len(s.examples):
            raise UserError(f"{s.where}: holds no images")
    shape, resize = _shape(train, where, options)
    if test is not None and not resize and test.examples.random_access and \
            isinstance(test.examples, ArrayExamples) and test.examples.x.shape[1:] != shape:
        raise UserError(f"{test.where}: test images are {shape_str(test.examples.x.shape[1:])} but "
                        f"train images are {shape_str(shape)}; pass --image_size to resize them")
    class_names = train.class_names or (test.class_names if test is not None else None)
    _check_labels(train, test, class_names)
    spec = Spec(shape, (0.0,) * shape[-1], (1.0,) * shape[-1], resize=resize, where=where)
    if options.cache and streamed:
        for s in splits:
            s.examples = _read_into_memory(s.examples, spec)
        resize = False
    skipped = sum(len(s.skipped) for s in splits)
    if skipped:
        print(f"warning: skipped {skipped} unreadable image(s) (--skip_corrupt), e.g. "
              f"{(train.skipped + (test.skipped if test else []))[0]}", flush=True)
    stats = _stats(train.examples, spec, options)
    data = ImageData(name, class_names=tuple(class_names) if class_names else None,
                     train=train.examples, test=test.examples if test is not None else None,
                     shape=shape, stats=stats, resize=resize,
                     info={"skipped_corrupt": skipped, "streamed": not isinstance(
                         train.examples, ArrayExamples)})
    if data.num_classes < 2 or len(np.unique(data.y_train)) < 2:
        raise UserError(f"{where}: a dataset with a single class (all train labels are "
                        f"{int(data.y_train[0])}); classification needs at least 2")
    return data


def _convert(x, channels):
    """Arrays to `channels` (ITU-R 601 luma for colour -> gray, as decode.convert_channels)."""
    if channels is None or channels == x.shape[-1]:
        return x
    if channels == 3:
        return np.repeat(x[..., :1], 3, axis=-1)
    luma = x[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.round(luma).astype(np.uint8)[..., None]


def _shape(train, where, options):
    """(H, W, C) the pipelines deliver, and whether images are resized to it."""
    examples = train.examples
    if isinstance(examples, ArrayExamples):
        h, w, c = examples.x.shape[1:]
    elif examples.random_access:
        h, w, c = folders_lib.first_image(examples.paths[0])
    else:
        h, w, c = records_lib.first_record_image(examples)
    channels = options.channels or c
    if options.image_size:
        return (*options.image_size, channels), True
    return (int(h), int(w), int(channels)), False


def _check_labels(train, test, class_names):
    present = set(np.unique(train.examples.y).tolist())
    for s in (train, test):
        if s is None:
            continue
        y = s.examples.y
        if class_names and len(y) and y.max() >= len(class_names):
            raise UserError(f"{s.where}: label {int(y.max())} but only "
                            f"{len(class_names)} class names")
    if test is not None:
        missing = sorted(set(np.unique(test.examples.y).tolist()) - present)
        if missing:
            label = missing[0]
            named = f" ({class_names[label]})" if class_names and label < len(class_names) else ""
            raise UserError(f"{test.where}: class {label}{named} is in the test split but not in "
                            "the training split")


def _read_into_memory(examples, spec):
    from keras_darts.data import pipeline  # pylint: disable=import-outside-toplevel

    ds, diagnose = pipeline.eval_batches(examples, spec, 256, normalise=False)
    x = np.concatenate([b[0].numpy() for b in pipeline.guard(ds, spec, diagnose)])
    return ArrayExamples(x.astype(np.uint8), examples.y)


def _stats(examples, spec, options):
    if options.mean is not None and options.std is not None:
        return tuple(options.mean), tuple(options.std)
    if isinstance(examples, ArrayExamples) and not spec.resize:
        stats = stats_lib.channel_stats(examples.x)  # In memory: all images, as before.
    else:
        from keras_darts.data import pipeline  # pylint: disable=import-outside-toplevel

        sample = examples.subset(stats_lib.sample_indices(len(examples), options.stats_sample))
        # Small batches summed in float64 in the pipeline, one at a time: a batch of 224 px images
        # is 4.8 MB a picture as float64 (sums of integer pixels are exact in float64).
        ds, diagnose = pipeline.eval_batches(sample, spec, 16, normalise=False)
        ds = ds.map(lambda x, y: stats_lib.batch_sums(x))
        stats = stats_lib.sums_stats(pipeline.guard(ds, spec, diagnose), spec.shape[-1])
    return (tuple(options.mean) if options.mean is not None else stats[0],
            tuple(options.std) if options.std is not None else stats[1])
