"""Tests for keras_darts.retrain_loop and bin/retrain: the reference's defaults, the drop-path ramp,
metrics.json (top-5 checked against numpy), the export at the end, and an export version clash
refused before any training.

One tiny retrain runs in-process (module fixture); crash/resume, determinism and bad input are in
test_robustness.py.
"""

import json
import math
import os
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from helpers import (GENOTYPE_1NODE, ROOT, cli_env, one_error_line, read_json, run_cli, snapshot,
                     temp_leftovers, write_cifar_slice, write_json)
from keras_darts import retrain_loop
from keras_darts.config import RetrainConfig
from keras_darts.network import NetworkCIFAR, build_network_from_config, count_parameters
from keras_darts.optimizers import EpochCosineDecay

EPOCHS = 3
DROP_PATH_PROB = 0.3
N_TEST = 50  # not a multiple of the batch size: the last, partial test batch must count too


# === Defaults ===

REFERENCE = dict(epochs=600, batch_size=96, learning_rate=0.025, learning_rate_min=0.0,
                 momentum=0.9, weight_decay=3e-4, auxiliary=True, auxiliary_weight=0.4, cutout=True,
                 cutout_length=16, drop_path_prob=0.2, grad_clip=5.0, layers=20, init_channels=36,
                 variant="cifar", genotype="DARTS_V2")


def test_defaults_are_the_reference_cifar_setting():
    config = RetrainConfig()
    config.validate()
    assert {k: getattr(config, k) for k in REFERENCE} == REFERENCE


def test_cli_flag_defaults_equal_the_config_defaults():
    """bin/retrain's flag defaults are RetrainConfig's (read without TensorFlow, in a subprocess so
    its absl flags do not collide with other scripts')."""
    code = ("import importlib.machinery, importlib.util, json, sys\n"
            f"loader = importlib.machinery.SourceFileLoader('retrain_cli', {os.path.join(ROOT, 'bin', 'retrain')!r})\n"
            "spec = importlib.util.spec_from_loader('retrain_cli', loader)\n"
            "module = importlib.util.module_from_spec(spec); loader.exec_module(module)\n"
            "print(json.dumps({k: v.default for k, v in module.FLAGS.items()}))\n"
            "assert 'tensorflow' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=cli_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    flags = json.loads(result.stdout)
    # Field defaults: None for the options a --variant sets (resolved in RetrainConfig).
    import dataclasses

    config = {f.name: f.default for f in dataclasses.fields(RetrainConfig)}
    assert set(flags) == set(config)
    assert flags == config


def test_cosine_schedule_goes_from_0025_to_zero():
    schedule = EpochCosineDecay(0.025, 600, steps_per_epoch=521, min_learning_rate=0.0)
    for epoch in (0, 1, 150, 300, 450, 599):
        assert schedule.at_epoch(epoch) == pytest.approx(0.0125 * (1 + math.cos(math.pi * epoch / 600)))
    assert schedule.at_epoch(0) == pytest.approx(0.025)
    assert schedule.at_epoch(600) == pytest.approx(0.0, abs=1e-12)
    # The in-graph schedule agrees with the per-epoch value at every step of an epoch.
    for step in (0, 520, 521, 600 * 521 - 1):
        assert float(schedule(step)) == pytest.approx(schedule.at_epoch(step // 521), rel=1e-5,
                                                      abs=1e-9)


# === One tiny in-process run ===

@pytest.fixture(scope="module")
def tiny(cifar_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("retrain")
    data = write_cifar_slice(cifar_dir, str(root / "data"), 64, N_TEST)
    genotype = write_json(str(root / "genotype.json"), GENOTYPE_1NODE)
    config = RetrainConfig(
        genotype=genotype, dataset=data, output_dir=str(root / "run"), layers=3, init_channels=4,
        batch_size=16, epochs=EPOCHS, steps_per_epoch=2, drop_path_prob=DROP_PATH_PROB, seed=1,
        export_dir=str(root / "exports"), model_name="tiny",  # auxiliary head on (default)
        latency=True)
    ramp = []
    original = NetworkCIFAR.set_drop_path_prob

    def spy(model, rate):
        ramp.append(float(rate))
        return original(model, rate)

    t0 = time.time()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(NetworkCIFAR, "set_drop_path_prob", spy)
        metrics = retrain_loop.run(config, quiet=True)
    return types.SimpleNamespace(root=root, config=config, metrics=metrics, ramp=ramp, data=data,
                                 elapsed=time.time() - t0, run_dir=config.output_dir)


def _restored_model(run_dir):
    """The Keras model rebuilt from config.json with the latest checkpoint's weights."""
    record = read_json(os.path.join(run_dir, "config.json"))
    model = build_network_from_config(record)
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    return model, record


def test_drop_path_ramp_per_epoch(tiny):
    """drop_path_prob * epoch / epochs at the start of each epoch (0 in the first)."""
    expected = [DROP_PATH_PROB * e / EPOCHS for e in range(EPOCHS)]
    assert tiny.ramp == pytest.approx(expected, abs=1e-12)
    model, _ = _restored_model(tiny.run_dir)
    # The checkpointed rate is the last epoch's.
    assert float(model.drop_path_prob.numpy()) == pytest.approx(expected[-1], abs=1e-7)


def test_metrics_json(tiny):
    path = os.path.join(tiny.run_dir, "metrics.json")
    metrics = read_json(path)
    for key in ("test_accuracy", "test_top5_accuracy", "test_loss", "parameters", "wall_time_s",
                "epochs"):
        assert key in metrics, key
    assert metrics["epochs"] == EPOCHS
    assert metrics["test_examples"] == N_TEST
    assert 0 <= metrics["test_accuracy"] <= metrics["test_top5_accuracy"] <= 1
    assert math.isfinite(metrics["test_loss"])
    assert 0 < metrics["wall_time_s"] <= tiny.elapsed + 1
    timing = metrics["last_epoch_timing"]  # the loop's own timing of the last epoch
    assert timing["steps"] == 2  # steps_per_epoch
    assert 0 < timing["step_median_s"] <= timing["step_total_s"] < metrics["wall_time_s"]
    assert 0 <= timing["input_wait_max_s"] <= timing["input_wait_s"] < metrics["wall_time_s"]
    assert metrics["genotype"] == GENOTYPE_1NODE
    model, record = _restored_model(tiny.run_dir)
    assert record["auxiliary"] is True and model.auxiliary_head is not None
    # The auxiliary head (training only) is not counted, as in the reference.
    assert metrics["parameters"] == count_parameters(model)
    assert metrics["parameters"] < count_parameters(model, exclude_auxiliary=False)
    # the cost counter (tests/test_cost*.py) at the run's size, and --latency's measurement
    from keras_darts.cost import network_cost
    from keras_darts.genotype import genotype_from_dict

    cost = network_cost(genotype_from_dict(GENOTYPE_1NODE), 3, 4, tuple(record["image_shape"]), 10)
    assert (metrics["parameters"], metrics["macs"]) == (cost.params, cost.macs)
    assert 0 < metrics["latency_ms"] < 1000
    # What run() returned is what it wrote (plus where it exported).
    returned = {k: v for k, v in tiny.metrics.items() if k != "export_path"}
    assert json.loads(json.dumps(returned)) == metrics


def test_top1_top5_and_loss_match_numpy_on_the_restored_model(tiny):
    metrics = read_json(os.path.join(tiny.run_dir, "metrics.json"))
    model, record = _restored_model(tiny.run_dir)
    with np.load(os.path.join(tiny.data, "test.npz")) as f:
        x, y = f["x"], f["y"]
    assert len(y) == N_TEST and tiny.config.eval_steps is None
    images = (x.astype(np.float32) / 255.0 - np.float32(record["mean"])) / np.float32(record["std"])
    logits = model(images, training=False).numpy().astype(np.float64)
    order = np.argsort(-logits, axis=1)
    top1 = np.mean(order[:, 0] == y)
    top5 = np.mean([label in row[:5] for label, row in zip(y, order)])
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    loss = -np.mean(log_probs[np.arange(len(y)), y])
    assert metrics["test_top5_accuracy"] == pytest.approx(top5, abs=1e-9)
    assert metrics["test_accuracy"] == pytest.approx(top1, abs=1e-9)
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-4)
    # Top-5 really is a different number from top-1 here (10 classes, a barely trained net).
    assert top5 > top1


def test_export_dir_gets_model_name_and_version(tiny):
    export_dir = str(tiny.root / "exports")
    version_dir = os.path.join(export_dir, "tiny", "1")
    assert tiny.metrics["export_path"] == version_dir
    assert sorted(os.listdir(os.path.join(export_dir, "tiny"))) == ["1"]
    for name in ("saved_model.pb", "variables", os.path.join("assets.extra", "keras_darts_export.json")):
        assert os.path.exists(os.path.join(version_dir, name)), name
    info = read_json(os.path.join(version_dir, "assets.extra", "keras_darts_export.json"))
    assert info["version"] == 1 and info["model_name"] == "tiny"
    assert info["genotype"] == GENOTYPE_1NODE
    assert info["run_dir"] == os.path.abspath(tiny.run_dir)
    assert temp_leftovers(export_dir) == []
    assert temp_leftovers(tiny.run_dir) == []


def test_rerun_of_a_finished_run_does_not_train_again(tiny):
    """The same command again (resume-neutral flags may differ) reports the finished run and leaves
    every file of the run as it was."""
    before = snapshot(tiny.run_dir)
    config = RetrainConfig(**{**tiny.config.to_dict(), "export_dir": None, "eval_steps": 1})
    metrics = retrain_loop.run(config, quiet=True)
    assert metrics == read_json(os.path.join(tiny.run_dir, "metrics.json"))
    assert snapshot(tiny.run_dir) == before


def test_clashing_export_version_is_refused_before_training(tiny, tmp_path):
    export_dir = str(tiny.root / "exports")
    before = snapshot(export_dir)
    output_dir = str(tmp_path / "new_run")
    result = run_cli("retrain", f"--genotype={tiny.config.genotype}", f"--dataset={tiny.data}",
                     f"--output_dir={output_dir}", "--layers=3", "--init_channels=4",
                     "--batch_size=16", "--epochs=1", "--steps_per_epoch=1",
                     f"--export_dir={export_dir}", "--model_name=tiny", "--version=1")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "--version=1" in line and os.path.join(export_dir, "tiny", "1") in line
    assert "--overwrite" in line
    assert result.stdout == ""  # nothing ran: no data loaded, no model built, no epoch
    assert not os.path.exists(output_dir)
    assert snapshot(export_dir) == before
