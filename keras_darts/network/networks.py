"""`NetworkCIFAR` and `NetworkImageNet`: stem, cells, auxiliary head, pooling, classifier."""

import keras
from keras import ops as K

from keras_darts.network.cells import Cell, _as_genotype
from keras_darts.network.heads import (AuxiliaryHeadCIFAR, AuxiliaryHeadImageNet, _float32_if_mixed,
                                       _torch_linear_init)
from keras_darts.ops import PACKAGE, batch_norm, conv2d, pad2d, track_for_checkpoint
from keras_darts.recompute import call_with_recompute


class _Network(keras.Model):
    """Shared body of NetworkCIFAR and NetworkImageNet: cells, auxiliary head, pooling, classifier.

    Subclasses define the stem (`_make_stem`, `_build_stem`, `_stem`) and whether the first cell
    sees a reduced s0 (`_FIRST_REDUCTION_PREV`).
    """

    _FIRST_REDUCTION_PREV = False
    _AUX_CLASS = AuxiliaryHeadCIFAR

    def __init__(self, genotype, num_classes, layers, init_channels, auxiliary, in_channels, sync_bn,
                 seed, recompute=False, **kwargs):
        super().__init__(**kwargs)
        if layers < 3:
            raise ValueError(f"layers must be >= 3 (two reduction cells and a normal one), got {layers}")
        self.genotype = _as_genotype(genotype)
        self.num_classes = num_classes
        self.num_layers = layers  # `self.layers` is a Keras Model property.
        self.init_channels = init_channels
        self.auxiliary = auxiliary
        self.in_channels = in_channels
        self.sync_bn = sync_bn
        self.seed = seed
        self.recompute = recompute

        # === Layers ===
        self._make_stem()
        self.cells = []
        c_curr = init_channels
        reduction_prev = self._FIRST_REDUCTION_PREV
        for i in range(layers):
            reduction = i in self.reduction_indices
            if reduction:
                c_curr *= 2
            self.cells.append(Cell(self.genotype, c_curr, reduction, reduction_prev, sync_bn,
                                   seed=None if seed is None else seed + i, name=f"cell_{i}"))
            reduction_prev = reduction
        track_for_checkpoint(self, "cell_", self.cells)
        self.auxiliary_head = (self._AUX_CLASS(num_classes, sync_bn, name="auxiliary_head")
                               if auxiliary else None)
        self.classifier = keras.layers.Dense(
            num_classes, kernel_initializer=_torch_linear_init(),
            dtype=_float32_if_mixed(), name="classifier")

        # === Drop-path rate ===
        # A variable read inside call: a schedule assigns it every epoch and tf.functions see the
        # new value without retracing. float32 even under mixed precision.
        self.drop_path_prob = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                              autocast=False, dtype="float32", name="drop_path_prob")

    @property
    def reduction_indices(self):
        return (self.num_layers // 3, 2 * self.num_layers // 3)

    @property
    def auxiliary_index(self):
        """The auxiliary head reads the output of this cell (the second reduction cell)."""
        return 2 * self.num_layers // 3

    def set_drop_path_prob(self, rate):
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
        self.drop_path_prob.assign(float(rate))

    def cell_channels(self):
        """[(C_prev_prev, C_prev, C_curr)] per cell, exactly as the reference updates them."""
        c_prev_prev, c_prev = self._stem_channels()
        out = []
        for cell in self.cells:
            out.append((c_prev_prev, c_prev, cell.filters))
            c_prev_prev, c_prev = c_prev, cell.multiplier * cell.filters
        return out

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} was configured for in_channels="
                             f"{self.in_channels}, got input shape {tuple(input_shape)}")
        n = input_shape[0]
        self._build_stem((n, None, None, self.in_channels))
        c_prev = None
        for i, (cell, (c_pp, c_p, _)) in enumerate(zip(self.cells, self.cell_channels())):
            cell.build((n, None, None, c_pp), (n, None, None, c_p))
            c_prev = cell.multiplier * cell.filters
            if i == self.auxiliary_index and self.auxiliary_head is not None:
                self.auxiliary_head.build((n, None, None, c_prev))
        self.classifier.build((n, c_prev))

    def call(self, inputs, training=None, return_aux=False):
        drop_prob = K.convert_to_tensor(self.drop_path_prob) if training else 0.0
        s0, s1 = self._stem(inputs, training)
        logits_aux = None
        for i, cell in enumerate(self.cells):
            if self.recompute and training:
                # drop_prob is captured, not an input: it has no gradient.
                s0, s1 = s1, call_with_recompute(
                    cell, lambda a, b, c=cell: c(a, b, drop_prob=drop_prob, training=True), s0, s1)
            else:
                s0, s1 = s1, cell(s0, s1, drop_prob=drop_prob, training=training)
            if i == self.auxiliary_index and return_aux and self.auxiliary_head is not None:
                logits_aux = self.auxiliary_head(s1, training=training)
        logits = K.cast(self.classifier(K.mean(s1, axis=(1, 2))), "float32")
        if return_aux:
            return logits, logits_aux
        return logits

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "genotype": self.genotype.to_dict(),
                "num_classes": self.num_classes,
                "layers": self.num_layers,
                "init_channels": self.init_channels,
                "auxiliary": self.auxiliary,
                "in_channels": self.in_channels,
                "sync_bn": self.sync_bn,
                "seed": self.seed,
                "recompute": self.recompute,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class NetworkCIFAR(_Network):
    """The derived DARTS network for CIFAR (the reference `NetworkCIFAR`).

    Stem: pad 1, 3x3 conv to 3C, BN. Then `layers` cells, reduction cells at layers//3 and
    2*layers//3 (doubling channels); the auxiliary head reads the output of cell 2*layers//3 (8x8 at
    32x32 input); global average pooling; dense classifier.

    Args:
      genotype: a `Genotype` or its dict (stored in the config as a dict).
      num_classes: classifier width.
      layers: number of cells (>= 3).
      init_channels: C, channels of the first cells.
      auxiliary: whether to build the auxiliary head (used only when called with return_aux=True).
      in_channels: image channels.
      sync_bn: synchronise BatchNorm statistics across replicas.
      seed: seed of the drop-path masks (cell i uses seed + i); None: random.
      recompute: in training, recompute each cell's activations in the backward pass (the same
        drop-path masks) instead of keeping them; see keras_darts/recompute.py.

    Call: images (N, H, W, in_channels) float, normalised -> logits (N, num_classes) float32, or
    (logits, logits_aux) with `return_aux=True`.
    """

    def __init__(self, genotype, num_classes=10, layers=20, init_channels=36, auxiliary=True,
                 in_channels=3, stem_multiplier=3, sync_bn=False, seed=None, recompute=False,
                 **kwargs):
        self.stem_multiplier = stem_multiplier
        super().__init__(genotype, num_classes, layers, init_channels, auxiliary, in_channels, sync_bn,
                         seed, recompute, **kwargs)

    def _stem_channels(self):
        c = self.stem_multiplier * self.init_channels
        return c, c

    def _make_stem(self):
        self.stem_conv = conv2d(self.stem_multiplier * self.init_channels, 3, name="stem_conv")
        self.stem_bn = batch_norm(True, self.sync_bn, name="stem_bn")

    def _build_stem(self, input_shape):
        self.stem_conv.build(input_shape)
        self.stem_bn.build((input_shape[0], None, None, self.stem_multiplier * self.init_channels))

    def _stem(self, x, training):
        x = self.stem_bn(self.stem_conv(pad2d(x, 1)), training=training)
        return x, x

    def get_config(self):
        config = super().get_config()
        config["stem_multiplier"] = self.stem_multiplier
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class NetworkImageNet(_Network):
    """The derived DARTS network for ImageNet, mobile setting (the reference `NetworkImageNet`).

    stem0: 3x3 s2 conv to C/2, BN, ReLU, 3x3 s2 conv to C, BN; stem1: ReLU, 3x3 s2 conv, BN (all
    padding 1). The first cell gets s0 = stem0 (twice the size of s1) so it uses a FactorizedReduce.
    The auxiliary head reads cell 2*layers//3 (7x7 at 224 input). The reference pools with AvgPool(7)
    at 7x7, i.e. a global average, which is what is used here at any input size.

    Args: as `NetworkCIFAR` (defaults: 1000 classes, 14 cells, C=48), without stem_multiplier.
    """

    _FIRST_REDUCTION_PREV = True
    _AUX_CLASS = AuxiliaryHeadImageNet

    def __init__(self, genotype, num_classes=1000, layers=14, init_channels=48, auxiliary=True,
                 in_channels=3, sync_bn=False, seed=None, recompute=False, **kwargs):
        if init_channels % 2:
            raise ValueError(f"NetworkImageNet needs an even init_channels, got {init_channels}")
        super().__init__(genotype, num_classes, layers, init_channels, auxiliary, in_channels, sync_bn,
                         seed, recompute, **kwargs)

    def _stem_channels(self):
        return self.init_channels, self.init_channels

    def _make_stem(self):
        c = self.init_channels
        self.stem0_conv1 = conv2d(c // 2, 3, strides=2, name="stem0_conv1")
        self.stem0_bn1 = batch_norm(True, self.sync_bn, name="stem0_bn1")
        self.stem0_conv2 = conv2d(c, 3, strides=2, name="stem0_conv2")
        self.stem0_bn2 = batch_norm(True, self.sync_bn, name="stem0_bn2")
        self.stem1_conv = conv2d(c, 3, strides=2, name="stem1_conv")
        self.stem1_bn = batch_norm(True, self.sync_bn, name="stem1_bn")

    def _build_stem(self, input_shape):
        n, c = input_shape[0], self.init_channels
        self.stem0_conv1.build(input_shape)
        self.stem0_bn1.build((n, None, None, c // 2))
        self.stem0_conv2.build((n, None, None, c // 2))
        self.stem0_bn2.build((n, None, None, c))
        self.stem1_conv.build((n, None, None, c))
        self.stem1_bn.build((n, None, None, c))

    def _stem(self, x, training):
        x = K.relu(self.stem0_bn1(self.stem0_conv1(pad2d(x, 1)), training=training))
        s0 = self.stem0_bn2(self.stem0_conv2(pad2d(x, 1)), training=training)
        s1 = self.stem1_bn(self.stem1_conv(pad2d(K.relu(s0), 1)), training=training)
        return s0, s1
