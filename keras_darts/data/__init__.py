"""Image data: loading (tfds, .npz, folders of class folders, TFRecord) and deterministic tf.data
pipelines, in memory or streamed from disk.

Modules: examples (what a dataset is), npz / folders / records / tfds_source (readers), loading
(`load_image_data`), split (stratified split, orders, step counts), bilevel (search's streams), augment, decode (and one-line
errors for bad files), pipeline (train/eval batches), stats (normalisation).
"""

from keras_darts.data.bilevel import SearchStreams
from keras_darts.data.augment import NO_FLIP_DATASETS, resolve_augment
from keras_darts.data.examples import (ArrayExamples, FileExamples, ImageData, RecordExamples,
                                       synthetic_image_data)
from keras_darts.data.folders import IMAGE_EXTENSIONS
from keras_darts.data.loading import DataOptions, load_image_data
from keras_darts.data.pipeline import eval_batches, guard, train_batches
from keras_darts.data.spec import Spec, spec_for
from keras_darts.data.pixels import train_pixels
from keras_darts.data.record import (check_same_normalisation, check_same_split, dataset_record,
                                     split_record)
from keras_darts.data.split import (PAD, augment_params, cycle_order, epoch_order,
                                    steps_per_epoch, stratified_split)
from keras_darts.data.stats import channel_stats

__all__ = [
    "ArrayExamples", "DataOptions", "FileExamples", "IMAGE_EXTENSIONS", "ImageData",
    "NO_FLIP_DATASETS", "PAD", "RecordExamples", "SearchStreams", "Spec", "augment_params", "channel_stats", "check_same_normalisation", "check_same_split", "dataset_record",
    "cycle_order", "epoch_order", "eval_batches", "guard", "load_image_data", "resolve_augment", "spec_for", "split_record",
    "steps_per_epoch", "stratified_split", "synthetic_image_data", "train_batches", "train_pixels",
]
