"""Training pixels as arrays for consumers that need them (LiteRT int8 calibration)."""

import numpy as np

from keras_darts.data.pipeline import eval_batches, guard
from keras_darts.data.spec import spec_for


def train_pixels(data, limit=None):
    """uint8 training images (N, H, W, C) as evaluation sees them: the arrays when in memory,
    else the first `limit` images streamed and decoded (resized and centre-cropped)."""
    if data.in_memory and not data.resize:
        return data.x_train[:limit]
    count = len(data.train) if limit is None else min(limit, len(data.train))
    spec = spec_for(data)
    ds, check = eval_batches(data.train.subset(np.arange(count)), spec, 64, normalise=False)
    return np.concatenate([b[0].numpy() for b in guard(ds, spec, check)])
