"""Run configurations: frozen dataclasses with the reference's defaults, validated up front.

No TensorFlow import here, so a bad flag is reported in a fraction of a second and before anything
is written.
"""

import dataclasses
import math

from keras_darts.errors import UserError

AUGMENT_CHOICES = ("auto", "none", "crop", "crop_flip")
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
        (c.checkpoint_every >= 0, "--checkpoint_every", c.checkpoint_every, "must be >= 0"),
        (c.augment in AUGMENT_CHOICES, "--augment", c.augment,
         f"must be one of {', '.join(AUGMENT_CHOICES)}"),
        (c.strategy in STRATEGIES, "--strategy", c.strategy,
         f"must be one of {', '.join(STRATEGIES)}"),
        (c.mixed_precision in MIXED_PRECISION, "--mixed_precision", c.mixed_precision,
         f"must be one of {', '.join(MIXED_PRECISION)}"),
    ]


def _raise_first(checks):
    for ok, flag, value, what in checks:
        if not ok:
            raise UserError(f"{flag}={value}: {what}")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Search hyperparameters; the defaults are the reference's (`train_search.py`)."""

    dataset: str = "cifar10"
    data_dir: str = None
    output_dir: str = None
    layers: int = 8
    init_channels: int = 16
    nodes: int = 4
    batch_size: int = 64
    epochs: int = 50
    learning_rate: float = 0.025
    learning_rate_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    arch_learning_rate: float = 3e-4
    arch_weight_decay: float = 1e-3
    grad_clip: float = 5.0
    train_portion: float = 0.5
    unrolled: bool = False
    seed: int = 2
    steps_per_epoch: int = None
    augment: str = "auto"
    strategy: str = "auto"
    cpu_devices: int = 1
    sync_bn: bool = False
    mixed_precision: str = "none"
    jit_compile: bool = False
    deterministic: bool = False
    checkpoint_every: int = 0

    def validate(self):
        _raise_first(_shared_checks(self) + [
            (self.nodes >= 1, "--nodes", self.nodes, "must be >= 1"),
            (0.0 < self.train_portion < 1.0, "--train_portion", self.train_portion,
             "must be in (0, 1)"),
            (self.arch_learning_rate > 0 and math.isfinite(self.arch_learning_rate),
             "--arch_learning_rate", self.arch_learning_rate, "must be a finite number > 0"),
            (self.arch_weight_decay >= 0, "--arch_weight_decay", self.arch_weight_decay,
             "must be >= 0"),
        ])

    def to_dict(self):
        return dataclasses.asdict(self)


# Changing these between runs in one output dir does not change what a resumed run computes.
SEARCH_RESUME_NEUTRAL = ("output_dir", "data_dir", "checkpoint_every", "cpu_devices", "strategy")


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """Retrain hyperparameters; the defaults are the reference's CIFAR setting (`train.py`, run
    with `--auxiliary --cutout` as the paper's results were)."""

    genotype: str = "DARTS_V2"
    dataset: str = "cifar10"
    data_dir: str = None
    test_dataset: str = None
    output_dir: str = None
    variant: str = "cifar"
    layers: int = 20
    init_channels: int = 36
    batch_size: int = 96
    epochs: int = 600
    learning_rate: float = 0.025
    learning_rate_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    cutout: bool = True
    cutout_length: int = 16
    drop_path_prob: float = 0.2
    augment: str = "auto"
    seed: int = 0
    steps_per_epoch: int = None
    eval_steps: int = None
    strategy: str = "auto"
    cpu_devices: int = 1
    sync_bn: bool = False
    mixed_precision: str = "none"
    jit_compile: bool = False
    deterministic: bool = False
    checkpoint_every: int = 0
    export_dir: str = None
    model_name: str = "darts"
    version: int = None
    overwrite: bool = False

    def validate(self):
        _raise_first([
            (self.variant in VARIANT_NAMES, "--variant", self.variant,
             f"must be one of {', '.join(VARIANT_NAMES)}"),
        ] + _shared_checks(self) + [
            (self.auxiliary_weight >= 0, "--auxiliary_weight", self.auxiliary_weight,
             "must be >= 0"),
            (self.cutout_length > 0, "--cutout_length", self.cutout_length, "must be > 0"),
            (0 <= self.drop_path_prob < 1, "--drop_path_prob", self.drop_path_prob,
             "must be in [0, 1)"),
            (self.eval_steps is None or self.eval_steps > 0, "--eval_steps", self.eval_steps,
             "must be > 0"),
            (self.version is None or self.version >= 1, "--version", self.version,
             "must be a positive integer"),
            (bool(self.model_name) and "/" not in self.model_name and self.model_name[0] != ".",
             "--model_name", self.model_name, "must be a plain folder name"),
        ])

    def to_dict(self):
        return dataclasses.asdict(self)


RETRAIN_RESUME_NEUTRAL = ("output_dir", "data_dir", "checkpoint_every", "cpu_devices", "strategy",
                  "export_dir", "model_name", "version", "overwrite", "eval_steps")
