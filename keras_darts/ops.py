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
"""

import keras
from keras import ops as K

from keras_darts.genotype import PRIMITIVES  # noqa: F401 (re-exported: ops are built in this order)

PACKAGE = "keras_darts"

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch.


def torch_conv_init():
    """PyTorch's default conv/linear kernel init (kaiming_uniform with a=sqrt(5))."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def batch_norm(affine, sync_bn=False, name=None):
    """PyTorch-default BatchNorm: the fused kernel, or Keras' synchronised BN across replicas."""
    if sync_bn:
        return keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, center=affine, scale=affine,
            synchronized=True, name=name)
    return FusedBatchNorm(affine=affine, name=name)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedBatchNorm(keras.layers.Layer):
    """BatchNorm over the channel axis (NHWC) with TF's fused kernel and PyTorch's semantics.

    One FusedBatchNormV3 op (and one gradient op) instead of Keras' ~25 ops per BN: the search
    network has hundreds of BNs, and graph size dominates its trace and compile time. The running
    statistics follow PyTorch: running = (1 - momentum) * running + momentum * batch, with the
    unbiased batch variance. `affine=False` is PyTorch's `affine=False` (no gamma/beta).
    """

    def __init__(self, affine=True, momentum=1.0 - BN_MOMENTUM, epsilon=BN_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.affine = affine
        self.momentum = momentum
        self.epsilon = epsilon

    def build(self, input_shape):
        c = input_shape[-1]
        if self.affine:
            self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape=(c,), initializer="zeros", trainable=False,
                                           autocast=False, name="moving_mean")
        self.moving_variance = self.add_weight(shape=(c,), initializer="ones", trainable=False,
                                               autocast=False, name="moving_variance")

    def call(self, x, training=None):
        import tensorflow as tf

        c = x.shape[-1]
        if self.affine:
            scale, offset = K.cast(self.gamma, "float32"), K.cast(self.beta, "float32")
        else:
            scale, offset = tf.ones((c,), tf.float32), tf.zeros((c,), tf.float32)
        if x.dtype == tf.float64:  # the fused kernel has no float64 (used by precision tests)
            return self._unfused(x, K.cast(scale, x.dtype), K.cast(offset, x.dtype), training)
        if training:
            y, mean, var = tf.compat.v1.nn.fused_batch_norm(
                x, scale, offset, mean=self.moving_mean.value, variance=self.moving_variance.value,
                epsilon=self.epsilon, is_training=True, exponential_avg_factor=self.momentum)[:3]
            self.moving_mean.assign(mean)
            self.moving_variance.assign(var)
            return y
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, mean=self.moving_mean.value, variance=self.moving_variance.value,
            epsilon=self.epsilon, is_training=False)
        return y

    def _unfused(self, x, scale, offset, training):
        import tensorflow as tf

        if training:
            # Not tf.nn.moments: its stop_gradient on the mean breaks second derivatives.
            mean = tf.reduce_mean(x, axis=[0, 1, 2])
            var = tf.reduce_mean(tf.square(x - mean), axis=[0, 1, 2])
            n = K.cast(K.size(x) // x.shape[-1], x.dtype)
            unbiased = var * n / K.maximum(n - 1.0, 1.0)
            m = self.momentum
            self.moving_mean.assign((1 - m) * self.moving_mean + m * K.cast(mean, self.moving_mean.dtype))
            self.moving_variance.assign((1 - m) * self.moving_variance
                                        + m * K.cast(unbiased, self.moving_variance.dtype))
        else:
            mean = K.cast(self.moving_mean.value, x.dtype)
            var = K.cast(self.moving_variance.value, x.dtype)
        return tf.nn.batch_normalization(x, mean, var, offset, scale, self.epsilon)

    def get_config(self):
        config = super().get_config()
        config.update({"affine": self.affine, "momentum": self.momentum, "epsilon": self.epsilon})
        return config


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
    if h is None or w is None or c is None:  # dynamic sizes: the plain (slower) strided slice
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


class _OpLayer(keras.layers.Layer):
    """Base for candidate ops: stores `affine` and `sync_bn`, which every BN inside honours."""

    def __init__(self, affine=True, sync_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.affine = affine
        self.sync_bn = sync_bn

    def get_config(self):
        config = super().get_config()
        config.update({"affine": self.affine, "sync_bn": self.sync_bn})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ReLUConvBN(_OpLayer):
    """ReLU -> Conv(k, stride, symmetric padding, no bias) -> BN."""

    def __init__(self, filters, kernel_size=1, strides=1, padding=0, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.conv = conv2d(filters, kernel_size, strides, name="conv")
        self.bn = batch_norm(self.affine, self.sync_bn, name="bn")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, x, training=None):
        x = pad2d(K.relu(x), self.padding)
        return self.bn(self.conv(x), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class DilConv(_OpLayer):
    """ReLU -> depthwise k x k (dilation) -> pointwise 1x1 -> BN (the reference `DilConv`)."""

    def __init__(self, filters, kernel_size, strides=1, padding=0, dilation=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.dilation = dilation
        # TF has no strided dilated conv; when the dilation is a multiple of the stride, sample the
        # padded input first and convolve with the reduced dilation at stride 1 (exactly equal).
        self._subsample = strides > 1 and dilation > 1 and dilation % strides == 0
        same = not self._subsample and same_is_symmetric(kernel_size, strides, padding, dilation)
        self._pad = 0 if same else padding
        if self._subsample:
            self.depthwise = depthwise_conv2d(kernel_size, 1, dilation // strides, name="depthwise")
        else:
            self.depthwise = depthwise_conv2d(kernel_size, strides, dilation,
                                              "same" if same else "valid", name="depthwise")
        self.pointwise = conv2d(filters, 1, name="pointwise")
        self.bn = batch_norm(self.affine, self.sync_bn, name="bn")

    def build(self, input_shape):
        n, h, w, c = input_shape
        self.depthwise.build((n, None, None, c))
        self.pointwise.build((n, None, None, c))
        self.bn.build((n, None, None, self.filters))

    def call(self, x, training=None):
        x = pad2d(K.relu(x), self._pad)
        if self._subsample:
            x = subsample(x, self.strides)
        x = self.pointwise(self.depthwise(x))
        return self.bn(x, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "dilation": self.dilation,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class SepConv(_OpLayer):
    """Two (ReLU, depthwise k x k, pointwise 1x1, BN) blocks; the stride is on the first."""

    def __init__(self, filters, kernel_size, strides=1, padding=0, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        same1 = same_is_symmetric(kernel_size, strides, padding)
        same2 = same_is_symmetric(kernel_size, 1, padding)
        self._pads = (0 if same1 else padding, 0 if same2 else padding)
        self.depthwise1 = depthwise_conv2d(kernel_size, strides, padding="same" if same1 else "valid",
                                           name="depthwise1")
        self.pointwise1 = conv2d(filters, 1, name="pointwise1")
        self.bn1 = batch_norm(self.affine, self.sync_bn, name="bn1")
        self.depthwise2 = depthwise_conv2d(kernel_size, 1, padding="same" if same2 else "valid",
                                           name="depthwise2")
        self.pointwise2 = conv2d(filters, 1, name="pointwise2")
        self.bn2 = batch_norm(self.affine, self.sync_bn, name="bn2")

    def build(self, input_shape):
        n, c = input_shape[0], input_shape[-1]
        # The reference's first pointwise keeps C_in channels; here C_in == C_out == filters.
        self.depthwise1.build((n, None, None, c))
        self.pointwise1.build((n, None, None, c))
        self.bn1.build((n, None, None, self.filters))
        self.depthwise2.build((n, None, None, self.filters))
        self.pointwise2.build((n, None, None, self.filters))
        self.bn2.build((n, None, None, self.filters))

    def call(self, x, training=None):
        x = self.depthwise1(pad2d(K.relu(x), self._pads[0]))
        x = self.bn1(self.pointwise1(x), training=training)
        x = self.depthwise2(pad2d(K.relu(x), self._pads[1]))
        return self.bn2(self.pointwise2(x), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class FactorizedReduce(_OpLayer):
    """ReLU, two 1x1 stride-2 convs of filters/2 (the second on the input shifted by one pixel),
    concat, BN. Halves the spatial size."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        if filters % 2:
            raise ValueError(f"FactorizedReduce needs an even number of filters, got {filters}")
        self.filters = filters
        self.conv1 = conv2d(filters // 2, 1, name="conv1")
        self.conv2 = conv2d(filters // 2, 1, name="conv2")
        self.bn = batch_norm(self.affine, self.sync_bn, name="bn")

    def build(self, input_shape):
        n, c = input_shape[0], input_shape[-1]
        self.conv1.build((n, None, None, c))
        self.conv2.build((n, None, None, c))
        self.bn.build((n, None, None, self.filters))

    def call(self, x, training=None):
        x = K.relu(x)
        a = self.conv1(subsample(x, 2))
        # The input shifted by one pixel: odd positions; on odd sizes the last row/column is the
        # zero padding, which keeps both halves the same size.
        b = self.conv2(subsample(x, 2, offset=1))
        return self.bn(K.concatenate([a, b], axis=-1), training=training)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class Zero(keras.layers.Layer):
    """The `none` op: zeros shaped like the input sampled at `strides`."""

    def __init__(self, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.strides = strides

    def call(self, x, training=None):
        return K.zeros_like(x[:, :: self.strides, :: self.strides, :])

    def get_config(self):
        config = super().get_config()
        config.update({"strides": self.strides})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class Pool(_OpLayer):
    """3x3 max or average pool, padding 1 (average excludes padding), optional non-affine BN.

    In the search network the reference follows pools with `BatchNorm2d(C, affine=False)`
    (`with_bn=True`); the derived network does not.
    """

    def __init__(self, pool_type, strides=1, with_bn=False, **kwargs):
        super().__init__(**kwargs)
        if pool_type not in ("max", "avg"):
            raise ValueError(f"pool_type must be 'max' or 'avg', got {pool_type!r}")
        self.pool_type = pool_type
        self.strides = strides
        self.with_bn = with_bn
        self.bn = batch_norm(self.affine, self.sync_bn, name="bn") if with_bn else None

    def build(self, input_shape):
        if self.bn is not None:
            self.bn.build((input_shape[0], None, None, input_shape[-1]))

    def call(self, x, training=None):
        if self.pool_type == "max":
            y = K.max_pool(x, 3, strides=1, padding="same")
        else:
            y = K.average_pool(x, 3, strides=1, padding="same")
        if self.strides > 1:
            y = subsample(y, self.strides)
        if self.bn is not None:
            y = self.bn(y, training=training)
        return y

    def get_config(self):
        config = super().get_config()
        config.update({"pool_type": self.pool_type, "strides": self.strides, "with_bn": self.with_bn})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class Identity(keras.layers.Layer):
    """`skip_connect` at stride 1. Its own class so drop path can recognise and skip it."""

    def call(self, x, training=None):
        return x


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
