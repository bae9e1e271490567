"""The cost model (pure numpy): hand counts per primitive, supernet tables, expected cost and its
gradient, the derived-network counter, the budgeted derivation."""

import functools
import itertools

import numpy as np
import pytest

from keras_darts.cost import budget, derived, ops_cost, supernet_cost
from keras_darts.cost.ops_cost import Cost
from keras_darts.errors import UserError
from keras_darts.genotype import DARTS_V2, GENOTYPE_OPS, PRIMITIVES, Genotype, softmax

# Hand counts at C=4 on an 8x8 input (stride 2: 4x4 output), BN affine=False (search):
#   sep_conv_kxk: 2 x (dw k*k*C + pw C*C) weights, each used once per output pixel
#   dil_conv_kxk: 1 x (dw k*k*C + pw C*C)
#   skip_connect at stride 2 (FactorizedReduce): two 1x1 convs C -> C/2 = C*C weights
HAND = {  # name: (params, MACs at stride 1, MACs at stride 2)
    "none": (0, 0, 0),
    "max_pool_3x3": (0, 0, 0),
    "avg_pool_3x3": (0, 0, 0),
    "sep_conv_3x3": (2 * (9 * 4 + 16), 2 * (9 * 4 + 16) * 64, 2 * (9 * 4 + 16) * 16),  # 104
    "sep_conv_5x5": (2 * (25 * 4 + 16), 2 * (25 * 4 + 16) * 64, 2 * (25 * 4 + 16) * 16),  # 232
    "dil_conv_3x3": (9 * 4 + 16, (9 * 4 + 16) * 64, (9 * 4 + 16) * 16),  # 52
    "dil_conv_5x5": (25 * 4 + 16, (25 * 4 + 16) * 64, (25 * 4 + 16) * 16),  # 116
}
BN_COUNT = {"sep_conv_3x3": 2, "sep_conv_5x5": 2, "dil_conv_3x3": 1, "dil_conv_5x5": 1}


@pytest.mark.parametrize("name", sorted(HAND))
@pytest.mark.parametrize("stride", [1, 2])
def test_op_cost_hand_counts(name, stride):
    params, macs1, macs2 = HAND[name]
    cost, size = ops_cost.op_cost(name, 4, (8, 8), stride, affine=False, search=True)
    assert cost == Cost(params, macs1 if stride == 1 else macs2)
    assert size == ((8, 8) if stride == 1 else (4, 4))
    # affine BN adds gamma and beta (2C) per BN; MACs unchanged
    affine, _ = ops_cost.op_cost(name, 4, (8, 8), stride, affine=True)
    assert affine == Cost(params + 8 * BN_COUNT.get(name, 0), cost.macs)


def test_skip_connect_is_free_at_stride_1_and_a_factorized_reduce_at_2():
    assert ops_cost.op_cost("skip_connect", 4, (8, 8), 1)[0] == Cost(0, 0)
    # two 1x1 convs 4 -> 2 at 4x4: 16 weights, 16 * 16 MACs; affine BN 2 * 4
    assert ops_cost.op_cost("skip_connect", 4, (8, 8), 2, affine=False)[0] == Cost(16, 256)
    assert ops_cost.op_cost("skip_connect", 4, (8, 8), 2, affine=True)[0] == Cost(24, 256)


def test_odd_sizes_follow_the_padding_formula():
    # 7x7 at stride 2: every primitive gives 4x4 ((7 + 2p - d(k-1) - 1) // 2 + 1 = ceil(7/2))
    for name in PRIMITIVES:
        assert ops_cost.op_cost(name, 4, (7, 7), 2)[1] == (4, 4), name
    assert ops_cost.op_cost("sep_conv_3x3", 4, (7, 5), 2)[0].macs == 104 * 4 * 3


def test_unknown_op_is_named():
    with pytest.raises(ValueError, match="unknown operation 'conv_7x1'"):
        ops_cost.op_cost("conv_7x1", 4, (8, 8))


def test_supernet_layout_and_tables():
    # 3 cells, C=4, 8x8: cell 0 normal (4 ch, 8x8), cell 1 reduce (8 ch, 8x8 in -> 4x4),
    # cell 2 reduce (16 ch, 4x4 in -> 2x2)
    cells = supernet_cost.search_cells(3, 4, (8, 8))
    assert cells == [(False, 4, (8, 8)), (True, 8, (8, 8)), (True, 16, (4, 4))]
    per_cell = supernet_cost.supernet_op_costs(3, 4, (8, 8), steps=2)
    sep3 = PRIMITIVES.index("sep_conv_3x3")
    # cell 0, any edge: the hand count above
    assert per_cell[0]["table"][:, sep3].tolist() == [[104, 104 * 64]] * 5
    # cell 1 (C=8): rows 0-3 leave the inputs (stride 2, 8x8 -> 4x4), row 4 leaves node 2 (4x4)
    assert supernet_cost.edge_inputs(2) == [0, 1, 0, 1, 2]
    p8 = 2 * (9 * 8 + 64)
    assert per_cell[1]["table"][:, sep3].tolist() == [[p8, p8 * 16]] * 5
    skip = PRIMITIVES.index("skip_connect")  # FactorizedReduce 8 -> 8 at 4x4, then identity
    assert per_cell[1]["table"][:, skip].tolist() == [[64, 64 * 16]] * 4 + [[0, 0]]
    normal, reduce = supernet_cost.cost_tables(3, 4, (8, 8), steps=2, metric="macs")
    np.testing.assert_array_equal(normal, per_cell[0]["table"][..., 1])
    np.testing.assert_array_equal(reduce, per_cell[1]["table"][..., 1] + per_cell[2]["table"][..., 1])
    with pytest.raises(ValueError, match="metric must be one of params, macs, latency"):
        supernet_cost.cost_tables(3, 4, (8, 8), metric="flops")


def test_expected_cost_value_and_gradient_by_hand():
    # one edge per cell type, costs 0..7 (normal) and 10 x that (reduce)
    cn = np.arange(8.0)[None]
    cr = 10 * cn
    zeros = np.zeros((1, 8))
    # uniform weights: mean cost 3.5 + 35; the all-sep_conv_5x5 unit: 5 + 50
    assert supernet_cost.expected_cost(zeros, zeros, cn, cr) == pytest.approx(38.5)
    assert supernet_cost.normaliser(cn, cr) == 55.0
    # all weight on op 2 (normal) and op 7 (reduce)
    big = np.full((1, 8), -1e3)
    an, ar = big.copy(), big.copy()
    an[0, 2] = ar[0, 7] = 0.0
    assert supernet_cost.expected_cost(an, ar, cn, cr) == pytest.approx(2 + 70)
    # gradient at uniform: p (c - p.c) = (c - 3.5) / 8
    np.testing.assert_allclose(supernet_cost.expected_cost_grad(zeros, cn), (cn - 3.5) / 8)
    # and against central differences at a random point
    rng = np.random.default_rng(0)
    a, c = rng.normal(size=(3, 8)), rng.uniform(0, 5, size=(3, 8))
    grad = supernet_cost.expected_cost_grad(a, c)
    for idx in [(0, 0), (1, 4), (2, 7)]:
        d = np.zeros_like(a)
        d[idx] = 1e-6
        num = ((softmax(a + d) * c).sum() - (softmax(a - d) * c).sum()) / 2e-6
        assert grad[idx] == pytest.approx(num, rel=1e-6)


def test_derived_network_counts_match_the_reference_parameter_count():
    # The reference's count_parameters_in_MB for DARTS_V2, CIFAR (20 cells, 36 ch, aux excluded)
    # is 3.349342M (test_network checks the Keras model gives the same); ImageNet mobile 4.718752M.
    assert derived.network_cost(DARTS_V2, 20, 36, (32, 32, 3), 10).params == 3349342
    imagenet = derived.network_cost(DARTS_V2, 14, 48, (224, 224, 3), 1000, "imagenet")
    assert imagenet.params == 4718752
    # the paper's Table 3 says 574M multiply-adds; conv + dense MACs are 529.9M (BUILD_NOTES)
    assert imagenet.macs == 529911552


def test_network_cost_is_fixed_plus_edge_tables():
    genotype = DARTS_V2
    for variant, shape in (("cifar", (16, 16, 3)), ("imagenet", (64, 48, 3))):
        fixed, tables = derived.edge_cost_tables(5, 8, shape, 10, variant)
        total = fixed
        for cell in ("normal", "reduce"):
            for op, j in getattr(genotype, cell):
                total = total + Cost(*tables[cell][j, GENOTYPE_OPS.index(op)].tolist())
        assert total == derived.network_cost(genotype, 5, 8, shape, 10, variant)


def test_cheap_cell_costs_by_hand():
    # All-skip CIFAR net, 3 cells, C=2, 4x4 input, 1 node: only stem, preprocessing, the stride-2
    # skips (FactorizedReduce) of the reduction cells and the classifier cost anything.
    g = Genotype(normal=[("skip_connect", 0), ("skip_connect", 1)], normal_concat=[2],
                 reduce=[("skip_connect", 0), ("skip_connect", 1)], reduce_concat=[2])
    # stem 3x3 conv 3 -> 6 at 4x4: 162 weights, 162*16 MACs; BN 12 params
    stem = Cost(162 + 12, 162 * 16)
    # cell 0 (C=2, normal): two ReLUConvBN 6 -> 2 at 4x4: 12 weights + 4 BN each
    cell0 = 2 * Cost(12 + 4, 12 * 16)
    # cell 1 (C=4, reduce, inputs 6 ch and 2 ch at 4x4): pre0 6->4 (24+8), pre1 2->4 (8+8) at 4x4;
    # two FactorizedReduce 4 -> 4 at 2x2: 16 weights + 8 BN, 16*4 MACs each
    cell1 = Cost(24 + 8, 24 * 16) + Cost(8 + 8, 8 * 16) + 2 * Cost(16 + 8, 16 * 4)
    # cell 2 (C=8, reduce, reduction_prev): pre0 FactorizedReduce 2 -> 8 at 4x4 -> 2x2 (16 + 16 BN,
    # 16*4 MACs); pre1 4 -> 8 at 2x2 (32 + 16); two FactorizedReduce 8 -> 8 at 1x1 (64 + 16, 64)
    cell2 = Cost(16 + 16, 16 * 4) + Cost(32 + 16, 32 * 4) + 2 * Cost(64 + 16, 64)
    classifier = Cost(8 * 10 + 10, 8 * 10)
    assert derived.network_cost(g, 3, 2, (4, 4, 3), 10) == stem + cell0 + cell1 + cell2 + classifier


# === Budgeted derivation ===

def _items():
    return [
        [(0.6, (10,), "a"), (0.3, (4,), "b"), (0.1, (0,), "c")],
        [(0.5, (8,), "d"), (0.4, (2,), "e"), (0.1, (0,), "f")],
    ]


@pytest.mark.parametrize("room,expected", [
    (20, ["a", "d"]),   # everything fits: the strongest ops
    (14, ["a", "e"]),   # a+e (12, 1.0) beats b+d (12, 0.8) and a+f (10, 0.7)
    (9, ["b", "e"]),    # b+e (6, 0.7) beats c+d (8, 0.6)
    (1, ["c", "f"]),    # only the free ops fit
    (-1, None),         # nothing fits
])
def test_knapsack_hand_cases(room, expected):
    assert budget.best_within_budget(_items(), [room]) == expected


@functools.lru_cache(maxsize=None)
def _combos(n, m):
    return np.array(list(itertools.product(range(m), repeat=n)))


def _brute_force(weights, costs, rooms):
    """Index of the best option per item by enumeration. weights (items, opts), costs (items,
    opts, metrics)."""
    n, m = weights.shape
    combos = _combos(n, m)
    rows = np.arange(n)
    total_w = weights[rows, combos].sum(axis=1)
    total_c = costs[rows, combos].sum(axis=1)
    total_w[~np.all(total_c <= rooms, axis=1)] = -np.inf
    best = int(np.argmax(total_w))
    return None if total_w[best] == -np.inf else combos[best]


def test_knapsack_is_exact_against_brute_force():
    rng = np.random.default_rng(1)
    feasible = 0
    for trial in range(30):
        weights = rng.uniform(size=(6, 4))
        costs = rng.integers(0, 50, size=(6, 4, 2))
        rooms = rng.integers(40, 200, size=2)
        items = [budget.pareto_options([(weights[i, k], tuple(costs[i, k].tolist()), k)
                                        for k in range(4)]) for i in range(6)]
        expected = _brute_force(weights, costs, rooms)
        expected = None if expected is None else expected.tolist()
        assert budget.best_within_budget(items, rooms.tolist()) == expected, trial
        feasible += expected is not None
    assert 10 <= feasible < 30  # both outcomes are exercised


def _tiny_weights(rng, steps=1):
    k = sum(2 + i for i in range(steps))
    return softmax(rng.normal(size=(k, len(PRIMITIVES)))), softmax(rng.normal(size=(k, len(PRIMITIVES))))


def test_budgeted_derivation_is_the_best_fitting_genotype():
    # 1-node cells: 4 kept edges x 7 ops; every one of the 2401 reachable genotypes is enumerated
    rng = np.random.default_rng(2)
    args = (3, 4, (8, 8, 3), 10)
    fixed, tables = derived.edge_cost_tables(*args, steps=1, multiplier=1)
    slots = [("normal", 0), ("normal", 1), ("reduce", 1), ("reduce", 0)]  # (cell, input)
    base = Genotype(normal=[("sep_conv_5x5", 0), ("dil_conv_3x3", 1)], normal_concat=[2],
                    reduce=[("sep_conv_3x3", 1), ("avg_pool_3x3", 0)], reduce_concat=[2])
    costs = np.stack([tables[cell][j] for cell, j in slots])  # (4 edges, 7 ops, [params, macs])
    cols = [PRIMITIVES.index(op) for op in GENOTYPE_OPS]
    for trial in range(3):
        wn, wr = _tiny_weights(rng)
        weights = np.stack([(wn if cell == "normal" else wr)[j, cols] for cell, j in slots])
        for limit, m in (("params", 0), ("macs", 1)):
            lo, hi = fixed.get(limit) + costs[..., m].min(1).sum(), fixed.get(limit) + costs[..., m].max(1).sum()
            for b in (lo, (2 * lo + hi) // 3, hi):
                best = _brute_force(weights, costs[..., m:m + 1], [b - fixed.get(limit)])
                chosen, totals = budget.derive_within_budget(base, wn, wr, fixed, tables, {limit: b})
                ops = [GENOTYPE_OPS[k] for k in best]
                assert chosen == Genotype(normal=[(ops[0], 0), (ops[1], 1)], normal_concat=[2],
                                          reduce=[(ops[2], 1), (ops[3], 0)], reduce_concat=[2])
                # the totals are the counter's (not only the tables') and fit
                cost = derived.network_cost(chosen, *args)
                assert totals == {"params": cost.params, "macs": cost.macs} and cost.get(limit) <= b


def test_budget_keeps_edges_and_returns_the_base_when_it_fits():
    rng = np.random.default_rng(3)
    wn, wr = _tiny_weights(rng, steps=2)
    from keras_darts.genotype import derive_genotype

    base = derive_genotype(np.log(wn), np.log(wr), steps=2, multiplier=2)
    args = (3, 4, (8, 8, 3), 10)
    fixed, tables = derived.edge_cost_tables(*args, steps=2, multiplier=2)
    full = derived.network_cost(base, *args)
    assert budget.derive_within_budget(base, wn, wr, fixed, tables, {"params": full.params})[0] == base
    tighter, _ = budget.derive_within_budget(base, wn, wr, fixed, tables, {"macs": full.macs - 1})
    assert tighter != base
    assert [j for _, j in tighter.normal + tighter.reduce] == [j for _, j in base.normal + base.reduce]
    assert derived.network_cost(tighter, *args).macs <= full.macs - 1


def test_budget_nothing_fits_is_one_line():
    rng = np.random.default_rng(4)
    wn, wr = _tiny_weights(rng)
    base = Genotype(normal=[("sep_conv_5x5", 0), ("sep_conv_5x5", 1)], normal_concat=[2],
                    reduce=[("sep_conv_5x5", 0), ("sep_conv_5x5", 1)], reduce_concat=[2])
    fixed, tables = derived.edge_cost_tables(3, 4, (8, 8, 3), 10, steps=1, multiplier=1)
    # the cheapest reachable net has parameter-free ops (pools) on every edge: the fixed part
    assert budget.derive_within_budget(base, wn, wr, fixed, tables, {"params": fixed.params})[1] == {
        "params": fixed.params, "macs": fixed.macs}
    with pytest.raises(UserError) as e:
        budget.derive_within_budget(base, wn, wr, fixed, tables, {"params": fixed.params - 1})
    message = str(e.value)
    assert "\n" not in message
    assert message == (f"--max_params={fixed.params - 1}: no reachable genotype fits; the "
                       f"cheapest one needs {fixed.params:,} params at this network size")


def test_two_budgets_that_cannot_be_met_together():
    # one edge: op a is cheap in params, op b cheap in MACs; no op is cheap in both
    g = Genotype(normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1)], normal_concat=[2],
                 reduce=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1)], reduce_concat=[2])
    tables = {cell: np.zeros((2, len(GENOTYPE_OPS), 2), dtype=np.int64) for cell in ("normal", "reduce")}
    tables["normal"][:, :, :] = 100
    tables["normal"][:, 0] = (0, 100)
    tables["normal"][:, 1] = (100, 0)
    w = np.full((2, len(PRIMITIVES)), 1 / len(PRIMITIVES))
    fixed = Cost(0, 0)
    chosen, totals = budget.derive_within_budget(g, w, w, fixed, tables, {"params": 100, "macs": 100})
    assert totals == {"params": 100, "macs": 100}
    assert sorted(op for op, _ in chosen.normal) == sorted(GENOTYPE_OPS[:2])
    with pytest.raises(UserError, match=r"^--max_params=50 and --max_macs=50: no reachable genotype "
                                        r"meets both$"):
        budget.derive_within_budget(g, w, w, fixed, tables, {"params": 50, "macs": 50})
