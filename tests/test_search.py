"""bin/search as a user runs it (subprocesses), the tfds path offline (in-process, mocked), bad
input and divergence.

Runs are tiny (3 cells of 4 channels, 96 CIFAR images); graph tracing still dominates each run
(~30-60 s), so one finished run is shared by the tests that inspect or rerun it.
"""

import concurrent.futures
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_darts.config import SearchConfig
from keras_darts.genotype import genotype_from_dict, load_genotype

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEARCH = [sys.executable, os.path.join(ROOT, "bin", "search")]
TINY = ["--layers=3", "--init_channels=4", "--nodes=2", "--batch_size=16", "--epochs=2",
        "--steps_per_epoch=2"]
HISTORY_KEYS = {"epoch", "global_step", "learning_rate", "train_loss", "train_accuracy", "val_loss",
                "val_accuracy", "alphas_normal", "alphas_reduce", "genotype", "primitives"}
PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


def _env():
    """The user's environment, minus the test session's TF log level (the CLI must keep stderr
    clean on its own), with the repo importable."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("CUDA_VISIBLE_DEVICES", "-1")
    return env


def _search(*args, timeout=900):
    start = time.time()
    proc = subprocess.run(SEARCH + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=_env())
    proc.elapsed = time.time() - start
    return proc


def _ok(proc):
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _snapshot(directory):
    """Every file under `directory` with its size, mtime and content hash."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            st = os.stat(path)
            out[os.path.relpath(path, directory)] = (st.st_size, st.st_mtime_ns, digest)
    return out


def _read_history(run_dir):
    with open(os.path.join(run_dir, "history.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _one_error_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got:\n{proc.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


# === Data ===


@pytest.fixture(scope="module")
def cifar_slice(cifar_dir, tmp_path_factory):
    """96 train / 32 test CIFAR-10 images as train.npz/test.npz in a tmp dir (sliced in memory)."""
    out = tmp_path_factory.mktemp("cifar_slice")
    for split, n in (("train", 96), ("test", 32)):
        with np.load(os.path.join(cifar_dir, f"{split}.npz")) as f:
            x, y = f["x"][:n], f["y"][:n]
        assert x.dtype == np.uint8 and x.shape == (n, 32, 32, 3)
        np.savez(out / f"{split}.npz", x=x, y=y)
    return str(out)


# === A finished run, inspected and rerun ===


@pytest.fixture(scope="module")
def finished_run(cifar_slice, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("search") / "run")
    args = [f"--dataset={cifar_slice}", f"--output_dir={out}", *TINY]
    proc = _search(*args)
    _ok(proc)
    return out, args, proc


def test_search_writes_config_history_genotype_checkpoints_and_tensorboard(finished_run):
    out, _, _ = finished_run
    with open(os.path.join(out, "config.json")) as f:
        record = json.load(f)
    assert record["config"]["layers"] == 3 and record["config"]["epochs"] == 2
    assert record["dataset_info"]["image_shape"] == [32, 32, 3]
    assert record["dataset_info"]["num_classes"] == 10

    genotype = load_genotype(os.path.join(out, "genotype.json"))
    assert genotype.steps == 2 and len(genotype.normal) == 4 and len(genotype.reduce) == 4

    history = _read_history(out)
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["global_step"] for h in history] == [2, 4]
    for h in history:
        assert HISTORY_KEYS <= h.keys(), HISTORY_KEYS - h.keys()
        assert h["primitives"] == PRIMITIVES
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert math.isfinite(h[key])
        assert 0 <= h["train_accuracy"] <= 1 and 0 <= h["val_accuracy"] <= 1
        timing = h["timing"]  # 2 steps per epoch, each timed (wait for the batch, loop body)
        assert timing["steps"] == 2
        assert 0 < timing["step_median_s"] <= timing["step_total_s"] < h["epoch_time_s"]
        assert timing["step_total_s"] + timing["input_wait_s"] < h["epoch_time_s"]
        for key in ("alphas_normal", "alphas_reduce"):
            alphas = np.array(h[key])
            assert alphas.shape == (5, 8)  # 2 + 3 edges for 2 nodes, 8 primitives
            np.testing.assert_allclose(alphas.sum(axis=1), 1.0, rtol=1e-5)
            assert np.all(alphas > 0)
    lr, lr_min = 0.025, 0.001  # the defaults; cosine stepped per epoch
    assert history[0]["learning_rate"] == pytest.approx(lr)
    assert history[1]["learning_rate"] == pytest.approx(lr_min + (lr - lr_min) / 2)
    assert genotype_from_dict(history[-1]["genotype"]) == genotype

    checkpoints = os.listdir(os.path.join(out, "checkpoints"))
    assert "checkpoint" in checkpoints and any(n.endswith(".index") for n in checkpoints)
    events = os.listdir(os.path.join(out, "tensorboard"))
    assert any(n.startswith("events.out.tfevents") for n in events)


def test_rerun_of_a_finished_search_changes_nothing(finished_run):
    out, args, _ = finished_run
    before = _snapshot(out)
    proc = _search(*args)
    _ok(proc)
    assert "search already finished" in proc.stdout
    after = _snapshot(out)
    assert after["history.jsonl"] == before["history.jsonl"]
    assert {k: v for k, v in after.items() if k.startswith("checkpoints")} == {
        k: v for k, v in before.items() if k.startswith("checkpoints")}


def test_changing_epochs_of_an_existing_run_is_refused(finished_run):
    out, args, _ = finished_run
    before = _snapshot(out)
    proc = _search(*[a for a in args if not a.startswith("--epochs")], "--epochs=3")
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc)
    assert f"--output_dir={out}" in line and "epochs 2 -> 3" in line
    assert _snapshot(out) == before


# === Interrupted, then resumed ===


@pytest.mark.slow
def test_sigkill_after_first_epoch_then_rerun_resumes(cifar_slice, tmp_path):
    """SIGKILL once epoch 1's checkpoint exists; the rerun resumes (not restarts) and history holds
    epochs 1 and 2 exactly once. Two full tiny runs: ~2-3 minutes."""
    out = str(tmp_path / "run")
    args = [f"--dataset={cifar_slice}", f"--output_dir={out}",
            *[a for a in TINY if not a.startswith("--nodes")], "--nodes=1"]
    state = os.path.join(out, "checkpoints", "checkpoint")
    with open(tmp_path / "first.out", "w") as log:
        proc = subprocess.Popen(SEARCH + args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=_env())
        try:
            deadline = time.time() + 600
            while not os.path.exists(state) and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, "the run ended before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert [h["epoch"] for h in _read_history(out)] in ([1], [1, 2])
    proc = _search(*args)
    _ok(proc)
    assert "resuming from" in proc.stdout
    assert "epoch 1/2" not in proc.stdout  # epoch 1 is not run again
    assert [h["epoch"] for h in _read_history(out)] == [1, 2]
    assert load_genotype(os.path.join(out, "genotype.json")).steps == 1


# === The tfds path, offline ===


def test_tfds_dataset_offline_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    from keras_darts.search_loop import run

    out = str(tmp_path / "run")
    config = SearchConfig(dataset="cifar10", data_dir=str(tmp_path / "tfds"), output_dir=out,
                          layers=3, init_channels=4, nodes=1, batch_size=8, epochs=1,
                          steps_per_epoch=1)
    with tfds.testing.mock_data(num_examples=32):
        genotype = run(config, quiet=True)
        names = list(tfds.builder("cifar10").info.features["label"].names)
    assert load_genotype(os.path.join(out, "genotype.json")) == genotype
    with open(os.path.join(out, "config.json")) as f:
        info = json.load(f)["dataset_info"]
    assert info["name"] == "cifar10" and info["class_names"] == names
    assert info["image_shape"] == [32, 32, 3] and info["num_classes"] == 10
    history = _read_history(out)
    assert len(history) == 1 and np.array(history[0]["alphas_normal"]).shape == (2, 8)
    assert os.path.exists(os.path.join(out, "checkpoints", "checkpoint"))


# === Bad input: exit 2, one line naming the flag, nothing written ===


def _bad_cases(data, tmp):
    empty_tfds = os.path.join(tmp, "empty_tfds")
    os.makedirs(empty_tfds)
    existing = os.path.join(tmp, "existing_run")
    os.makedirs(existing)
    with open(os.path.join(existing, "config.json"), "w") as f:
        # The run of the same command with --layers=5 (output_dir does not count).
        config = SearchConfig(dataset=data, output_dir=existing, layers=5, init_channels=4, nodes=2,
                              batch_size=16, epochs=2, steps_per_epoch=2)
        json.dump({"config": config.to_dict()}, f)
    ok = [f"--dataset={data}", *TINY]
    cases = {
        "unknown_dataset": (["--dataset=cifar11", *TINY[1:]], "--dataset=cifar11"),
        "missing_npz": ([f"--dataset={tmp}/nothing/train.npz", *TINY], "--dataset="),
        "missing_data_dir": ([f"--dataset={tmp}/no_such_dir/", *TINY], "--dataset="),
        "layers_2": ([*ok, "--layers=2"], "--layers=2"),
        "batch_size_0": ([*ok, "--batch_size=0"], "--batch_size=0"),
        "train_portion_0": ([*ok, "--train_portion=0"], "--train_portion=0"),
        "train_portion_1.5": ([*ok, "--train_portion=1.5"], "--train_portion=1.5"),
        "epochs_0": ([*ok, "--epochs=0"], "--epochs=0"),
        "incompatible_run": (ok, "--output_dir="),
        "tfds_offline": (["--dataset=cifar10", f"--data_dir={empty_tfds}", *TINY], "--data_dir="),
    }
    result = {}
    for name, (args, flag) in cases.items():
        out = existing if name == "incompatible_run" else os.path.join(tmp, "out_" + name)
        result[name] = ([*args, f"--output_dir={out}"], flag, out)
    return result


@pytest.fixture(scope="module")
def bad_runs(cifar_slice, tmp_path_factory):
    """All bad-input runs, three at a time (most fail before TensorFlow loads)."""
    tmp = str(tmp_path_factory.mktemp("bad"))
    cases = _bad_cases(cifar_slice, tmp)
    before = {name: _snapshot(out) if os.path.isdir(out) else None
              for name, (_, _, out) in cases.items()}
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        procs = {name: pool.submit(_search, *args, timeout=300)
                 for name, (args, _, _) in cases.items()}
        procs = {name: p.result() for name, p in procs.items()}
    return {name: (procs[name], flag, out, before[name])
            for name, (_, flag, out) in cases.items()}


BAD_CASES = ["unknown_dataset", "missing_npz", "missing_data_dir", "layers_2", "batch_size_0",
             "train_portion_0", "train_portion_1.5", "epochs_0", "incompatible_run",
             "tfds_offline"]


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(name, bad_runs):
    proc, flag, out, before = bad_runs[name]
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    line = _one_error_line(proc)
    assert flag in line, line
    if before is None:
        assert not os.path.exists(out), f"{out} was created"
    else:
        assert _snapshot(out) == before
    if name == "incompatible_run":
        assert "layers 5 -> 3" in line
    if name == "tfds_offline":
        # Offline and no prepared copy: a fast, clear refusal (the data dir is empty).
        assert "cifar10" in line and proc.elapsed < 60, proc.elapsed


# === Divergence ===


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_checkpoint(cifar_slice, tmp_path):
    import tensorflow as tf

    out = str(tmp_path / "run")
    proc = _search(f"--dataset={cifar_slice}", f"--output_dir={out}", "--layers=3",
                   "--init_channels=4", "--nodes=1", "--batch_size=16", "--epochs=1",
                   "--steps_per_epoch=3", "--checkpoint_every=1", "--learning_rate=1e30")
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = _one_error_line(proc)
    # Step 1's loss is finite (computed before its update); step 2's is not.
    assert "nan at epoch 1 step 2" in line and "--learning_rate" in line, line
    # Step 1 was checkpointed (--checkpoint_every=1) and is kept, readable and finite.
    latest = tf.train.latest_checkpoint(os.path.join(out, "checkpoints"))
    assert latest is not None and latest.endswith("ckpt-1") and latest in line
    names = [name for name, _ in tf.train.list_variables(latest)]
    assert any("alphas_normal" in n for n in names) and len(names) > 100
    reader = tf.train.load_checkpoint(latest)
    for name in names:
        value = np.asarray(reader.get_tensor(name))
        if np.issubdtype(value.dtype, np.floating):
            assert np.all(np.isfinite(value)), name
    step = [n for n in names if n.startswith("step_in_epoch")]
    assert step and int(reader.get_tensor(step[0])) == 1
    assert not os.path.exists(os.path.join(out, "history.jsonl"))
