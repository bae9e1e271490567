"""The Python API: README's example run on tiny data, the input adapter (arrays, tf.data), bad
options, and `import keras_darts` staying light."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# README's sizes -> tiny ones (each must occur exactly once, so README and test cannot drift).
TINY = {
    "layers=5, init_channels=8,": "layers=3, init_channels=4, nodes=1,",
    "steps_per_epoch=10, batch_size=32": "steps_per_epoch=2, batch_size=8",
    "layers=8,\n                                channels=16,": "layers=3, channels=4,",
}


def _readme_api_blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    start = text.index("## Python API")
    end = text.index("\n## ", text.index("## Exports") + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_readme_examples_run_on_tiny_data(tmp_path, monkeypatch, capsys):
    """Every python block of README's "Python API" and "Exports" sections, executed in order in
    one namespace, as written except for the sizes in TINY and a 32-image stand-in for CIFAR-10
    at the path the example reads (../shared/data/cifar10/train.npz from the working dir)."""
    import keras_darts

    blocks = _readme_api_blocks()
    assert len(blocks) == 2
    code = "\n".join(blocks)
    for big, tiny in TINY.items():
        assert code.count(big) == 1, big
        code = code.replace(big, tiny)
    data_dir = tmp_path / "shared" / "data" / "cifar10"
    data_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    y = rng.permutation(np.arange(32) % 10)
    np.savez(data_dir / "train.npz", x=x, y=y)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")

    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (the README, on purpose)

    result = namespace["result"]
    assert isinstance(result.genotype, keras_darts.Genotype) and result.genotype.steps == 1
    assert [h["epoch"] for h in result.history] == [1]
    assert result.history[0]["genotype"] == result.genotype.to_dict()
    assert keras_darts.Genotype.load("runs/api_genotype.json") == result.genotype
    assert os.path.isfile("runs/api_search/genotype.json")
    # DropPathSchedule: epoch 2 of 2 trained with 0.2 * 1 / 2.
    network = keras_darts.export.inference_network(namespace["model"])
    assert float(network.drop_path_prob.numpy()) == pytest.approx(0.1)
    assert namespace["path"] == os.path.join("exports", "darts-tflite_int8", "1")
    assert sorted(os.listdir(namespace["path"])) == ["keras_darts_export.json", "model.tflite"]
    printed = capsys.readouterr().out
    assert str(result.genotype) in printed
    classes = re.findall(r"^\[(\d+)\]$", printed, flags=re.M)
    assert len(classes) == 1 and 0 <= int(classes[0]) < 10


def test_arrays_and_tf_data_give_the_same_image_data():
    import tensorflow as tf

    from keras_darts.api.inputs import to_image_data

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (12, 4, 4, 3), dtype=np.uint8)
    y = np.arange(12) % 3
    a = to_image_data((x, y), class_names=["a", "b", "c"])
    np.testing.assert_array_equal(a.x_train, x)
    np.testing.assert_array_equal(a.y_train, y)
    assert a.y_train.dtype == np.int64 and a.num_classes == 3 and a.class_names == ("a", "b", "c")
    for ds in (tf.data.Dataset.from_tensor_slices((x, y)),
               tf.data.Dataset.from_tensor_slices((x, y)).batch(5)):
        b = to_image_data(ds)
        np.testing.assert_array_equal(b.x_train, x)
        np.testing.assert_array_equal(b.y_train, y)
        assert b.name == "<in-memory tf.data.Dataset>"
    gray = to_image_data((x[..., 0], y[:, None]), test_data=(x[:3, ..., 0], y[:3]))
    assert gray.x_train.shape == (12, 4, 4, 1) and gray.x_test.shape == (3, 4, 4, 1)
    # Mean/std are the training images' (what the loops normalise with).
    np.testing.assert_allclose(a.mean, x.reshape(-1, 3).mean(0) / 255)


@pytest.mark.parametrize("data,message", [
    ((np.zeros((4, 4, 4, 3), np.float32) + 0.5, np.arange(4) % 2),
     r"^train_data: images must be uint8 pixels 0\.\.255, got float32 \(these look like \[0, 1\] "
     r"floats: pass \(x \* 255\)\.round\(\)\.astype\('uint8'\)\)$"),
    ((np.zeros((4, 4, 4, 3), np.uint8), np.arange(3)), r"^train_data: 4 images but 3 labels$"),
    ((np.zeros((4, 4, 4, 3), np.uint8), np.zeros(4, int)), r"^train_data: a single class"),
    ((np.zeros((4, 4), np.uint8), np.arange(4) % 2), r"^train_data: images must have shape"),
    (42, r"^train_data: expected a --dataset string, an \(x, y\) pair of arrays or a "
         r"tf\.data\.Dataset of \(image, label\), got int$"),
])
def test_bad_train_data_is_one_line_naming_it(data, message):
    from keras_darts.api.inputs import to_image_data
    from keras_darts.errors import UserError

    with pytest.raises(UserError, match=message):
        to_image_data(data)


def test_bad_options_fail_before_any_work(tmp_path):
    import keras_darts
    from keras_darts.errors import UserError

    x = np.zeros((8, 8, 8, 3), np.uint8)
    y = np.arange(8) % 2
    with pytest.raises(UserError, match=r"unknown option 'init_channel' \(did you mean "
                                        r"'init_channels'\?\)"):
        keras_darts.search((x, y), init_channel=4)
    with pytest.raises(UserError, match=r"^--nodes=0: must be >= 1$"):
        keras_darts.search((x, y), output_dir=str(tmp_path / "s"), nodes=0)
    with pytest.raises(UserError, match="^dataset: pass the data as train_data"):
        keras_darts.search((x, y), dataset="cifar10")
    with pytest.raises(UserError, match="^test_data: a retrain evaluates on a test split"):
        keras_darts.retrain("DARTS_V2", (x, y), output_dir=str(tmp_path / "r"))
    with pytest.raises(UserError, match=r"^--format=onnx: unknown format 'onnx'"):
        keras_darts.retrain("DARTS_V2", (x, y), test_data=(x, y), format="onnx")
    with pytest.raises(UserError, match=r"^genotype=NOPE: neither a published genotype"):
        keras_darts.build_model("NOPE", 10, (8, 8, 3), layers=3, channels=4)
    with pytest.raises(UserError, match=r"^input_shape=\(8, 8\): must be \(height, width, "
                                        r"channels\)$"):
        keras_darts.build_model("DARTS_V2", 10, (8, 8), layers=3, channels=4)
    assert os.listdir(tmp_path) == []


def test_import_is_light_and_the_api_loads_on_first_use():
    # A fresh process: `import keras_darts` must not import TensorFlow (the API is lazy).
    code = "import sys, keras_darts; print('tensorflow' in sys.modules, sorted(keras_darts.__all__))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("False ['DropPathSchedule', 'Genotype', 'RetrainResult', "
                                  "'SearchResult', 'build_model', 'export', 'retrain', 'search']")
    # Here TF is loaded already: the lazy names resolve to the real objects.
    import keras_darts
    from keras_darts.api import runs
    from keras_darts.export import export_saved_model
    from keras_darts.genotype import Genotype

    assert keras_darts.Genotype is Genotype and keras_darts.search is runs.search
    assert callable(keras_darts.export) and keras_darts.export.export_saved_model is export_saved_model
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        keras_darts.nope  # noqa: B018


def test_retrain_from_arrays_in_a_temporary_dir(tmp_path, monkeypatch):
    import keras_darts
    from keras_darts.network import NetworkCIFAR

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where output_dir=None runs
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    y = np.arange(16) % 4
    result = keras_darts.retrain("DARTS_V2", (x, y), test_data=(x[:8], y[:8]),
                                 class_names=["a", "b", "c", "d"], layers=3, init_channels=4,
                                 epochs=1, batch_size=8, steps_per_epoch=1, auxiliary=False,
                                 quiet=True)
    # The temporary run dir is gone (autograph's own temp files may stay).
    assert result.output_dir is None
    assert [n for n in os.listdir(tmp_path) if n.startswith("keras_darts-")] == []
    assert isinstance(result.model, NetworkCIFAR) and result.model.num_classes == 4
    assert result.metrics["epochs"] == 1 and result.metrics["test_examples"] == 8
    # The metrics are the returned model's: recompute top-1 on the 8 test images.
    mean = x.reshape(-1, 3).mean(0) / 255
    std = x.reshape(-1, 3).std(0) / 255
    logits = result.model(((x[:8] / 255 - mean) / std).astype(np.float32), training=False)
    assert result.metrics["test_accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == y[:8]))
