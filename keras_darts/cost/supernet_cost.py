"""The cost of every candidate op on every edge of the search network, and the expected cost
of the alphas. Pure numpy.

The supernet is laid out as `keras_darts.supernet.SearchNetwork` builds it: a stride-1 stem keeps
the input size, `layers` cells with reductions at layers//3 and 2*layers//3 (channels doubled,
size halved); node j of a cell has C channels; in a reduction cell the edges leaving the two
inputs have stride 2.

Expected cost (FBNet, ProxylessNAS): normal cells share one alpha matrix and reduction cells
another, so per cell type the costs of the same (edge, op) in all cells of that type add up:
  E[cost] = sum_type sum_edges sum_ops softmax(alpha_type)[edge, op] * cost_type[edge, op].
The penalty divides it by the cost of the network whose every edge is sep_conv_5x5 (the priciest
primitive by params and MACs), so 1.0 means "as expensive as all-sep_conv_5x5".
"""

import numpy as np

from keras_darts.cost.ops_cost import op_cost, strided
from keras_darts.genotype import PRIMITIVES, softmax

METRICS = ("params", "macs", "latency")
NORMALISER_OP = "sep_conv_5x5"


def reduction_indices(layers):
    return (layers // 3, 2 * layers // 3)


def search_cells(layers, init_channels, image_size):
    """[(reduction, C, (h_in, w_in))] per cell of the supernet; (h_in, w_in) is the size of the
    cell's preprocessed inputs (the size of s1)."""
    size = tuple(image_size)
    c = init_channels
    out = []
    for i in range(layers):
        reduction = i in reduction_indices(layers)
        if reduction:
            c *= 2
        out.append((reduction, c, size))
        if reduction:
            size = tuple(strided(s, 2) for s in size)
    return out


def edge_inputs(steps):
    """Input node index of each edge, in alpha-row order."""
    return [j for i in range(steps) for j in range(i + 2)]


def cell_op_costs(reduction, channels, size, steps, affine=False, search=True):
    """(edges, len(PRIMITIVES), 2) array of [params, macs] of each op on each edge of one cell."""
    out_size = tuple(strided(s, 2) for s in size) if reduction else tuple(size)
    table = np.zeros((len(edge_inputs(steps)), len(PRIMITIVES), 2), dtype=np.int64)
    for e, j in enumerate(edge_inputs(steps)):
        stride = 2 if reduction and j < 2 else 1
        in_size = size if j < 2 else out_size
        for k, name in enumerate(PRIMITIVES):
            cost, _ = op_cost(name, channels, in_size, stride, affine, search)
            table[e, k] = cost.params, cost.macs
    return table


def supernet_op_costs(layers, init_channels, image_size, steps=4):
    """Per cell of the supernet: dict(cell, reduction, channels, size, table) where `table` is the
    (edges, len(PRIMITIVES), 2) [params, macs] array of every candidate op on every edge."""
    return [{"cell": i, "reduction": r, "channels": c, "size": list(size),
             "table": cell_op_costs(r, c, size, steps)}
            for i, (r, c, size) in enumerate(search_cells(layers, init_channels, image_size))]


def cost_tables(layers, init_channels, image_size, steps=4, metric="macs", latency=None):
    """(normal, reduce): (edges, len(PRIMITIVES)) float arrays, the cost of each (edge, op) summed
    over the cells that share that alpha matrix.

    Args:
      metric: "params", "macs" or "latency" (ms, looked up in `latency`, a LatencyTable).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    k = len(edge_inputs(steps))
    tables = {False: np.zeros((k, len(PRIMITIVES))), True: np.zeros((k, len(PRIMITIVES)))}
    for reduction, c, size in search_cells(layers, init_channels, image_size):
        if metric == "latency":
            tables[reduction] += latency.cell_table(reduction, c, size, steps)
        else:
            tables[reduction] += cell_op_costs(reduction, c, size, steps)[..., METRICS.index(metric)]
    return tables[False], tables[True]


def normaliser(table_normal, table_reduce):
    """Cost of the all-sep_conv_5x5 network's edges (the penalty's unit)."""
    k = PRIMITIVES.index(NORMALISER_OP)
    return float(table_normal[:, k].sum() + table_reduce[:, k].sum())


def expected_cost(alphas_normal, alphas_reduce, table_normal, table_reduce):
    """sum over both cell types of softmax(alpha) * cost (unnormalised)."""
    return float((softmax(alphas_normal) * table_normal).sum()
                 + (softmax(alphas_reduce) * table_reduce).sum())


def expected_cost_grad(alphas, table):
    """d E[cost] / d alpha for one matrix: p * (c - sum_o p_o c_o), row by row (softmax rule)."""
    p = softmax(alphas)
    return p * (table - (p * table).sum(axis=1, keepdims=True))
