"""bin/search with the robust-search flags combined and `--deterministic`: one tiny run,
SIGKILLed mid-epoch and resumed, which must end bit-identical to an uninterrupted run (so every new piece of state - betas, warm-up, ramp positions, Hessian
history and vector - is checkpointed), then a DARTS-PT re-selection of the finished run. The
flags' numbers are unit-tested in test_robust.py; this checks they reach the loop, the history and
the checkpoint, and survive a resume. (The unrolled step and the mirrored strategy with these
options: test_distribute.py; `--unrolled` kill + resume through bin/search:
test_search_unrolled.py.)"""

import json
import math
import os
import signal

import numpy as np
import pytest

from helpers import (SEARCH_TINY, Background, check_ok, checkpoint_numbers, cli_argv,
                     kill_when, read_history, run_cli, saved_checkpoints, snapshot,
                     write_cifar_slice)

from keras_darts.genotype import load_genotype

FLAGS = ["--epochs=2", "--steps_per_epoch=2", "--checkpoint_every=1", "--seed=3",
         "--partial_channels=2", "--beta_decay=50", "--aux_skip", "--track_hessian",
         "--hessian_iterations=2", "--early_stop=skip:3", "--arch_warmup_epochs=1", "--max_skip=1",
         "--deterministic"]


def _tensors(run_dir):
    """{name: array} of the latest checkpoint (without the save counter)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "save_counter" not in name and name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


@pytest.fixture(scope="module")
def run(cifar_dir, tmp_path_factory):
    data = write_cifar_slice(cifar_dir, str(tmp_path_factory.mktemp("data")), 64, 0)
    out = str(tmp_path_factory.mktemp("robust") / "run")
    args = [f"--dataset={data}", f"--output_dir={out}", *SEARCH_TINY, *FLAGS]
    killed = kill_when(Background(cli_argv("search", *args), out + "-killed"),
                       lambda: bool(saved_checkpoints(out)))
    assert killed.returncode == -signal.SIGKILL
    assert checkpoint_numbers(out) == [1]  # mid warm-up epoch (step 1 of 2)
    resumed = check_ok(run_cli("search", *args))
    assert "resuming from" in resumed.stdout
    whole = str(tmp_path_factory.mktemp("robust") / "uninterrupted")
    check_ok(run_cli("search", f"--dataset={data}", f"--output_dir={whole}", *SEARCH_TINY, *FLAGS))
    return {"out": out, "args": args, "history": read_history(os.path.join(out, "history.jsonl")),
            "uninterrupted": whole}


def test_killed_and_resumed_equals_uninterrupted_bit_for_bit(run):
    whole = run["uninterrupted"]
    assert run["history"] == read_history(os.path.join(whole, "history.jsonl"))
    with open(os.path.join(run["out"], "genotype.json")) as a, \
            open(os.path.join(whole, "genotype.json")) as b:
        assert a.read() == b.read()
    resumed, uninterrupted = _tensors(run["out"]), _tensors(whole)
    assert resumed.keys() == uninterrupted.keys()
    assert any("betas_normal" in k for k in resumed) and any("hessian" in k for k in resumed)
    for name, value in uninterrupted.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_history_records_the_schedules_warmup_betas_and_eigenvalue(run):
    h = run["history"]
    assert [r["epoch"] for r in h] == [1, 2]
    # Warm-up epoch: no architecture step (no arch-val figures), alphas still at their init.
    assert h[0]["arch_updates"] is False and h[0]["arch_val_loss"] is None
    assert h[1]["arch_updates"] is True and h[1]["arch_val_loss"] > 0
    # lambda_t = 50 * e / 2 and beta_t = 1 - e / 2 for 0-based epochs 0, 1.
    assert [r["beta_decay_weight"] for r in h] == [0.0, 25.0]
    assert [r["aux_skip_weight"] for r in h] == [1.0, 0.5]
    for r in h:
        assert len(r["betas_normal"]) == 2 and math.isclose(sum(r["betas_normal"]), 1, rel_tol=1e-6)
        assert math.isfinite(r["hessian_eigenvalue"])
        assert r["skip_count"] == sum(op == "skip_connect" for op, _ in r["genotype"]["normal"])
        assert r["skip_count"] <= 1  # --max_skip=1
        assert "early_stop" not in r  # nodes=1 cannot reach 3 skips
    # The initial alphas/betas (same seed, same initialiser), exactly: warm-up did not move them.
    from keras_darts.genotype import edge_softmax, softmax
    from keras_darts.supernet import SearchNetwork

    init = SearchNetwork(10, 3, 4, steps=1, multiplier=1, partial_channels=2, alpha_seed=3)
    np.testing.assert_allclose(h[0]["alphas_normal"], softmax(init.alphas_normal.numpy()),
                               rtol=1e-6)
    np.testing.assert_allclose(h[0]["betas_reduce"], edge_softmax(init.betas_reduce.numpy(), 1),
                               rtol=1e-6)
    # Epoch 2 trained them: two Adam steps of lr 3e-4 move each raw alpha by ~6e-4 (beta-decay's
    # gradient is nearly uniform along a row, so the softmax barely moves: compare raw values).
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.path.join(run["out"], "checkpoints"))
    key = next(n for n in reader.get_variable_to_shape_map()
               if "alphas_normal" in n and "optimizer" not in n and "OPTIMIZER" not in n)
    moved = np.abs(reader.get_tensor(key) - init.alphas_normal.numpy()).max()
    assert 3e-4 < moved < 1e-3


def test_checkpoint_carries_the_new_state(run):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.path.join(run["out"], "checkpoints"))
    names = "\n".join(reader.get_variable_to_shape_map())
    for name in ("hessian_eigenvalues", "hessian_vector", "stopped_at", "beta_decay_weight",
                 "betas_normal", "aux_skip_weight"):
        assert name in names
    key = next(n for n in reader.get_variable_to_shape_map() if n.startswith("hessian_eigenvalues"))
    np.testing.assert_allclose(reader.get_tensor(key), [r["hessian_eigenvalue"]
                                                        for r in run["history"]], rtol=1e-12)


def test_perturbation_reselects_a_finished_run_without_touching_it(run):
    out = run["out"]
    before = snapshot(out)
    result = check_ok(run_cli("search", *run["args"], "--selection=perturbation",
                              "--selection_finetune_epochs=1"))
    assert "search already finished" in result.stdout
    after = snapshot(out)
    added = {k for k in after if k not in before}
    assert added == {"genotype_perturbation.json"}
    assert all(after[k] == v for k, v in before.items())  # genotype.json, history, checkpoints
    g = load_genotype(os.path.join(out, "genotype_perturbation.json"))
    assert g.steps == 1 and len(g.normal) == 2
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["config"]["selection"] == "magnitude"  # the run's own record


@pytest.mark.slow  # --run_slow (suite time)
def test_perturbation_selection_under_mirrored_equals_one_device(run, tmp_path):
    """DARTS-PT measures in cross-replica context on whole batches: re-selecting the same finished
    run on two replicas (two logical CPUs) picks the same genotype as on one device."""
    import shutil

    chosen = {}
    for name, extra in (("one", []), ("mirrored", ["--strategy=mirrored", "--cpu_devices=2"])):
        out = str(tmp_path / name)
        shutil.copytree(run["uninterrupted"], out)
        args = [a for a in run["args"] if not a.startswith("--output_dir=")]
        check_ok(run_cli("search", *args, f"--output_dir={out}", "--selection=perturbation",
                         "--selection_finetune_epochs=0", *extra))
        with open(os.path.join(out, "genotype_perturbation.json")) as f:
            chosen[name] = json.load(f)
    assert chosen["mirrored"] == chosen["one"]


def test_all_edges_genotype_retrains_and_exports(cifar_dir, tmp_path):
    """A genotype whose second node sums 3 inputs: bin/retrain trains it one step and exports it;
    the SavedModel serves the checkpoint's predictions."""
    import tensorflow as tf

    from helpers import RETRAIN_TINY, write_json
    from keras_darts.network import build_network_from_config
    from test_robust import ALL_EDGES_2NODE

    data = write_cifar_slice(cifar_dir, str(tmp_path / "data"), 32, 16)
    genotype = write_json(str(tmp_path / "genotype.json"), ALL_EDGES_2NODE)
    out, exports = str(tmp_path / "retrain"), str(tmp_path / "exports")
    check_ok(run_cli("retrain", f"--genotype={genotype}", f"--dataset={data}", f"--output_dir={out}",
                     *RETRAIN_TINY, "--epochs=1", "--steps_per_epoch=1", "--eval_steps=1",
                     f"--export_dir={exports}"))
    with open(os.path.join(out, "config.json")) as f:
        record = json.load(f)
    model = build_network_from_config(record)
    assert model.genotype.normal_inputs == (2, 3)
    tf.train.Checkpoint(model=model).restore(
        tf.train.latest_checkpoint(os.path.join(out, "checkpoints"))).expect_partial()
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    x = (images / 255.0 - np.float32(record["mean"])) / np.float32(record["std"])
    expected = tf.nn.softmax(model(x.astype(np.float32), training=False)).numpy()
    served = tf.saved_model.load(os.path.join(exports, "darts", "1")).signatures["serving_default"](
        images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
