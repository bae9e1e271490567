"""BatchNorm with PyTorch's defaults (epsilon 1e-5, momentum 0.1, i.e. Keras momentum 0.9)."""

import keras
from keras import ops as K

from keras_darts.ops.layers_util import PACKAGE

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch.


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

    folds_scale = True  # call(..., scale=w) multiplies the output by w inside the kernel

    def call(self, x, training=None, scale=None):
        """`scale`: an optional scalar the output is multiplied by, folded into the kernel's
        scale and offset (w * (gamma x^ + beta) = (w gamma) x^ + w beta); the statistics are
        those of x either way."""
        import tensorflow as tf

        c = x.shape[-1]
        # The fused kernel takes float32 parameters; it has no float64 (used by precision tests).
        dtype = tf.float64 if x.dtype == tf.float64 else tf.float32
        gamma = K.cast(self.gamma, dtype) if self.affine else tf.ones((c,), dtype)
        beta = K.cast(self.beta, dtype) if self.affine else tf.zeros((c,), dtype)
        if scale is not None:
            w = K.cast(scale, dtype)
            gamma = gamma * w if self.affine else tf.fill((c,), w)
            beta = beta * w if self.affine else beta
        if x.dtype == tf.float64:
            return self._unfused(x, gamma, beta, training)
        if training:
            y, mean, var = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=self.moving_mean.value, variance=self.moving_variance.value,
                epsilon=self.epsilon, is_training=True, exponential_avg_factor=self.momentum)[:3]
            self.moving_mean.assign(mean)
            self.moving_variance.assign(var)
            return y
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, mean=self.moving_mean.value, variance=self.moving_variance.value,
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
