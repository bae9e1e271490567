"""Robust search (issue 12): PC-DARTS, the collapse guards, derivation options, presets, DARTS-PT.

Numbers are worked by hand in the comments; models are tiny (or, for the PC-DARTS parameter
parity, built but never run).
"""

import dataclasses
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from keras_darts import guards, hessian
from keras_darts.config import SearchConfig
from keras_darts.errors import UserError
from keras_darts.genotype import (PRIMITIVES, Genotype, derive_genotype, edge_softmax,
                                  genotype_from_dict, genotype_from_json)
from keras_darts.partial_channels import PartialChannelMixedOp, channel_shuffle_order
from keras_darts.search_cells import SearchCell
from keras_darts.supernet import SearchNetwork

OP = {name: i for i, name in enumerate(PRIMITIVES)}


def one_hot(name):
    w = np.zeros(len(PRIMITIVES), np.float32)
    w[OP[name]] = 1.0
    return w


def alphas(rows, k):
    """(k, 8) zeros with {row: {op: value}} filled in."""
    a = np.zeros((k, len(PRIMITIVES)))
    for r, values in rows.items():
        for op, v in values.items():
            a[r, OP[op]] = v
    return a


# === PC-DARTS ===================================================================================

@pytest.mark.parametrize("layers,channels,expected", [
    (8, 16, 299_578),  # the paper's search size: ~14 s of CPU to build, no training
    (5, 8, 66_586)])
def test_pc_darts_parameter_parity(layers, channels, expected):
    # The official PC-DARTS model_search.Network at K=4, 10 classes, 32x32x3 (build only).
    model = SearchNetwork(10, layers, channels, partial_channels=4, alpha_seed=0)
    model.build((None, 32, 32, 3))
    assert model.count_weight_parameters() == expected
    # 2 x 14 x 8 alphas + 2 x 14 betas.
    assert sum(int(np.prod(v.shape)) for v in model.arch_variables) == 252
    assert [tuple(v.shape) for v in model.arch_variables] == [(14, 8), (14, 8), (14,), (14,)]


def test_channel_shuffle_order_by_hand():
    # 8 channels in 4 groups of 2: NCHW view(4, 2) -> transpose -> flatten.
    assert channel_shuffle_order(8, 4).tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert channel_shuffle_order(6, 2).tolist() == [0, 3, 1, 4, 2, 5]


def test_partial_channel_edge_split_passthrough_shuffle():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 4, 8)).astype(np.float32)
    shuffle = [0, 2, 4, 6, 1, 3, 5, 7]
    # Stride 1, all weight on skip_connect: the first 8/4 = 2 channels come back as they are, the
    # other 6 pass through; then the shuffle.
    edge = PartialChannelMixedOp(8, 1, k=4)
    edge.build(x.shape)
    y = edge(tf.constant(x), tf.constant(one_hot("skip_connect"))).numpy()
    np.testing.assert_array_equal(y, x[..., shuffle])
    # Stride 2, all weight on `none`: the mixed part is 0 (2 channels), the other 6 channels go
    # through a 2x2/2 max pool.
    edge = PartialChannelMixedOp(8, 2, k=4)
    edge.build(x.shape)
    y = edge(tf.constant(x), tf.constant(one_hot("none"))).numpy()
    pooled = x[..., 2:].reshape(2, 2, 2, 2, 2, 6).max(axis=(2, 4))
    expected = np.concatenate([np.zeros((2, 2, 2, 2), np.float32), pooled], axis=-1)
    np.testing.assert_array_equal(y, expected[..., shuffle])
    assert PartialChannelMixedOp.from_config(edge.get_config()).get_config() == edge.get_config()


def test_edge_softmax_by_hand():
    # steps=2: node 2 has edges 0,1; node 3 has edges 2,3,4.
    w = edge_softmax([0.0, math.log(2), 0.0, 0.0, math.log(3)], 2)
    np.testing.assert_allclose(w, [1 / 3, 2 / 3, 1 / 5, 1 / 5, 3 / 5], rtol=1e-12)


def test_beta_weighted_node_sum_and_aux_skip():
    # One-node cell (edges 0->2, 1->2), PC K=2 and the DARTS- auxiliary skip: all op weight on
    # `none`, so each edge's PC output is its shuffled pass-through half and
    # node 2 = e0 * pc(h0) + e1 * pc(h1) + beta_t * (h0 + h1).
    rng = np.random.default_rng(1)
    s0 = tf.constant(rng.standard_normal((2, 4, 4, 6)).astype(np.float32))
    s1 = tf.constant(rng.standard_normal((2, 4, 4, 6)).astype(np.float32))
    cell = SearchCell(4, steps=1, multiplier=1, partial_channels=2, aux_skip=True)
    cell.build(s0.shape, s1.shape)
    ops = tf.constant(np.stack([one_hot("none")] * 2))
    e = np.array([0.25, 0.75], np.float32)
    out = cell(s0, s1, ops, tf.constant(e), tf.constant(0.5), training=False).numpy()
    h0 = cell.preprocess0(s0, training=False).numpy()
    h1 = cell.preprocess1(s1, training=False).numpy()

    def pc(h):  # first 4/2 = 2 channels -> 0, the rest as they are, shuffle [0, 2, 1, 3]
        z = np.concatenate([np.zeros_like(h[..., :2]), h[..., 2:]], axis=-1)
        return z[..., [0, 2, 1, 3]]

    np.testing.assert_allclose(out, 0.25 * pc(h0) + 0.75 * pc(h1) + 0.5 * (h0 + h1),
                               rtol=1e-6, atol=1e-6)


def test_derivation_multiplies_op_weights_by_edge_weights():
    # steps=2. Node 3's edges (rows 2, 3, 4): softmax maxima .7416 (sep_conv_3x3 at 3),
    # .5135 (skip at 2), .2797 (dil_conv_3x3 at 1). Without betas: inputs 0 and 1. Betas
    # [0, 0, ln 4] give edge weights 1/6, 1/6, 4/6 -> .1236, .0856, .1865: inputs 2 and 0.
    a = alphas({0: {"avg_pool_3x3": 1}, 1: {"sep_conv_5x5": 2},
                2: {"sep_conv_3x3": 3}, 3: {"skip_connect": 2}, 4: {"dil_conv_3x3": 1}}, 5)
    plain = derive_genotype(a, a, steps=2, multiplier=2)
    assert plain.normal == (("sep_conv_5x5", 1), ("avg_pool_3x3", 0),
                            ("sep_conv_3x3", 0), ("skip_connect", 1))
    betas = [0.0, 0.0, 0.0, 0.0, math.log(4)]
    pc = derive_genotype(a, a, steps=2, multiplier=2, betas_normal=betas, betas_reduce=betas)
    assert pc.normal == (("sep_conv_5x5", 1), ("avg_pool_3x3", 0),
                         ("dil_conv_3x3", 2), ("sep_conv_3x3", 0))
    assert pc.reduce == pc.normal


# === Derivation options =========================================================================

# steps=2, rows: 0 (0->2), 1 (1->2), 2 (0->3), 3 (1->3), 4 (2->3). Softmax maxima: r0 skip .7416;
# r1 skip .4587 (sep_conv_3x3 .1688); r2 skip .2797; r3 sep_conv_5x5 .5135; r4 uniform .125.
SKIPPY = alphas({0: {"skip_connect": 3}, 1: {"skip_connect": 2, "sep_conv_3x3": 1},
                 2: {"skip_connect": 1}, 3: {"sep_conv_5x5": 2}}, 5)


@pytest.mark.parametrize("max_skip,normal", [
    (None, [("skip_connect", 0), ("skip_connect", 1), ("sep_conv_5x5", 1), ("skip_connect", 0)]),
    # 3 skips: the weakest (r2) is zeroed, node 3 takes edge 2->3 (max_pool .125) instead; then r1
    # (.4587 < .7416) falls back to sep_conv_3x3 (.1688).
    (1, [("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_5x5", 1), ("max_pool_3x3", 2)]),
    # Then r0 too: its next-best op is max_pool (.0369), ranked after r1's sep_conv_3x3.
    (0, [("sep_conv_3x3", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("max_pool_3x3", 2)]),
])
def test_max_skip_replaces_the_weakest_skips(max_skip, normal):
    g = derive_genotype(SKIPPY, SKIPPY, steps=2, multiplier=2, max_skip=max_skip)
    assert g.normal == tuple(normal)
    # Only the normal cell is limited.
    assert g.reduce == derive_genotype(SKIPPY, SKIPPY, steps=2, multiplier=2).normal


def test_all_edges_derivation_and_json_round_trip(tmp_path):
    g = derive_genotype(SKIPPY, SKIPPY, steps=2, multiplier=2, derive="all_edges")
    assert g.normal == (("skip_connect", 0), ("skip_connect", 1),
                        ("skip_connect", 0), ("sep_conv_5x5", 1), ("max_pool_3x3", 2))
    assert g.normal_inputs == (2, 3) and g.steps == 2
    assert g.nodes("normal") == [[("skip_connect", 0), ("skip_connect", 1)],
                                 [("skip_connect", 0), ("sep_conv_5x5", 1), ("max_pool_3x3", 2)]]
    d = json.loads(g.to_json())
    assert d["normal_inputs"] == [2, 3] and d["reduce_inputs"] == [2, 3]
    assert genotype_from_json(g.to_json()) == g
    # Two inputs everywhere: the original format (no *_inputs keys), equal however written.
    top2 = derive_genotype(SKIPPY, SKIPPY, steps=2, multiplier=2)
    assert "normal_inputs" not in top2.to_dict()
    assert genotype_from_dict({**top2.to_dict(), "normal_inputs": [2, 2]}) == top2


@pytest.mark.parametrize("patch,message", [
    ({"normal_inputs": [2, 2]}, r"normal: normal_inputs \[2, 2\] needs 4 edges, got 5"),
    ({"normal_inputs": [2, 0, 3]}, "normal_inputs: expected a non-empty list of positive"),
    ({"normal_inputs": None}, "two \\(op, input\\) edges per node"),
])
def test_bad_input_counts_are_one_line_errors(patch, message):
    d = derive_genotype(SKIPPY, SKIPPY, steps=2, multiplier=2, derive="all_edges").to_dict()
    d.update(patch)
    if d["normal_inputs"] is None:
        del d["normal_inputs"]
    with pytest.raises(ValueError, match=message) as e:
        genotype_from_dict(d)
    assert "\n" not in str(e.value)


# === Guards =====================================================================================

def test_schedules_by_hand():
    assert guards.beta_decay_weight(50.0, 0, 50) == 0.0
    assert guards.beta_decay_weight(50.0, 10, 50) == 10.0
    assert guards.aux_skip_weight(0, 10) == 1.0 and guards.aux_skip_weight(5, 10) == 0.5


def test_beta_decay_regularizer_value_and_gradient():
    # Rows [0, 0] -> logsumexp ln 2; [ln 3, 0] -> ln 4. Mean 1.5 ln 2, times lambda_t = 2: 3 ln 2.
    class Model:
        alphas_normal = tf.Variable([[0.0, 0.0]])
        alphas_reduce = tf.Variable([[math.log(3), 0.0]])

    reg = guards.BetaDecay(tf.Variable(2.0))
    with tf.GradientTape() as tape:
        value = reg(Model)
    assert float(value) == pytest.approx(3 * math.log(2), rel=1e-6)
    assert guards.beta_decay_loss_np([[[0.0, 0.0]], [[math.log(3), 0.0]]]) == pytest.approx(
        1.5 * math.log(2))
    # d/d alpha = lambda_t * softmax(row) / rows = softmax(row).
    g_normal, g_reduce = tape.gradient(value, [Model.alphas_normal, Model.alphas_reduce])
    np.testing.assert_allclose(g_normal.numpy(), [[0.5, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(g_reduce.numpy(), [[0.75, 0.25]], rtol=1e-6)


def test_skip_stop_rule():
    g = Genotype(normal=[("skip_connect", 0), ("skip_connect", 1)], normal_concat=[2],
                 reduce=[("skip_connect", 0), ("max_pool_3x3", 1)], reduce_concat=[2])
    assert guards.skip_count(g) == 2
    assert guards.skip_stop(g, 2) and not guards.skip_stop(g, 3)


def test_power_iteration_finds_the_dominant_eigenvalue():
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    h = q @ np.diag([3.0, -1.0, 0.5]) @ q.T
    eig, v = hessian.power_iteration(lambda x: h @ x, np.ones(3), 60)
    assert eig == pytest.approx(3.0, rel=1e-9)
    np.testing.assert_allclose(abs(v @ q[:, 0]), 1.0, rtol=1e-9)


def test_robust_darts_stop_rule_by_hand():
    # Epochs 0..12 at 1.0, then 2.0. After epoch 16: local average centred at 14 = mean(evs[12:17])
    # = (1 + 4 * 2) / 5 = 1.8; delta = 4 averages earlier (centred at 10): 1.0. 1.8 > 1.3 and
    # 10 >= start epoch 10: stop, keeping epoch 10 (0-based).
    evs = [1.0] * 13 + [2.0] * 4
    la = hessian.local_averages(evs)
    assert la[0] == 1.0 and la[-1] == pytest.approx(1.8) and len(la) == 15
    assert hessian.stop_epoch(evs) == 10
    assert hessian.stop_epoch(evs[:-1]) is None  # centre 13 - 4 = 9 < 10: too early
    assert hessian.stop_epoch([1.0] * 13 + [1.25] * 4) is None  # 1.2x: not > 1.3


# === Config: presets and contradictions =========================================================

def test_pc_darts_preset_and_explicit_flags_win():
    c = SearchConfig.from_options(preset="pc_darts", batch_size=32)
    assert (c.partial_channels, c.batch_size, c.learning_rate, c.learning_rate_min,
            c.arch_learning_rate, c.arch_weight_decay, c.epochs, c.arch_warmup_epochs) == (
        4, 32, 0.1, 0.0, 6e-4, 1e-3, 50, 15)
    assert c.to_dict()["preset"] == "pc_darts"  # recorded, with the resolved values
    c.validate()
    assert SearchConfig.from_options() == SearchConfig()


def test_cpu_preset_is_the_search_vs_random_setting():
    # The flags of benchmarks/search_vs_random.py's run recorded in BUILD_NOTES: the preset must
    # resolve to exactly them (and only the preset field may differ in config.json).
    flags = dict(layers=5, init_channels=8, batch_size=64, image_size=16,
                 arch_learning_rate=3e-3, max_skip=2, epochs=15)
    c = SearchConfig.from_options(preset="cpu")
    assert c == dataclasses.replace(SearchConfig.from_options(**flags), preset="cpu")
    assert c != SearchConfig()
    c.validate()
    assert SearchConfig.from_options(preset="cpu", epochs=5).epochs == 5  # explicit flags win


@pytest.mark.parametrize("options,message", [
    (dict(preset="fast"), "--preset=fast: unknown preset; known: cpu, pc_darts"),
    (dict(partial_channels=3), "--partial_channels=3: must divide --init_channels=16"),
    (dict(arch_warmup_epochs=50), r"--arch_warmup_epochs=50: must be in \[0, --epochs=50\)"),
    (dict(early_stop="skip"), "--early_stop=skip: expected skip:N"),
    (dict(early_stop="loss"), "--early_stop=loss: expected skip:N"),
    (dict(selection="perturbation", derive="all_edges"), "--selection=perturbation: .* --derive=top2"),
    (dict(derive="top3"), "--derive=top3: must be one of top2, all_edges"),
    (dict(beta_decay=-1.0), "--beta_decay=-1.0: must be a finite number >= 0"),
    (dict(recompute=True, aux_skip=True), "--recompute=True: is not supported with"),
])
def test_bad_robust_options_are_one_line_errors(options, message):
    with pytest.raises(UserError, match=message) as e:
        SearchConfig.from_options(**options).validate()
    assert "\n" not in str(e.value)


# === DARTS-PT ===================================================================================

def test_perturbation_selection_logic():
    """A fake supernet (steps=1) and a fake accuracy: masking op k of row r (normal) costs
    drop[r][k]; masking an edge costs edge_drop[r]. The kept op is the one whose removal hurts
    most, even where its alpha is small."""
    from types import SimpleNamespace

    from keras_darts import selection

    k = 2
    w = np.full((k, len(PRIMITIVES)), 1 / 8, np.float32)
    w[:, OP["skip_connect"]] = 0.9  # magnitude would pick skip everywhere
    model = SimpleNamespace(steps=1, multiplier=1,
                            mixing_weights=lambda: (w, w, None, None))
    search = SimpleNamespace(model=model, config=SimpleNamespace(seed=0))
    drop = {0: OP["sep_conv_3x3"], 1: OP["dil_conv_5x5"]}
    tuned = []

    def accuracy(weights):
        wn, wr, en, er = (t.numpy() for t in weights)
        acc = 1.0
        for cell_w in (wn, wr):
            for r in range(k):
                if cell_w[r, drop[r]] == 0.0:
                    acc -= 0.3 + 0.1 * r  # the op that matters was masked
        return acc - 0.05 * ((en == 0).sum() + (er == 0).sum())

    g = selection.perturbation_select(search, accuracy, lambda weights: tuned.append(1))
    assert g.normal == (("sep_conv_3x3", 0), ("dil_conv_5x5", 1))
    assert g.reduce == g.normal
    assert len(tuned) == k + 1  # after each op decision round and after the node round


# === Nodes with any number of inputs ============================================================

ALL_EDGES_2NODE = {
    "normal": [["skip_connect", 0], ["skip_connect", 1],
               ["skip_connect", 0], ["skip_connect", 1], ["skip_connect", 2]],
    "normal_inputs": [2, 3], "normal_concat": [2, 3],
    "reduce": [["max_pool_3x3", 0], ["sep_conv_3x3", 1],
               ["skip_connect", 0], ["avg_pool_3x3", 1], ["dil_conv_3x3", 2]],
    "reduce_inputs": [2, 3], "reduce_concat": [2, 3],
}


def test_derived_cell_sums_every_input_of_a_node():
    # Identity ops everywhere: node 2 = h0 + h1, node 3 = h0 + h1 + node 2 = 2 (h0 + h1).
    from keras_darts.network import Cell
    from keras_darts.visualize import format_genotype

    g = genotype_from_dict(ALL_EDGES_2NODE)
    rng = np.random.default_rng(2)
    s0 = tf.constant(rng.standard_normal((2, 4, 4, 6)).astype(np.float32))
    s1 = tf.constant(rng.standard_normal((2, 4, 4, 6)).astype(np.float32))
    cell = Cell(g, 4)
    cell.build(s0.shape, s1.shape)
    out = cell(s0, s1, training=False).numpy()
    h = cell.preprocess0(s0, training=False).numpy() + cell.preprocess1(s1, training=False).numpy()
    np.testing.assert_allclose(out, np.concatenate([h, 2 * h], axis=-1), rtol=1e-6, atol=1e-6)
    assert Cell.from_config(cell.get_config()).genotype == g
    assert format_genotype(g)[2] == ("  node 1 <- skip_connect(c_{k-2}) + skip_connect(c_{k-1}) "
                                     "+ skip_connect(0)")
    # The cell diagram draws all 5 op edges (node 1 gets 3) plus the 2 concat edges.
    from keras_darts.visualize import cell_graph

    source = cell_graph(g, "reduce").source
    assert source.count("->") == 7 and source.count('-> 1 [label=') == 3


# === benchmarks/collapse.py pieces ==============================================================

def test_collapse_benchmark_pieces():
    import importlib.util
    import os

    from keras_darts.genotype import DARTS_V2

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "collapse.py")
    spec = importlib.util.spec_from_file_location("collapse_benchmark", path)
    collapse = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(collapse)

    def record(epoch, normal_ops):
        return {"epoch": epoch, "genotype": {"normal": [[op, 0] for op in normal_ops]}}

    history = [record(1, ["sep_conv_3x3", "skip_connect"]),
               record(2, ["skip_connect", "skip_connect"]),
               record(3, ["skip_connect", "max_pool_3x3"])]
    assert collapse.skip_counts(history) == [1, 2, 1]
    assert collapse.first_epoch_with_skips(history, 2)[0] == 2
    assert collapse.first_epoch_with_skips(history, 3) is None
    assert collapse.parameter_free(history[2]["genotype"]) == 2
    # The plain run's last record holds softmaxed alphas; re-deriving them with a skip limit gives
    # what test_max_skip_replaces_the_weakest_skips worked out by hand for SKIPPY.
    last = {"epoch": 3, "genotype": {"normal": [["skip_connect", 0]] * 4},
            "alphas_normal": softmax_np(SKIPPY).tolist(), "alphas_reduce": softmax_np(SKIPPY).tolist()}
    derived = collapse.derived_genotypes(history[:2] + [last], max_skip=1)
    assert derived["max_skip2"]["normal"] == [
        ["skip_connect", 0], ["sep_conv_3x3", 1], ["sep_conv_5x5", 1], ["max_pool_3x3", 2]]
    assert derived["early_stop_skip2"] == history[1]["genotype"]
    assert collapse.genotype_parameters(DARTS_V2, layers=8, channels=16) == 246_106
    # RobustDARTS from a tracked run: eigenvalue 1 for epochs 0-14, then 5. After epoch 16 the
    # local average of epochs 12-16 (13/5 = 2.6) is > 1.3x that of epochs 8-12 (1), and the
    # earlier centre (epoch 10) has reached the start epoch: keep epoch 10 (1-based 11). After
    # epoch 15 the ratio is 1.8 but the centre (9) is before the start epoch.
    tracked = [{"epoch": e + 1, "genotype": {"normal": [["sep_conv_3x3", e]]},
                "hessian_eigenvalue": 1.0 if e < 15 else 5.0} for e in range(20)]
    assert collapse.hessian_stop(tracked) == (11, tracked[10]["genotype"])
    flat = [{**r, "hessian_eigenvalue": 1.0} for r in tracked]
    assert collapse.hessian_stop(flat) == (20, tracked[19]["genotype"])
    assert collapse.hessian_stop(history) is None


def softmax_np(a):
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# === The loop's side: RobustSearch ==============================================================

def test_robust_search_stop_decisions(monkeypatch):
    from types import SimpleNamespace

    from keras_darts import robust_search

    model = SimpleNamespace(aux_skip_weight=None, betas_normal=None)
    two_skips = Genotype(normal=[("skip_connect", 0), ("skip_connect", 1)], normal_concat=[2],
                         reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1)], reduce_concat=[2])
    rs = robust_search.RobustSearch(SearchConfig.from_options(early_stop="skip:2", epochs=5), model,
                                    None)
    fields, stop = rs.end_epoch(1, two_skips, {})
    assert fields == {"skip_count": 2, "arch_updates": True}
    assert (stop["rule"], stop["epoch"]) == ("skip:2", 2) and "2 skip connections" in stop["reason"]
    assert rs.end_epoch(4, two_skips, {})[1] is None  # the last epoch ends the search anyway

    # RobustDARTS: the scripted eigenvalues of test_robust_darts_stop_rule_by_hand; after epoch 17
    # (1-based) it keeps epoch 11's genotype, read from the history.
    evs = iter([1.0] * 13 + [2.0] * 4)

    class Tracker:
        def __init__(self, *args, **kwargs):
            self.vector = tf.Variable([0.0])

        def dominant_eigenvalue(self, iterations):
            return next(evs)

    monkeypatch.setattr(robust_search.hessian, "HessianTracker", Tracker)
    rs = robust_search.RobustSearch(SearchConfig.from_options(early_stop="hessian", epochs=30),
                                    model, lambda: None)
    past = {e: {"epoch_marker": e} for e in range(1, 18)}
    stops = [rs.end_epoch(e, two_skips, past)[1] for e in range(17)]
    assert stops[:16] == [None] * 16
    assert stops[16]["epoch"] == 11 and stops[16]["genotype"] == {"epoch_marker": 11}
    assert "1.80x" in stops[16]["reason"]
    np.testing.assert_array_equal(rs.eigenvalues.numpy()[:17], [1.0] * 13 + [2.0] * 4)
