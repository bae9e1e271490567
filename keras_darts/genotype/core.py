"""Genotypes: the discrete cell a search finds. Pure data and pure functions, no TensorFlow.

A genotype lists, for each intermediate node of a cell, its (op, input) pairs: two per node in the
paper's cells; any number >= 1 per node when `normal_inputs`/`reduce_inputs` give the per-node
counts (e.g. `--derive=all_edges`). Input 0 and 1 are the cell's two input nodes (outputs of the
cells k-2 and k-1); input j >= 2 is intermediate node j-2. The cell's output concatenates the nodes
in `*_concat`. JSON: the optional `*_inputs` keys are written only when some node does not have
exactly 2 inputs, so two-input genotypes keep the original format and old files load unchanged.
"""

import dataclasses
import json
import os

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


def _two_each(edges):
    return (2,) * (len(edges) // 2)


@dataclasses.dataclass(frozen=True)
class Genotype:
    """An immutable DARTS genotype.

    Attributes:
      normal, reduce: tuples of (op_name, input_index), node by node.
      normal_concat, reduce_concat: tuples of node indices concatenated into the cell output.
      normal_inputs, reduce_inputs: inputs per intermediate node (None: two each). Normalised so
        that a genotype with two inputs everywhere compares equal however it was written.
    """

    normal: tuple
    normal_concat: tuple
    reduce: tuple
    reduce_concat: tuple
    normal_inputs: tuple = None
    reduce_inputs: tuple = None

    def __post_init__(self):
        # Normalise lists (e.g. from JSON) to tuples so instances are hashable and comparable.
        for field in ("normal", "reduce"):
            object.__setattr__(self, field, tuple((str(op), int(i)) for op, i in getattr(self, field)))
        for field in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, field, tuple(int(i) for i in getattr(self, field)))
        for cell in ("normal", "reduce"):
            counts = getattr(self, f"{cell}_inputs")
            if counts is not None:
                counts = tuple(int(n) for n in counts)
                if counts == _two_each(getattr(self, cell)) and not len(getattr(self, cell)) % 2:
                    counts = None
            object.__setattr__(self, f"{cell}_inputs", counts)

    def inputs_per_node(self, cell="normal"):
        counts = getattr(self, f"{cell}_inputs")
        return counts if counts is not None else _two_each(getattr(self, cell))

    def nodes(self, cell="normal"):
        """The cell's edges grouped by node: [[(op, input), ...] for each intermediate node]."""
        edges = getattr(self, cell)
        out, start = [], 0
        for n in self.inputs_per_node(cell):
            out.append(list(edges[start:start + n]))
            start += n
        return out

    @property
    def steps(self):
        return len(self.inputs_per_node("normal"))

    def to_dict(self):
        d = {
            "normal": [[op, i] for op, i in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, i] for op, i in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }
        for cell in ("normal", "reduce"):
            if getattr(self, f"{cell}_inputs") is not None:
                d[f"{cell}_inputs"] = list(getattr(self, f"{cell}_inputs"))
        return d

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
        def cell(name):
            nodes = [f"n{k + 2}=" + "+".join(f"{op}({i})" for op, i in node)
                     for k, node in enumerate(self.nodes(name))]
            return " ".join(nodes) + f" concat={list(getattr(self, name + '_concat'))}"

        return f"normal: {cell('normal')} | reduce: {cell('reduce')}"


def _check_counts(edges, counts, where):
    """Per-node input counts: None (two each) or positive ints summing to the number of edges."""
    if counts is None:
        if not isinstance(edges, (list, tuple)) or not edges or len(edges) % 2:
            raise ValueError(f"{where}: expected a non-empty list with two (op, input) edges per "
                             f"node, got {len(edges) if isinstance(edges, (list, tuple)) else type(edges).__name__}"
                             f" entries (give {where}_inputs for other counts)")
        return _two_each(edges)
    if (not isinstance(counts, (list, tuple)) or not counts
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts)):
        raise ValueError(f"{where}_inputs: expected a non-empty list of positive input counts, "
                         f"got {counts!r:.60}")
    if not isinstance(edges, (list, tuple)) or len(edges) != sum(counts):
        raise ValueError(f"{where}: {where}_inputs {list(counts)} needs {sum(counts)} edges, got "
                         f"{len(edges) if isinstance(edges, (list, tuple)) else type(edges).__name__}")
    return tuple(counts)


def _check_cell(edges, concat, where, counts=None):
    """Raises ValueError with a one-line message if a cell's edges or concat are malformed."""
    counts = _check_counts(edges, counts, where)
    node_of = [k + 2 for k, n in enumerate(counts) for _ in range(n)]
    for n, edge in enumerate(edges):
        if (not isinstance(edge, (list, tuple)) or len(edge) != 2 or not isinstance(edge[0], str)
                or isinstance(edge[1], bool) or not isinstance(edge[1], int)):
            raise ValueError(f"{where}[{n}]: expected [op_name, input_index], got {edge!r:.60}")
        op, index = edge
        if op not in GENOTYPE_OPS:
            raise ValueError(f"{where}[{n}]: unknown op {op!r:.60}; expected one of "
                             f"{', '.join(GENOTYPE_OPS)}")
        node = node_of[n]
        if not 0 <= index < node:
            raise ValueError(f"{where}[{n}]: input index {index} out of range for node {node} "
                             f"(must be 0..{node - 1})")
    steps = len(counts)
    if (not isinstance(concat, (list, tuple)) or not concat
            or any(isinstance(i, bool) or not isinstance(i, int) for i in concat)):
        raise ValueError(f"{where}_concat: expected a non-empty list of node indices")
    for i in concat:
        if not 2 <= i < steps + 2:
            raise ValueError(f"{where}_concat: node {i} out of range 2..{steps + 1}")
    if len(set(concat)) != len(concat):
        raise ValueError(f"{where}_concat: repeated node in {list(concat)}")
    return steps


def genotype_from_dict(d):
    """Validates a dict (e.g. parsed JSON) and returns a Genotype; raises ValueError if malformed."""
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    keys = {"normal", "normal_concat", "reduce", "reduce_concat"}
    optional = {"normal_inputs", "reduce_inputs"}
    missing = keys - set(d)
    if missing:
        raise ValueError(f"missing key(s): {', '.join(sorted(missing))}")
    extra = set(d) - keys - optional
    if extra:
        raise ValueError(f"unexpected key(s): {', '.join(sorted(extra))}")
    steps_normal = _check_cell(d["normal"], d["normal_concat"], "normal", d.get("normal_inputs"))
    steps_reduce = _check_cell(d["reduce"], d["reduce_concat"], "reduce", d.get("reduce_inputs"))
    if steps_normal != steps_reduce:
        raise ValueError(f"normal has {len(d['normal'])} edges but reduce has {len(d['reduce'])} "
                         f"({steps_normal} vs {steps_reduce} nodes); both cells must have the same "
                         "number of nodes")
    return Genotype(**{k: d[k] for k in keys | optional if k in d})


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
    from keras_darts.genotype.published import PUBLISHED

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


def edge_labels(steps):
    """(source, target) node pairs in alpha-row order: row r joins source -> target."""
    return [(j, i + 2) for i in range(steps) for j in range(i + 2)]


def count_ops(cell_edges, ops=("skip_connect",)):
    return sum(1 for op, _ in cell_edges if op in ops)


def num_edges(steps):
    return sum(2 + i for i in range(steps))


PARAMETER_FREE_OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect")

