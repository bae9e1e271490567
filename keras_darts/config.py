"""Run configurations: frozen dataclasses with the reference's defaults, validated up front.

These dataclasses are the one definition of every option: the `bin/` tools generate their absl
flags from the fields (`keras_darts.flags`), and the Python API takes the same names as keyword
arguments. A field's help text lives in its metadata (`option`).

No TensorFlow import here, so a bad flag is reported in a fraction of a second and before anything
is written.
"""

import dataclasses
import difflib
import math

from keras_darts.cost.checks import cost_checks
from keras_darts.data_config import DataFields
from keras_darts.errors import UserError
from keras_darts.search_options import RobustOptions, robust_checks


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

EXPORT_FORMATS = ("saved_model", "tflite", "tflite_int8", "keras")


def parse_formats(spec, flag="--format"):
    """"saved_model,tflite" -> ("saved_model", "tflite"); one-line UserError for a bad name."""
    if isinstance(spec, (list, tuple)):
        spec = ",".join(spec)
    names = [n.strip() for n in str(spec).split(",")] if spec is not None else []
    for name in names:
        if name not in EXPORT_FORMATS:
            raise UserError(f"{flag}={spec}: unknown format {name!r}; must be one of "
                            f"{', '.join(EXPORT_FORMATS)} (or several, comma-separated)")
    if not names or len(set(names)) != len(names):
        raise UserError(f"{flag}={spec}: name each format once, e.g. --format=saved_model,tflite")
    return tuple(names)


def _export_checks(c):
    parse_formats(c.format)  # its own message names the bad format
    return [(c.calibration_images >= 1, "--calibration_images", c.calibration_images,
             "must be >= 1")]


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


@dataclasses.dataclass(frozen=True)
class SearchConfig(RobustOptions, DataFields, _Options):
    """Search hyperparameters; the defaults are the reference's (`train_search.py`)."""

    dataset: str = option("cifar10",
        "tfds name, .npz file, directory with train.npz/test.npz, or a directory of class "
        "sub-folders of images.")
    data_dir: str = option(None, "tensorflow_datasets data directory.")
    output_dir: str = option(None,
        "Where config, history, genotype, checkpoints and TensorBoard logs go. Rerun with the same"
        " dir to resume.")
    layers: int = option(8, "Number of cells in the supernet.")
    init_channels: int = option(16, "Channels of the first cells.")
    nodes: int = option(4, "Intermediate nodes per cell.")
    batch_size: int = option(64, "Global batch size (over all replicas).")
    epochs: int = option(50, "Search epochs.")
    learning_rate: float = option(0.025, "Initial weight learning rate (cosine decay).")
    learning_rate_min: float = option(0.001, "Final weight learning rate.")
    momentum: float = option(0.9, "Weight SGD momentum.")
    weight_decay: float = option(3e-4, "Weight L2 decay (added to the gradient).")
    arch_learning_rate: float = option(3e-4, "Adam learning rate for the alphas.")
    arch_weight_decay: float = option(1e-3, "Alpha L2 decay (added to the gradient).")
    grad_clip: float = option(5.0, "Global-norm clip of the weight gradient (0: off).")
    train_portion: float = option(0.5,
        "Share of the training split used for weights; the rest trains the alphas.")
    unrolled: bool = option(False, "Second-order (unrolled) architecture gradient.")
    seed: int = option(2, "Random seed.")
    steps_per_epoch: int = option(None, "Cap on steps per epoch (quick runs).")
    augment: str = option("auto", "auto, none, crop, crop_flip or imagenet.")
    strategy: str = option("auto", "auto, one_device, mirrored or multi_worker.")
    cpu_devices: int = option(1,
        "Split the CPU into this many logical devices (lets --strategy=mirrored run several "
        "replicas without GPUs).")
    sync_bn: bool = option(False, "Synchronise BatchNorm statistics across replicas.")
    mixed_precision: str = option("none", "none, bfloat16 or float16.")
    jit_compile: bool = option(False, "XLA-compile the forward/backward passes.")
    recompute: bool = option(False,
        "Recompute each cell's activations in the backward pass instead of keeping them: less "
        "memory, more time, the same gradients (to float round-off).")
    deterministic: bool = option(False, "TF op determinism (bit-identical reruns).")
    checkpoint_every: int = option(0,
        "Also checkpoint every N steps within an epoch (0: at epoch ends only).")
    cost_penalty: float = option(0.0, "lambda: add lambda * E[cost] / cost(all sep_conv_5x5) of "
        "the supernet's cells to the architecture loss (FBNet/ProxylessNAS; 0: off).")
    cost: str = option("macs", "What --cost_penalty penalises: params, macs or latency.")
    latency_table: str = option(None, "JSON of ms per (op, channels, size, stride) for "
        "--cost=latency (benchmarks/latency_ops.py); default: measured at the start.")
    max_params: int = option(None, "Budget: the strongest genotype reachable by weaker ops on the "
        "kept edges whose derived network (--derived_*) has at most this many parameters.")
    max_macs: int = option(None, "Budget: likewise, at most this many multiply-adds per image.")
    derived_layers: int = option(20, "Cells of the network that budgets and cost reports mean.")
    derived_channels: int = option(36, "Initial channels of that derived network.")
    derived_variant: str = option("cifar", "cifar or imagenet: that derived network's stem.")
    derived_image_size: int = option(None, "Its input size (default: the search data's).")
    latency: bool = option(False, "Also measure the derived network's latency at the end.")
    def validate(self):
        _raise_first(_shared_checks(self) + self.data_checks()
                     + cost_checks(self, VARIANT_NAMES) + [
            (self.nodes >= 1, "--nodes", self.nodes, "must be >= 1"),
            (0.0 < self.train_portion < 1.0, "--train_portion", self.train_portion,
             "must be in (0, 1)"),
            (self.arch_learning_rate > 0 and math.isfinite(self.arch_learning_rate),
             "--arch_learning_rate", self.arch_learning_rate, "must be a finite number > 0"),
            (self.arch_weight_decay >= 0, "--arch_weight_decay", self.arch_weight_decay,
             "must be >= 0"),
        ] + robust_checks(self))
        self.early_stop_rule()



# Changing these between runs in one output dir does not change what a resumed run computes.
SEARCH_RESUME_NEUTRAL = ("output_dir", "data_dir", "checkpoint_every", "cpu_devices", "strategy",
                         "recompute", "latency", "selection", "selection_finetune_epochs")


@dataclasses.dataclass(frozen=True)
class RetrainConfig(DataFields, _Options):
    """Retrain hyperparameters; the defaults are the reference's CIFAR setting (`train.py`, run
    with `--auxiliary --cutout` as the paper's results were)."""

    genotype: str = option("DARTS_V2",
        "A published genotype (DARTS_V1, DARTS_V2) or a genotype.json written by bin/search (or "
        "its output dir).")
    dataset: str = option("cifar10",
        "tfds name, .npz file, directory with train.npz/test.npz, or a directory of class "
        "sub-folders (with train/ and test/).")
    data_dir: str = option(None, "tensorflow_datasets data directory.")
    test_dataset: str = option(None,
        "Test data (npz or folder) when it is not beside the training data.")
    output_dir: str = option(None,
        "Where config, metrics, checkpoints and TensorBoard logs go. Rerun with the same dir to "
        "resume.")
    variant: str = option("cifar",
        "cifar or imagenet: the network (imagenet: 2 stride-2 stems) and the recipe of the "
        "reference's train.py / train_imagenet.py for every option left unset.")
    layers: int = option(None, "Number of cells (default: 20 cifar / 14 imagenet).")
    init_channels: int = option(None, "Channels of the first cells (default: 36 / 48).")
    batch_size: int = option(None, "Global batch size over all replicas (default: 96 / 128).")
    epochs: int = option(None, "Training epochs (default: 600 / 250).")
    learning_rate: float = option(None, "Initial learning rate (default: 0.025 / 0.1).")
    lr_schedule: str = option(None,
        "cosine (per-epoch cosine annealing to --learning_rate_min) or step (x --lr_gamma every "
        "--lr_decay_period epochs) (default: cosine / step).")
    lr_gamma: float = option(0.97, "Step schedule: factor per decay period.")
    lr_decay_period: int = option(1, "Step schedule: epochs per decay.")
    learning_rate_min: float = option(0.0, "Final learning rate (cosine schedule).")
    momentum: float = option(0.9, "SGD momentum.")
    weight_decay: float = option(None, "L2 weight decay, added to the gradient (default: 3e-4 / "
                                 "3e-5).")
    label_smoothing: float = option(None, "Label smoothing of the training loss (default: 0 / "
                                    "0.1).")
    grad_clip: float = option(5.0, "Global-norm gradient clip (0: off).")
    auxiliary: bool = option(True, "Auxiliary head loss (training only).")
    auxiliary_weight: float = option(0.4, "Weight of the auxiliary loss.")
    cutout: bool = option(None, "Cutout augmentation (default: on / off).")
    cutout_length: int = option(16, "Cutout square side.")
    drop_path_prob: float = option(None, "Final drop-path probability, linear ramp (default: "
                                   "0.2 / 0).")
    augment: str = option(None,
        "auto, none, crop, crop_flip or imagenet (RandomResizedCrop + flip + colour jitter) "
        "(default: auto / imagenet).")
    seed: int = option(0, "Random seed.")
    steps_per_epoch: int = option(None, "Cap on steps per epoch (quick runs).")
    eval_steps: int = option(None, "Cap on test batches per evaluation (quick runs).")
    strategy: str = option("auto", "auto, one_device, mirrored or multi_worker.")
    cpu_devices: int = option(1, "Split the CPU into this many logical devices.")
    sync_bn: bool = option(False, "Synchronise BatchNorm statistics across replicas.")
    mixed_precision: str = option("none", "none, bfloat16 or float16.")
    jit_compile: bool = option(False, "XLA-compile the forward/backward pass.")
    recompute: bool = option(False,
        "Recompute each cell's activations in the backward pass instead of keeping them: less "
        "memory, more time, the same gradients (to float round-off).")
    deterministic: bool = option(False, "TF op determinism (bit-identical reruns).")
    checkpoint_every: int = option(0, "Also checkpoint every N steps within an epoch.")
    export_dir: str = option(None,
        "Export a SavedModel to EXPORT_DIR/MODEL_NAME/VERSION/ at the end.")
    model_name: str = option("darts", "Model folder name (TF Serving's MODEL_NAME).")
    version: int = option(None, "Export version; default: 1 + the largest existing one.")
    overwrite: bool = option(False, "Replace an existing export version.")
    format: str = option("saved_model",
        "Export format(s) with --export_dir: saved_model, tflite (LiteRT float32), tflite_int8 "
        "(LiteRT full-integer) or keras; several comma-separated.")
    calibration_images: int = option(500,
        "Training images that calibrate the tflite_int8 ranges.")
    latency: bool = option(False, "Also measure the network's latency into metrics.json.")

    def __post_init__(self):
        # Unset (None) options take the variant's value, so config.json records what ran.
        for name, value in VARIANT_DEFAULTS.get(self.variant, VARIANT_DEFAULTS["cifar"]).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    def validate(self):
        _raise_first([
            (self.variant in VARIANT_NAMES, "--variant", self.variant,
             f"must be one of {', '.join(VARIANT_NAMES)}"),
        ] + _shared_checks(self) + self.data_checks() + [
            (self.lr_schedule in LR_SCHEDULES, "--lr_schedule", self.lr_schedule,
             f"must be one of {', '.join(LR_SCHEDULES)}"),
            (0 < self.lr_gamma <= 1, "--lr_gamma", self.lr_gamma, "must be in (0, 1]"),
            (self.lr_decay_period >= 1, "--lr_decay_period", self.lr_decay_period, "must be >= 1"),
            (0 <= self.label_smoothing < 1, "--label_smoothing", self.label_smoothing,
             "must be in [0, 1)"),
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
        ] + _export_checks(self))


# Options a variant sets when they are not given: the reference's train.py as the paper ran it
# (CIFAR) and its train_imagenet.py (ImageNet mobile setting).
VARIANT_DEFAULTS = {
    "cifar": dict(layers=20, init_channels=36, batch_size=96, epochs=600, learning_rate=0.025,
                  lr_schedule="cosine", weight_decay=3e-4, label_smoothing=0.0, cutout=True,
                  drop_path_prob=0.2, augment="auto"),
    "imagenet": dict(layers=14, init_channels=48, batch_size=128, epochs=250, learning_rate=0.1,
                     lr_schedule="step", weight_decay=3e-5, label_smoothing=0.1, cutout=False,
                     drop_path_prob=0.0, augment="imagenet", image_size="224", eval_resize=256),
}

# "mean"/"std": config.json holds the normalisation used under these keys (export reads them);
# a resume compares that with the data's instead (data.check_same_normalisation).
RETRAIN_RESUME_NEUTRAL = ("output_dir", "data_dir", "checkpoint_every", "cpu_devices", "strategy",
                  "export_dir", "model_name", "version", "overwrite", "eval_steps", "recompute",
                  "format", "calibration_images", "latency", "mean", "std")


@dataclasses.dataclass(frozen=True)
class ExportConfig(_Options):
    """`bin/export`: export a retrain run's latest checkpoint again, as a new version."""

    checkpoint_dir: str = option(None, "Retrain output directory: config.json and checkpoints/.")
    export_dir: str = option(None,
        "Base directory; the SavedModel goes to EXPORT_DIR/MODEL_NAME/VERSION/.")
    model_name: str = option("darts", "Model folder name (TF Serving MODEL_NAME).")
    version: int = option(None, "Positive version number; default: 1 + the largest existing "
                          "version.")
    overwrite: bool = option(False, "Replace an existing version folder.")
    format: str = option("saved_model",
        "saved_model (EXPORT_DIR/MODEL_NAME/VERSION/), tflite (LiteRT float32), tflite_int8 "
        "(LiteRT full-integer) or keras (EXPORT_DIR/MODEL_NAME-FORMAT/VERSION/); several "
        "comma-separated.")
    calibration_images: int = option(500,
        "Training images (of the run's dataset) that calibrate the tflite_int8 ranges.")

    def validate(self):
        _raise_first([
            (self.version is None or self.version >= 1, "--version", self.version,
             "must be a positive integer"),
            (bool(self.model_name) and "/" not in self.model_name and self.model_name[0] != ".",
             "--model_name", self.model_name, "must be a plain folder name"),
        ] + _export_checks(self))
