"""`make_op`: a primitive name -> its op layer, as the reference's `OPS` dict."""

from keras_darts.genotype import PRIMITIVES  # noqa: F401 (re-exported: ops are built in this order)
from keras_darts.ops.conv_ops import DilConv, FactorizedReduce, SepConv
from keras_darts.ops.pool_ops import Identity, Pool, Zero


def make_op(name, filters, strides, affine, sync_bn=False, search=False, layer_name=None):
    """Builds candidate op `name` as the reference's `OPS[name](C, stride, affine)`.

    Args:
      search: True inside a MixedOp of the search network, where pools get a non-affine BN.
    """
    kw = {"affine": affine, "sync_bn": sync_bn, "name": layer_name}
    if name == "none":
        return Zero(strides, name=layer_name)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        return Pool(name[:3], strides, with_bn=search, **{**kw, "affine": False if search else affine})
    if name == "skip_connect":
        return Identity(name=layer_name) if strides == 1 else FactorizedReduce(filters, **kw)
    if name == "sep_conv_3x3":
        return SepConv(filters, 3, strides, 1, **kw)
    if name == "sep_conv_5x5":
        return SepConv(filters, 5, strides, 2, **kw)
    if name == "dil_conv_3x3":
        return DilConv(filters, 3, strides, 2, 2, **kw)
    if name == "dil_conv_5x5":
        return DilConv(filters, 5, strides, 4, 2, **kw)
    raise ValueError(f"unknown operation {name!r}; known: {', '.join(PRIMITIVES)}")
