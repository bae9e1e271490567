"""Tests for keras_darts.data: loading, validation errors, and the deterministic pipelines.

Expected values are computed here in numpy, independently of the pipeline code.
"""

import os

import numpy as np
import pytest
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


def _write_images(root, per_class, size=(6, 5), mode="RGB", seed=0, ext="png"):
    """Writes class folders of random images; returns {class: [uint8 arrays in file-name order]}."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    out = {}
    for cls, count in per_class.items():
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        out[cls] = []
        for i in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
            Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(
                os.path.join(root, cls, f"{i:03d}.{ext}"))
            out[cls].append(pixels)
    return out


def _flatten(images):
    classes = sorted(images)
    x = np.stack([img for c in classes for img in images[c]])
    y = np.array([k for k, c in enumerate(classes) for _ in images[c]])
    return x, y


def _savez(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


# === Loading ===


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (20, 8, 7, 3), dtype=np.uint8)
    y = rng.integers(0, 4, 20)
    xt = rng.integers(0, 256, (6, 8, 7, 3), dtype=np.uint8)
    yt = rng.integers(0, 4, 6).astype(np.int32)
    names = np.array(["a", "b", "c", "d"])
    _savez(tmp_path / "train.npz", x=x, y=y, class_names=names)
    _savez(tmp_path / "test.npz", x=xt, y=yt, class_names=names)
    for source in (str(tmp_path), str(tmp_path / "train.npz")):
        d = D.load_image_data(source, need_test=True)
        np.testing.assert_array_equal(d.x_train, x)
        np.testing.assert_array_equal(d.y_train, y)
        np.testing.assert_array_equal(d.x_test, xt)
        np.testing.assert_array_equal(d.y_test, yt)
        assert d.y_train.dtype == np.int64 and d.y_test.dtype == np.int64
        assert d.x_train.dtype == np.uint8
        assert d.class_names == ("a", "b", "c", "d") and d.num_classes == 4
        assert d.image_shape == (8, 7, 3)


def test_npz_other_name_has_no_test_and_grayscale_gets_channel(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (10, 5, 5), dtype=np.uint8)
    y = np.arange(10) % 3
    _savez(tmp_path / "data.npz", x=x, y=y)
    _savez(tmp_path / "test.npz", x=x, y=y)  # Not picked up: the file is not train.npz.
    d = D.load_image_data(str(tmp_path / "data.npz"))
    assert d.x_test is None and d.y_test is None and d.class_names is None
    np.testing.assert_array_equal(d.x_train, x[..., None])
    assert d.num_classes == 3 and d.image_shape == (5, 5, 1)
    with pytest.raises(UserError, match="--dataset=.*data.npz.*no test split"):
        D.load_image_data(str(tmp_path / "data.npz"), need_test=True)
    d = D.load_image_data(str(tmp_path / "data.npz"), test_dataset=str(tmp_path / "test.npz"),
                          need_test=True)
    np.testing.assert_array_equal(d.x_test, x[..., None])


def test_cifar_slice_and_stats(cifar_dir, tmp_path):
    with np.load(os.path.join(cifar_dir, "test.npz")) as f:  # The smaller file: faster to inflate.
        x, y = f["x"][:64], f["y"][:64]
    _savez(tmp_path / "train.npz", x=x, y=y)
    d = D.load_image_data(str(tmp_path / "train.npz"))
    np.testing.assert_array_equal(d.x_train, x)
    scaled = x.astype(np.float64) / 255.0
    np.testing.assert_allclose(d.mean, scaled.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(d.std, scaled.std(axis=(0, 1, 2)), rtol=1e-10)
    assert isinstance(d.mean, tuple) and all(isinstance(m, float) for m in d.mean)


@pytest.mark.slow  # Inflates 170 MB: 4-9 s on a shared 2-core machine.
def test_full_cifar_dir_matches_reference_stats(cifar_dir):
    d = D.load_image_data(cifar_dir, need_test=True)
    assert d.x_train.shape == (50000, 32, 32, 3) and d.x_test.shape == (10000, 32, 32, 3)
    assert d.num_classes == 10
    # The reference's CIFAR_MEAN / CIFAR_STD; this JPEG copy is a little smoother (README).
    np.testing.assert_allclose(d.mean, [0.4914, 0.4822, 0.4465], atol=2e-3)
    np.testing.assert_allclose(d.std, [0.2470, 0.2435, 0.2616], atol=4e-3)


def test_folders_train_test_layout(tmp_path):
    train = _write_images(tmp_path / "train", {"dog": 3, "cat": 2, "ant": 2}, ext="png")
    test = _write_images(tmp_path / "test", {"dog": 1, "cat": 1, "ant": 2}, seed=1, ext="bmp")
    d = D.load_image_data(str(tmp_path), need_test=True)
    assert d.class_names == ("ant", "cat", "dog")
    x, y = _flatten(train)
    np.testing.assert_array_equal(d.x_train, x)
    np.testing.assert_array_equal(d.y_train, y)
    xt, yt = _flatten(test)
    np.testing.assert_array_equal(d.x_test, xt)
    np.testing.assert_array_equal(d.y_test, yt)
    assert d.image_shape == (5, 6, 3)


def test_folders_single_set_grayscale_and_mixed_modes(tmp_path):
    gray = _write_images(tmp_path / "g", {"0": 2, "1": 3}, mode="L")
    d = D.load_image_data(str(tmp_path / "g"))
    assert d.x_test is None and d.image_shape == (5, 6, 1)
    x, y = _flatten(gray)
    np.testing.assert_array_equal(d.x_train, x)
    np.testing.assert_array_equal(d.y_train, y)
    with pytest.raises(UserError, match="no test split"):
        D.load_image_data(str(tmp_path / "g"), need_test=True)
    # One RGB image makes the whole set RGB; gray images become three equal channels.
    _write_images(tmp_path / "g", {"2": 1}, mode="RGB")
    d = D.load_image_data(str(tmp_path / "g"))
    assert d.image_shape == (5, 6, 3)
    np.testing.assert_array_equal(d.x_train[:5], np.repeat(x, 3, axis=-1))


def test_test_dataset_folder(tmp_path):
    _write_images(tmp_path / "tr", {"a": 2, "b": 2})
    test = _write_images(tmp_path / "te", {"a": 1, "b": 1}, seed=3)
    d = D.load_image_data(str(tmp_path / "tr"), test_dataset=str(tmp_path / "te"))
    np.testing.assert_array_equal(d.x_test, _flatten(test)[0])


def test_synthetic_image_data():
    d = D.synthetic_image_data(30, 7, (8, 8, 1), num_classes=3, seed=5)
    assert d.x_train.shape == (30, 8, 8, 1) and d.x_train.dtype == np.uint8
    assert d.x_test.shape == (7, 8, 8, 1) and d.y_test.dtype == np.int64
    assert sorted(np.bincount(d.y_train)) == [10, 10, 10] and d.num_classes == 3
    again = D.synthetic_image_data(30, 7, (8, 8, 1), num_classes=3, seed=5)
    np.testing.assert_array_equal(d.x_train, again.x_train)
    assert D.synthetic_image_data(4, 0).x_test is None


# --- tfds, offline ---


@pytest.mark.parametrize("name,shape", [("cifar10", (32, 32, 3)), ("mnist", (28, 28, 1))])
def test_tfds_mock(name, shape, tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        d = D.load_image_data(name, data_dir=str(tmp_path), need_test=True)
        expected_names = tuple(tfds.builder(name).info.features["label"].names)
    assert d.x_train.shape == (12, *shape) and d.x_train.dtype == np.uint8
    assert d.x_test.shape == (12, *shape) and d.y_train.dtype == np.int64
    assert d.y_train.min() >= 0 and d.y_train.max() < 10
    assert d.class_names == expected_names and d.num_classes == 10


def test_tfds_not_prepared_offline_is_one_line(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'storage.googleapis.com'\nsecond line")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(UserError) as e:
        D.load_image_data("cifar10", data_dir=str(tmp_path))
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("--dataset=cifar10: could not fetch the data")
    assert f"--data_dir={tmp_path}" in message and "train.npz" in message


def test_unknown_dataset_name():
    with pytest.raises(UserError, match=r"^--dataset=cifar11: unknown dataset.*did you mean"):
        D.load_image_data("cifar11")
    with pytest.raises(UserError, match=r"^--dataset=/no/such/train.npz: no such file"):
        D.load_image_data("/no/such/train.npz")


# --- bad input ---


def _bad_npz_cases(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 4, 4, 3), dtype=np.uint8)
    y = np.array([0, 1, 0, 1])
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    np.save(tmp_path / "array.npy", x)
    os.replace(tmp_path / "array.npy", tmp_path / "array.npz")
    return {
        "corrupt.npz": ("not an .npz archive", None),
        "array.npz": ("not an .npz archive", None),
        "empty.npz": ("missing array.*x, y", {}),
        "nox.npz": ("missing array.*x.*found: y", {"y": y}),
        "noy.npz": ("missing array.*y", {"x": x}),
        "float.npz": ("x must be uint8.*float32", {"x": x.astype(np.float32), "y": y}),
        "rank.npz": (r"x must be images.*\(4, 48\)", {"x": x.reshape(4, -1), "y": y}),
        "none.npz": ("holds no images", {"x": x[:0], "y": y[:0]}),
        "len.npz": ("4 images but 3 labels", {"x": x, "y": y[:3]}),
        "neg.npz": ("negative label -1", {"x": x, "y": np.array([0, 1, -1, 1])}),
        "flt.npz": ("labels must be integers, got float64", {"x": x, "y": y.astype(float)}),
        "one.npz": ("a dataset with a single class", {"x": x, "y": np.zeros(4, int)}),
        "obj.npz": ("cannot read .npz", {"x": x.astype(object), "y": y}),
        "names.npz": ("label 1 but only 1 class names",
                      {"x": x, "y": y, "class_names": np.array(["a"])}),
    }


def test_bad_npz_files(tmp_path):
    for file, (pattern, arrays) in _bad_npz_cases(tmp_path).items():
        path = str(tmp_path / file)
        if arrays is not None:
            np.savez(path, **arrays)
        with pytest.raises(UserError, match=f"^--dataset={path}: .*{pattern}") as e:
            D.load_image_data(path)
        assert "\n" not in str(e.value), file


def test_missing_path_and_unsupported_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="notes.txt: not an .npz archive"):
        D.load_image_data(str(tmp_path / "notes.txt"))
    with pytest.raises(UserError, match=r"^--dataset=\./nowhere: no such file"):
        D.load_image_data("./nowhere")


def test_bad_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="^--dataset=.*/empty: no class sub-folders"):
        D.load_image_data(str(tmp_path / "empty"))
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match="^--dataset=.*noimg: no images"):
        D.load_image_data(str(tmp_path / "noimg"))
    _write_images(tmp_path / "broken", {"a": 2, "b": 1})
    (tmp_path / "broken" / "b" / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match=r"cannot read image .*broken/b/bad\.png"):
        D.load_image_data(str(tmp_path / "broken"))
    _write_images(tmp_path / "mixed", {"a": 2})
    _write_images(tmp_path / "mixed", {"b": 1}, size=(7, 7))
    with pytest.raises(UserError, match=r"mixed image sizes: .*mixed/b/000\.png is 7x7 but "
                                        r".*mixed/a/000\.png is 6x5"):
        D.load_image_data(str(tmp_path / "mixed"))
    _write_images(tmp_path / "single", {"only": 3})
    with pytest.raises(UserError, match="^--dataset=.*single: a dataset with a single class"):
        D.load_image_data(str(tmp_path / "single"))


def test_bad_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    y = np.array([0, 1, 0, 1])
    train = _savez(tmp_path / "data.npz", x=x, y=y)
    small = _savez(tmp_path / "small.npz", x=x[:, :4, :4], y=y)
    with pytest.raises(UserError, match=f"^--test_dataset={small}: .*test images are 4x4x3 but "
                                        "train images are 8x8x3"):
        D.load_image_data(train, test_dataset=small)
    with pytest.raises(UserError, match="^--test_dataset=/nope: no such file"):
        D.load_image_data(train, test_dataset="/nope")
    bad = _savez(tmp_path / "bad.npz", x=x, y=-y)
    with pytest.raises(UserError, match=f"^--test_dataset={bad}: .*negative label"):
        D.load_image_data(train, test_dataset=bad)
    _write_images(tmp_path / "f" / "train", {"a": 1, "b": 1})
    _write_images(tmp_path / "f" / "test", {"a": 1, "c": 1})
    with pytest.raises(UserError, match=r"test class names \['a', 'c'\] differ"):
        D.load_image_data(str(tmp_path / "f"))


# === Splits and steps ===


def test_split_train_val():
    train, val = D.split_train_val(10, 0.5)
    np.testing.assert_array_equal(train, np.arange(5))
    np.testing.assert_array_equal(val, np.arange(5, 10))
    train, val = D.split_train_val(50000, 0.7)
    assert len(train) == 35000 and len(val) == 15000 and train[-1] + 1 == val[0]
    train, val = D.split_train_val(10, 0.75)  # floor(7.5) = 7.
    assert len(train) == 7 and len(val) == 3
    for portion in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(UserError, match=f"^--train_portion={portion}: "):
            D.split_train_val(10, portion)
    with pytest.raises(UserError, match="^--train_portion=0.5: .*at least one"):
        D.split_train_val(1, 0.5)


def test_steps_per_epoch():
    assert D.steps_per_epoch(100, 32) == 3
    assert D.steps_per_epoch(100, 32, cap=2) == 2
    assert D.steps_per_epoch(100, 32, cap=10) == 3
    with pytest.raises(UserError, match="^--batch_size=64: larger than the 10 examples"):
        D.steps_per_epoch(10, 64)
    with pytest.raises(UserError, match="^--batch_size=0: "):
        D.steps_per_epoch(10, 0)


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
    ds = D.make_train_dataset(x, y, 8, seed=3, epoch=2, mean=MEAN, std=STD, augment="none")
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
    batches = _batches(D.make_train_dataset(x, y, 16, 0, 0, MEAN, STD, augment="none"))
    assert [len(b[1]) for b in batches] == [16, 16]
    with pytest.raises(UserError, match="^--seed=-1: must be non-negative"):
        D.make_train_dataset(x, y, 16, -1, 0, MEAN, STD)
    with pytest.raises(UserError, match="^--cutout_length=-2: "):
        D.make_train_dataset(x, y, 16, 0, 0, MEAN, STD, cutout_length=-2)


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
    ds = D.make_train_dataset(x, y, 40, seed=1, epoch=0, mean=MEAN, std=STD, augment=augment)
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
        return _epoch(D.make_train_dataset(x, y, 8, seed, epoch, MEAN, STD, cutout_length=4))

    a, b, c, d = run(0), run(0), run(1), run(0, seed=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1]) and not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], d[0])


def test_resume_and_batch_size_do_not_change_examples(small):
    x, y = small
    full = _batches(D.make_train_dataset(x, y, 8, 9, 1, MEAN, STD, cutout_length=4))
    resumed = _batches(D.make_train_dataset(x, y, 8, 9, 1, MEAN, STD, cutout_length=4,
                                            start_step=3))
    assert len(resumed) == 2
    for (xa, ya), (xb, yb) in zip(full[3:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # Same examples in the same order with another batch size: augmentation is per example.
    halves = _epoch(D.make_train_dataset(x, y, 4, 9, 1, MEAN, STD, cutout_length=4))
    np.testing.assert_array_equal(halves[0], np.concatenate([b[0] for b in full]))
    assert _batches(D.make_train_dataset(x, y, 8, 9, 1, MEAN, STD, start_step=5)) == []


def test_cutout_zeroes_a_clipped_square(small):
    x, y = small
    length = 5  # Odd: the reference's square is 2 * (5 // 2) = 4 wide, clipped at the borders.
    xs, ys = _epoch(D.make_train_dataset(x, y, 40, 2, 0, MEAN, STD, augment="none",
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
    ds = D.make_train_dataset(x, y, 40, 1, 0, MEAN, STD, name="svhn_cropped")
    xs, _ = _epoch(ds)
    perm = np.random.default_rng([1, 0]).permutation(40)
    # Crop only: every image matches an unflipped window.
    assert all(_match_window(xs[i], x[perm[i]], (False,)) for i in range(0, 40, 4))


def test_grayscale_pipeline():
    d = D.synthetic_image_data(16, 0, (6, 6, 1), 2, seed=0)
    xs, _ = _epoch(D.make_train_dataset(d.x_train, d.y_train, 4, 0, 0, d.mean, d.std))
    assert xs.shape == (16, 6, 6, 1) and xs.dtype == np.float32
    with pytest.raises(ValueError, match="mean/std need 1 values"):
        D.make_train_dataset(d.x_train, d.y_train, 4, 0, 0, MEAN, STD)


def test_eval_dataset_keeps_order_and_last_batch(small):
    x, y = small
    batches = _batches(D.make_eval_dataset(x, y, 16, MEAN, STD))
    assert [len(b[1]) for b in batches] == [16, 16, 8]
    xs = np.concatenate([b[0] for b in batches])
    np.testing.assert_allclose(xs, _normalise(x), atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
