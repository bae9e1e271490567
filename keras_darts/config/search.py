"""`SearchConfig`: the options of `bin/search` and `keras_darts.search`."""

import dataclasses
import math

from keras_darts.config.options import (VARIANT_NAMES, ThreadFields, _Options, _raise_first,
                                        _shared_checks, option)
from keras_darts.cost.checks import cost_checks
from keras_darts.data_config import DataFields
from keras_darts.search_options import RobustOptions, robust_checks


@dataclasses.dataclass(frozen=True)
class SearchConfig(RobustOptions, DataFields, ThreadFields, _Options):
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
    arch_float32: bool = option(False,
        "Under --mixed_precision, run the architecture step in float32: the exact alpha "
        "gradient, at float32's memory and time for that step (the weight step stays mixed).")
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
            (not self.arch_float32 or self.mixed_precision != "none", "--arch_float32",
             self.arch_float32, "needs --mixed_precision=bfloat16 or float16 (without it every "
             "step is float32 already)"),
        ] + robust_checks(self))
        self.early_stop_rule()



# Changing these between runs in one output dir does not change what a resumed run computes.
SEARCH_RESUME_NEUTRAL = ("output_dir", "data_dir", "checkpoint_every", "cpu_devices", "strategy",
                         "intra_op_threads", "inter_op_threads", "recompute", "latency",
                         "selection", "selection_finetune_epochs")
