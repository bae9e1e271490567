"""End to end, as a user runs it: bin/search -> genotype.json -> bin/retrain (exporting) ->
bin/export -> a fresh process serves the SavedModel and must agree with the Keras model rebuilt
from the retrain run, through both signatures."""

import io
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from helpers import (RETRAIN_TINY, SEARCH_TINY, check_ok, cli_env, read_json, run_cli,
                     temp_leftovers, write_cifar_slice)
from keras_darts.cost.derived import network_cost
from keras_darts.genotype import load_genotype

# Runs in a fresh interpreter: nothing of the test process (traced functions, Keras state) leaks in.
SERVE_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
from keras_darts.network import build_network_from_config

run_dir, images_path, pngs_path, *versions = sys.argv[1:]
images = np.load(images_path)
with np.load(pngs_path) as f:
    pngs = [f[k].tobytes() for k in sorted(f.files, key=int)]

record = json.load(open(run_dir + "/config.json"))
model = build_network_from_config(record)
latest = tf.train.latest_checkpoint(run_dir + "/checkpoints")
tf.train.Checkpoint(model=model).restore(latest).expect_partial()
x = (images.astype(np.float32) / 255.0 - np.float32(record["mean"])) / np.float32(record["std"])
expected = tf.nn.softmax(model(x, training=False), axis=-1).numpy()

out = {"checkpoint": latest, "expected": expected.tolist()}
for version in versions:
    loaded = tf.saved_model.load(version)
    by_pixels = loaded.signatures["serving_default"](images=tf.constant(images))
    by_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant(pngs))
    out[version] = {
        "pixels": float(np.max(np.abs(by_pixels["probabilities"].numpy() - expected))),
        "bytes": float(np.max(np.abs(by_bytes["probabilities"].numpy() - expected))),
        "classes": by_pixels["classes"].numpy().tolist(),
        "classes_bytes": by_bytes["classes"].numpy().tolist(),
        "sums": by_pixels["probabilities"].numpy().sum(axis=1).tolist(),
    }
print(json.dumps(out))
"""


def test_search_retrain_export_serve(cifar_dir, tmp_path):
    data = write_cifar_slice(cifar_dir, str(tmp_path / "data"), 64, 32)
    search_dir, retrain_dir = str(tmp_path / "search"), str(tmp_path / "retrain")
    export_dir = str(tmp_path / "exports")

    # --- search ---
    searched = check_ok(run_cli("search", f"--dataset={data}", f"--output_dir={search_dir}",
                                *SEARCH_TINY, "--epochs=1", "--steps_per_epoch=2", "--seed=1"))
    genotype_path = os.path.join(search_dir, "genotype.json")
    genotype = load_genotype(genotype_path)
    assert genotype.steps == 1
    history = [json.loads(line) for line in open(os.path.join(search_dir, "history.jsonl"))]
    assert len(history) == 1 and history[0]["genotype"] == genotype.to_dict()
    assert "  cifar, 20 cells, 36 channels, 32x32: " in searched.stdout

    # --- retrain the found genotype, exporting at the end ---
    result = check_ok(run_cli("retrain", f"--genotype={genotype_path}", f"--dataset={data}",
                              f"--output_dir={retrain_dir}", *RETRAIN_TINY, "--epochs=1",
                              "--steps_per_epoch=2", f"--export_dir={export_dir}"))
    v1 = os.path.join(export_dir, "darts", "1")
    assert f"exported SavedModel: {v1}" in result.stdout
    record = read_json(os.path.join(retrain_dir, "config.json"))
    assert record["genotype"] == genotype.to_dict()
    assert record["genotype_spec"] == genotype_path
    metrics = read_json(os.path.join(retrain_dir, "metrics.json"))
    assert metrics["genotype"] == genotype.to_dict() and metrics["epochs"] == 1
    # the cost counters (tests/test_cost*.py): the retrained net's, the search's --derived_* one
    cost = network_cost(genotype, 3, 4, (32, 32, 3), 10)
    assert (metrics["parameters"], metrics["macs"]) == (cost.params, cost.macs)
    at_20 = network_cost(genotype, 20, 36, (32, 32, 3), 10)
    assert history[0]["genotype_cost"] == {"parameters": at_20.params, "macs": at_20.macs}

    # --- bin/export of the same run as version 2 ---
    result = check_ok(run_cli("export", f"--checkpoint_dir={retrain_dir}",
                              f"--export_dir={export_dir}", "--version=2"))
    v2 = os.path.join(export_dir, "darts", "2")
    assert result.stdout.strip().splitlines()[-1] == v2
    assert sorted(os.listdir(os.path.join(export_dir, "darts"))) == ["1", "2"]
    for path in (search_dir, retrain_dir, export_dir):
        assert temp_leftovers(path) == [], path

    # --- serve both versions in a fresh process ---
    with np.load(os.path.join(data, "test.npz")) as f:
        images = f["x"][:6]
    np.save(tmp_path / "images.npy", images)
    pngs = {}
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        pngs[str(i)] = np.frombuffer(buffer.getvalue(), np.uint8)
    np.savez(tmp_path / "pngs.npz", **pngs)
    served = subprocess.run(
        [sys.executable, "-c", SERVE_SCRIPT, retrain_dir, str(tmp_path / "images.npy"),
         str(tmp_path / "pngs.npz"), v1, v2],
        capture_output=True, text=True, env=cli_env(tf_log_level=3), timeout=600)
    assert served.returncode == 0, served.stderr[-3000:]
    out = json.loads(served.stdout.strip().splitlines()[-1])
    expected = np.array(out["expected"])
    assert expected.shape == (6, 10)
    for version in (v1, v2):
        got = out[version]
        assert got["pixels"] <= 1e-5, (version, got)
        assert got["bytes"] <= 1e-5, (version, got)
        assert got["classes"] == got["classes_bytes"] == np.argmax(expected, 1).tolist()
        np.testing.assert_allclose(got["sums"], 1.0, atol=1e-5)
