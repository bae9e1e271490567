"""The DARTS candidate operations, built as the reference PyTorch code builds them.

Reference: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, and
`cnn/operations.py` of the reference implementation. Differences from a naive Keras port, each
deliberate:

* Padding is explicit and symmetric, as PyTorch's `padding=p`. TF's `'same'` pads (0, 1) at stride 2
  on even inputs, which shifts every window by one pixel.
* Pools: TF's `avg_pool(padding='SAME')` already excludes padding from the count (PyTorch's
  `count_include_pad=False`) and `max_pool` pads with -inf; both are symmetric at stride 1, so the
  stride-2 pool is the stride-1 pool sampled at even positions (same windows as PyTorch's pad 1).
* A stride-2, dilation-2 depthwise conv (TF refuses strides > 1 with dilation) equals an undilated
  conv on the padded input sampled at even positions: out[i] = sum_k w_k x[2i + 2k].
* BatchNorm uses PyTorch's defaults: epsilon 1e-5, momentum 0.1 (Keras momentum 0.9).
* Conv kernels use PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

Modules: `layers_util` (conv factories, padding, subsampling, checkpoint tracking, `PACKAGE`),
`batchnorm`, `conv_ops`, `pool_ops`, `registry` (`make_op`). Import from `keras_darts.ops`.
"""

from keras_darts.ops.batchnorm import BN_EPSILON, BN_MOMENTUM, FusedBatchNorm, batch_norm
from keras_darts.ops.conv_ops import DilConv, FactorizedReduce, ReLUConvBN, SepConv
from keras_darts.ops.layers_util import (PACKAGE, conv2d, depthwise_conv2d, input_relu, pad2d,
                                         same_is_symmetric, strided_slices, subsample,
                                         torch_conv_init, track_for_checkpoint)
from keras_darts.ops.pool_ops import Identity, Pool, Zero
from keras_darts.ops.registry import PRIMITIVES, make_op

__all__ = [
    "BN_EPSILON", "BN_MOMENTUM", "PACKAGE", "PRIMITIVES",
    "DilConv", "FactorizedReduce", "FusedBatchNorm", "Identity", "Pool", "ReLUConvBN", "SepConv", "Zero",
    "batch_norm", "conv2d", "depthwise_conv2d", "input_relu", "make_op", "pad2d", "same_is_symmetric",
    "strided_slices",
    "subsample",
    "torch_conv_init", "track_for_checkpoint",
]
