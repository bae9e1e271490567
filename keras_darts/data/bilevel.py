"""The search's two streams: search-train (one pass per epoch) and search-val (cycling), from a
seeded stratified split of the training data."""

import tensorflow as tf

from keras_darts.data import pipeline
from keras_darts.data import split as split_lib
from keras_darts.data.spec import spec_for

VAL_SEED_OFFSET = 1_000_003  # Equal-sized halves must not share an order or augmentation.


class SearchStreams:
    """Split, step count and per-epoch (train, val) batch pairs of a search.

    The split is a function of (labels, train_portion, seed), so a resume recomputes it. One epoch
    is one pass over search-train (`steps` = its full batches, at most `cap`); each step also
    takes the next search-val batch of a stream cycling through search-val, reshuffled each time
    round (split.cycle_order).
    """

    def __init__(self, data, batch_size, train_portion, seed, augment="auto", cap=None,
                 eval_resize=None):
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.train_idx, self.val_idx = split_lib.stratified_split(data.y_train, train_portion, seed)
        self.steps = split_lib.steps_per_epoch(len(self.train_idx), batch_size, cap)
        split_lib.steps_per_epoch(len(self.val_idx), batch_size)  # A full val batch exists.
        self.train = data.train.subset(self.train_idx)
        self.val = data.train.subset(self.val_idx)
        self.spec = spec_for(data, augment)
        self.eval_spec = spec_for(data, "none", eval_resize=eval_resize)

    def epoch(self, epoch, start_step=0):
        """(dataset of (train batch, val batch) pairs from `start_step` on, [diagnose functions])."""
        kw = dict(spec=self.spec, batch_size=self.batch_size, epoch=epoch, start_step=start_step,
                  steps=self.steps)
        train, check_train = pipeline.train_batches(self.train, seed=self.seed, **kw)
        val, check_val = pipeline.train_batches(self.val, seed=self.seed + VAL_SEED_OFFSET,
                                                cycle=True, **kw)
        ds = tf.data.Dataset.zip((train, val))
        if self.data.in_memory:
            ds = ds.prefetch(tf.data.AUTOTUNE)  # Streamed halves are prefetched already.
        return ds, [check_train, check_val]

    def evaluation(self, cap=None):
        """(search-val batches in stored order, at most `cap`, diagnose)."""
        ds, check = pipeline.eval_batches(self.val, self.eval_spec, self.batch_size)
        return (ds.take(cap) if cap else ds), check
