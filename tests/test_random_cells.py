"""Random cells: valid, uniform over the DARTS space, deterministic per seed. Pure numpy."""

import collections
import itertools
import math

import numpy as np
import pytest

from keras_darts import genotype as G
from keras_darts.random_cells import random_genotype, space_size

OPS = ["max_pool_3x3", "avg_pool_3x3", "skip_connect",
       "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]  # every primitive but none
DRAWS = 3000


@pytest.fixture(scope="module")
def draws():
    rng = np.random.default_rng(12345)
    return [random_genotype(rng, steps=4) for _ in range(DRAWS)]


def _within_binomial(counts, n, p, z=4.5):
    """Every count within z binomial sds of n*p (z=4.5: a fair sampler fails one of the ~100
    cells checked per test with probability ~1e-4; the seed is fixed, so the test never flakes)."""
    sd = math.sqrt(n * p * (1 - p))
    for key, c in counts.items():
        assert abs(c - n * p) <= z * sd, (key, c, n * p, sd)


def _chi_square_ok(counts, n, cells):
    """Pearson's X^2 over all `cells` (missing = 0) below df + 4.5 sqrt(2 df): X^2 has mean df and
    variance 2 df under uniformity."""
    expected = n / len(cells)
    x2 = sum((counts.get(c, 0) - expected) ** 2 / expected for c in cells)
    df = len(cells) - 1
    assert x2 <= df + 4.5 * math.sqrt(2 * df), (x2, df)


def test_every_draw_is_a_valid_genotype(draws):
    for g in draws[:500]:
        for cell in (g.normal, g.reduce):
            assert len(cell) == 8
            for k in range(4):
                (op_a, a), (op_b, b) = cell[2 * k:2 * k + 2]
                assert a != b and 0 <= a < b <= k + 1
                assert op_a in OPS and op_b in OPS  # never `none`
        assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
        assert G.genotype_from_dict(g.to_dict()) == g  # the validator bin/retrain uses accepts it


def test_input_pairs_are_uniform_per_node(draws):
    for cell in ("normal", "reduce"):
        for k in range(4):
            node_inputs = k + 2
            pairs = list(itertools.combinations(range(node_inputs), 2))
            counts = collections.Counter(
                tuple(i for _, i in getattr(g, cell)[2 * k:2 * k + 2]) for g in draws)
            assert set(counts) == set(pairs)  # every pair reachable, nothing else
            _within_binomial(counts, DRAWS, 1 / len(pairs))
            _chi_square_ok(counts, DRAWS, pairs)


def test_ops_are_uniform_per_edge(draws):
    for cell in ("normal", "reduce"):
        for edge in range(8):
            counts = collections.Counter(getattr(g, cell)[edge][0] for g in draws)
            assert set(counts) == set(OPS)
            _within_binomial(counts, DRAWS, 1 / 7)
            _chi_square_ok(counts, DRAWS, OPS)


def test_op_independent_of_input_pair_and_cells_independent(draws):
    # Node 3 (inputs 0..2): the joint (pair, first op) table is uniform over 3 x 7 cells.
    joint = collections.Counter((g.normal[2][1], g.normal[3][1], g.normal[2][0]) for g in draws)
    cells = [(a, b, op) for a, b in itertools.combinations(range(3), 2) for op in OPS]
    _chi_square_ok(joint, DRAWS, cells)
    # The reduction cell does not copy the normal cell: their node-2 ops agree 1/7 of the time.
    same = sum(g.normal[0][0] == g.reduce[0][0] for g in draws)
    _within_binomial({"same": same}, DRAWS, 1 / 7)


def test_whole_space_uniform_when_small():
    # One node: per cell 1 pair x 7 x 7 ops = 49 cells, 2401 genotypes; all 49 normal cells appear
    # with equal frequency.
    assert space_size(1) == 49 ** 2
    assert space_size(2) == (49 * 3 * 49) ** 2
    rng = np.random.default_rng(7)
    n = 4900
    counts = collections.Counter(random_genotype(rng, steps=1).normal for _ in range(n))
    cells = [((a, 0), (b, 1)) for a in OPS for b in OPS]
    assert set(counts) == set(cells)
    _within_binomial(counts, n, 1 / 49)
    _chi_square_ok(counts, n, cells)


def test_deterministic_per_seed_and_independent_of_count():
    a = [random_genotype((3, i)) for i in range(5)]
    assert a == [random_genotype((3, i)) for i in range(5)]
    assert len(set(a)) == 5  # 5 draws from ~1e18 genotypes: a repeat means the seed is ignored
    assert random_genotype((4, 0)) != a[0]
    assert random_genotype(np.random.default_rng((3, 0))) == a[0]
    rng = np.random.default_rng(3)
    first, second = random_genotype(rng), random_genotype(rng)  # a Generator advances
    assert first != second and first == random_genotype(3)


def test_nodes_and_multiplier():
    g = random_genotype(0, steps=2)
    assert len(g.normal) == len(g.reduce) == 4 and g.normal_concat == (2, 3)
    assert random_genotype(0, steps=4, multiplier=2).reduce_concat == (4, 5)
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        random_genotype(0, steps=0)
    with pytest.raises(ValueError, match=r"multiplier must be in 1..2, got 3"):
        random_genotype(0, steps=2, multiplier=3)
