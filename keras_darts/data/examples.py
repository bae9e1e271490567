"""What a loaded dataset is: labelled examples that live in memory, in files, or in a record stream.

Only labels (and, for files, the file list) are ever held for a streamed source; pixels are read
by the tf.data pipelines (pipeline.py).
"""

import dataclasses
import functools

import numpy as np

from keras_darts.data.stats import channel_stats


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayExamples:
    """uint8 images (N, H, W, C) in host memory and int64 labels (N,)."""

    x: np.ndarray
    y: np.ndarray
    random_access = True

    def __len__(self):
        return len(self.y)

    def subset(self, indices):
        return ArrayExamples(self.x[indices], self.y[indices])


@dataclasses.dataclass(frozen=True, eq=False)
class FileExamples:
    """Image files (paths, decoded while streaming) and int64 labels."""

    paths: np.ndarray  # str array
    y: np.ndarray
    random_access = True

    def __len__(self):
        return len(self.y)

    def subset(self, indices):
        return FileExamples(self.paths[indices], self.y[indices])


@dataclasses.dataclass(frozen=True, eq=False)
class RecordExamples:
    """A sequential source (TFRecord files, a tfds split) and the records of it selected.

    `reader()` returns a tf.data.Dataset of (key int64, payload, label int64) in one fixed order,
    key = the record's position; payload is encoded image bytes (`encoded`) or a uint8 image.
    `describe(key)` names a record in error messages.
    """

    reader: object
    keys: np.ndarray  # Sorted positions of the selected records.
    y: np.ndarray  # Their labels.
    encoded: bool
    describe: object
    random_access = False

    def __len__(self):
        return len(self.y)

    def subset(self, indices):
        return dataclasses.replace(self, keys=self.keys[indices], y=self.y[indices])


@dataclasses.dataclass(frozen=True, eq=False)
class ImageData:
    """A labelled image dataset: train and test examples, classes, the pipeline's image shape.

    Built from arrays (`ImageData(name, x_train, y_train, x_test, y_test, class_names)`, held in
    memory) or from examples (`train=`, `test=`: files or records, streamed).

    Attributes:
      name: the tfds name or the path it was loaded from.
      x_train, x_test: uint8 arrays (N, H, W, C) for in-memory data, else None.
      y_train, y_test: int64 labels (N,); `y_test` None when there is no test split.
      class_names: tuple of names indexed by label, or None when the source has none.
      train, test: the examples (ArrayExamples, FileExamples or RecordExamples).
      shape: (H, W, C) the pipelines deliver (default: the arrays' image shape).
      stats: ((mean...), (std...)) in [0, 1] scale; default: computed over all of x_train.
      resize: images are resized and cropped to `shape` (--image_size), not all of one size.
      info: facts recorded in config.json (e.g. "skipped_corrupt").
    """

    name: str
    x_train: np.ndarray = None
    y_train: np.ndarray = None
    x_test: np.ndarray = None
    y_test: np.ndarray = None
    class_names: tuple = None
    train: object = None
    test: object = None
    shape: tuple = None
    stats: tuple = None
    resize: bool = False
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)
        if self.train is None:
            set_("train", ArrayExamples(self.x_train, self.y_train))
        if self.test is None and self.x_test is not None:
            set_("test", ArrayExamples(self.x_test, self.y_test))
        for split in ("train", "test"):
            examples = getattr(self, split)
            if isinstance(examples, ArrayExamples):
                set_(f"x_{split}", examples.x)
            if examples is not None:
                set_(f"y_{split}", examples.y)
        if self.shape is None:
            set_("shape", tuple(int(d) for d in self.train.x.shape[1:]))

    @functools.cached_property
    def num_classes(self):
        if self.class_names:
            return len(self.class_names)
        labels = [self.y_train] + ([self.y_test] if self.y_test is not None else [])
        return int(max(int(y.max()) for y in labels if len(y))) + 1

    @property
    def image_shape(self):
        return tuple(int(d) for d in self.shape)

    @property
    def in_memory(self):
        return isinstance(self.train, ArrayExamples)

    @functools.cached_property
    def _stats(self):
        return self.stats if self.stats is not None else channel_stats(self.x_train)

    @property
    def mean(self):
        """Per-channel mean in [0, 1]: what `Normalize` subtracts."""
        return tuple(float(m) for m in self._stats[0])

    @property
    def std(self):
        """Per-channel (population) std in [0, 1]."""
        return tuple(float(s) for s in self._stats[1])


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
