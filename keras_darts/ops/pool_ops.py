"""The parameter-free candidate ops: Pool (max/avg 3x3), Zero (`none`), Identity (`skip_connect`).

TF's `avg_pool(padding='SAME')` already excludes padding from the count (PyTorch's
`count_include_pad=False`) and `max_pool` pads with -inf; both are symmetric at stride 1, so the
stride-2 pool is the stride-1 pool sampled at even positions (same windows as PyTorch's pad 1).
"""

import keras
from keras import ops as K

from keras_darts.ops.batchnorm import batch_norm
from keras_darts.ops.layers_util import PACKAGE, _OpLayer, subsample


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

    @property
    def output_bn(self):
        return self.bn

    def call(self, x, training=None, out_scale=None):
        if self.pool_type == "max":
            y = K.max_pool(x, 3, strides=1, padding="same")
        else:
            y = K.average_pool(x, 3, strides=1, padding="same")
        if self.strides > 1:
            y = subsample(y, self.strides)
        return self._normalise(y, training, out_scale)

    def get_config(self):
        config = super().get_config()
        config.update({"pool_type": self.pool_type, "strides": self.strides, "with_bn": self.with_bn})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class Identity(keras.layers.Layer):
    """`skip_connect` at stride 1. Its own class so drop path can recognise and skip it."""

    def call(self, x, training=None):
        return x
