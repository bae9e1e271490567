"""`RetrainConfig`: the options of `bin/retrain` and `keras_darts.retrain`, with the variants'
defaults (the reference's CIFAR `train.py` and ImageNet `train_imagenet.py`)."""

import dataclasses

from keras_darts.config.export import _export_checks
from keras_darts.config.options import (LR_SCHEDULES, VARIANT_NAMES, ThreadFields, _Options,
                                        _raise_first, _shared_checks, option)
from keras_darts.data_config import DataFields


@dataclasses.dataclass(frozen=True)
class RetrainConfig(DataFields, ThreadFields, _Options):
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
                  "intra_op_threads", "inter_op_threads", "export_dir", "model_name", "version",
                  "overwrite", "eval_steps", "recompute", "format", "calibration_images",
                  "latency", "mean", "std")
