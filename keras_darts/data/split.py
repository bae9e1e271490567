"""The seeded stratified search split, epoch orders and step counts: pure numpy.

Every order is a function of (seed, epoch[, pass]) only, so a resumed run recomputes the order of an
interrupted epoch and skips `start_step * batch_size` entries before touching any image.
"""

import numpy as np

from keras_darts.errors import UserError

PAD = 4  # Pixels of zero padding before the random crop (reference: RandomCrop(32, padding=4)).
_AUG_STREAM = 1  # Third seed word: keeps the augmentation draws apart from the epoch permutation.
_CYCLE_STREAM = 2  # Third seed word of the later passes of a cycling (search-val) stream.
_SPLIT_STREAM = 3  # Second seed word of the search split.


def stratified_split(labels, train_portion, seed):
    """Seeded stratified split of example indices into (train, val), each sorted ascending.

    Each class c of n_c examples gives floor(portion * n_c) or one more to train (the extra ones go
    to the classes with the largest fractional parts, ties broken by the seeded draw), so that
    train holds exactly floor(portion * n) examples and every class within 1 of its share. Which
    examples of a class go to train is a seeded permutation: the same for the same seed.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 0.0 < train_portion < 1.0:
        raise UserError(f"--train_portion={train_portion}: must be strictly between 0 and 1")
    total = int(np.floor(train_portion * n))
    if total < 1 or total >= n:
        raise UserError(f"--train_portion={train_portion}: splits {n} examples into {total} and "
                        f"{n - total}; both parts need at least one")
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    share = train_portion * counts
    take = np.floor(share).astype(np.int64)
    extra = total - int(take.sum())
    if extra > 0:
        tie_break = rng.random(len(classes))
        by_remainder = np.lexsort((tie_break, -(share - take)))  # Largest remainder first.
        take[by_remainder[:extra]] += 1
    in_train = np.zeros(n, bool)
    for k in range(len(classes)):
        members = np.flatnonzero(inverse == k)
        in_train[rng.permutation(members)[: take[k]]] = True
    return np.flatnonzero(in_train), np.flatnonzero(~in_train)


def steps_per_epoch(n, batch_size, cap=None):
    """Full batches in an epoch of `n` examples, at most `cap` (partial batches are dropped)."""
    if batch_size < 1:
        raise UserError(f"--batch_size={batch_size}: must be at least 1")
    if cap is not None and cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    steps = n // batch_size
    if steps == 0:
        raise UserError(f"--batch_size={batch_size}: larger than the {n} examples of this split, "
                        "so an epoch has no full batch")
    return min(steps, cap) if cap is not None else steps


def epoch_order(n, seed, epoch):
    """The order of epoch `epoch`: a permutation of range(n) depending only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def augment_draws(n, seed, epoch, stream=()):
    """Uniform [0, 1) draws, float64 (n, 5): row i depends only on (seed, epoch, stream, i)."""
    return np.random.default_rng([seed, epoch, _AUG_STREAM, *stream]).random((n, 5))


def augment_params(n, seed, epoch, image_shape, stream=()):
    """Per-example augmentation draws, int32 (n, 5): crop row/col offset, flip, cutout centre y/x.

    Row i depends only on (seed, epoch, i) (rows are filled in order), and all five are drawn
    whatever the mode, so e.g. adding cutout does not change the crops. Drawn in numpy for the
    whole epoch: a few milliseconds, and bit-stable across TF versions and devices.
    """
    height, width = image_shape[:2]
    draws = augment_draws(n, seed, epoch, stream)
    return np.floor(draws * [2 * PAD + 1, 2 * PAD + 1, 2, height, width]).astype(np.int32)


def cycle_order(n, seed, epoch, count):
    """`count` indices cycling through range(n), reshuffled each time round, and the pass of each.

    Pass 0 is `epoch_order(n, seed, epoch)`; pass r > 0 a permutation drawn from
    (seed, epoch, 2, r). This is search-val's stream: as many val examples as search-train's epoch
    consumes, whatever the two sizes.
    """
    passes = -(-count // n)
    orders = [epoch_order(n, seed, epoch)] + [
        np.random.default_rng([seed, epoch, _CYCLE_STREAM, r]).permutation(n)
        for r in range(1, passes)]
    order = np.concatenate(orders)[:count]
    return order, np.repeat(np.arange(passes), n)[:count]


def cycle_params(n, seed, epoch, count, image_shape, draws=False):
    """The augmentation rows of `cycle_order`'s entries: pass 0 uses `augment_params`' table, pass r
    a table drawn from (seed, epoch, 1, r); `draws=True` gives the uniform draws instead."""
    order, passes = cycle_order(n, seed, epoch, count)
    fn = (lambda s: augment_draws(n, seed, epoch, s)) if draws else (
        lambda s: augment_params(n, seed, epoch, image_shape, s))
    if not count:
        return order, np.zeros((0, 5))
    tables = np.stack([fn(() if r == 0 else (r,)) for r in range(int(passes[-1]) + 1)])
    return order, tables[passes, order]
