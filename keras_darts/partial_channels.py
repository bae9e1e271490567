"""PC-DARTS (Xu et al., ICLR 2020): partial channel connections and edge normalisation.

`PartialChannelMixedOp` is one search edge that mixes only the first C/K channels of its input (the
8 candidate ops are built for C/K channels) and passes the other channels through unchanged (2x2
max pool on stride-2 edges), then shuffles the channels in K groups so that the next edge sees a
different share. `edge_softmax` normalises the per-edge `betas` over the edges into each node.
Reference: yuhuixu1993/PC-DARTS `model_search.py` (MixedOp, channel_shuffle, Network.forward).
"""

import keras
import numpy as np
from keras import ops as K

from keras_darts.ops import PACKAGE
from keras_darts.search_cells import MixedOp


def channel_shuffle(x, groups):
    """NHWC channel shuffle: channel g*(C/groups) + j moves to j*groups + g (as the reference's
    NCHW view(groups, C/groups) -> transpose -> flatten)."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    h = K.shape(x)[1] if h is None else h
    w = K.shape(x)[2] if w is None else w
    y = K.reshape(x, (-1, h, w, groups, c // groups))
    y = K.transpose(y, (0, 1, 2, 4, 3))
    return K.reshape(y, (-1, h, w, c))


def channel_shuffle_order(channels, groups):
    """The shuffle as a permutation: output channel i is input channel order[i] (pure numpy)."""
    return np.arange(channels).reshape(groups, channels // groups).T.reshape(-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PartialChannelMixedOp(keras.layers.Layer):
    """A PC-DARTS edge: MixedOp on the first filters/k channels, the rest passed through.

    Call arguments:
      x: (N, H, W, filters) tensor.
      weights: (len(PRIMITIVES),) softmaxed alphas of this edge.
    """

    def __init__(self, filters, strides=1, k=4, sync_bn=False, **kwargs):
        kwargs.setdefault("autocast", False)  # keep float32 mixing weights float32 (as MixedOp)
        super().__init__(**kwargs)
        if filters % k:
            raise ValueError(f"partial channels: {filters} channels are not divisible by K={k}")
        self.filters = filters
        self.strides = strides
        self.k = k
        self.sync_bn = sync_bn
        self.mixed = MixedOp(filters // k, strides, sync_bn, name="mixed")

    def build(self, x_shape, weights_shape=None):
        self.mixed.build((x_shape[0], None, None, self.filters // self.k))

    def call(self, x, weights, training=None):
        c = self.filters // self.k
        mixed = self.mixed(x[..., :c], weights, training=training)
        rest = x[..., c:]
        if self.strides > 1:
            # nn.MaxPool2d(2, 2): no padding, floor of odd sizes (the ops' ceil equals it on even sizes).
            rest = K.max_pool(rest, 2, strides=2, padding="valid")
        if rest.dtype != mixed.dtype:  # mixed precision: the mixture is in the mixing dtype
            rest = K.cast(rest, mixed.dtype)
        return channel_shuffle(K.concatenate([mixed, rest], axis=-1), self.k)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides, "k": self.k,
                       "sync_bn": self.sync_bn})
        return config


def edge_softmax(betas, steps):
    """Softmax of the betas over the edges into each node (node i has 2+i incoming edges), as the
    reference's Network.forward builds `weights2`; works on numpy arrays and tensors."""
    parts = []
    start = 0
    for i in range(steps):
        end = start + 2 + i
        parts.append(K.softmax(betas[start:end], axis=-1))
        start = end
    return K.concatenate(parts, axis=0)
