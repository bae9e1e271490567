"""Tests for keras_darts.data loading: npz, folders (streamed), tfds (streamed), validation errors.

Expected values are computed here in numpy/PIL, independently of the loading code. Streamed
sources are compared through `pixels` (the eval pipeline without normalisation).
"""

import os

import numpy as np
import pytest
from PIL import Image

from keras_darts import data as D
from keras_darts.errors import UserError


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


def pixels(data, split="train"):
    """uint8 images of a split as the eval pipeline delivers them (streamed or in memory)."""
    ds, _ = D.eval_batches(getattr(data, split), D.spec_for(data), 64, normalise=False)
    return np.concatenate([b[0].numpy() for b in ds])


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
    assert isinstance(d.train, D.FileExamples) and d.x_train is None  # Streamed: a file list.
    x, y = _flatten(train)
    np.testing.assert_array_equal(pixels(d), x)
    np.testing.assert_array_equal(d.y_train, y)
    xt, yt = _flatten(test)
    np.testing.assert_array_equal(pixels(d, "test"), xt)
    np.testing.assert_array_equal(d.y_test, yt)
    assert d.image_shape == (5, 6, 3)
    # Statistics of the (small: all sampled) training images, as numpy computes them.
    scaled = x.astype(np.float64) / 255.0
    np.testing.assert_allclose(d.mean, scaled.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(d.std, scaled.std(axis=(0, 1, 2)), rtol=1e-10)
    # --cache reads the same pixels into memory.
    cached = D.load_image_data(str(tmp_path), need_test=True, options=D.DataOptions(cache=True))
    assert cached.in_memory
    np.testing.assert_array_equal(cached.x_train, x)
    np.testing.assert_array_equal(cached.x_test, xt)
    assert cached.mean == d.mean and cached.std == d.std


def _luma(rgb):
    """ITU-R 601 luma rounded, computed independently of the loader."""
    return np.round(rgb[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)


def test_folders_single_set_grayscale_and_channel_conversion(tmp_path):
    gray = _write_images(tmp_path / "g", {"0": 2, "1": 3}, mode="L")
    d = D.load_image_data(str(tmp_path / "g"))
    assert d.test is None and d.image_shape == (5, 6, 1)
    x, y = _flatten(gray)
    np.testing.assert_array_equal(pixels(d), x)
    np.testing.assert_array_equal(d.y_train, y)
    with pytest.raises(UserError, match="no test split"):
        D.load_image_data(str(tmp_path / "g"), need_test=True)
    # The first image decides the channels (gray here); an RGB file becomes its luma.
    rgb = _write_images(tmp_path / "g", {"2": 1}, mode="RGB")["2"][0]
    d = D.load_image_data(str(tmp_path / "g"))
    assert d.image_shape == (5, 6, 1)
    got = pixels(d)
    np.testing.assert_array_equal(got[:5], x)
    assert np.abs(got[5, ..., 0].astype(int) - _luma(rgb).astype(int)).max() <= 1
    # --channels=3: gray images become three equal planes, RGB stays as stored.
    d = D.load_image_data(str(tmp_path / "g"), options=D.DataOptions(channels=3))
    assert d.image_shape == (5, 6, 3)
    got = pixels(d)
    np.testing.assert_array_equal(got[:5], np.repeat(x, 3, axis=-1))
    np.testing.assert_array_equal(got[5], rgb)
    # In memory, --channels converts the arrays the same way.
    _savez(tmp_path / "rgb.npz", x=rgb[None].repeat(2, 0), y=np.array([0, 1]))
    m = D.load_image_data(str(tmp_path / "rgb.npz"), options=D.DataOptions(channels=1))
    assert m.image_shape == (5, 6, 1)
    assert np.abs(m.x_train[0, ..., 0].astype(int) - _luma(rgb).astype(int)).max() <= 1


def test_test_dataset_folder(tmp_path):
    _write_images(tmp_path / "tr", {"a": 2, "b": 2})
    test = _write_images(tmp_path / "te", {"a": 1, "b": 1}, seed=3)
    d = D.load_image_data(str(tmp_path / "tr"), test_dataset=str(tmp_path / "te"))
    np.testing.assert_array_equal(pixels(d, "test"), _flatten(test)[0])


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
        assert isinstance(d.train, D.RecordExamples)  # Streamed with tfds' as_dataset.
        x, xt = pixels(d), pixels(d, "test")
    assert x.shape == (12, *shape) and x.dtype == np.uint8 and d.image_shape == shape
    assert xt.shape == (12, *shape) and d.y_train.dtype == np.int64
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
    with pytest.raises(UserError, match="^--dataset=.*noimg: class folder .*noimg/a holds no "
                                        "images"):
        D.load_image_data(str(tmp_path / "noimg"))
    _write_images(tmp_path / "broken", {"a": 2, "b": 1})
    (tmp_path / "broken" / "b" / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match=r"cannot read image .*broken/b/bad\.png"):
        D.load_image_data(str(tmp_path / "broken"))
    _write_images(tmp_path / "mixed", {"a": 2})
    _write_images(tmp_path / "mixed", {"b": 1}, size=(7, 7))
    with pytest.raises(UserError, match=r"^--dataset=.*mixed: mixed image sizes: .*mixed/b/000\.png "
                                        r"is 7x7 \(width x height\) but the first image is 6x5; "
                                        r"pass --image_size"):
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
    with pytest.raises(UserError, match=r"^--dataset=.*f: .*f/test: class 'c' is not a training "
                                        r"class \(training classes: a, b\)"):
        D.load_image_data(str(tmp_path / "f"))
    # A test split may lack a training class; labels follow the training classes.
    _write_images(tmp_path / "g" / "train", {"a": 1, "b": 1, "c": 1})
    _write_images(tmp_path / "g" / "test", {"c": 2})
    assert D.load_image_data(str(tmp_path / "g")).y_test.tolist() == [2, 2]
    # In memory: a label the training split does not have.
    bad = _savez(tmp_path / "extra.npz", x=x, y=np.array([0, 1, 2, 1]))
    with pytest.raises(UserError, match=f"^--test_dataset={bad}: class 2 is in the test split but "
                                        "not in the training split"):
        D.load_image_data(train, test_dataset=bad)
