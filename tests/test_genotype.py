"""Genotype derivation, validation and I/O. Expected genotypes are written out by hand."""

import dataclasses
import json
import os

import numpy as np
import pytest

from keras_darts import genotype as G
from keras_darts.errors import UserError
from keras_darts.genotype import Genotype, derive_genotype, edge_labels, genotype_from_json

OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
       "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
CONCAT = [2, 3, 4, 5]

# The paper's published cells (Liu et al. 2019, reference cnn/genotypes.py), written out by hand.
DARTS_V1_NORMAL = [("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
                   ("skip_connect", 0), ("sep_conv_3x3", 1),
                   ("skip_connect", 0), ("sep_conv_3x3", 1),
                   ("sep_conv_3x3", 0), ("skip_connect", 2)]
DARTS_V1_REDUCE = [("max_pool_3x3", 0), ("max_pool_3x3", 1),
                   ("skip_connect", 2), ("max_pool_3x3", 0),
                   ("max_pool_3x3", 0), ("skip_connect", 2),
                   ("skip_connect", 2), ("avg_pool_3x3", 0)]
DARTS_V2_NORMAL = [("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                   ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                   ("sep_conv_3x3", 1), ("skip_connect", 0),
                   ("skip_connect", 0), ("dil_conv_3x3", 2)]
DARTS_V2_REDUCE = [("max_pool_3x3", 0), ("max_pool_3x3", 1),
                   ("skip_connect", 2), ("max_pool_3x3", 1),
                   ("max_pool_3x3", 0), ("skip_connect", 2),
                   ("skip_connect", 2), ("max_pool_3x3", 1)]


def row(node, source):
    """Alpha row of edge source -> node (node 2..5): rows are grouped by target node."""
    return sum(range(2, node)) + source


def alphas(spec, steps=4):
    """(edges, 8) zeros with spec {(node, source): {op: value}} filled in."""
    a = np.zeros((sum(range(2, steps + 2)), len(OPS)))
    for (node, source), values in spec.items():
        for op, v in values.items():
            a[row(node, source), OPS.index(op)] = v
    return a


def encode(cell):
    """Alphas whose derivation is `cell`: in each node the first listed edge gets its op at 5,
    the second at 4, everything else 0."""
    spec = {}
    for k in range(len(cell) // 2):
        for (op, source), strength in zip(cell[2 * k:2 * k + 2], (5.0, 4.0)):
            spec[(k + 2, source)] = {op: strength}
    return alphas(spec)


# ----------------------------------------------------------------------------------------------
# Derivation
# ----------------------------------------------------------------------------------------------

def test_row_helper_matches_edge_labels():
    labels = edge_labels(4)
    for r, (source, node) in enumerate(labels):
        assert row(node, source) == r


def test_primitives_order():
    assert tuple(G.PRIMITIVES) == tuple(OPS)
    assert tuple(G.GENOTYPE_OPS) == tuple(OPS[1:])


def test_edge_labels_order():
    assert edge_labels(4) == [(0, 2), (1, 2),
                              (0, 3), (1, 3), (2, 3),
                              (0, 4), (1, 4), (2, 4), (3, 4),
                              (0, 5), (1, 5), (2, 5), (3, 5), (4, 5)]
    assert edge_labels(1) == [(0, 2), (1, 2)]
    assert G.num_edges(4) == 14 and G.num_edges(3) == 9


def test_derive_hand_written_alphas():
    normal = alphas({
        # node 2: dil_conv_5x5 on input 1 (softmax max .955) beats sep_conv_3x3 on 0 (.742);
        # the gene lists the stronger edge first.
        (2, 0): {"sep_conv_3x3": 3}, (2, 1): {"dil_conv_5x5": 5},
        # node 3: skip from node 2 (.886), avg_pool from input 1 (.513), input 0 uniform (.125).
        (3, 1): {"avg_pool_3x3": 2}, (3, 2): {"skip_connect": 4},
        # node 4: `none` dominates edge 2->4; ignoring it, the edge's best weight is ~.0009, so the
        # edge ranks last even though its largest weight (none, ~.9990) is the largest in the node.
        (4, 0): {"max_pool_3x3": 1}, (4, 2): {"none": 10, "sep_conv_5x5": 3},
        (4, 3): {"dil_conv_3x3": 2},
        # node 5: `none` is the largest op on edge 0->5 but the edge still wins on its best real
        # op (sep_conv_3x3 .266 > .125), and that op is chosen, not none. Edge 4->5 would rank
        # second (.28) if `none` counted; without it, it is last (.103). Edges 1, 2, 3 tie at .125
        # with all real ops equal: the lowest input (1) and the first real op (max_pool) win.
        (5, 0): {"none": 6, "sep_conv_3x3": 5}, (5, 4): {"none": 1},
    })
    reduce = alphas({
        # node 2: all zero -> exact ties everywhere: inputs 0 and 1, op max_pool_3x3 (first
        # non-none column).
        # node 3: edges 1->3 and 2->3 identical -> tie, lower input first.
        (3, 1): {"sep_conv_5x5": 2}, (3, 2): {"sep_conv_5x5": 2},
        # node 4: tie between two ops on edge 3->4 -> the lower op index (max_pool_3x3) wins.
        (4, 0): {"skip_connect": 1}, (4, 3): {"max_pool_3x3": 3, "dil_conv_3x3": 3},
        # node 5: raw alphas would rank 1->5 first (5 > 4 > 3); softmax weights rank 3->5 (.886),
        # 0->5 (.742), 1->5 (.49, its mass is split between two ops).
        (5, 0): {"sep_conv_3x3": 3}, (5, 1): {"max_pool_3x3": 5, "avg_pool_3x3": 5},
        (5, 3): {"dil_conv_5x5": 4},
    })
    expected = Genotype(
        normal=[("dil_conv_5x5", 1), ("sep_conv_3x3", 0),
                ("skip_connect", 2), ("avg_pool_3x3", 1),
                ("dil_conv_3x3", 3), ("max_pool_3x3", 0),
                ("sep_conv_3x3", 0), ("max_pool_3x3", 1)],
        normal_concat=CONCAT,
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1),
                ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
                ("max_pool_3x3", 3), ("skip_connect", 0),
                ("dil_conv_5x5", 3), ("sep_conv_3x3", 0)],
        reduce_concat=CONCAT,
    )
    got = derive_genotype(normal, reduce)
    assert got == expected
    # float32 alphas (what the model stores) derive the same.
    assert derive_genotype(normal.astype(np.float32), reduce.astype(np.float32)) == expected


def test_derive_never_picks_none_even_when_it_dominates_everything():
    a = alphas({(n, s): {"none": 20.0} for n in range(2, 6) for s in range(n)})
    a[row(3, 2), OPS.index("sep_conv_3x3")] = 1.0  # the only non-trivial real op
    g = derive_genotype(a, a)
    assert all(op != "none" for op, _ in g.normal + g.reduce)
    assert g.normal[2] == ("sep_conv_3x3", 2)
    assert g.normal[3] == ("max_pool_3x3", 0)


def test_derive_all_zero_alphas_ties_resolve_to_lowest_indices():
    z = np.zeros((14, 8))
    g = derive_genotype(z, z)
    assert g.normal == (("max_pool_3x3", 0), ("max_pool_3x3", 1)) * 4
    assert g.reduce == g.normal
    assert g.normal_concat == (2, 3, 4, 5) and g.reduce_concat == (2, 3, 4, 5)


@pytest.mark.parametrize("normal,reduce", [(DARTS_V1_NORMAL, DARTS_V1_REDUCE),
                                           (DARTS_V2_NORMAL, DARTS_V2_REDUCE)])
def test_derive_recovers_published_cells_from_encoded_alphas(normal, reduce):
    g = derive_genotype(encode(normal), encode(reduce))
    assert list(g.normal) == normal and list(g.reduce) == reduce


def test_derive_steps_and_multiplier():
    a = np.zeros((9, 8))
    g = derive_genotype(a, a, steps=3, multiplier=2)
    assert len(g.normal) == 6 and g.normal_concat == (3, 4) and g.reduce_concat == (3, 4)
    with pytest.raises(ValueError, match="alphas_normal"):
        derive_genotype(np.zeros((13, 8)), np.zeros((14, 8)))
    with pytest.raises(ValueError, match="alphas_reduce"):
        derive_genotype(np.zeros((14, 8)), np.zeros((14, 7)))


# ----------------------------------------------------------------------------------------------
# Published genotypes
# ----------------------------------------------------------------------------------------------

def test_published_genotypes_match_the_paper():
    assert G.DARTS_V1 == Genotype(DARTS_V1_NORMAL, CONCAT, DARTS_V1_REDUCE, CONCAT)
    assert G.DARTS_V2 == Genotype(DARTS_V2_NORMAL, CONCAT, DARTS_V2_REDUCE, CONCAT)
    assert list(G.DARTS_V1.normal) == DARTS_V1_NORMAL and list(G.DARTS_V1.reduce) == DARTS_V1_REDUCE
    assert list(G.DARTS_V2.normal) == DARTS_V2_NORMAL and list(G.DARTS_V2.reduce) == DARTS_V2_REDUCE
    for g in (G.DARTS_V1, G.DARTS_V2):
        assert list(g.normal_concat) == CONCAT and list(g.reduce_concat) == CONCAT
        assert g.steps == 4


def test_load_genotype_by_published_name():
    assert G.load_genotype("DARTS_V1") == Genotype(DARTS_V1_NORMAL, CONCAT, DARTS_V1_REDUCE, CONCAT)
    assert G.load_genotype("DARTS_V2") == Genotype(DARTS_V2_NORMAL, CONCAT, DARTS_V2_REDUCE, CONCAT)
    assert G.load_genotype("DARTS") == G.load_genotype("DARTS_V2")


# ----------------------------------------------------------------------------------------------
# Genotype value semantics
# ----------------------------------------------------------------------------------------------

def test_genotype_is_frozen_and_hashable():
    a = Genotype(DARTS_V2_NORMAL, CONCAT, DARTS_V2_REDUCE, CONCAT)  # lists in
    b = Genotype(tuple(DARTS_V2_NORMAL), tuple(CONCAT), tuple(DARTS_V2_REDUCE), tuple(CONCAT))
    assert a == b and hash(a) == hash(b)
    assert len({a, b, Genotype(DARTS_V1_NORMAL, CONCAT, DARTS_V1_REDUCE, CONCAT)}) == 2
    assert {a: 1}[b] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.normal = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.reduce_concat = (2,)
    # Deeply immutable: the fields are tuples of tuples, not the caller's lists.
    assert isinstance(a.normal, tuple) and all(isinstance(e, tuple) for e in a.normal)
    assert isinstance(a.normal_concat, tuple)
    cell = list(DARTS_V2_NORMAL)
    c = Genotype(cell, CONCAT, DARTS_V2_REDUCE, CONCAT)
    cell[0] = ("max_pool_3x3", 1)
    assert c == a


# ----------------------------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------------------------

def test_json_round_trip_and_format():
    g = Genotype(DARTS_V1_NORMAL, CONCAT, DARTS_V1_REDUCE, CONCAT)
    text = g.to_json()
    assert json.loads(text) == {
        "normal": [list(e) for e in DARTS_V1_NORMAL], "normal_concat": CONCAT,
        "reduce": [list(e) for e in DARTS_V1_REDUCE], "reduce_concat": CONCAT,
    }
    assert genotype_from_json(text) == g
    assert G.genotype_from_dict(json.loads(text)) == g


def test_save_and_load_from_file_and_directory(tmp_path):
    g = Genotype(DARTS_V2_NORMAL, CONCAT, DARTS_V1_REDUCE, CONCAT)
    path = tmp_path / "genotype.json"
    G.save_genotype(g, str(path))
    assert json.loads(path.read_text())["normal"][7] == ["dil_conv_3x3", 2]
    assert G.load_genotype(str(path)) == g
    assert G.load_genotype(str(tmp_path)) == g  # a directory holding genotype.json
    other = tmp_path / "mine.json"
    other.write_text(json.dumps({"normal": [["skip_connect", 0], ["skip_connect", 1]],
                                 "normal_concat": [2],
                                 "reduce": [["max_pool_3x3", 1], ["avg_pool_3x3", 0]],
                                 "reduce_concat": [2]}))
    assert G.load_genotype(str(other)) == Genotype([("skip_connect", 0), ("skip_connect", 1)], [2],
                                                   [("max_pool_3x3", 1), ("avg_pool_3x3", 0)], [2])


def test_load_genotype_errors(tmp_path):
    with pytest.raises(UserError, match=r"--genotype=NOT_A_GENOTYPE: neither a published"):
        G.load_genotype("NOT_A_GENOTYPE")
    with pytest.raises(UserError, match="is a directory without a genotype.json"):
        G.load_genotype(str(tmp_path))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError) as e:
        G.load_genotype(str(bad), flag="--arch")
    msg = str(e.value)
    assert msg.startswith(f"--arch={bad}: malformed genotype") and "not valid JSON" in msg
    assert "\n" not in msg
    bad.write_text(json.dumps({"normal": [["conv_9x9", 0]]}))
    with pytest.raises(UserError, match="malformed genotype"):
        G.load_genotype(str(bad))


def _valid():
    return {"normal": [list(e) for e in DARTS_V2_NORMAL], "normal_concat": list(CONCAT),
            "reduce": [list(e) for e in DARTS_V2_REDUCE], "reduce_concat": list(CONCAT)}


def _with(**changes):
    d = _valid()
    for k, v in changes.items():
        if v is _DELETE:
            del d[k]
        else:
            d[k] = v
    return json.dumps(d)


_DELETE = object()
_N = [list(e) for e in DARTS_V2_NORMAL]


def _edit(edges, index, value):
    edges = [list(e) for e in edges]
    edges[index] = value
    return edges


BAD_JSON = [
    pytest.param("{not json", r"not valid JSON \(.* at line 1 column 2\)", id="malformed-json"),
    pytest.param("", "not valid JSON", id="empty"),
    pytest.param("[1, 2]", "expected a JSON object, got list", id="top-level-list"),
    pytest.param(_with(normal=_edit(_N, 3, ["conv_9x9", 1])), r"normal\[3\]: unknown op 'conv_9x9'",
                 id="unknown-op"),
    pytest.param(_with(reduce=_edit(_N, 0, ["SEP_CONV_3X3", 0])), r"reduce\[0\]: unknown op",
                 id="op-case-sensitive"),
    pytest.param(_with(normal=_edit(_N, 2, ["sep_conv_3x3", 3])),
                 r"normal\[2\]: input index 3 out of range for node 3 \(must be 0..2\)",
                 id="index-too-large"),
    pytest.param(_with(normal=_edit(_N, 7, ["skip_connect", 5])),
                 r"normal\[7\]: input index 5 out of range for node 5", id="index-self"),
    pytest.param(_with(normal=_edit(_N, 0, ["skip_connect", -1])), "out of range", id="index-neg"),
    pytest.param(_with(normal=_N[:7]), "two \\(op, input\\) edges per node, got 7", id="odd-edges"),
    pytest.param(_with(normal=[]), "non-empty list", id="no-edges"),
    pytest.param(_with(normal=_N[:6], normal_concat=[2, 3, 4]),
                 "normal has 6 edges but reduce has 8", id="cells-differ"),
    pytest.param(_with(reduce_concat=_DELETE), r"missing key\(s\): reduce_concat",
                 id="missing-key"),
    pytest.param(_with(normal=_DELETE, reduce=_DELETE), r"missing key\(s\): normal, reduce",
                 id="missing-keys"),
    pytest.param(_with(steps=4), r"unexpected key\(s\): steps", id="extra-key"),
    pytest.param(_with(normal_concat=[2, 3, 4, 6]), r"normal_concat: node 6 out of range 2..5",
                 id="concat-too-large"),
    pytest.param(_with(reduce_concat=[1, 2]), r"reduce_concat: node 1 out of range", id="concat-1"),
    pytest.param(_with(normal_concat=[2, 2]), "repeated node", id="concat-repeat"),
    pytest.param(_with(normal_concat=[]), "normal_concat: expected a non-empty list",
                 id="concat-empty"),
    pytest.param(_with(normal_concat=5), "normal_concat: expected a non-empty list",
                 id="concat-int"),
    pytest.param(_with(normal_concat=[2.0, 3, 4, 5]), "normal_concat", id="concat-float"),
    pytest.param(_with(normal_concat=[True, 3]), "normal_concat", id="concat-bool"),
    pytest.param(_with(normal=_edit(_N, 1, ["sep_conv_3x3", True])),
                 r"normal\[1\]: expected \[op_name, input_index\]", id="index-bool"),
    pytest.param(_with(normal=_edit(_N, 1, ["sep_conv_3x3", 1.0])),
                 r"normal\[1\]: expected \[op_name, input_index\]", id="index-float"),
    pytest.param(_with(normal=_edit(_N, 1, ["sep_conv_3x3", "1"])),
                 r"normal\[1\]: expected \[op_name, input_index\]", id="index-str"),
    pytest.param(_with(normal=_edit(_N, 1, ["sep_conv_3x3", 1, 2])),
                 r"normal\[1\]: expected \[op_name, input_index\]", id="edge-3-items"),
    pytest.param(_with(normal=_edit(_N, 1, [1, "sep_conv_3x3"])),
                 r"normal\[1\]: expected \[op_name, input_index\]", id="edge-swapped"),
    pytest.param(_with(normal=_edit(_N, 1, "sep_conv_3x3")),
                 r"normal\[1\]: expected \[op_name, input_index\]", id="edge-not-list"),
]


@pytest.mark.parametrize("text,pattern", BAD_JSON)
def test_malformed_genotypes_are_rejected(text, pattern):
    with pytest.raises(ValueError, match=pattern) as e:
        genotype_from_json(text)
    assert "\n" not in str(e.value)


def test_python_expression_op_is_rejected_not_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    expr = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    with pytest.raises(ValueError, match="unknown op"):
        genotype_from_json(_with(normal=_edit(_N, 0, [expr, 0])))
    bad = tmp_path / "g.json"
    bad.write_text(_with(reduce=_edit(_N, 5, ["__import__('os').system('x')", 1])))
    with pytest.raises(UserError, match="unknown op"):
        G.load_genotype(str(bad))
    assert not marker.exists()
    assert os.listdir(tmp_path) == ["g.json"]


def test_none_is_not_a_genotype_op():
    # The derivation never selects `none`; a genotype naming it is rejected like any unknown op.
    with pytest.raises(ValueError, match="unknown op 'none'"):
        genotype_from_json(_with(normal=_edit(_N, 0, ["none", 0])))
