"""Tests for the tf.data pipelines: the in-memory CIFAR path (order, crop/flip, cutout, resume) and
the streamed paths (folders, TFRecord) against it, resizing, and the ImageNet augmentation.

Expected values are computed here in numpy, independently of the pipeline code.
"""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_darts import data as D
from keras_darts.errors import UserError

MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.3)


def _normalise(x, mean=MEAN, std=STD):
    return (x.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)


def _batches(ds):
    return [(xb.numpy(), yb.numpy()) for xb, yb in ds]


def _epoch(ds):
    batches = _batches(ds)
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def make_train(x, y, batch_size, seed, epoch, mean=MEAN, std=STD, augment="auto", cutout_length=0,
               start_step=0, name=None):
    """One epoch of the in-memory training pipeline."""
    data = D.ImageData(name or "test", x, y, stats=(mean, std))
    spec = D.spec_for(data, augment, cutout_length)
    return D.train_batches(data.train, spec, batch_size, seed, epoch, start_step)[0]


def make_eval(x, y, batch_size, mean=MEAN, std=STD):
    data = D.ImageData("test", x, y, stats=(mean, std))
    return D.eval_batches(data.train, D.spec_for(data), batch_size)[0]


def test_resolve_augment():
    assert D.resolve_augment("auto", (32, 32, 3), "cifar10") == "crop_flip"
    assert D.resolve_augment("auto", (32, 32, 3), None) == "crop_flip"
    assert D.resolve_augment("auto", (28, 28, 1), "foo") == "crop"
    assert D.resolve_augment("auto", (32, 32, 3), "svhn_cropped") == "crop"
    assert D.resolve_augment("auto", (32, 32, 3), "svhn_cropped:3.1.0") == "crop"
    assert D.resolve_augment("auto", (28, 28, 1), "mnist") == "crop"
    assert D.resolve_augment("crop_flip", (28, 28, 1), "mnist") == "crop_flip"
    assert D.resolve_augment("none", (32, 32, 3), "cifar10") == "none"
    with pytest.raises(UserError, match="^--augment=flip: expected one of"):
        D.resolve_augment("flip", (32, 32, 3))


# === Pipelines ===


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 40)
    return x, y


def test_train_no_augment_is_normalised_permutation(small):
    x, y = small
    ds = make_train(x, y, 8, seed=3, epoch=2, mean=MEAN, std=STD, augment="none")
    batches = _batches(ds)
    assert len(batches) == 5
    perm = np.random.default_rng([3, 2]).permutation(40)
    xb, yb = batches[0]
    assert xb.dtype == np.float32 and xb.shape == (8, 8, 8, 3)
    assert yb.dtype == np.int32
    np.testing.assert_allclose(xb, _normalise(x[perm[:8]]), atol=1e-5)
    np.testing.assert_array_equal(yb, y[perm[:8]])
    xs, ys = _epoch(ds)
    np.testing.assert_allclose(xs, _normalise(x[perm]), atol=1e-5)
    np.testing.assert_array_equal(ys, y[perm])


def test_drop_remainder(small):
    x, y = small
    batches = _batches(make_train(x, y, 16, 0, 0, MEAN, STD, augment="none"))
    assert [len(b[1]) for b in batches] == [16, 16]
    from keras_darts.config import RetrainConfig, SearchConfig  # Bad values stop at the flags.

    with pytest.raises(UserError, match="^--seed=-1: must be >= 0"):
        SearchConfig(seed=-1).validate()
    with pytest.raises(UserError, match="^--cutout_length=-2: "):
        RetrainConfig(cutout_length=-2).validate()


def _match_window(out, original, flips):
    """The (dy, dx, flip) whose window of the zero-padded normalised original equals `out`."""
    padded = _normalise(np.pad(original, [(D.PAD, D.PAD), (D.PAD, D.PAD), (0, 0)]))
    h, w = original.shape[:2]
    hits = []
    for dy in range(2 * D.PAD + 1):
        for dx in range(2 * D.PAD + 1):
            window = padded[dy : dy + h, dx : dx + w]
            for flip in flips:
                candidate = window[:, ::-1] if flip else window
                if np.allclose(out, candidate, atol=1e-5):
                    hits.append((dy, dx, flip))
    return hits


@pytest.mark.parametrize("augment,flips", [("crop", (False,)), ("crop_flip", (False, True))])
def test_crop_and_flip_are_windows_of_padded_image(small, augment, flips):
    x, y = small
    ds = make_train(x, y, 40, seed=1, epoch=0, mean=MEAN, std=STD, augment=augment)
    xs, ys = _epoch(ds)
    perm = np.random.default_rng([1, 0]).permutation(40)
    np.testing.assert_array_equal(ys, y[perm])
    found = [_match_window(xs[i], x[perm[i]], flips) for i in range(40)]
    assert all(found), "an augmented image is no window of its padded original"
    offsets = {hit[0][:2] for hit in found}
    assert len(offsets) > 10  # 81 offsets, 40 images: offsets vary.
    if augment == "crop_flip":
        flipped = [hit[0][2] for hit in found]
        assert any(flipped) and not all(flipped)


def test_same_seed_epoch_same_batches_other_epoch_other_order(small):
    x, y = small

    def run(epoch, seed=4):
        return _epoch(make_train(x, y, 8, seed, epoch, MEAN, STD, cutout_length=4))

    a, b, c, d = run(0), run(0), run(1), run(0, seed=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1]) and not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], d[0])


def test_resume_and_batch_size_do_not_change_examples(small):
    x, y = small
    full = _batches(make_train(x, y, 8, 9, 1, MEAN, STD, cutout_length=4))
    resumed = _batches(make_train(x, y, 8, 9, 1, MEAN, STD, cutout_length=4,
                                            start_step=3))
    assert len(resumed) == 2
    for (xa, ya), (xb, yb) in zip(full[3:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # Same examples in the same order with another batch size: augmentation is per example.
    halves = _epoch(make_train(x, y, 4, 9, 1, MEAN, STD, cutout_length=4))
    np.testing.assert_array_equal(halves[0], np.concatenate([b[0] for b in full]))
    assert _batches(make_train(x, y, 8, 9, 1, MEAN, STD, start_step=5)) == []


def test_cutout_zeroes_a_clipped_square(small):
    x, y = small
    length = 5  # Odd: the reference's square is 2 * (5 // 2) = 4 wide, clipped at the borders.
    xs, ys = _epoch(make_train(x, y, 40, 2, 0, MEAN, STD, augment="none",
                                         cutout_length=length))
    perm = np.random.default_rng([2, 0]).permutation(40)
    h, w = x.shape[1:3]
    half = length // 2
    clipped = 0
    for i in range(40):
        expected = _normalise(x[perm[i]])
        zero = np.all(xs[i] == 0.0, axis=-1)
        np.testing.assert_allclose(xs[i][~zero], expected[~zero], atol=1e-5)
        rows, cols = np.nonzero(zero.any(axis=1))[0], np.nonzero(zero.any(axis=0))[0]
        y1, y2, x1, x2 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        assert zero[y1:y2, x1:x2].all() and zero.sum() == (y2 - y1) * (x2 - x1)
        # Some centre in the image gives exactly this clipped square.
        assert any(max(c - half, 0) == y1 and min(c + half, h) == y2 for c in range(h))
        assert any(max(c - half, 0) == x1 and min(c + half, w) == x2 for c in range(w))
        clipped += (y2 - y1) * (x2 - x1) < (2 * half) ** 2
    assert 0 < clipped < 40


def test_auto_augment_follows_name(small):
    x, y = small
    ds = make_train(x, y, 40, 1, 0, MEAN, STD, name="svhn_cropped")
    xs, _ = _epoch(ds)
    perm = np.random.default_rng([1, 0]).permutation(40)
    # Crop only: every image matches an unflipped window.
    assert all(_match_window(xs[i], x[perm[i]], (False,)) for i in range(0, 40, 4))


def test_grayscale_pipeline():
    d = D.synthetic_image_data(16, 0, (6, 6, 1), 2, seed=0)
    xs, _ = _epoch(make_train(d.x_train, d.y_train, 4, 0, 0, d.mean, d.std))
    assert xs.shape == (16, 6, 6, 1) and xs.dtype == np.float32
    with pytest.raises(ValueError, match="mean/std need 1 values"):
        make_train(d.x_train, d.y_train, 4, 0, 0, MEAN, STD)


def test_eval_dataset_keeps_order_and_last_batch(small):
    x, y = small
    batches = _batches(make_eval(x, y, 16, MEAN, STD))
    assert [len(b[1]) for b in batches] == [16, 16, 8]
    xs = np.concatenate([b[0] for b in batches])
    np.testing.assert_allclose(xs, _normalise(x), atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


# === Streamed sources against the in-memory path ===


def write_tfrecord(path, images, labels, image_key="image/encoded", label_key="image/class/label"):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for pixels, label in zip(images, labels):
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "PNG")
            feature = {
                image_key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[buffer.getvalue()])),
                label_key: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())


@pytest.fixture(scope="module")
def same_images(tmp_path_factory):
    """18 class-sorted 8x8 RGB images as a folder, a TFRecord file and arrays."""
    root = tmp_path_factory.mktemp("same")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (18, 8, 8, 3), dtype=np.uint8)
    y = np.repeat([0, 1, 2], 6)
    for i, (pixels, label) in enumerate(zip(x, y)):
        os.makedirs(root / "folder" / f"c{label}", exist_ok=True)
        Image.fromarray(pixels).save(root / "folder" / f"c{label}" / f"{i:02d}.png")
    write_tfrecord(root / "train.tfrecord", x, y)
    folder = D.load_image_data(str(root / "folder"))
    records = D.load_image_data(str(root / "train.tfrecord"))
    memory = D.ImageData("memory", x, y, stats=(folder.mean, folder.std))
    return folder, records, memory


def _pairs(a, b):
    batches_a, batches_b = _batches(a), _batches(b)
    assert len(batches_a) == len(batches_b) > 0
    return zip(batches_a, batches_b)


def test_streamed_sources_read_the_pixels_in_memory_holds(same_images):
    folder, records, memory = same_images
    assert isinstance(folder.train, D.FileExamples) and isinstance(records.train, D.RecordExamples)
    np.testing.assert_allclose(folder.mean, memory.train.x.reshape(-1, 3).mean(0) / 255, rtol=1e-12)
    assert records.mean == folder.mean and records.std == folder.std
    for data in (folder, records):
        for (xa, ya), (xb, yb) in _pairs(D.eval_batches(data.train, D.spec_for(data), 5)[0],
                                         D.eval_batches(memory.train, D.spec_for(memory), 5)[0]):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)


def test_streamed_folder_trains_on_the_in_memory_batches(same_images):
    """Files are random access: same order, same crops/flips/cutout as in memory, also resumed and
    in the cycling (search-val) stream."""
    folder, _, memory = same_images
    for kw in (dict(), dict(start_step=2), dict(steps=7, cycle=True),
               dict(steps=7, cycle=True, start_step=5)):
        a = D.train_batches(folder.train, D.spec_for(folder, "crop_flip", 4), 4, 6, 1, **kw)[0]
        b = D.train_batches(memory.train, D.spec_for(memory, "crop_flip", 4), 4, 6, 1, **kw)[0]
        for (xa, ya), (xb, yb) in _pairs(a, b):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)


def test_tfrecord_stream_is_deterministic_and_resumable(same_images):
    _, records, memory = same_images
    spec = D.spec_for(records, "crop_flip", 4)
    sub = records.train.subset(np.arange(0, 18, 2))  # A selection, as a search half is.

    def run(**kw):
        return _batches(D.train_batches(sub, spec, 3, 2, 0, **kw)[0])

    full = run(steps=5, cycle=True)
    assert len(full) == 5
    again, resumed = run(steps=5, cycle=True), run(steps=5, cycle=True, start_step=3)
    for (xa, ya), (xb, yb) in zip(full, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    for (xa, ya), (xb, yb) in zip(full[3:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # One pass (3 batches of 3) holds each selected record once; the order is shuffled.
    labels = np.concatenate([b[1] for b in full[:3]])
    assert sorted(labels) == sorted(memory.y_train[::2])
    other_epoch = np.concatenate([b[1] for b in _batches(D.train_batches(sub, spec, 3, 2, 1)[0])])
    assert sorted(other_epoch) == sorted(labels)
    # No augmentation: every image is a normalised stored image.
    plain = D.train_batches(sub, D.spec_for(records), 9, 2, 0)[0]
    xs, ys = _epoch(plain)
    stored = {memory.x_train[i].tobytes(): memory.y_train[i] for i in range(0, 18, 2)}
    for image, label in zip(xs, ys):
        pixels = np.round((image * np.array(records.std) + np.array(records.mean)) * 255)
        assert stored[pixels.astype(np.uint8).tobytes()] == label


# === Images of any size ===


def _striped(height, width):
    """Rows of value 10*i: bilinear halving averages row pairs, 10*(2i) + 5."""
    return np.repeat(np.repeat((10 * np.arange(height, dtype=np.uint8))[:, None, None], width,
                               1), 3, 2)


def test_resize_shorter_side_then_crop(tmp_path):
    for cls in ("a", "b"):
        os.makedirs(tmp_path / cls)
        Image.fromarray(_striped(8, 4)).save(tmp_path / cls / "tall.png")
        Image.fromarray(_striped(8, 4)[:, :, :1].repeat(3, 2)).save(tmp_path / cls / "copy.png")
    options = D.DataOptions(image_size=(2, 2), mean=(0.0,) * 3, std=(1 / 255,) * 3)
    data = D.load_image_data(str(tmp_path), options=options)
    assert data.image_shape == (2, 2, 3) and data.resize
    # Eval: 8x4 -> shorter side 2 -> 4x2 (rows 5, 25, 45, 65) -> centre crop rows 25, 45.
    xs, _ = _epoch(D.eval_batches(data.train, D.spec_for(data), 4)[0])
    np.testing.assert_allclose(xs[..., 0], [[[25, 25], [45, 45]]] * 4, atol=1e-3)
    # --eval_resize=4: shorter side 4 = as stored, centre crop of 8 rows: rows 3, 4.
    spec = D.spec_for(data, eval_resize=4)
    xs, _ = _epoch(D.eval_batches(data.train, spec, 4)[0])
    np.testing.assert_allclose(xs[..., 0], [[[30, 30], [40, 40]]] * 4, atol=1e-3)
    # Train: random 2-row windows of the 4 resized rows.
    windows = set()
    for epoch in range(4):
        xs, _ = _epoch(D.train_batches(data.train, D.spec_for(data, "crop"), 4, 0, epoch)[0])
        for image in xs:
            top = float(image[0, 0, 0])
            assert top in (5.0, 25.0, 45.0)
            np.testing.assert_allclose(image[..., 0], [[top] * 2, [top + 20] * 2], atol=1e-3)
            windows.add(top)
    assert len(windows) >= 2


def test_imagenet_augmentation(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        os.makedirs(tmp_path / cls)
        for i, (h, w) in enumerate([(12, 20), (30, 9), (16, 16)]):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.jpg", quality=95)
    data = D.load_image_data(str(tmp_path), options=D.DataOptions(image_size=(8, 8)))
    spec = D.spec_for(data, "imagenet")
    a, b, c = (_epoch(D.train_batches(data.train, spec, 3, 1, e)[0])[0] for e in (0, 0, 1))
    assert a.shape == (6, 8, 8, 3) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    low = (0 - np.array(data.mean)) / np.array(data.std)
    high = (1 - np.array(data.mean)) / np.array(data.std)
    assert (a >= low - 1e-4).all() and (a <= high + 1e-4).all()
    # Colour jitter with every draw at the middle (factors 1, hue 0) leaves the image as it is.
    from keras_darts.data.augment import colour_jitter, random_resized_crop

    image = tf.constant(rng.integers(0, 256, (4, 5, 3)), tf.float32)
    np.testing.assert_allclose(colour_jitter(image, tf.constant([0.5] * 5, tf.float64)), image,
                               atol=1e-3)
    # Brightness draw 1.0 is factor 1.4 (clipped at 255), as torchvision's U(0.6, 1.4).
    bright = colour_jitter(image, tf.constant([1.0, 0.5, 0.5, 0.5, 0.5], tf.float64))
    np.testing.assert_allclose(bright, np.minimum(image.numpy() * 1.4, 255), atol=1e-2)
    # A crop of a constant image, resized, is constant.
    flat = random_resized_crop(tf.fill([30, 20, 3], 7), (8, 8), tf.constant([1, 2], tf.int64))
    np.testing.assert_allclose(flat, 7.0)
