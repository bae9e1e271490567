"""Building blocks shared by the candidate ops: PyTorch-style conv factories and init, explicit
symmetric padding, cheap subsampling, checkpoint tracking of layer lists, and the op base class.

Padding is explicit and symmetric, as PyTorch's `padding=p`: TF's `'same'` pads (0, 1) at stride 2 on
even inputs, which shifts every window by one pixel. Conv kernels use PyTorch's default init.
"""

import contextlib

import keras
from keras import ops as K

PACKAGE = "keras_darts"  # the Keras registration package of every serialisable class


def torch_conv_init():
    """PyTorch's default conv/linear kernel init (kaiming_uniform with a=sqrt(5))."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def conv2d(filters, kernel_size, strides=1, name=None):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="valid",
        use_bias=False,
        kernel_initializer=torch_conv_init(),
        name=name,
    )


def depthwise_conv2d(kernel_size, strides=1, dilation_rate=1, padding="valid", name=None):
    return keras.layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding=padding,
        dilation_rate=dilation_rate,
        use_bias=False,
        depthwise_initializer=torch_conv_init(),
        name=name,
    )


def same_is_symmetric(kernel_size, strides, padding, dilation=1):
    """Whether TF's 'same' padding equals PyTorch's symmetric `padding`: at stride 1 with an odd
    kernel it pads dilation * (k - 1) / 2 on each side. Padding inside the conv kernel saves a Pad
    op (and its Slice gradient) per conv."""
    return strides == 1 and kernel_size % 2 == 1 and padding == dilation * (kernel_size - 1) // 2


_STRIDED_SLICES = [False]


@contextlib.contextmanager
def strided_slices():
    """Traces `subsample` as a plain 4-D strided slice: LiteRT has no 6-D Slice kernel (export)."""
    _STRIDED_SLICES[0] = True
    try:
        yield
    finally:
        _STRIDED_SLICES[0] = False


def subsample(x, strides, offset=0):
    """x[:, offset::strides, offset::strides, :] with ceil(size / strides) rows and columns (zeros
    where offset runs past the edge), with a cheap gradient.

    A strided slice's gradient (StridedSliceGrad) is a slow generic scatter on CPU; it was ~15% of
    the search step. Padding to a multiple of the stride, reshaping the stride into its own axes
    and taking a plain slice gives the same values with Pad as the gradient.
    """
    if strides == 1 and offset == 0:
        return x
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    # Dynamic sizes or an export for LiteRT: the plain (slower to train) strided slice.
    if h is None or w is None or c is None or _STRIDED_SLICES[0]:
        if offset:
            x = K.pad(x[:, offset:, offset:, :], [[0, 0], [0, offset], [0, offset], [0, 0]])
        return x[:, ::strides, ::strides, :]
    oh, ow = -(-h // strides), -(-w // strides)
    if (oh * strides, ow * strides) != (h, w):
        x = K.pad(x, [[0, 0], [0, oh * strides - h], [0, ow * strides - w], [0, 0]])
    x = K.reshape(x, (-1, oh, strides, ow, strides, c))
    x = K.slice(x, (0, 0, offset, 0, offset, 0), (K.shape(x)[0], oh, 1, ow, 1, c))
    return K.reshape(x, (-1, oh, ow, c))


def pad2d(x, padding, value=0.0):
    if padding == 0:
        return x
    return K.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]], constant_values=value)


def track_for_checkpoint(owner, prefix, layers):
    """Also sets each listed layer as an attribute `<prefix><i>`.

    Keras 3 (TF backend) keeps list attributes in its own TrackedList, which tf.train.Checkpoint
    does not follow: `tf.train.Checkpoint(model=model)` would silently save and restore none of the
    weights of layers held only in a list. One attribute per element makes TF track them.
    """
    for i, layer in enumerate(layers):
        if layer is not None:
            setattr(owner, f"{prefix}{i}", layer)


def input_relu(x):
    """The ReLU the conv candidates begin with (SearchCell computes it once per node)."""
    return K.relu(x)


class _OpLayer(keras.layers.Layer):
    """Base for candidate ops: stores `affine` and `sync_bn`, which every BN inside honours."""

    def __init__(self, affine=True, sync_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.affine = affine
        self.sync_bn = sync_bn

    # Ops that begin with a ReLU take `relu_x=relu(x)` in their call: a search cell computes one
    # ReLU per node for all the ops on its outgoing edges, so the backward pass sums their
    # gradients first and runs one ReLU gradient instead of one per op.
    starts_with_relu = False

    @staticmethod
    def _relu(x, relu_x):
        return input_relu(x) if relu_x is None else relu_x

    @property
    def output_bn(self):
        """The BN that ends the op, if any (subclasses say which)."""
        return None

    @property
    def folds_scale(self):
        """Whether `call(..., out_scale=w)` folds w into the final BN's kernel."""
        return getattr(self.output_bn, "folds_scale", False)

    def _normalise(self, x, training, out_scale):
        """output_bn(x) times `out_scale` (a scalar, or None): MixedOp's weight folded into the BN's
        scale, so one fused kernel replaces a BN, a multiply and their gradients. An op without a
        final BN (a derived network's pool) returns x, multiplied if asked."""
        bn = self.output_bn
        if bn is None:
            return x if out_scale is None else out_scale * x
        if out_scale is None:
            return bn(x, training=training)
        return bn(x, training=training, scale=out_scale)

    def get_config(self):
        config = super().get_config()
        config.update({"affine": self.affine, "sync_bn": self.sync_bn})
        return config
