"""Derived (discrete) DARTS networks as plain Keras models: `NetworkCIFAR`, `NetworkImageNet`.

Reference: Liu, Simonyan & Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, and
`cnn/model.py` of the reference implementation. Each cell wires the ops a genotype names; BN is affine
(the search network's is not); drop path and an auxiliary head regularise retraining.

Return convention: `model(x, training=...)` always returns the logits (N, num_classes), float32.
`model(x, training=True, return_aux=True)` returns `(logits, logits_aux)` (`logits_aux` is None when
the model has no auxiliary head). Serving calls `model(x, training=False)`: no auxiliary head, no drop
path. The drop-path rate is the model's non-trainable float32 variable `drop_path_prob`; assign it
(`model.set_drop_path_prob(p)`) each epoch without retracing.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops as K

from keras_darts.genotype import Genotype, genotype_from_dict
from keras_darts.ops import (PACKAGE, FactorizedReduce, Identity, ReLUConvBN, batch_norm, conv2d,
                             make_op, pad2d, track_for_checkpoint)


def _as_genotype(genotype):
    if isinstance(genotype, Genotype):
        return genotype
    return genotype_from_dict(genotype)


def _float32_if_mixed():
    """Classifiers compute in float32 under mixed precision (numerically safer logits)."""
    policy = keras.config.dtype_policy()
    return "float32" if policy.compute_dtype != policy.variable_dtype else None


@keras.saving.register_keras_serializable(package=PACKAGE)
class DropPath(keras.layers.Layer):
    """Drops whole samples of a branch: x / keep * Bernoulli(keep) with one draw per sample.

    The reference's `utils.drop_path`: the mask has shape (N, 1, 1, 1) and keep = 1 - rate. Identity
    at inference and when the rate is 0.

    Args:
      rate: default drop probability; `call(..., rate=t)` overrides it with a float or a scalar
        tensor/variable (so a schedule can change it without retracing).
      seed: seed of the layer's `keras.random.SeedGenerator` (None: random).

    Under a distribution strategy the replica id is folded into the seed, so replicas draw
    independent masks for their shards.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")

    def call(self, x, rate=None, training=None):
        rate = self.rate if rate is None else rate
        if not training or (isinstance(rate, (int, float)) and rate == 0):
            return x
        keep = 1.0 - K.cast(rate, "float32")
        seed = self.seed_generator.next()
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            seed = seed + K.cast(K.stack([0, replica.replica_id_in_sync_group]), seed.dtype)
        u = tf.random.stateless_uniform((K.shape(x)[0], 1, 1, 1), seed=K.cast(seed, "int64"))
        mask = K.cast(u < keep, x.dtype)
        return x / K.cast(keep, x.dtype) * mask

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class Cell(keras.layers.Layer):
    """A derived cell (the reference `model.Cell`): the ops the genotype names, affine BN.

    Inputs s0, s1 (outputs of cells k-2, k-1) are preprocessed to `filters` channels (s0 with a
    FactorizedReduce when the previous cell reduced, so both have the same size). Node i is
    op1(states[idx1]) + op2(states[idx2]); edges leaving the inputs of a reduction cell have stride 2.
    The output concatenates the `concat` nodes: multiplier * filters channels.

    Args:
      genotype: a `Genotype` or its dict; the cell uses `reduce` or `normal` according to `reduction`.
      filters: C, channels of every node.
      reduction: whether this is a reduction cell (halves the spatial size).
      reduction_prev: whether the previous cell was a reduction cell.
      sync_bn: synchronise BatchNorm statistics across replicas.
      seed: seed of the drop-path mask generator.

    Call arguments:
      s0, s1: (N, H0, W0, C0), (N, H1, W1, C1) tensors.
      drop_prob: drop-path rate (float or scalar tensor); applied in training to every op output
        that is not an `Identity`, as the reference does.
    """

    def __init__(self, genotype, filters, reduction=False, reduction_prev=False, sync_bn=False,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        self.genotype = _as_genotype(genotype)
        self.filters = filters
        self.reduction = reduction
        self.reduction_prev = reduction_prev
        self.sync_bn = sync_bn
        self.seed = seed

        edges = self.genotype.reduce if reduction else self.genotype.normal
        self.concat = tuple(self.genotype.reduce_concat if reduction else self.genotype.normal_concat)
        self.indices = tuple(index for _, index in edges)
        self.steps = len(edges) // 2
        self.multiplier = len(self.concat)

        bn = {"affine": True, "sync_bn": sync_bn}
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(filters, name="preprocess0", **bn)
        else:
            self.preprocess0 = ReLUConvBN(filters, 1, 1, 0, name="preprocess0", **bn)
        self.preprocess1 = ReLUConvBN(filters, 1, 1, 0, name="preprocess1", **bn)
        self.cell_ops = [
            make_op(name, filters, 2 if reduction and index < 2 else 1, affine=True, sync_bn=sync_bn,
                    search=False, layer_name=f"op_{k}_{name}")
            for k, (name, index) in enumerate(edges)
        ]
        track_for_checkpoint(self, "op_", self.cell_ops)
        self.drop_path = DropPath(0.0, seed=seed, name="drop_path")

    def build(self, s0_shape, s1_shape, drop_prob_shape=None):
        # Explicit build: Keras would otherwise trace every op symbolically to build it.
        self.preprocess0.build(s0_shape)
        self.preprocess1.build(s1_shape)
        node_shape = (s1_shape[0], None, None, self.filters)
        for op in self.cell_ops:
            op.build(node_shape)

    def call(self, s0, s1, drop_prob=0.0, training=None):
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        for i in range(self.steps):
            s = None
            for k in (2 * i, 2 * i + 1):
                op = self.cell_ops[k]
                h = op(states[self.indices[k]], training=training)
                if training and not isinstance(op, Identity):
                    h = self.drop_path(h, rate=drop_prob, training=training)
                s = h if s is None else s + h
            states.append(s)
        return K.concatenate([states[i] for i in self.concat], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "genotype": self.genotype.to_dict(),
                "filters": self.filters,
                "reduction": self.reduction,
                "reduction_prev": self.reduction_prev,
                "sync_bn": self.sync_bn,
                "seed": self.seed,
            }
        )
        return config


class _AuxiliaryHead(keras.layers.Layer):
    """ReLU, AvgPool 5 (stride `_POOL_STRIDE`, no padding), 1x1 conv 128, BN, ReLU, 2x2 conv 768,
    [BN], ReLU, flatten, Dense. The 2x2 conv must see a 2x2 map (8x8 input on CIFAR, 7x7 on ImageNet),
    so the flattened features are exactly 768 wide.

    Args:
      num_classes: classifier width.
      sync_bn: synchronise BatchNorm statistics across replicas.
    """

    _POOL_STRIDE = 3
    _BN_768 = True

    def __init__(self, num_classes, sync_bn=False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.sync_bn = sync_bn
        self.conv1 = conv2d(128, 1, name="conv1")
        self.bn1 = batch_norm(True, sync_bn, name="bn1")
        self.conv2 = conv2d(768, 2, name="conv2")
        self.bn2 = batch_norm(True, sync_bn, name="bn2") if self._BN_768 else None
        self.classifier = keras.layers.Dense(
            num_classes, kernel_initializer=_torch_linear_init(),
            dtype=_float32_if_mixed(), name="classifier")

    def build(self, input_shape):
        n, c = input_shape[0], input_shape[-1]
        self.conv1.build((n, None, None, c))
        self.bn1.build((n, None, None, 128))
        self.conv2.build((n, None, None, 128))
        if self.bn2 is not None:
            self.bn2.build((n, None, None, 768))
        self.classifier.build((n, 768))

    def call(self, x, training=None):
        size = x.shape[1:3]
        if None not in size and any((d - 5) // self._POOL_STRIDE + 1 != 2 for d in size):
            # The reference fails here too, with a less helpful message.
            raise ValueError(
                f"{type(self).__name__} needs a feature map that pools to 2x2 (e.g. 8x8 on CIFAR, "
                f"7x7 on ImageNet), got {tuple(size)}; use the standard input size or "
                "auxiliary=False")
        x = K.average_pool(K.relu(x), 5, strides=self._POOL_STRIDE, padding="valid")
        x = K.relu(self.bn1(self.conv1(x), training=training))
        x = self.conv2(x)
        if self.bn2 is not None:
            x = self.bn2(x, training=training)
        x = K.relu(x)
        return K.cast(self.classifier(K.reshape(x, (K.shape(x)[0], -1))), "float32")

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "sync_bn": self.sync_bn})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class AuxiliaryHeadCIFAR(_AuxiliaryHead):
    """Auxiliary classifier for CIFAR (8x8 input): pool stride 3, BN after the 768 conv."""


@keras.saving.register_keras_serializable(package=PACKAGE)
class AuxiliaryHeadImageNet(_AuxiliaryHead):
    """Auxiliary classifier for ImageNet (7x7 input): pool stride 2 and no BN after the 768 conv (the
    reference comments it out to match the paper's experiments)."""

    _POOL_STRIDE = 2
    _BN_768 = False


def _torch_linear_init():
    """PyTorch's nn.Linear kernel init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (the bias starts at 0)."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


class _Network(keras.Model):
    """Shared body of NetworkCIFAR and NetworkImageNet: cells, auxiliary head, pooling, classifier.

    Subclasses define the stem (`_make_stem`, `_build_stem`, `_stem`) and whether the first cell
    sees a reduced s0 (`_FIRST_REDUCTION_PREV`).
    """

    _FIRST_REDUCTION_PREV = False
    _AUX_CLASS = AuxiliaryHeadCIFAR

    def __init__(self, genotype, num_classes, layers, init_channels, auxiliary, in_channels, sync_bn,
                 seed, **kwargs):
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

    Call: images (N, H, W, in_channels) float, normalised -> logits (N, num_classes) float32, or
    (logits, logits_aux) with `return_aux=True`.
    """

    def __init__(self, genotype, num_classes=10, layers=20, init_channels=36, auxiliary=True,
                 in_channels=3, stem_multiplier=3, sync_bn=False, seed=None, **kwargs):
        self.stem_multiplier = stem_multiplier
        super().__init__(genotype, num_classes, layers, init_channels, auxiliary, in_channels, sync_bn,
                         seed, **kwargs)

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
                 in_channels=3, sync_bn=False, seed=None, **kwargs):
        if init_channels % 2:
            raise ValueError(f"NetworkImageNet needs an even init_channels, got {init_channels}")
        super().__init__(genotype, num_classes, layers, init_channels, auxiliary, in_channels, sync_bn,
                         seed, **kwargs)

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


def count_parameters(model, exclude_auxiliary=True):
    """Trainable parameters (BN moving statistics excluded), as the reference's
    `count_parameters_in_MB` counts them (times 1e6): the auxiliary head is excluded by default."""
    excluded = set()
    head = getattr(model, "auxiliary_head", None)
    if exclude_auxiliary and head is not None:
        excluded = {id(v) for v in head.trainable_variables}
    return int(sum(np.prod(v.shape) for v in model.trainable_variables if id(v) not in excluded))


VARIANTS = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}


def build_network_from_config(config):
    """Builds (and builds the weights of) the derived network a retrain `config.json` describes.

    Keys: `genotype` (dict), `num_classes`, `layers`, `init_channels`, `image_shape` ([H, W, C]),
    `variant` ("cifar" | "imagenet", default "cifar"), `auxiliary` (default True); optional
    `sync_bn`, `seed`.

    Raises:
      ValueError: a key is missing or malformed (the message names it).
    """
    for key in ("genotype", "num_classes", "layers", "init_channels", "image_shape"):
        if key not in config:
            raise ValueError(f"missing key {key!r}")
    variant = config.get("variant", "cifar")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    image_shape = config["image_shape"]
    if (not isinstance(image_shape, (list, tuple)) or len(image_shape) != 3
            or not all(isinstance(d, int) and d > 0 for d in image_shape)):
        raise ValueError(f"image_shape must be [height, width, channels], got {image_shape!r}")
    try:
        genotype = genotype_from_dict(config["genotype"])
    except ValueError as e:
        raise ValueError(f"genotype: {e}") from None
    model = VARIANTS[variant](
        genotype,
        num_classes=int(config["num_classes"]),
        layers=int(config["layers"]),
        init_channels=int(config["init_channels"]),
        auxiliary=bool(config.get("auxiliary", True)),
        in_channels=image_shape[2],
        sync_bn=bool(config.get("sync_bn", False)),
        seed=config.get("seed"),
    )
    model.build((None, *image_shape))
    return model
