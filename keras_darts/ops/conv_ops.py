"""The convolutional candidate ops: ReLUConvBN, DilConv, SepConv, FactorizedReduce.

A stride-2, dilation-2 depthwise conv (TF refuses strides > 1 with dilation) equals an undilated conv
on the padded input sampled at even positions: out[i] = sum_k w_k x[2i + 2k].
"""

import keras
import tensorflow as tf
from keras import ops as K

from keras_darts.ops import dilated
from keras_darts.ops.batchnorm import batch_norm
from keras_darts.ops.layers_util import (PACKAGE, _OpLayer, conv2d, depthwise_conv2d, pad2d,
                                         same_is_symmetric, subsample)
from keras_darts.recompute import call_with_recompute


def depthwise_keeping_input(depthwise, x, prepare, training):
    """`depthwise(prepare(x))`, whose backward pass keeps x rather than prepare(x) when training.

    `prepare` (explicit padding, subsampling) and the space-to-batch TF wraps a dilated depthwise
    conv in make rearranged copies of x, which the depthwise filter gradient would keep until the
    backward pass: a second copy of the ReLU output the ReLU gradient keeps anyway (a quarter of a
    search step's saved tensors). The backward pass redoes the copies instead; the conv itself is
    not run again, because its gradient needs only its input and the executor prunes the unused
    recomputed conv.
    """
    if not training or (prepare is None and depthwise.dilation_rate in ((1, 1), 1)):
        return depthwise(x if prepare is None else prepare(x))
    return call_with_recompute(depthwise, lambda t: depthwise(t if prepare is None else prepare(t)), x)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ReLUConvBN(_OpLayer):
    """ReLU -> Conv(k, stride, symmetric padding, no bias) -> BN."""

    starts_with_relu = True

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

    @property
    def output_bn(self):
        return self.bn

    def call(self, x, training=None, out_scale=None, relu_x=None):
        x = pad2d(self._relu(x, relu_x), self.padding)
        return self._normalise(self.conv(x), training, out_scale)

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

    starts_with_relu = True

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
        # Training, stride 1 on CPU: oneDNN's own dilated kernel, with the gradient in dilated.py.
        self._native_dilated = same and strides == 1 and dilation > 1
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

    @property
    def output_bn(self):
        return self.bn

    def _prepare(self, x):
        x = pad2d(x, self._pad)
        return subsample(x, self.strides) if self._subsample else x

    def call(self, x, training=None, out_scale=None, relu_x=None):
        x = self._relu(x, relu_x)
        if training and self._native_dilated and x.dtype == tf.float32 and dilated.available():
            kernel = tf.convert_to_tensor(self.depthwise.kernel.value)  # a virtual weight, if any
            x = dilated.dilated_depthwise_conv(x, tf.cast(kernel, x.dtype), self.dilation)
        else:
            prepare = self._prepare if self._pad or self._subsample else None
            x = depthwise_keeping_input(self.depthwise, x, prepare, training)
        return self._normalise(self.pointwise(x), training, out_scale)

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

    starts_with_relu = True

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

    @property
    def output_bn(self):
        return self.bn2

    def call(self, x, training=None, out_scale=None, relu_x=None):
        x = depthwise_keeping_input(self.depthwise1, self._relu(x, relu_x), self._padder(0), training)
        x = self.bn1(self.pointwise1(x), training=training)
        x = depthwise_keeping_input(self.depthwise2, K.relu(x), self._padder(1), training)
        return self._normalise(self.pointwise2(x), training, out_scale)

    def _padder(self, i):
        pads = self._pads[i]
        return (lambda x: pad2d(x, pads)) if pads else None

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

    starts_with_relu = True

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

    @property
    def output_bn(self):
        return self.bn

    def call(self, x, training=None, out_scale=None, relu_x=None):
        x = self._relu(x, relu_x)
        a = self.conv1(subsample(x, 2))
        # The input shifted by one pixel: odd positions; on odd sizes the last row/column is the
        # zero padding, which keeps both halves the same size.
        b = self.conv2(subsample(x, 2, offset=1))
        return self._normalise(K.concatenate([a, b], axis=-1), training, out_scale)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters})
        return config
