"""The data options search and retrain share (issue 10), as config fields with their help text.

No TensorFlow here (config.py, and through it the bin/ flags, import this).
"""

import dataclasses
import math

from keras_darts.errors import UserError


def option(default, help_text):
    """A config field: its default and the help text its command-line flag shows."""
    return dataclasses.field(default=default, metadata={"help": help_text})


def _numbers(value, flag, kind=float):
    """"16" / "16,12" -> (16, 12); None stays None; a one-line UserError for anything else."""
    if value is None:
        return None
    try:
        return tuple(kind(v) for v in str(value).split(","))
    except ValueError:
        raise UserError(f"{flag}={value}: expected numbers separated by commas") from None


@dataclasses.dataclass(frozen=True)
class DataFields:
    """How search and retrain read images (issue 10); defaults keep the in-memory CIFAR path."""

    image_size: str = option(None,
        "H[,W]: resize images of any size to it (train: shorter side, then random crop; eval: "
        "shorter side, then centre crop). Default: the first image's size, which every image "
        "must have.")
    channels: int = option(None,
        "1 or 3: convert grayscale/colour images to this many channels. Default: the data's "
        "(for files: the first image's).")
    eval_resize: int = option(None,
        "Evaluation resizes the shorter side to this, then centre-crops --image_size (ImageNet: "
        "256 for 224). Default: just covering --image_size.")
    cache: bool = option(False,
        "Read streamed data (folders, TFRecord, tfds) into memory once (small data; images "
        "resized and centre-cropped to --image_size). .npz data is always in memory.")
    skip_corrupt: bool = option(False,
        "Skip (and count) images that cannot be decoded instead of stopping; decodes every image "
        "once at start.")
    image_feature: str = option("image/encoded",
        "TFRecord: the tf.train.Example bytes feature holding the encoded image.")
    label_feature: str = option("image/class/label",
        "TFRecord: the tf.train.Example int64 feature holding the label (0-based).")
    stats_sample: int = option(10_000,
        "Streamed data: mean/std come from this many training images, spread evenly over the "
        "file list (in-memory data: from all of them).")
    mean: str = option(None, "Normalisation mean per channel in [0, 1], comma-separated "
                       "(default: computed from the training images).")
    std: str = option(None, "Normalisation std per channel in [0, 1], comma-separated "
                      "(default: computed from the training images).")

    def data_checks(self):
        size = _numbers(self.image_size, "--image_size", int)
        mean, std = _numbers(self.mean, "--mean"), _numbers(self.std, "--std")
        return [
            (size is None or (len(size) in (1, 2) and min(size) > 0), "--image_size",
             self.image_size, "must be H or H,W with positive integers"),
            (self.channels in (None, 1, 3), "--channels", self.channels, "must be 1 or 3"),
            (self.eval_resize is None or self.eval_resize > 0, "--eval_resize", self.eval_resize,
             "must be > 0"),
            (self.stats_sample > 0, "--stats_sample", self.stats_sample, "must be > 0"),
            (mean is None or all(map(math.isfinite, mean)), "--mean", self.mean,
             "must be finite numbers"),
            (std is None or all(v > 0 and math.isfinite(v) for v in std), "--std", self.std,
             "must be positive numbers"),
            ((mean is None) == (std is None), "--mean" if std is None else "--std",
             self.mean if std is None else self.std, "needs --std and --mean together"),
            (bool(self.image_feature), "--image_feature", self.image_feature, "must be a name"),
            (bool(self.label_feature), "--label_feature", self.label_feature, "must be a name"),
        ]
