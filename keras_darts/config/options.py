"""The pieces every config shares: `option` fields, construction from user options, the checks
search and retrain share, and their choices. No TensorFlow."""

import dataclasses
import difflib
import math

from keras_darts.errors import UserError


def option(default, help_text):
    """A config field: its default and the help text its command-line flag shows."""
    return dataclasses.field(default=default, metadata={"help": help_text})


class _Options:
    """Construction from user options (flags that were given, or API keyword arguments)."""

    @classmethod
    def option_names(cls):
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_options(cls, **options):
        """The config for the options a user gave; every other field keeps its default.

        Unknown names are a one-line error with the closest valid name.
        """
        names = cls.option_names()
        for name in options:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UserError(f"unknown option {name!r}{hint}")
        return cls(**options)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ThreadFields:
    """TensorFlow's CPU thread pools, for search and retrain (`distribute.configure_threads`)."""

    intra_op_threads: int = option(None,
        "Threads one op may use (TensorFlow's intra-op pool; 0: its default, one per core). "
        "Default: 1 on machines without a GPU, where the search's thousands of small ops run "
        "faster side by side than each split across the cores; TensorFlow's default with a GPU.")
    inter_op_threads: int = option(0,
        "Ops run side by side (TensorFlow's inter-op pool; 0: its default, one per core).")


AUGMENT_CHOICES = ("auto", "none", "crop", "crop_flip", "imagenet")
LR_SCHEDULES = ("cosine", "step")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
VARIANT_NAMES = ("cifar", "imagenet")
MIXED_PRECISION = ("none", "bfloat16", "float16")


def _shared_checks(c):
    """(ok, flag, value, what) for the flags search and retrain share."""
    return [
        (c.layers >= 3, "--layers", c.layers, "must be >= 3 (two reduction cells)"),
        (c.init_channels >= 2 and c.init_channels % 2 == 0, "--init_channels", c.init_channels,
         "must be an even number >= 2"),
        (c.batch_size > 0, "--batch_size", c.batch_size, "must be > 0"),
        (c.epochs > 0, "--epochs", c.epochs, "must be > 0"),
        (c.learning_rate > 0 and math.isfinite(c.learning_rate), "--learning_rate",
         c.learning_rate, "must be a finite number > 0"),
        (0 <= c.learning_rate_min <= c.learning_rate, "--learning_rate_min",
         c.learning_rate_min, "must be in [0, --learning_rate]"),
        (0 <= c.momentum < 1, "--momentum", c.momentum, "must be in [0, 1)"),
        (c.weight_decay >= 0, "--weight_decay", c.weight_decay, "must be >= 0"),
        (c.grad_clip >= 0, "--grad_clip", c.grad_clip, "must be >= 0 (0: no clipping)"),
        (c.steps_per_epoch is None or c.steps_per_epoch > 0, "--steps_per_epoch",
         c.steps_per_epoch, "must be > 0"),
        (c.seed >= 0, "--seed", c.seed, "must be >= 0"),
        (c.cpu_devices >= 1, "--cpu_devices", c.cpu_devices, "must be >= 1"),
        (c.intra_op_threads is None or c.intra_op_threads >= 0, "--intra_op_threads",
         c.intra_op_threads, "must be >= 0 (0: TensorFlow's default)"),
        (c.inter_op_threads >= 0, "--inter_op_threads", c.inter_op_threads,
         "must be >= 0 (0: TensorFlow's default)"),
        (c.checkpoint_every >= 0, "--checkpoint_every", c.checkpoint_every, "must be >= 0"),
        (c.augment in AUGMENT_CHOICES, "--augment", c.augment,
         f"must be one of {', '.join(AUGMENT_CHOICES)}"),
        (c.strategy in STRATEGIES, "--strategy", c.strategy,
         f"must be one of {', '.join(STRATEGIES)}"),
        (c.mixed_precision in MIXED_PRECISION, "--mixed_precision", c.mixed_precision,
         f"must be one of {', '.join(MIXED_PRECISION)}"),
        # XLA ignores the control dependency that delays the recomputation (and may merge it with
        # the forward pass); synchronised BN would all-reduce again in the backward pass. Neither
        # combination is tested, so both are refused.
        (not (c.recompute and c.jit_compile), "--recompute", c.recompute,
         "cannot be combined with --jit_compile (XLA rematerialises on its own)"),
        (not (c.recompute and c.sync_bn), "--recompute", c.recompute,
         "cannot be combined with --sync_bn"),
    ]


def _raise_first(checks):
    for ok, flag, value, what in checks:
        if not ok:
            raise UserError(f"{flag}={value}: {what}")
