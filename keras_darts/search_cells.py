"""Search-space layers: `MixedOp` (one edge, all candidates) and `SearchCell` (the DAG of edges)."""

import keras
from keras import ops as K

from keras_darts.ops import (PACKAGE, PRIMITIVES, FactorizedReduce, ReLUConvBN, input_relu,
                             make_op, track_for_checkpoint)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MixedOp(keras.layers.Layer):
    """One edge of the search cell: sum_k softmax(alpha)_k * op_k(x) over the 8 primitives.

    Call arguments:
      x: (N, H, W, C) tensor.
      weights: (len(PRIMITIVES),) softmaxed alphas of this edge, in the mixing dtype (float32
        under 16-bit mixed precision: each op's output is cast up and the sum is float32).
      relu_x: relu(x), when the caller computes it once for several edges (SearchCell does);
        the ops that begin with a ReLU take it instead of their own.

    `none` is kept inside the softmax (its weight takes mass from the others) but not computed:
    weight * 0 contributes nothing to the sum or its gradients.
    """

    def __init__(self, filters, strides=1, sync_bn=False, **kwargs):
        kwargs.setdefault("autocast", False)  # keep float32 mixing weights float32
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.sync_bn = sync_bn
        self.candidate_ops = [
            None if name == "none"
            else make_op(name, filters, strides, affine=False, sync_bn=sync_bn, search=True,
                         layer_name=name)
            for name in PRIMITIVES
        ]
        track_for_checkpoint(self, "op_", self.candidate_ops)

    def build(self, x_shape, weights_shape=None):
        # Explicit build: Keras would otherwise trace the whole edge symbolically to build it.
        for op in self.candidate_ops:
            if op is not None:
                op.build(x_shape)

    def call(self, x, weights, training=None, relu_x=None):
        if not isinstance(weights, (list, tuple)):
            weights = K.unstack(weights)  # one op, not one slice (and slice gradient) per candidate
        out = None
        for k, op in enumerate(self.candidate_ops):
            if op is None:
                continue
            shared = {"relu_x": relu_x} if relu_x is not None and getattr(
                op, "starts_with_relu", False) else {}
            if getattr(op, "folds_scale", False) and x.dtype == weights[k].dtype:
                # The weight scales the op's final BN: one fused kernel instead of a BN, a
                # multiply and their gradients. Not under mixed precision, where the op computes
                # in 16 bits and the mixture is float32.
                y = op(x, training=training, out_scale=weights[k], **shared)
            else:
                h = op(x, training=training, **shared)
                if h.dtype != weights[k].dtype:
                    h = K.cast(h, weights[k].dtype)
                y = weights[k] * h
            out = y if out is None else out + y
        return out

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides, "sync_bn": self.sync_bn})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class SearchCell(keras.layers.Layer):
    """A search cell: 2 input nodes, `steps` intermediate nodes, output = concat of the last
    `multiplier` nodes. Node i is the sum of MixedOps over all earlier nodes (2+i edges), so a cell
    has sum(2+i) edges (14 for 4 steps); in a reduction cell edges leaving the inputs have stride 2.

    Options (off by default: the reference's cell):
      partial_channels: K > 1 makes every edge a PC-DARTS `PartialChannelMixedOp` (C/K channels
        through the ops); node sums are then weighted by `edge_weights`.
      aux_skip: DARTS- (Chu et al., ICLR 2021): every edge also adds `aux_weight` * skip(x), outside
        the softmax (FactorizedReduce on stride-2 edges, its own weights).

    Call arguments:
      s0, s1: outputs of the cells k-2 and k-1.
      weights: (edges, len(PRIMITIVES)) softmaxed alphas for this cell type (mixing dtype).
      edge_weights: (edges,) per-node softmaxed betas (PC-DARTS edge normalisation) or None.
      aux_weight: scalar weight of the auxiliary skips (with aux_skip).

    A node is summed in the mixing dtype, then cast to the compute dtype.
    """

    def __init__(self, filters, reduction=False, reduction_prev=False, steps=4, multiplier=4,
                 sync_bn=False, partial_channels=1, aux_skip=False, **kwargs):
        kwargs.setdefault("autocast", False)  # keep float32 mixing weights float32
        super().__init__(**kwargs)
        self.filters = filters
        self.reduction = reduction
        self.reduction_prev = reduction_prev
        self.steps = steps
        self.multiplier = multiplier
        self.sync_bn = sync_bn
        self.partial_channels = partial_channels
        self.aux_skip = aux_skip
        bn = {"affine": False, "sync_bn": sync_bn}
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(filters, name="preprocess0", **bn)
        else:
            self.preprocess0 = ReLUConvBN(filters, 1, 1, 0, name="preprocess0", **bn)
        self.preprocess1 = ReLUConvBN(filters, 1, 1, 0, name="preprocess1", **bn)
        self.edges = []
        self.aux_ops = []
        for i in range(steps):
            for j in range(2 + i):
                strides = 2 if reduction and j < 2 else 1
                name = f"edge_{j}_{i + 2}"
                if partial_channels > 1:
                    # Imported here: partial_channels builds on MixedOp from this module.
                    from keras_darts.partial_channels import PartialChannelMixedOp

                    self.edges.append(PartialChannelMixedOp(filters, strides, partial_channels,
                                                            sync_bn, name=name))
                else:
                    self.edges.append(MixedOp(filters, strides, sync_bn, name=name))
                if aux_skip:
                    self.aux_ops.append(make_op("skip_connect", filters, strides, affine=False,
                                                sync_bn=sync_bn, layer_name=f"aux_skip_{j}_{i + 2}"))
        track_for_checkpoint(self, "edge_", self.edges)
        track_for_checkpoint(self, "aux_skip_", self.aux_ops)

    def build(self, s0_shape, s1_shape, weights_shape=None):
        self.preprocess0.build(s0_shape)
        self.preprocess1.build(s1_shape)
        node_shape = (s1_shape[0], None, None, self.filters)
        for edge in self.edges:
            edge.build(node_shape)
        for op in self.aux_ops:
            op.build(node_shape)

    def call(self, s0, s1, weights, edge_weights=None, aux_weight=None, training=None):
        states = [self.preprocess0(s0, training=training), self.preprocess1(s1, training=training)]
        op_weights = [K.unstack(w) for w in K.unstack(weights)]
        betas = None if edge_weights is None else K.unstack(edge_weights)
        # One ReLU per node for the ops that begin with one (MixedOp's `relu_x`); PC-DARTS edges
        # pass a channel slice to their ops and keep their own.
        relus = [] if self.partial_channels == 1 else None
        offset = 0
        for _ in range(self.steps):
            s = None
            for j, h in enumerate(states):
                e = offset + j
                if relus is None:
                    y = self.edges[e](h, op_weights[e], training=training)
                else:
                    if j == len(relus):
                        relus.append(input_relu(h))
                    y = self.edges[e](h, op_weights[e], training=training, relu_x=relus[j])
                if betas is not None:
                    y = betas[e] * y
                if self.aux_ops:
                    skip = self.aux_ops[e](h, training=training)
                    if skip.dtype != y.dtype:
                        skip = K.cast(skip, y.dtype)
                    y = y + aux_weight * skip
                s = y if s is None else s + y
            if s.dtype != states[0].dtype:
                s = K.cast(s, states[0].dtype)
            offset += len(states)
            states.append(s)
        return K.concatenate(states[-self.multiplier :], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "reduction": self.reduction,
                "reduction_prev": self.reduction_prev,
                "steps": self.steps,
                "multiplier": self.multiplier,
                "sync_bn": self.sync_bn,
                "partial_channels": self.partial_channels,
                "aux_skip": self.aux_skip,
            }
        )
        return config
