"""Deriving a discrete cell from architecture weights: pure numpy.

`derive_genotype` is the reference's `Network.genotype()` (top-2 incoming edges per node, never
`none`), extended by flags that are off by default:
  - betas (PC-DARTS edge normalisation): each edge's op weights are multiplied by its edge weight
    (softmax of the betas over the edges into its node) before edges are ranked;
  - derive="all_edges": every edge is kept, each with its strongest non-`none` op;
  - max_skip=N (P-DARTS): the normal cell keeps at most N skip connections.
"""

import numpy as np

from keras_darts.genotype.core import _NONE, PRIMITIVES, Genotype, num_edges

DERIVE_CHOICES = ("top2", "all_edges")
_SKIP = PRIMITIVES.index("skip_connect")


def softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def edge_softmax(betas, steps):
    """Softmax of betas over the edges into each node (PC-DARTS `weights2`)."""
    betas = np.asarray(betas, dtype=np.float64)
    if betas.shape != (num_edges(steps),):
        raise ValueError(f"betas have shape {betas.shape}, expected {(num_edges(steps),)}")
    out, start = [], 0
    for i in range(steps):
        out.append(softmax(betas[start:start + 2 + i]))
        start += 2 + i
    return np.concatenate(out)


def _best_ops(w):
    """Per edge (row): the strongest non-`none` op index and its weight (first index on ties)."""
    strongest = np.delete(w, _NONE, axis=1)
    ops = np.delete(np.arange(w.shape[1]), _NONE)[np.argmax(strongest, axis=1)]
    return ops, strongest.max(axis=1)


def _parse_cell(weights, steps, derive="top2"):
    """The reference's `_parse` (top2): per node, the 2 inputs whose strongest non-`none` op weighs
    most; all_edges: every input. Returns (gene, inputs per node)."""
    gene, counts = [], []
    start = 0
    for i in range(steps):
        n = i + 2
        best_ops, best = _best_ops(weights[start:start + n])
        if derive == "all_edges":
            edges = range(n)
        else:
            # Stable sort on the negated maximum: ties keep the lower input index, like sorted().
            edges = np.argsort(-best, kind="stable")[:2]
        for j in edges:
            gene.append((PRIMITIVES[best_ops[j]], int(j)))
        counts.append(len(edges))
        start += n
    return gene, counts


def _rows(gene, counts):
    """Alpha row of each gene entry (entry k of node i with input j is row sum(2..i+1) + j)."""
    rows, node_start, k = [], 0, 0
    for i, n in enumerate(counts):
        for _ in range(n):
            rows.append(node_start + gene[k][1])
            k += 1
        node_start += i + 2
    return rows


def limit_skips(weights, steps, max_skip, derive="top2"):
    """P-DARTS: while the cell has more than `max_skip` skip connections, set the weight of the
    weakest chosen skip to 0 and derive again (its edge falls back to its next-best op, or loses
    its place to another edge). Returns (gene, counts)."""
    w = np.array(weights, dtype=np.float64)
    gene, counts = _parse_cell(w, steps, derive)
    while sum(op == "skip_connect" for op, _ in gene) > max_skip:
        rows = [r for r, (op, _) in zip(_rows(gene, counts), gene) if op == "skip_connect"]
        weakest = min(rows, key=lambda r: (w[r, _SKIP], r))
        w[weakest, _SKIP] = 0.0
        gene, counts = _parse_cell(w, steps, derive)
    return gene, counts


def cell_weights(alphas, betas=None, steps=4):
    """Softmaxed op weights per edge, times the edge weights when betas are given."""
    w = softmax(alphas)
    if betas is not None:
        w = w * edge_softmax(betas, steps)[:, None]
    return w


def derive_genotype(alphas_normal, alphas_reduce, steps=4, multiplier=4, betas_normal=None,
                    betas_reduce=None, derive="top2", max_skip=None):
    """Derives the genotype from (edges, len(PRIMITIVES)) alpha matrices, as the reference does.

    The alphas are softmaxed per edge first (the reference parses softmax weights; argmax order is
    the same but the per-edge maxima compared across edges are not).
    """
    k = num_edges(steps)
    for name, a in (("alphas_normal", alphas_normal), ("alphas_reduce", alphas_reduce)):
        if np.shape(a) != (k, len(PRIMITIVES)):
            raise ValueError(f"{name} has shape {np.shape(a)}, expected {(k, len(PRIMITIVES))}")
    if derive not in DERIVE_CHOICES:
        raise ValueError(f"derive must be one of {', '.join(DERIVE_CHOICES)}, got {derive!r}")
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    w_normal = cell_weights(alphas_normal, betas_normal, steps)
    w_reduce = cell_weights(alphas_reduce, betas_reduce, steps)
    if max_skip is None:
        normal, normal_counts = _parse_cell(w_normal, steps, derive)
    else:
        normal, normal_counts = limit_skips(w_normal, steps, max_skip, derive)
    reduce, reduce_counts = _parse_cell(w_reduce, steps, derive)
    return Genotype(normal=normal, normal_concat=concat, reduce=reduce, reduce_concat=concat,
                    normal_inputs=normal_counts, reduce_inputs=reduce_counts)
