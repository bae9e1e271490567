"""Record streams: TFRecord files of tf.train.Example and tfds splits, read in a fixed order.

Loading reads the labels once (a pass over the records that parses the label only); pixels are
only read by the pipelines. Keys are record positions in that fixed order.
"""

import glob
import os

import numpy as np
import tensorflow as tf

from keras_darts.data.examples import RecordExamples
from keras_darts.data.decode import tf_reason
from keras_darts.data.npz import short
from keras_darts.errors import UserError

TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")


def is_tfrecord(path):
    return any(s in os.path.basename(path) for s in TFRECORD_SUFFIXES)


def tfrecord_files(spec, prefix=None):
    """The TFRecord files a flag names: a file, a glob, or (with `prefix`) a folder's prefix* files."""
    if os.path.isdir(spec):
        pattern = os.path.join(spec, f"{prefix or ''}*")
        return sorted(f for f in glob.glob(pattern) if is_tfrecord(f) and os.path.isfile(f))
    return sorted(f for f in glob.glob(spec) if os.path.isfile(f))


def tfrecord_examples(files, where, image_feature, label_feature, skip_corrupt=False, channels=3):
    """RecordExamples over TFRecord `files`; checks the named features on every record's label and
    on the first record's image. Returns (examples, skipped record names)."""
    label_spec = {label_feature: tf.io.FixedLenFeature([], tf.int64)}
    image_spec = {image_feature: tf.io.FixedLenFeature([], tf.string)}
    counts, labels = [], []
    for file in files:
        ds = tf.data.TFRecordDataset(file)
        try:
            first = next(iter(ds.take(1)), None)
            if first is not None:
                tf.io.parse_single_example(first, {**image_spec, **label_spec})
            parts = [b for b in ds.batch(4096).map(
                lambda r: tf.io.parse_example(r, label_spec)[label_feature]).as_numpy_iterator()]
        except tf.errors.InvalidArgumentError as e:
            raise UserError(f"{where}: {file}: expected tf.train.Example records with an encoded "
                            f"image {image_feature!r} (--image_feature) and an int64 label "
                            f"{label_feature!r} (--label_feature): {tf_reason(e)}") from None
        except tf.errors.DataLossError as e:
            raise UserError(f"{where}: {file}: corrupt TFRecord file ({tf_reason(e)})") from None
        y = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        counts.append(len(y))
        labels.append(y)
    y = np.concatenate(labels).astype(np.int64)
    if not len(y):
        raise UserError(f"{where}: the TFRecord files hold no records")
    if y.min() < 0:
        raise UserError(f"{where}: negative label {int(y.min())}; labels must be 0..num_classes-1")
    offsets = np.concatenate([[0], np.cumsum(counts)])

    def reader():
        def parse(key, record):
            f = tf.io.parse_single_example(record, {**image_spec, **label_spec})
            return key, f[image_feature], f[label_feature]

        return tf.data.TFRecordDataset(list(files)).enumerate().map(
            parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def describe(key):
        i = int(np.searchsorted(offsets, key, side="right")) - 1
        return f"{files[i]} record {key - offsets[i]}"

    examples = RecordExamples(reader, np.arange(len(y)), y, True, describe)
    skipped = []
    if skip_corrupt:
        def probe(key, payload, _):
            return key, tf.shape(tf.io.decode_image(payload, channels=0,
                                                    expand_animations=False))[0]

        good = np.array([k for k, _ in reader().map(probe).ignore_errors().as_numpy_iterator()],
                        np.int64)
        bad = np.setdiff1d(examples.keys, good)
        skipped = [describe(k) for k in bad]
        examples = examples.subset(np.searchsorted(examples.keys, good))
    return examples, skipped


def first_record_image(examples):
    """(h, w, c) of the first selected record's image."""
    for _, payload, _ in examples.reader().take(1):
        try:
            image = tf.io.decode_image(payload, channels=0, expand_animations=False) \
                if examples.encoded else payload
        except tf.errors.InvalidArgumentError as e:
            raise UserError(f"cannot decode image {examples.describe(0)} ({tf_reason(e)})") from None
        return int(image.shape[0]), int(image.shape[1]), 1 if image.shape[-1] in (1, 2) else 3
    raise UserError("no records")


def tfds_examples(builder, split, where):
    """RecordExamples streaming a tfds split with tfds' own as_dataset (decoded by tfds)."""
    try:
        labels_ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        parts = [b for b in labels_ds.map(lambda x, y: y).batch(8192).as_numpy_iterator()]
    except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"{where}: cannot read the {split} split ({short(e)})") from e
    if not parts:
        raise UserError(f"{where}: the {split} split is empty")
    y = np.concatenate(parts).astype(np.int64)

    def reader():
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        return ds.enumerate().map(lambda k, xy: (k, xy[0], tf.cast(xy[1], tf.int64)))

    return RecordExamples(reader, np.arange(len(y)), y, False,
                          lambda key: f"{split} split example {key}")
