"""Genotypes: the discrete cell a search finds. Pure data and pure functions, no TensorFlow.

A genotype lists, for each intermediate node of a cell, two (op, input) pairs. Input 0 and 1 are the
cell's two input nodes (outputs of the cells k-2 and k-1); input j >= 2 is intermediate node j-2.
The cell's output concatenates the nodes in `*_concat`.
"""

import dataclasses
import json
import os

import numpy as np

from keras_darts.errors import UserError

# The order fixes the columns of the alpha matrices.
PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

# Ops a genotype may use: every primitive but `none`, which derivation never picks.
GENOTYPE_OPS = tuple(p for p in PRIMITIVES if p != "none")
_NONE = PRIMITIVES.index("none")


@dataclasses.dataclass(frozen=True)
class Genotype:
    """An immutable DARTS genotype.

    Attributes:
      normal, reduce: tuples of (op_name, input_index), two per intermediate node.
      normal_concat, reduce_concat: tuples of node indices concatenated into the cell output.
    """

    normal: tuple
    normal_concat: tuple
    reduce: tuple
    reduce_concat: tuple

    def __post_init__(self):
        # Normalise lists (e.g. from JSON) to tuples so instances are hashable and comparable.
        for field in ("normal", "reduce"):
            object.__setattr__(self, field, tuple((str(op), int(i)) for op, i in getattr(self, field)))
        for field in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, field, tuple(int(i) for i in getattr(self, field)))

    @property
    def steps(self):
        return len(self.normal) // 2

    def to_dict(self):
        return {
            "normal": [[op, i] for op, i in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, i] for op, i in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def load(cls, spec):
        """A published name ("DARTS_V2"), a genotype.json file, or a search output directory."""
        return load_genotype(spec, flag="Genotype.load")

    def save(self, path):
        """Writes genotype.json (atomically), the file `load` and `bin/retrain --genotype` read."""
        save_genotype(self, path)

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    def __str__(self):
        def cell(edges, concat):
            nodes = [f"n{k + 2}=" + "+".join(f"{op}({i})" for op, i in edges[2 * k : 2 * k + 2])
                     for k in range(len(edges) // 2)]
            return " ".join(nodes) + f" concat={list(concat)}"

        return (f"normal: {cell(self.normal, self.normal_concat)} | "
                f"reduce: {cell(self.reduce, self.reduce_concat)}")


def _check_cell(edges, concat, where):
    """Raises ValueError with a one-line message if a cell's edges or concat are malformed."""
    if not isinstance(edges, (list, tuple)) or not edges or len(edges) % 2:
        raise ValueError(f"{where}: expected a non-empty list with two (op, input) edges per node, "
                         f"got {len(edges) if isinstance(edges, (list, tuple)) else type(edges).__name__}"
                         f" entries")
    for n, edge in enumerate(edges):
        if (not isinstance(edge, (list, tuple)) or len(edge) != 2 or not isinstance(edge[0], str)
                or isinstance(edge[1], bool) or not isinstance(edge[1], int)):
            raise ValueError(f"{where}[{n}]: expected [op_name, input_index], got {edge!r:.60}")
        op, index = edge
        if op not in GENOTYPE_OPS:
            raise ValueError(f"{where}[{n}]: unknown op {op!r:.60}; expected one of "
                             f"{', '.join(GENOTYPE_OPS)}")
        node = n // 2 + 2
        if not 0 <= index < node:
            raise ValueError(f"{where}[{n}]: input index {index} out of range for node {node} "
                             f"(must be 0..{node - 1})")
    steps = len(edges) // 2
    if (not isinstance(concat, (list, tuple)) or not concat
            or any(isinstance(i, bool) or not isinstance(i, int) for i in concat)):
        raise ValueError(f"{where}_concat: expected a non-empty list of node indices")
    for i in concat:
        if not 2 <= i < steps + 2:
            raise ValueError(f"{where}_concat: node {i} out of range 2..{steps + 1}")
    if len(set(concat)) != len(concat):
        raise ValueError(f"{where}_concat: repeated node in {list(concat)}")


def genotype_from_dict(d):
    """Validates a dict (e.g. parsed JSON) and returns a Genotype; raises ValueError if malformed."""
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    keys = {"normal", "normal_concat", "reduce", "reduce_concat"}
    missing = keys - set(d)
    if missing:
        raise ValueError(f"missing key(s): {', '.join(sorted(missing))}")
    extra = set(d) - keys
    if extra:
        raise ValueError(f"unexpected key(s): {', '.join(sorted(extra))}")
    _check_cell(d["normal"], d["normal_concat"], "normal")
    _check_cell(d["reduce"], d["reduce_concat"], "reduce")
    if len(d["normal"]) != len(d["reduce"]):
        raise ValueError(f"normal has {len(d['normal'])} edges but reduce has {len(d['reduce'])}; "
                         "both cells must have the same number of nodes")
    return Genotype(**{k: d[k] for k in keys})


def genotype_from_json(text):
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    return genotype_from_dict(d)


def save_genotype(genotype, path):
    from keras_darts.io_utils import atomic_write_json

    atomic_write_json(path, genotype.to_dict())


def load_genotype(spec, flag="--genotype"):
    """Returns a Genotype from a published name (e.g. "DARTS_V2") or a JSON file path.

    Raises:
      UserError: one line naming `flag` or the file and what is wrong.
    """
    if spec in PUBLISHED:
        return PUBLISHED[spec]
    if not os.path.exists(spec):
        raise UserError(f"{flag}={spec}: neither a published genotype "
                        f"({', '.join(sorted(PUBLISHED))}) nor an existing file")
    if os.path.isdir(spec):
        candidate = os.path.join(spec, "genotype.json")
        if not os.path.isfile(candidate):
            raise UserError(f"{flag}={spec}: is a directory without a genotype.json")
        spec = candidate
    try:
        with open(spec) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{flag}={spec}: cannot read genotype file ({e})") from None
    try:
        return genotype_from_json(text)
    except ValueError as e:
        raise UserError(f"{flag}={spec}: malformed genotype: {e}") from None


def _parse_cell(weights, steps):
    """The reference's `_parse`: per node, the 2 inputs whose strongest non-`none` op weighs most."""
    gene = []
    start = 0
    for i in range(steps):
        n = i + 2
        w = weights[start : start + n]
        strongest = np.delete(w, _NONE, axis=1)  # (n, ops-1), columns exclude `none`
        best_ops = np.delete(np.arange(w.shape[1]), _NONE)[np.argmax(strongest, axis=1)]
        # Stable sort on the negated maximum: ties keep the lower input index, like Python's sorted.
        edges = np.argsort(-strongest.max(axis=1), kind="stable")[:2]
        for j in edges:
            gene.append((PRIMITIVES[best_ops[j]], int(j)))
        start += n
    return gene


def num_edges(steps):
    return sum(2 + i for i in range(steps))


def softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def derive_genotype(alphas_normal, alphas_reduce, steps=4, multiplier=4):
    """Derives the genotype from (edges, len(PRIMITIVES)) alpha matrices, as the reference does.

    The alphas are softmaxed per edge first (the reference parses softmax weights; argmax order is
    the same but the per-edge maxima compared across edges are not).
    """
    k = num_edges(steps)
    for name, a in (("alphas_normal", alphas_normal), ("alphas_reduce", alphas_reduce)):
        if np.shape(a) != (k, len(PRIMITIVES)):
            raise ValueError(f"{name} has shape {np.shape(a)}, expected {(k, len(PRIMITIVES))}")
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    return Genotype(
        normal=_parse_cell(softmax(alphas_normal), steps),
        normal_concat=concat,
        reduce=_parse_cell(softmax(alphas_reduce), steps),
        reduce_concat=concat,
    )


def edge_labels(steps):
    """(source, target) node pairs in alpha-row order: row r joins source -> target."""
    return [(j, i + 2) for i in range(steps) for j in range(i + 2)]


def count_ops(cell_edges, ops=("skip_connect",)):
    return sum(1 for op, _ in cell_edges if op in ops)


PARAMETER_FREE_OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect")

_CONCAT = (2, 3, 4, 5)

# Published cells (Liu et al. 2019), as in the reference `genotypes.py`.
DARTS_V1 = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=_CONCAT,
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=_CONCAT,
)
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=_CONCAT,
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=_CONCAT,
)
PUBLISHED = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2, "DARTS": DARTS_V2}
