"""Normalisation statistics: per-channel mean and std in [0, 1] scale, from bounded memory."""

import numpy as np


class RunningStats:
    """Exact per-channel sums of uint8 pixels (float64 sums of integers are exact to 2**53)."""

    def __init__(self, channels):
        self.total, self.total_sq, self.count = np.zeros(channels), np.zeros(channels), 0

    def add(self, pixels):
        part = np.asarray(pixels).reshape(-1, self.total.shape[0]).astype(np.float64)
        self.total += part.sum(axis=0)
        self.total_sq += np.einsum("ij,ij->j", part, part)
        self.count += len(part)

    def result(self):
        mean = self.total / self.count
        var = np.maximum(self.total_sq / self.count - mean * mean, 0.0)
        return tuple(float(m) for m in mean / 255.0), tuple(float(s) for s in np.sqrt(var) / 255.0)


def channel_stats(x, chunk=2048):
    """Per-channel mean and std of uint8 images (N, H, W, C) in [0, 1] scale, as tuples of floats.

    Sums run over chunks, so 50k CIFAR images never become a 1.2 GB float copy.
    """
    stats = RunningStats(x.shape[-1])
    for start in range(0, len(x), chunk):
        stats.add(x[start : start + chunk])
    return stats.result()


def sample_indices(n, limit):
    """At most `limit` indices spread evenly over range(n) (all of them when n <= limit).

    Evenly spaced rather than the first `limit`: folder data are listed class by class, and the
    first 10,000 images of a class-sorted list would be a few classes only.
    """
    if n <= limit:
        return np.arange(n)
    return np.floor(np.arange(limit) * (n / limit)).astype(np.int64)


def batch_sums(images):
    """(sum, sum of squares, pixel count) per channel of a uint8 batch, in float64 (TF ops)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    x = tf.cast(images, tf.float64)
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float64)
    return tf.reduce_sum(x, [0, 1, 2]), tf.reduce_sum(x * x, [0, 1, 2]), count


def sums_stats(sums, channels):
    """Stats from an iterable of `batch_sums` results."""
    stats = RunningStats(channels)
    for total, total_sq, count in sums:
        stats.total += total.numpy()
        stats.total_sq += total_sq.numpy()
        stats.count += int(count.numpy())
    return stats.result()
