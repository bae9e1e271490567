"""A derived cell (`Cell`) and the drop path (`DropPath`) applied to its op outputs."""

import keras
import tensorflow as tf
from keras import ops as K

from keras_darts.genotype import Genotype, genotype_from_dict
from keras_darts.ops import (PACKAGE, FactorizedReduce, Identity, ReLUConvBN, make_op,
                             track_for_checkpoint)


def _as_genotype(genotype):
    if isinstance(genotype, Genotype):
        return genotype
    return genotype_from_dict(genotype)


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

        cell = "reduce" if reduction else "normal"
        edges = getattr(self.genotype, cell)
        self.concat = tuple(getattr(self.genotype, cell + "_concat"))
        self.indices = tuple(index for _, index in edges)
        # Nodes may have any number of inputs (e.g. --derive=all_edges); two in the paper's cells.
        self.inputs_per_node = tuple(self.genotype.inputs_per_node(cell))
        self.steps = len(self.inputs_per_node)
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
        start = 0
        for n in self.inputs_per_node:
            s = None
            for k in range(start, start + n):
                op = self.cell_ops[k]
                h = op(states[self.indices[k]], training=training)
                if training and not isinstance(op, Identity):
                    h = self.drop_path(h, rate=drop_prob, training=training)
                s = h if s is None else s + h
            start += n
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
