"""Derived (discrete) DARTS networks as plain Keras models: `NetworkCIFAR`, `NetworkImageNet`.

Reference: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, and
`cnn/model.py` of the reference implementation. Each cell wires the ops a genotype names; BN is affine
(the search network's is not); drop path and an auxiliary head regularise retraining.

Return convention: `model(x, training=...)` always returns the logits (N, num_classes), float32.
`model(x, training=True, return_aux=True)` returns `(logits, logits_aux)` (`logits_aux` is None when
the model has no auxiliary head). Serving calls `model(x, training=False)`: no auxiliary head, no drop
path. The drop-path rate is the model's non-trainable float32 variable `drop_path_prob`; assign it
(`model.set_drop_path_prob(p)`) each epoch without retracing.

Modules: `cells` (Cell, DropPath), `heads` (auxiliary heads), `networks` (NetworkCIFAR,
NetworkImageNet), `builder` (VARIANTS, build_network_from_config, count_parameters).
"""

from keras_darts.network.builder import VARIANTS, build_network_from_config, count_parameters
from keras_darts.network.cells import Cell, DropPath
from keras_darts.network.heads import AuxiliaryHeadCIFAR, AuxiliaryHeadImageNet
from keras_darts.network.networks import NetworkCIFAR, NetworkImageNet
from keras_darts.ops import pad2d  # noqa: F401 (tests build the stem by hand: `network.pad2d`)

__all__ = [
    "AuxiliaryHeadCIFAR", "AuxiliaryHeadImageNet", "Cell", "DropPath", "NetworkCIFAR",
    "NetworkImageNet", "VARIANTS", "build_network_from_config", "count_parameters",
]
