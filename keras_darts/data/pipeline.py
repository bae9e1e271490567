"""tf.data pipelines over any examples (in memory, files, records): deterministic and resumable.

Pipelines are functions of (seed, epoch, start_step) only:

* random-access examples (arrays, files): the epoch order is `split.epoch_order` and each
  example's augmentation is row i of `split.augment_params` / `augment_draws` (i = the example's
  index), so an example gets the same augmentation whatever the batch size, replica count or
  resume point; resuming at step s drops the first s*batch_size indices before any image is read;
* record streams (TFRecord, tfds): a seeded shuffle buffer over the fixed record order, draws
  from a stateless RNG keyed by (seed, epoch, pass, record), resumed by skipping s*batch_size
  records (read, not decoded).

`cycle=True` gives search-val's stream: cycling through the examples, reshuffled each time round.
In memory, fixed-size images take the batched CIFAR path (pad-4 crop, flip, cutout); everything
else is decoded and transformed per example, then batched and normalised the same way.
"""

import numpy as np
import tensorflow as tf

from keras_darts.data import augment as aug
from keras_darts.data import decode as dec
from keras_darts.data import split as split_lib
from keras_darts.data.examples import ArrayExamples, FileExamples
from keras_darts.data.spec import Spec  # noqa: F401 (re-export)

_SEED_STREAM = 4  # Third seed word of the per-example stateless seeds (RandomResizedCrop).
# Decoded batches kept ready by the streamed paths: a fixed count, not AUTOTUNE, whose buffer
# grows with its timing (and at 224 px each float32 batch of 64 is 38 MB).
STREAM_PREFETCH = 2


def train_batches(examples, spec, batch_size, seed, epoch, start_step=0, steps=None, cycle=False):
    """Batches `start_step..steps-1` of one epoch; returns (dataset, diagnose).

    `steps` defaults to the full batches of one pass (required with `cycle`). The dataset yields
    (float32 (B,H,W,C), int32 (B,)); `diagnose(i)` names an undecodable file in its batch i.
    """
    n = len(examples)
    steps = split_lib.steps_per_epoch(n, batch_size) if steps is None else steps
    if not 0 <= start_step <= steps:
        raise ValueError(f"start_step={start_step} is outside an epoch of {steps} steps")
    if cycle is False and steps * batch_size > n:
        raise ValueError(f"{steps} batches of {batch_size} exceed the {n} examples")
    if not examples.random_access:
        return _record_batches(examples, spec, batch_size, seed, epoch, start_step, steps), \
            _record_diagnose(examples, spec)
    count = steps * batch_size
    if cycle:
        order, params = split_lib.cycle_params(n, seed, epoch, count, spec.shape)
        _, draws = split_lib.cycle_params(n, seed, epoch, count, spec.shape, draws=True)
    else:
        order = split_lib.epoch_order(n, seed, epoch)[:count]
        params = split_lib.augment_params(n, seed, epoch, spec.shape)[order]
        draws = split_lib.augment_draws(n, seed, epoch)[order]
    begin = start_step * batch_size
    order, params, draws = order[begin:], params[begin:], draws[begin:]
    if _batched_path(examples, spec):
        ds = _array_batches(examples, spec, order, params, batch_size)
    else:
        seeds = np.random.default_rng([seed, epoch, _SEED_STREAM]).integers(2**31, size=(n, 2))
        ds = tf.data.Dataset.from_tensor_slices((order, params, draws.astype(np.float64),
                                                 seeds[order]))
        load = _loader(examples, spec)
        ds = ds.map(lambda i, p, u, s: (_train_example(load(i), spec, u, s), load.label(i), p),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=True)
        ds = ds.map(lambda x, y, p: _finish(x, y, p, spec, crop=not spec.resize),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(STREAM_PREFETCH), _file_diagnose(examples, spec, order, batch_size)
    return ds.prefetch(tf.data.AUTOTUNE), None


def eval_batches(examples, spec, batch_size, normalise=True):
    """Normalised (images, labels) batches in the stored order, keeping the last partial batch;
    returns (dataset, diagnose). `normalise=False`: uint8 images (statistics, --cache)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not examples.random_access:
        ds = examples.reader().filter(_selector(examples))
        ds = ds.map(lambda k, p, y: (_eval_example(_payload(examples, spec, p, k), spec), y),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        diagnose = _record_diagnose(examples, spec)
    elif _batched_path(examples, spec, train=False):
        images, labels = _host_tensors(examples)
        ds = tf.data.Dataset.range(len(examples)).batch(batch_size).map(
            lambda i: (tf.gather(images, i), tf.gather(labels, i)))
        return (_normalised(ds, spec) if normalise else ds), None
    else:
        load = _loader(examples, spec)
        ds = tf.data.Dataset.range(len(examples)).map(
            lambda i: (_eval_example(load(i), spec), load.label(i)),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        diagnose = _file_diagnose(examples, spec, np.arange(len(examples)), batch_size)
    ds = ds.batch(batch_size)
    return (_normalised(ds, spec, STREAM_PREFETCH) if normalise else
            ds.prefetch(STREAM_PREFETCH)), diagnose


def guard(batches, spec, *diagnoses):
    """Iterates `batches`; a decode failure is a one-line UserError naming the file."""

    def diagnose(step):
        for d in diagnoses:
            bad = d(step) if d else None
            if bad:
                return bad
        return None

    return dec.guard(batches, spec.where, spec.shape, diagnose)


# === Internals ===


def _batched_path(examples, spec, train=True):
    fixed = isinstance(examples, ArrayExamples) and not spec.resize
    return fixed and (not train or spec.augment != "imagenet")


def _host_tensors(examples):
    with tf.device("/cpu:0"):
        return tf.constant(examples.x, tf.uint8), tf.constant(np.asarray(examples.y, np.int32))


def _normaliser(spec):
    """(x/255 - mean)/std as x * scale + shift, in float32."""
    mean, std = np.asarray(spec.mean, np.float64), np.asarray(spec.std, np.float64)
    channels = spec.shape[-1]
    if mean.shape != (channels,) or std.shape != (channels,):
        raise ValueError(f"mean/std need {channels} values, got {mean.tolist()} / {std.tolist()}")
    return tf.constant(1.0 / (255.0 * std), tf.float32), tf.constant(-mean / std, tf.float32)


def _normalised(ds, spec, prefetch=tf.data.AUTOTUNE):
    scale, shift = _normaliser(spec)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32) * scale + shift, tf.cast(y, tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(prefetch)


def _finish(pixels, labels, p, spec, crop):
    """Batch tail shared by every path: CIFAR crop/flip (fixed size), normalise, cutout."""
    scale, shift = _normaliser(spec)
    if crop and spec.augment in ("crop", "crop_flip"):
        flip = p[:, 2] if spec.augment == "crop_flip" else tf.zeros_like(p[:, 2])
        pixels = aug.crop_flip(pixels, p[:, 0], p[:, 1], flip)
    out = tf.cast(pixels, tf.float32) * scale + shift
    if spec.cutout_length:
        out = aug.cutout(out, p[:, 3], p[:, 4], spec.cutout_length)
    return out, tf.cast(labels, tf.int32)


def _array_batches(examples, spec, order, params, batch_size):
    """The in-memory CIFAR path: index batches sliced, images gathered per batch from one host
    tensor (no per-epoch copy of x[perm], vectorised augmentation of whole batches)."""
    images, labels = _host_tensors(examples)
    ds = tf.data.Dataset.from_tensor_slices(
        (order.reshape(-1, batch_size), params.reshape(-1, batch_size, 5)))
    return ds.map(lambda i, p: _finish(tf.gather(images, i), tf.gather(labels, i), p, spec, True),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class _Loader:
    """index -> uint8 image (any size) and label, for arrays or files."""

    def __init__(self, examples, spec):
        self.spec = spec
        with tf.device("/cpu:0"):
            self.labels = tf.constant(np.asarray(examples.y, np.int64))
            if isinstance(examples, FileExamples):
                self.paths = tf.constant(examples.paths.astype(str))
                self.images = None
            else:
                self.images, self.paths = tf.constant(examples.x, tf.uint8), None

    def __call__(self, i):
        if self.images is not None:
            return tf.gather(self.images, i), tf.constant("")
        path = tf.gather(self.paths, i)
        return dec.decode(tf.io.read_file(path), self.spec.shape[-1]), path

    def label(self, i):
        return tf.gather(self.labels, i)


def _loader(examples, spec):
    return _Loader(examples, spec)


def _check(loaded, spec):
    image, name = loaded
    if spec.resize:
        return image
    return dec.check_size(image, spec.shape[:2], name)


def _train_example(loaded, spec, u, seed):
    image = _check(loaded, spec)
    size = spec.shape[:2]
    if spec.augment == "imagenet":
        out = aug.imagenet_train(image, size, u, seed)
    elif not spec.resize:
        out = image  # Cropped and flipped per batch by _finish, as in memory.
    elif spec.augment == "none":
        out = aug.eval_transform(image, size, spec.eval_resize)
    else:
        out = aug.train_resize_crop(image, size, u, flip=spec.augment == "crop_flip")
    out = tf.cast(out, tf.float32)
    out.set_shape(spec.shape)
    return out


def _eval_example(loaded, spec):
    image = _check(loaded, spec)
    if spec.resize:
        image = aug.eval_transform(image, spec.shape[:2], spec.eval_resize)
    image.set_shape(spec.shape)
    return image


def _file_diagnose(examples, spec, order, batch_size):
    if not isinstance(examples, FileExamples):
        return None

    def diagnose(step):
        batch = order[step * batch_size : (step + 1) * batch_size]
        return dec.first_bad(examples.paths[batch], spec.shape[-1])

    return diagnose


# --- record streams ---


def _selector(examples):
    keys = np.asarray(examples.keys, np.int64)
    mask = np.zeros(int(keys.max()) + 1 if len(keys) else 1, bool)
    mask[keys] = True
    mask = tf.constant(mask)
    size = mask.shape[0]
    return lambda k, p, y: tf.logical_and(k < size, tf.gather(mask, tf.minimum(k, size - 1)))


def _payload(examples, spec, payload, key):
    name = tf.strings.as_string(key)
    image = dec.decode(payload, spec.shape[-1]) if examples.encoded else \
        dec.convert_channels(payload, spec.shape[-1])
    return image, tf.strings.join(["record ", name])


def _record_batches(examples, spec, batch_size, seed, epoch, start_step, steps):
    n = len(examples)
    word = int(np.random.default_rng([seed, epoch, _SEED_STREAM]).integers(2**31))
    ds = examples.reader().filter(_selector(examples))
    ds = ds.shuffle(min(n, 10_000), seed=word, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate().skip(start_step * batch_size).take((steps - start_step) * batch_size)

    def example(position, record):
        key, payload, label = record
        pass_ = position // n
        u = tf.random.stateless_uniform([5], seed=tf.stack([word + pass_, key]), dtype=tf.float64)
        s = tf.random.stateless_uniform([2], seed=tf.stack([word + pass_ + 1, key]),
                                        minval=0, maxval=2**31 - 1, dtype=tf.int64)
        hw = tf.constant(spec.shape[:2], tf.float64)
        p = tf.cast(tf.floor(u * tf.concat([[2.0 * split_lib.PAD + 1] * 2, [2.0], hw], 0)),
                    tf.int32)
        image = _train_example(_payload(examples, spec, payload, key), spec, u, s)
        return image, label, p

    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(lambda x, y, p: _finish(x, y, p, spec, crop=not spec.resize),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(STREAM_PREFETCH)


def _record_diagnose(examples, spec):
    def diagnose(_):
        for key, payload, _ in examples.reader().filter(_selector(examples)):
            if examples.encoded and not dec.try_decode(payload, spec.shape[-1]):
                return examples.describe(int(key))
        return None

    return diagnose
