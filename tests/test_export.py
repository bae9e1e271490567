"""Tests for keras_darts.export and bin/export: signatures as TF Serving sees them, reload in a fresh
process, versioning, crash safety, export from a retrain run directory."""

import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_darts import export as export_lib
from keras_darts.errors import UserError
from keras_darts.export import export_from_run, export_saved_model
from keras_darts.genotype import DARTS_V2
from keras_darts.network import NetworkCIFAR, build_network_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (8, 8, 3)
MEAN = [0.49, 0.48, 0.45]
STD = [0.25, 0.24, 0.26]
CLASS_NAMES = ["airplane", "bird", "cat", "deer", "frog"]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}


def _tiny_model():
    model = NetworkCIFAR(DARTS_V2, num_classes=5, layers=3, init_channels=4, seed=1)
    model.build((None, *SHAPE))
    # One training-mode pass moves the BN statistics off their identity initialisation.
    model(np.random.RandomState(1).standard_normal((4, *SHAPE)).astype(np.float32), training=True)
    return model


def _expected_probabilities(model, images):
    x = (images.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)
    return tf.nn.softmax(model(x, training=False)).numpy()


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("exports"))
    model = _tiny_model()
    path = export_saved_model(model, export_dir, "darts", image_shape=SHAPE, mean=MEAN, std=STD,
                              class_names=CLASS_NAMES)
    return model, export_dir, path


def test_layout_assets_and_metadata(exported):
    model, export_dir, path = exported
    assert path == os.path.join(export_dir, "darts", "1")
    assert os.listdir(os.path.join(export_dir, "darts")) == ["1"]  # no .tmp leftovers
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    with open(os.path.join(path, "assets", "class_names.txt")) as f:
        assert f.read().splitlines() == CLASS_NAMES
    with open(os.path.join(path, "assets.extra", "keras_darts_export.json")) as f:
        info = json.load(f)
    assert info["image_shape"] == list(SHAPE) and info["mean"] == MEAN and info["std"] == STD
    assert info["class_names"] == CLASS_NAMES and info["num_classes"] == 5
    assert info["genotype"] == DARTS_V2.to_dict()
    assert info["model_class"] == "NetworkCIFAR" and info["model_config"]["layers"] == 3


def _signature_blocks(text):
    """{signature name: its block of `saved_model_cli show --all` output}."""
    parts = re.split(r"^signature_def\['([^']+)'\]:", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _tensor_info(block, kind, name):
    match = re.search(rf"{kind}\['{name}'\] tensor_info:\s*dtype: (\S+)\s*shape: (.+)", block)
    assert match, f"{kind} {name!r} not in:\n{block}"
    return match.group(1), match.group(2).strip()


def test_saved_model_cli_shows_the_serving_signatures(exported):
    _, _, path = exported
    cli = shutil.which("saved_model_cli")
    command = [cli] if cli else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    result = subprocess.run(command + ["show", "--all", "--dir", path], capture_output=True,
                            text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    blocks = _signature_blocks(result.stdout)
    assert {"serving_default", "serving_bytes"} <= set(blocks)
    default, by_bytes = blocks["serving_default"], blocks["serving_bytes"]
    assert _tensor_info(default, "inputs", "images") == ("DT_UINT8", "(-1, 8, 8, 3)")
    assert _tensor_info(by_bytes, "inputs", "image_bytes") == ("DT_STRING", "(-1)")
    for block in (default, by_bytes):
        assert len(re.findall(r"inputs\['", block)) == 1
        assert _tensor_info(block, "outputs", "probabilities") == ("DT_FLOAT", "(-1, 5)")
        assert _tensor_info(block, "outputs", "logits") == ("DT_FLOAT", "(-1, 5)")
        assert _tensor_info(block, "outputs", "classes") == ("DT_INT64", "(-1)")
        assert _tensor_info(block, "outputs", "class_names") == ("DT_STRING", "(-1)")
        assert "Method name is: tensorflow/serving/predict" in block


_LOAD_SCRIPT = r"""
import glob, os, sys
import numpy as np
import tensorflow as tf

path, data_dir = sys.argv[1], sys.argv[2]


def plain(value):  # string tensors come back as bytes objects; store unicode, no pickles
    value = value.numpy()
    return np.array([v.decode() for v in value]) if value.dtype == object else value


loaded = tf.saved_model.load(path)
images = np.load(os.path.join(data_dir, "images.npy"))
out = {}
for key, value in loaded.signatures["serving_default"](images=tf.constant(images)).items():
    out["images/" + key] = plain(value)
for name in ("same_size", "grayscale", "other_size", "jpeg"):
    files = sorted(glob.glob(os.path.join(data_dir, name + "_*")))
    blobs = [open(f, "rb").read() for f in files]
    result = loaded.signatures["serving_bytes"](image_bytes=tf.constant(blobs))
    for key, value in result.items():
        out[name + "/" + key] = plain(value)
np.savez(os.path.join(data_dir, "outputs.npz"), **out)
"""


def test_fresh_process_load_matches_keras_model(exported, tmp_path):
    model, _, path = exported
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (6, *SHAPE)).astype(np.uint8)
    gray = rng.randint(0, 256, (2, 8, 8)).astype(np.uint8)
    other = rng.randint(0, 256, (3, 12, 10, 3)).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    for i, image in enumerate(images):
        (tmp_path / f"same_size_{i}.png").write_bytes(_png(image))
    for i, image in enumerate(gray):
        (tmp_path / f"grayscale_{i}.png").write_bytes(_png(image))
    for i, image in enumerate(other):
        (tmp_path / f"other_size_{i}.png").write_bytes(_png(image))
    buffer = io.BytesIO()
    Image.fromarray(images[0]).save(buffer, format="JPEG")
    (tmp_path / "jpeg_0.jpg").write_bytes(buffer.getvalue())
    script = tmp_path / "load.py"
    script.write_text(_LOAD_SCRIPT)
    result = subprocess.run([sys.executable, str(script), path, str(tmp_path)], capture_output=True,
                            text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = dict(np.load(tmp_path / "outputs.npz"))

    expected = _expected_probabilities(model, images)
    np.testing.assert_allclose(out["images/probabilities"], expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out["images/classes"], np.argmax(expected, axis=-1))
    assert out["images/classes"].dtype == np.int64
    assert list(out["images/class_names"]) == [CLASS_NAMES[c] for c in out["images/classes"]]
    # Encoded images of the right size go through exactly the same numbers as the uint8 path.
    for key in ("probabilities", "logits", "classes", "class_names"):
        np.testing.assert_array_equal(out["same_size/" + key], out["images/" + key])
    # Grayscale files are decoded to 3 channels.
    gray_rgb = np.repeat(gray[..., None], 3, axis=-1)
    np.testing.assert_allclose(out["grayscale/probabilities"], _expected_probabilities(model, gray_rgb),
                               rtol=0, atol=1e-5)
    # Other sizes: bilinear resize to 8x8, rounded back to uint8, then the uint8 path.
    resized = np.clip(np.round(tf.image.resize(other, SHAPE[:2]).numpy()), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(out["other_size/probabilities"], _expected_probabilities(model, resized),
                               rtol=0, atol=1e-5)
    assert out["jpeg/probabilities"].shape == (1, 5)
    np.testing.assert_allclose(out["jpeg/probabilities"].sum(axis=-1), 1.0, atol=1e-5)


def _versions(model_dir):
    return sorted(os.listdir(model_dir))


def test_versioning_clash_and_overwrite(tmp_path):
    model = _tiny_model()
    kwargs = {"image_shape": SHAPE, "mean": MEAN, "std": STD, "verify": False}
    export_dir = str(tmp_path)
    assert export_saved_model(model, export_dir, "m", version=3, **kwargs).endswith(os.sep + "3")
    assert export_saved_model(model, export_dir, "m", **kwargs).endswith(os.sep + "4")  # max + 1
    with pytest.raises(UserError) as error:
        export_saved_model(model, export_dir, "m", version=3, **kwargs)
    message = str(error.value)
    assert "--version=3" in message and "--overwrite" in message and "\n" not in message
    assert os.path.join(export_dir, "m", "3") in message

    with open(os.path.join(export_dir, "m", "3", "assets.extra", "keras_darts_export.json")) as f:
        assert json.load(f)["class_names"] is None
    path = export_saved_model(model, export_dir, "m", version=3, class_names=CLASS_NAMES,
                              overwrite=True, **kwargs)
    assert _versions(os.path.join(export_dir, "m")) == ["3", "4"]  # old one gone, no .tmp dirs
    assert os.path.isfile(os.path.join(path, "assets", "class_names.txt"))
    with pytest.raises(UserError, match="--version=0"):
        export_saved_model(model, export_dir, "m", version=0, **kwargs)
    with pytest.raises(UserError, match="class_names has 2 names"):
        export_saved_model(model, export_dir, "m", class_names=["a", "b"], **kwargs)
    with pytest.raises(UserError, match="std"):
        export_saved_model(model, export_dir, "m", image_shape=SHAPE, mean=MEAN, std=[1, 0, 1])


def test_crash_during_save_leaves_no_numeric_version(tmp_path, monkeypatch):
    model = _tiny_model()
    kwargs = {"image_shape": SHAPE, "mean": MEAN, "std": STD}

    def crashing_save(obj, export_dir, *args, **kw):
        os.makedirs(os.path.join(export_dir, "variables"))
        with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
            f.write(b"half written")
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(tf.saved_model, "save", crashing_save)
    with pytest.raises(RuntimeError, match="simulated crash"):
        export_saved_model(model, str(tmp_path), "darts", **kwargs)
    assert os.listdir(tmp_path / "darts") == []  # neither "1" nor a leftover .tmp dir

    # An existing version survives a crashed overwrite untouched.
    (tmp_path / "darts" / "1").mkdir()
    (tmp_path / "darts" / "1" / "saved_model.pb").write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="simulated crash"):
        export_saved_model(model, str(tmp_path), "darts", version=1, overwrite=True, **kwargs)
    assert os.listdir(tmp_path / "darts") == ["1"]
    assert (tmp_path / "darts" / "1" / "saved_model.pb").read_bytes() == b"previous"


def _make_run(run_dir, **overrides):
    config = {"genotype": DARTS_V2.to_dict(), "num_classes": 5, "layers": 3, "init_channels": 4,
              "image_shape": list(SHAPE), "mean": MEAN, "std": STD, "class_names": CLASS_NAMES,
              "variant": "cifar", "auxiliary": True}
    model = build_network_from_config(config)
    # Weights that differ from a fresh model, so a missed restore shows.
    kernel = model.classifier.kernel
    kernel.assign(np.random.RandomState(2).standard_normal(kernel.shape).astype(np.float32))
    model(np.random.RandomState(3).standard_normal((4, *SHAPE)).astype(np.float32), training=True)
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({**config, **overrides}, f)
    checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(7, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, os.path.join(run_dir, "checkpoints"), max_to_keep=2).save()
    return model


def test_export_from_run_restores_the_checkpoint(tmp_path):
    run_dir = str(tmp_path / "run")
    model = _make_run(run_dir)
    path = export_from_run(run_dir, str(tmp_path / "exports"))
    assert path == str(tmp_path / "exports" / "darts" / "1")
    images = np.random.RandomState(4).randint(0, 256, (3, *SHAPE)).astype(np.uint8)
    loaded = tf.saved_model.load(path)
    got = loaded.signatures["serving_default"](images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(got, _expected_probabilities(model, images), rtol=0, atol=1e-5)
    with open(os.path.join(path, "assets.extra", "keras_darts_export.json")) as f:
        info = json.load(f)
    assert info["checkpoint"].endswith("ckpt-1") and info["retrain_config"]["layers"] == 3


def test_export_from_run_user_errors(tmp_path):
    exports = str(tmp_path / "exports")
    with pytest.raises(UserError, match="no such directory"):
        export_from_run(str(tmp_path / "missing"), exports)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(UserError, match="no config.json"):
        export_from_run(str(tmp_path / "empty"), exports)
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(UserError, match="missing key 'mean'"):
        export_from_run(str(tmp_path / "empty"), exports)
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"mean": 0, "std": 1}))
    with pytest.raises(UserError, match="no checkpoint"):
        export_from_run(str(tmp_path / "empty"), exports)
    # A config that does not describe the checkpointed model.
    _make_run(str(tmp_path / "wrong"), init_channels=6)
    with pytest.raises(UserError, match="does not match"):
        export_from_run(str(tmp_path / "wrong"), exports)
    assert not os.path.exists(os.path.join(exports, "darts", "1"))


def test_bin_export_end_to_end(tmp_path):
    run_dir = str(tmp_path / "run")
    _make_run(run_dir)
    exports = str(tmp_path / "exports")
    command = [os.path.join(ROOT, "bin", "export"), f"--checkpoint_dir={run_dir}",
               f"--export_dir={exports}", "--model_name=cifar", "--version=2"]
    env = {k: v for k, v in _env().items() if k != "PYTHONPATH"}  # works from a bare checkout
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(tmp_path),
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    version_dir = os.path.join(exports, "cifar", "2")
    assert result.stdout.strip().splitlines()[-1] == version_dir
    assert os.path.isfile(os.path.join(version_dir, "assets", "class_names.txt"))

    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --version=2: {version_dir} already exists; pass --overwrite to replace it"]
