"""Parameters and MACs of a derived network (`keras_darts.network.NetworkCIFAR/NetworkImageNet`),
from the genotype and the build settings alone. Pure numpy; the convention is `ops_cost`'s.

The auxiliary head is excluded (as the paper counts parameters; it is dropped at inference).
The cost is additive: fixed (stems, cell preprocessing, classifier) plus one term per genotype
edge that depends on the cell type, the edge's input node and its op. `edge_cost_tables` exposes
that decomposition for the budgeted derivation (`keras_darts.cost.budget`).
"""

import numpy as np

from keras_darts.cost.ops_cost import (ZERO, Cost, batch_norm, conv, conv_out, dense,
                                       factorized_reduce, op_cost, relu_conv_bn, strided)
from keras_darts.cost.supernet_cost import reduction_indices
from keras_darts.genotype import GENOTYPE_OPS

VARIANTS = ("cifar", "imagenet")


def _stem(variant, c, image_shape, stem_multiplier):
    """(Cost, (c_prev_prev, c_prev), (size_s0, size_s1)) of the stem(s)."""
    h, w, c_in = image_shape
    if variant == "cifar":
        cs = stem_multiplier * c
        cost = conv(c_in, cs, 3, h, w) + batch_norm(cs, True)  # 3x3, padding 1: size kept
        return cost, (cs, cs), ((h, w), (h, w))
    if variant != "imagenet":
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    h1, w1 = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
    h2, w2 = conv_out(h1, 3, 2, 1), conv_out(w1, 3, 2, 1)
    h3, w3 = conv_out(h2, 3, 2, 1), conv_out(w2, 3, 2, 1)
    cost = (conv(c_in, c // 2, 3, h1, w1) + batch_norm(c // 2, True)
            + conv(c // 2, c, 3, h2, w2) + batch_norm(c, True)
            + conv(c, c, 3, h3, w3) + batch_norm(c, True))
    return cost, (c, c), ((h2, w2), (h3, w3))


def cell_layout(layers, init_channels, image_shape, variant="cifar", multiplier=4, stem_multiplier=3):
    """Stem cost, then per cell dict(reduction, channels, size, preprocess) where `size` is the
    size of the cell's preprocessed inputs and `preprocess` the Cost of its two preprocessing ops;
    and the classifier's input channels."""
    stem, (c_pp, c_p), (size0, size1) = _stem(variant, init_channels, image_shape, stem_multiplier)
    reduction_prev = variant == "imagenet"  # its first cell sees a twice-larger s0
    c = init_channels
    cells = []
    for i in range(layers):
        reduction = i in reduction_indices(layers)
        if reduction:
            c *= 2
        if reduction_prev:
            pre0, _ = factorized_reduce(c_pp, c, size0)
        else:
            pre0, _ = relu_conv_bn(c_pp, c, 1, size0)
        pre1, _ = relu_conv_bn(c_p, c, 1, size1)
        cells.append({"reduction": reduction, "channels": c, "size": size1,
                      "preprocess": pre0 + pre1})
        out_size = tuple(strided(s, 2) for s in size1) if reduction else size1
        c_pp, c_p = c_p, multiplier * c
        size0, size1 = size1, out_size
        reduction_prev = reduction
    return stem, cells, c_p


def edge_cost(name, index, reduction, channels, size):
    """Cost of genotype edge (name, index) in a derived cell whose inputs have `size`."""
    stride = 2 if reduction and index < 2 else 1
    in_size = size if index < 2 or not reduction else tuple(strided(s, 2) for s in size)
    cost, _ = op_cost(name, channels, in_size, stride, affine=True, search=False)
    return cost


def edge_cost_tables(layers, init_channels, image_shape, num_classes, variant="cifar", steps=4,
                     multiplier=4, stem_multiplier=3):
    """The additive decomposition of a derived network's cost.

    Returns:
      (fixed, tables): `fixed` the Cost of everything but the genotype's edges; `tables` a dict
      {"normal", "reduce"} of (steps + 1, len(GENOTYPE_OPS), 2) int arrays: [params, macs] of op k
      on an edge from input node j, summed over all cells of that type.
    """
    stem, cells, c_last = cell_layout(layers, init_channels, image_shape, variant, multiplier,
                                      stem_multiplier)
    fixed = stem + dense(c_last, num_classes)
    tables = {t: np.zeros((steps + 1, len(GENOTYPE_OPS), 2), dtype=np.int64)
              for t in ("normal", "reduce")}
    for cell in cells:
        fixed = fixed + cell["preprocess"]
        table = tables["reduce" if cell["reduction"] else "normal"]
        for j in range(steps + 1):
            for k, name in enumerate(GENOTYPE_OPS):
                cost = edge_cost(name, j, cell["reduction"], cell["channels"], cell["size"])
                table[j, k] += (cost.params, cost.macs)
    return fixed, tables


def network_cost(genotype, layers, init_channels, image_shape, num_classes, variant="cifar",
                 stem_multiplier=3):
    """Cost(params, macs) of the derived network, auxiliary head excluded, at `image_shape`
    (H, W, C_in) for one image."""
    stem, cells, c_last = cell_layout(layers, init_channels, image_shape, variant,
                                      len(genotype.normal_concat), stem_multiplier)
    total = stem + dense(c_last, num_classes)
    for cell in cells:
        edges = genotype.reduce if cell["reduction"] else genotype.normal
        total = total + cell["preprocess"]
        for name, index in edges:
            total = total + edge_cost(name, index, cell["reduction"], cell["channels"], cell["size"])
    return total


def cost_record(cost, latency_ms=None):
    """The JSON fields every derived-network report uses."""
    record = {"parameters": int(cost.params), "macs": int(cost.macs)}
    if latency_ms is not None:
        record["latency_ms"] = round(float(latency_ms), 3)
    return record


def format_cost(cost, latency_ms=None):
    text = f"{cost.params / 1e6:.3f}M parameters (auxiliary head excluded), {cost.macs / 1e6:.1f}M MACs"
    if latency_ms is not None:
        text += f", {latency_ms:.2f} ms/image"
    return text


__all__ = ["ZERO", "Cost", "cell_layout", "cost_record", "edge_cost", "edge_cost_tables",
           "format_cost", "network_cost"]
