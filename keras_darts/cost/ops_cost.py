"""Parameters and multiply-adds (MACs) of one DARTS candidate op, from its structure. Pure Python.

The structures are those `keras_darts.ops.make_op` builds (C_in == C_out == C on every edge):
  sep_conv_kxk  two (ReLU, depthwise k x k, pointwise 1x1, BN) blocks, the stride on the first
  dil_conv_kxk  one (ReLU, depthwise k x k dilation 2, pointwise 1x1, BN) block
  skip_connect  identity at stride 1; FactorizedReduce (two 1x1 stride-2 convs C -> C/2, BN) at 2
  max/avg_pool  3x3, padding 1; a non-affine BN after it in the search network, none when derived
  none          zeros

Counting convention (BUILD_NOTES.md, "Costs"):
  * MACs count convolutions and dense layers only: k*k*C_in/groups*C_out*H_out*W_out per conv,
    in*out per dense layer. BatchNorm, ReLU, pooling, zeros, additions, concatenation and global
    pooling count 0: they are O(HWC) against a conv's O(HWC^2) and the paper's multiply-add figures
    count the same way.
  * Parameters: conv kernels (no biases), BN gamma and beta when affine (2C; the search network's
    BN is affine=False: none), dense kernel + bias. BN moving statistics are not parameters (the
    reference's `count_parameters_in_MB` counts `parameters()`, which excludes them).
"""

import dataclasses

from keras_darts.genotype import PRIMITIVES


@dataclasses.dataclass(frozen=True)
class Cost:
    """Parameters and multiply-adds of a piece of network (ints)."""

    params: int = 0
    macs: int = 0

    def __add__(self, other):
        return Cost(self.params + other.params, self.macs + other.macs)

    def __mul__(self, n):
        return Cost(self.params * n, self.macs * n)

    __rmul__ = __mul__

    def get(self, metric):
        if metric not in ("params", "macs"):
            raise ValueError(f"metric must be 'params' or 'macs', got {metric!r}")
        return getattr(self, metric)


ZERO = Cost()


def conv_out(size, kernel, stride=1, padding=0, dilation=1):
    """Output length of a conv (or pool) with symmetric `padding`: PyTorch's formula."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def strided(size, stride):
    """ceil(size / stride): the length `keras_darts.ops.subsample` keeps."""
    return -(-size // stride)


def conv(c_in, c_out, kernel, h_out, w_out, groups=1):
    """A bias-free conv: k*k*C_in/groups*C_out weights, each used once per output pixel."""
    weights = kernel * kernel * (c_in // groups) * c_out
    return Cost(weights, weights * h_out * w_out)


def batch_norm(channels, affine):
    return Cost(2 * channels if affine else 0, 0)


def dense(n_in, n_out):
    return Cost(n_in * n_out + n_out, n_in * n_out)


def relu_conv_bn(c_in, c_out, kernel, size, stride=1, padding=0, affine=True):
    """ReLUConvBN; returns (Cost, (h_out, w_out))."""
    h, w = (conv_out(s, kernel, stride, padding) for s in size)
    return conv(c_in, c_out, kernel, h, w) + batch_norm(c_out, affine), (h, w)


def factorized_reduce(c_in, c_out, size, affine=True):
    """FactorizedReduce: two 1x1 stride-2 convs C_in -> C_out/2 (one on the shifted input), BN."""
    h, w = (strided(s, 2) for s in size)
    return 2 * conv(c_in, c_out // 2, 1, h, w) + batch_norm(c_out, affine), (h, w)


def _dw_pw_bn(channels, kernel, h, w, affine):
    """One depthwise k x k + pointwise 1x1 + BN block at output size (h, w)."""
    return (conv(channels, channels, kernel, h, w, groups=channels)
            + conv(channels, channels, 1, h, w) + batch_norm(channels, affine))


_CONVS = {  # name -> (kernel, padding, dilation, blocks)
    "sep_conv_3x3": (3, 1, 1, 2),
    "sep_conv_5x5": (5, 2, 1, 2),
    "dil_conv_3x3": (3, 2, 2, 1),
    "dil_conv_5x5": (5, 4, 2, 1),
}


def op_cost(name, channels, size, stride=1, affine=True, search=False):
    """Cost of candidate op `name` on a C-channel (h, w) input, as `make_op` builds it.

    Args:
      name: a primitive of `PRIMITIVES`.
      channels: C (input and output channels).
      size: (h, w) of the input.
      stride: 1, or 2 on the edges leaving the inputs of a reduction cell.
      affine: BN with gamma/beta (derived networks) or without (the search network).
      search: the op sits in a search MixedOp (pools are followed by a non-affine BN: no params).

    Returns:
      (Cost, (h_out, w_out)).
    """
    h, w = size
    if name in ("none", "max_pool_3x3", "avg_pool_3x3"):
        return ZERO, (strided(h, stride), strided(w, stride))
    if name == "skip_connect":
        if stride == 1:
            return ZERO, (h, w)
        return factorized_reduce(channels, channels, size, affine)
    if name in _CONVS:
        kernel, padding, dilation, blocks = _CONVS[name]
        ho, wo = (conv_out(s, kernel, stride, padding, dilation) for s in size)
        cost = _dw_pw_bn(channels, kernel, ho, wo, affine) * blocks
        return cost, (ho, wo)
    raise ValueError(f"unknown operation {name!r}; known: {', '.join(PRIMITIVES)}")
