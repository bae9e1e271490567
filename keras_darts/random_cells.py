"""Random cells: genotypes drawn uniformly from the DARTS search space (the random-search baseline).

Pure numpy, no TensorFlow. The space is the one `derive_genotype` picks from: every intermediate
node k (node index k + 2) takes 2 *distinct* inputs among the k + 2 earlier nodes, each through one
of the 7 non-`none` ops; the cell outputs the concat of its last `multiplier` nodes. Normal and
reduction cells are drawn independently. Each node's input pair is uniform over the C(k + 2, 2)
unordered pairs and each edge's op is uniform over the 7 ops, independently, so every genotype
of the space is equally likely.
"""

import numpy as np

from keras_darts.genotype import GENOTYPE_OPS, Genotype


def _generator(seed):
    """A numpy Generator from an int, a sequence of ints (e.g. (base_seed, index)) or a Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def random_cell(rng, steps=4):
    """One cell's edges: per node, 2 (op, input) pairs with distinct inputs, lower input first.

    The order inside a node does not change the network (its two edges are summed), so the pair is
    listed sorted: equal cells compare equal.
    """
    edges = []
    for k in range(steps):
        inputs = np.sort(rng.choice(k + 2, size=2, replace=False))
        ops = rng.integers(len(GENOTYPE_OPS), size=2)
        edges += [(GENOTYPE_OPS[o], int(i)) for o, i in zip(ops, inputs)]
    return tuple(edges)


def random_genotype(seed, steps=4, multiplier=None):
    """A Genotype drawn uniformly from the space of `steps`-node cells.

    Args:
      seed: int, sequence of ints or a `np.random.Generator`. Seeding with `(base, i)` makes cell
        i independent of how many cells are drawn, so asking for more cells keeps the first ones.
      steps: intermediate nodes per cell (bin/search's `--nodes`).
      multiplier: nodes concatenated into the output (the last ones); default: all `steps`, as
        bin/search's supernet does.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    multiplier = steps if multiplier is None else multiplier
    if not 1 <= multiplier <= steps:
        raise ValueError(f"multiplier must be in 1..{steps}, got {multiplier}")
    rng = _generator(seed)
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    normal = random_cell(rng, steps)
    reduce = random_cell(rng, steps)
    return Genotype(normal=normal, normal_concat=concat, reduce=reduce, reduce_concat=concat)


def space_size(steps=4):
    """Number of distinct genotypes (normal x reduce) the sampler draws from, each equally likely."""
    per_cell = 1
    for k in range(steps):
        n = k + 2
        per_cell *= n * (n - 1) // 2 * len(GENOTYPE_OPS) ** 2
    return per_cell ** 2
