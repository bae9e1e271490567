"""The DARTS search network (supernet): stem, SearchCells, global pooling, classifier, and alphas."""

import keras
import numpy as np
from keras import ops as K

from keras_darts import genotype as genotype_lib
from keras_darts.ops import PACKAGE, PRIMITIVES, batch_norm, conv2d, pad2d, track_for_checkpoint
from keras_darts.partial_channels import edge_softmax
from keras_darts.recompute import call_with_recompute
from keras_darts.search_cells import SearchCell


@keras.saving.register_keras_serializable(package=PACKAGE)
class SearchNetwork(keras.Model):
    """The supernet of Liu et al. (2019), `model_search.Network` in the reference code.

    Stem (3x3 conv to stem_multiplier*C + BN), `layers` SearchCells with reduction cells at layers//3
    and 2*layers//3 (doubling channels), global average pooling, dense classifier. One alpha matrix
    (edges x len(PRIMITIVES), init 1e-3*N(0,1)) is shared by all normal cells, one by all reduction
    cells. The alphas are non-trainable variables: `trainable_variables` is exactly the network
    weights (`weight_variables`); `arch_variables` returns the alphas.

    Args:
      num_classes: classifier width.
      layers: number of cells (>= 3 so that both reduction cells exist).
      init_channels: C, channels of the first cells.
      steps: intermediate nodes per cell.
      multiplier: how many of the last nodes are concatenated into a cell's output.
      stem_multiplier: stem width is stem_multiplier * C.
      sync_bn: synchronise BatchNorm statistics across replicas.
      alpha_seed: seed of the alpha initialiser.
      recompute: in training, recompute each cell's activations in the backward pass instead of
        keeping them (`--recompute`; same gradients, less memory, more time; see recompute.py).
      partial_channels: PC-DARTS K (1: off). With K > 1 the edges mix C/K channels and each cell
        type gets `betas` (edges,), init 1e-3*N(0,1): node = sum softmax(betas into node) * edge.
      aux_skip: DARTS- auxiliary skip on every edge, weighted by the `aux_skip_weight` variable
        (the search loop sets it each epoch: beta_t, 1 -> 0).

    Call: images (N, H, W, C_in) float, normalised -> logits (N, num_classes).
    """

    def __init__(self, num_classes=10, layers=8, init_channels=16, steps=4, multiplier=4,
                 stem_multiplier=3, sync_bn=False, alpha_seed=None, recompute=False,
                 partial_channels=1, aux_skip=False, **kwargs):
        super().__init__(**kwargs)
        if layers < 3:
            raise ValueError(f"layers must be >= 3 (two reduction cells and a normal one), got {layers}")
        self.num_classes = num_classes
        self.num_layers = layers
        self.init_channels = init_channels
        self.steps = steps
        self.multiplier = multiplier
        self.stem_multiplier = stem_multiplier
        self.sync_bn = sync_bn
        self.alpha_seed = alpha_seed
        self.recompute = recompute
        self.partial_channels = partial_channels
        self.aux_skip = aux_skip

        # === Layers ===
        self.stem_conv = conv2d(stem_multiplier * init_channels, 3, name="stem_conv")
        self.stem_bn = batch_norm(affine=True, sync_bn=sync_bn, name="stem_bn")
        self.cells = []
        c_curr = init_channels
        reduction_prev = False
        for i in range(layers):
            reduction = i in self.reduction_indices
            if reduction:
                c_curr *= 2
            self.cells.append(SearchCell(c_curr, reduction, reduction_prev, steps, multiplier,
                                         sync_bn, partial_channels, aux_skip, name=f"cell_{i}"))
            reduction_prev = reduction
        track_for_checkpoint(self, "cell_", self.cells)
        self.global_pool = keras.layers.GlobalAveragePooling2D(name="global_pool")
        self.classifier = keras.layers.Dense(num_classes, dtype=_float32_if_mixed(),
                                             name="classifier")

        # === Architecture parameters ===
        k = genotype_lib.num_edges(steps)
        seeds = (None, None) if alpha_seed is None else (alpha_seed, alpha_seed + 1)
        # Not trainable: the weight optimiser never sees them. autocast=False keeps them (and the
        # softmax over them) float32 under mixed precision.
        self.alphas_normal = self.add_weight(shape=(k, len(PRIMITIVES)), initializer=_alpha_init(seeds[0]),
                                             trainable=False, autocast=False, dtype="float32",
                                             name="alphas_normal")
        self.alphas_reduce = self.add_weight(shape=(k, len(PRIMITIVES)), initializer=_alpha_init(seeds[1]),
                                             trainable=False, autocast=False, dtype="float32",
                                             name="alphas_reduce")
        self.betas_normal = self.betas_reduce = None
        if partial_channels > 1:
            beta_seeds = (None, None) if alpha_seed is None else (alpha_seed + 2, alpha_seed + 3)
            self.betas_normal, self.betas_reduce = (
                self.add_weight(shape=(k,), initializer=_alpha_init(seed), trainable=False,
                                autocast=False, dtype="float32", name=name)
                for seed, name in zip(beta_seeds, ("betas_normal", "betas_reduce")))
        # beta_t of the auxiliary skips: state of the schedule, not an architecture parameter.
        self.aux_skip_weight = None
        if aux_skip:
            self.aux_skip_weight = self.add_weight(shape=(), initializer="ones", trainable=False,
                                                   autocast=False, dtype="float32",
                                                   name="aux_skip_weight")

    def build(self, input_shape):
        n = input_shape[0]
        c_stem = self.stem_multiplier * self.init_channels
        self.stem_conv.build(input_shape)
        self.stem_bn.build((n, None, None, c_stem))
        c_prev_prev, c_prev = c_stem, c_stem
        for cell in self.cells:
            cell.build((n, None, None, c_prev_prev), (n, None, None, c_prev))
            c_prev_prev, c_prev = c_prev, cell.multiplier * cell.filters
        self.global_pool.build((n, None, None, c_prev))
        self.classifier.build((n, c_prev))

    @property
    def reduction_indices(self):
        return (self.num_layers // 3, 2 * self.num_layers // 3)

    @property
    def arch_variables(self):
        """The alphas: [alphas_normal, alphas_reduce] (+ [betas_normal, betas_reduce] with PC)."""
        betas = [] if self.betas_normal is None else [self.betas_normal, self.betas_reduce]
        return [self.alphas_normal, self.alphas_reduce] + betas

    @property
    def weight_variables(self):
        """The network weights, trained on the search-train split (== trainable_variables)."""
        return self.trainable_variables

    def mixing_weights(self):
        """(w_normal, w_reduce, e_normal, e_reduce): softmaxed alphas per edge and, with PC-DARTS,
        per-node softmaxed betas (else None), float32."""
        w_normal = K.softmax(self.alphas_normal, axis=-1)
        w_reduce = K.softmax(self.alphas_reduce, axis=-1)
        e_normal = e_reduce = None
        if self.betas_normal is not None:
            e_normal = edge_softmax(self.betas_normal, self.steps)
            e_reduce = edge_softmax(self.betas_reduce, self.steps)
        return w_normal, w_reduce, e_normal, e_reduce

    def call(self, inputs, training=None, arch_weights=None):
        """`arch_weights`: a (w_normal, w_reduce, e_normal, e_reduce) tuple used instead of the
        softmaxed architecture variables (DARTS-PT masks and projects ops this way)."""
        mix_dtype = mixing_dtype(self.compute_dtype)
        weights = self.mixing_weights() if arch_weights is None else arch_weights
        w_normal, w_reduce, e_normal, e_reduce = (
            None if w is None else K.cast(w, mix_dtype) for w in weights)
        aux = None
        if self.aux_skip_weight is not None:
            aux = K.cast(self.aux_skip_weight, mix_dtype)
        x = self.stem_bn(self.stem_conv(pad2d(inputs, 1)), training=training)
        s0 = s1 = x
        for cell in self.cells:
            weights, edges = (w_reduce, e_reduce) if cell.reduction else (w_normal, e_normal)
            if self.recompute and training:  # (config refuses --recompute with PC/aux skips)
                s0, s1 = s1, call_with_recompute(
                    cell, lambda a, b, w, cell=cell: cell(a, b, w, training=True), s0, s1, weights)
            else:
                s0, s1 = s1, cell(s0, s1, weights, edges, aux, training=training)
        logits = self.classifier(self.global_pool(s1))
        return K.cast(logits, "float32")

    def arch_values(self):
        """{name: numpy array} of the architecture variables (alphas, and betas with PC)."""
        return {v.name.split("/")[-1]: np.asarray(v.numpy()) for v in self.arch_variables}

    def genotype(self, **options):
        """The genotype the current alphas (and betas) derive; options of
        genotype.derive_genotype (derive, max_skip). Pure numpy."""
        a = self.arch_values()
        return genotype_lib.derive_genotype(
            a["alphas_normal"], a["alphas_reduce"], self.steps, self.multiplier,
            betas_normal=a.get("betas_normal"), betas_reduce=a.get("betas_reduce"), **options)

    def count_weight_parameters(self):
        """Trainable parameters (BN moving statistics and alphas excluded), as the reference counts."""
        return int(sum(np.prod(v.shape) for v in self.weight_variables))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "layers": self.num_layers,
                "init_channels": self.init_channels,
                "steps": self.steps,
                "multiplier": self.multiplier,
                "stem_multiplier": self.stem_multiplier,
                "sync_bn": self.sync_bn,
                "alpha_seed": self.alpha_seed,
                "recompute": self.recompute,
                "partial_channels": self.partial_channels,
                "aux_skip": self.aux_skip,
            }
        )
        return config


def mixing_dtype(compute_dtype):
    """The dtype of the edge weights softmax(alpha) and of the mixture sums: float32 under 16-bit
    mixed precision, whose ~0.4% (bfloat16) resolution would erase the early differences between
    alphas (~1e-3) and sum each weight's gradient in 16 bits; else the compute dtype."""
    return "float32" if compute_dtype in ("bfloat16", "float16") else compute_dtype


def _float32_if_mixed():
    """The classifier computes in float32 under mixed precision (numerically safer logits)."""
    policy = keras.config.dtype_policy()
    return "float32" if policy.compute_dtype != policy.variable_dtype else None


def _alpha_init(seed):
    """1e-3 * N(0, 1), as the reference initialises alphas."""
    return keras.initializers.RandomNormal(stddev=1e-3, seed=seed)
