""""Nothing lost": determinism, crash/resume equivalence, corrupt checkpoints, atomic outputs, bad
input through every CLI, safe loading, divergence.

All runs are subprocesses of the real CLIs with tiny settings (3 cells of 4 channels, one node per
cell, a 128-image CIFAR slice). Independent runs are started together (two cores).
"""

import ast
import os
import random
import re
import shutil
import signal
import subprocess
import tokenize
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

import numpy as np
import pytest
import tensorflow as tf

from helpers import (GENOTYPE_1NODE, RETRAIN_TINY, ROOT, SEARCH_TINY, Background, check_ok,
                     checkpoint_numbers, cli_argv, cli_env, crash_argv, crash_env, kill_when,
                     one_error_line, read_history, read_json, run_cli, run_parallel, snapshot,
                     temp_leftovers, write_cifar_slice, write_json)

# 128 train images: search halves of 64 -> 4 steps of 16 per epoch; checkpoints 1..8.
STEPS = 4
COMMON = ["--epochs=2", f"--steps_per_epoch={STEPS}", "--checkpoint_every=1", "--deterministic",
          "--seed=3"]
SEARCH_ARGS = [*SEARCH_TINY, *COMMON]
RETRAIN_ARGS = [*RETRAIN_TINY, *COMMON]  # drop path is on in epoch 2 (0.1)
KILL_SEED = int(os.environ.get("KD_KILL_SEED", "20240601"))


@pytest.fixture(scope="module")
def data(cifar_dir, tmp_path_factory):
    return write_cifar_slice(cifar_dir, str(tmp_path_factory.mktemp("data")), 128, 48)


@pytest.fixture(scope="module")
def genotype_path(tmp_path_factory):
    return write_json(str(tmp_path_factory.mktemp("genotype") / "genotype.json"), GENOTYPE_1NODE)


def search_args(data, out):
    return [f"--dataset={data}", f"--output_dir={out}", *SEARCH_ARGS]


def retrain_args(data, genotype_path, out):
    return [f"--genotype={genotype_path}", f"--dataset={data}", f"--output_dir={out}", *RETRAIN_ARGS]


def checkpoint_tensors(run_dir, number=None):
    """{name: array} of a run's checkpoint (default: the latest), without wall-clock values."""
    number = number or max(checkpoint_numbers(run_dir))
    reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints", f"ckpt-{number}"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "elapsed_s" not in name and "save_counter" not in name
            and name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def assert_same_tensors(a, b):
    assert sorted(a) == sorted(b)
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"


RESULT_KEYS = ("test_accuracy", "test_loss", "test_top5_accuracy", "test_examples")


def same_metrics(run_a, run_b):
    a = read_json(os.path.join(run_a, "metrics.json"))
    b = read_json(os.path.join(run_b, "metrics.json"))
    return {k: a[k] for k in RESULT_KEYS} == {k: b[k] for k in RESULT_KEYS}


@pytest.fixture(scope="module")
def search_pair(data, tmp_path_factory):
    """Two identical uninterrupted deterministic searches, run side by side."""
    root = tmp_path_factory.mktemp("search_pair")
    dirs = [str(root / "a"), str(root / "b")]
    for result in run_parallel([cli_argv("search", *search_args(data, d)) for d in dirs],
                               str(root), ["a", "b"]):
        check_ok(result)
    return dirs


@pytest.fixture(scope="module")
def retrain_pair(data, genotype_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("retrain_pair")
    dirs = [str(root / "a"), str(root / "b")]
    for result in run_parallel([cli_argv("retrain", *retrain_args(data, genotype_path, d))
                                for d in dirs], str(root), ["a", "b"]):
        check_ok(result)
    return dirs


# === a. Determinism ===

def test_search_is_bit_identical_with_deterministic(search_pair):
    a, b = search_pair
    history_a = read_history(os.path.join(a, "history.jsonl"))
    history_b = read_history(os.path.join(b, "history.jsonl"))
    assert [r["epoch"] for r in history_a] == [1, 2]
    for key in ("alphas_normal", "alphas_reduce"):
        assert [r[key] for r in history_a] == [r[key] for r in history_b]  # exact floats
    assert history_a == history_b
    assert read_json(os.path.join(a, "genotype.json")) == read_json(os.path.join(b, "genotype.json"))
    assert_same_tensors(checkpoint_tensors(a), checkpoint_tensors(b))


def test_retrain_is_bit_identical_with_deterministic(retrain_pair):
    a, b = retrain_pair
    assert same_metrics(a, b)
    assert_same_tensors(checkpoint_tensors(a), checkpoint_tensors(b))


def test_no_temp_files_left_after_normal_runs(search_pair, retrain_pair):
    for run_dir in (*search_pair, *retrain_pair):
        assert temp_leftovers(run_dir) == [], run_dir
        assert checkpoint_numbers(run_dir) == [2 * STEPS - 2, 2 * STEPS - 1, 2 * STEPS]


# === b. Crash and resume ===

def _check_search_equals(run_dir, reference):
    assert read_history(os.path.join(run_dir, "history.jsonl")) == read_history(
        os.path.join(reference, "history.jsonl"))
    assert read_json(os.path.join(run_dir, "genotype.json")) == read_json(
        os.path.join(reference, "genotype.json"))
    assert_same_tensors(checkpoint_tensors(run_dir), checkpoint_tensors(reference))


def _check_retrain_equals(run_dir, reference):
    assert same_metrics(run_dir, reference)
    assert_same_tensors(checkpoint_tensors(run_dir), checkpoint_tensors(reference))


@pytest.mark.slow  # --run_slow (suite time)
def test_search_sigkill_at_a_random_step_then_resume_equals_uninterrupted(search_pair, data,
                                                                          tmp_path):
    k = random.Random(KILL_SEED).randint(1, 2 * STEPS - 1)  # a checkpoint of a mid-run step
    out = str(tmp_path / "run")
    index = os.path.join(out, "checkpoints", f"ckpt-{k}.index")
    killed = kill_when(Background(cli_argv("search", *search_args(data, out)), str(tmp_path / "killed")),
                       lambda: os.path.exists(index))
    assert killed.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(out, "figures")), "the run had already finished"
    resumed = check_ok(run_cli("search", *search_args(data, out)))
    assert "resuming from" in resumed.stdout, (k, resumed.stdout)
    _check_search_equals(out, search_pair[0])
    assert temp_leftovers(out) == []


def test_retrain_sigkill_at_a_random_step_then_resume_equals_uninterrupted(retrain_pair, data,
                                                                           genotype_path, tmp_path):
    # In epoch 2, where drop path is on: the resumed run must draw the same masks.
    k = random.Random(KILL_SEED).randint(STEPS + 1, 2 * STEPS - 1)
    out = str(tmp_path / "run")
    index = os.path.join(out, "checkpoints", f"ckpt-{k}.index")
    argv = cli_argv("retrain", *retrain_args(data, genotype_path, out))
    killed = kill_when(Background(argv, str(tmp_path / "killed")), lambda: os.path.exists(index))
    assert killed.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    resumed = check_ok(run_cli("retrain", *retrain_args(data, genotype_path, out)))
    assert re.search(r"resuming from \S+ckpt-\d+ \(epoch 2,", resumed.stdout), (k, resumed.stdout)
    assert "epoch 1/2" not in resumed.stdout
    _check_retrain_equals(out, retrain_pair[0])
    assert temp_leftovers(out) == []


def _crash_inside_checkpoint_write(tool, args, out, point, n):
    """Runs `tool` with a SIGKILL injected into its n-th checkpoint save (see CRASH_LAUNCHER)."""
    result = subprocess.run(crash_argv(tool, *args), env=crash_env(point, n), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-3000:])
    ckpt = os.path.join(out, "checkpoints")
    if point == "merge":  # the variables were being written: a `ckpt-n_temp` folder, no index
        assert os.path.isdir(os.path.join(ckpt, f"ckpt-{n}_temp")), os.listdir(ckpt)
        assert not os.path.exists(os.path.join(ckpt, f"ckpt-{n}.index"))
    else:  # complete files the `checkpoint` state file does not list yet
        assert os.path.exists(os.path.join(ckpt, f"ckpt-{n}.index"))
        assert f'"ckpt-{n}"' not in open(os.path.join(ckpt, "checkpoint")).read()
    return result


CRASH_POINTS = [
    pytest.param("retrain", "merge", id="retrain-during-write"),
    pytest.param("retrain", "state", id="retrain-before-state-update", marks=pytest.mark.slow),
    pytest.param("search", "merge", id="search-during-write", marks=pytest.mark.slow),
    pytest.param("search", "state", id="search-before-state-update", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("tool,point", CRASH_POINTS)
def test_kill_inside_a_checkpoint_write_then_resume_equals_uninterrupted(
        tool, point, request, data, genotype_path, tmp_path):
    n = random.Random(f"{KILL_SEED}-{tool}-{point}").randint(2, 2 * STEPS - 1)
    out = str(tmp_path / "run")
    if tool == "search":
        reference, args = request.getfixturevalue("search_pair")[0], search_args(data, out)
    else:
        reference = request.getfixturevalue("retrain_pair")[0]
        args = retrain_args(data, genotype_path, out)
    _crash_inside_checkpoint_write(tool, args, out, point, n)
    resumed = check_ok(run_cli(tool, *args))
    assert "resuming from" in resumed.stdout
    if tool == "search":
        _check_search_equals(out, reference)
    else:
        _check_retrain_equals(out, reference)
    assert temp_leftovers(out) == []


# === c. Corrupt checkpoints ===

def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def _scramble(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 4)
        f.write(np.random.RandomState(0).bytes(size // 2))


def _data_file(run_dir, number):
    return os.path.join(run_dir, "checkpoints", f"ckpt-{number}.data-00000-of-00001")


def test_retrain_truncated_latest_checkpoint_falls_back_to_the_previous_one(retrain_pair, data,
                                                                           genotype_path, tmp_path):
    """A finished run whose last checkpoint is torn (metrics.json not written yet)."""
    out = str(tmp_path / "run")
    shutil.copytree(retrain_pair[0], out)
    os.remove(os.path.join(out, "metrics.json"))
    latest = max(checkpoint_numbers(out))
    _truncate(_data_file(out, latest))
    result = check_ok(run_cli("retrain", *retrain_args(data, genotype_path, out)))
    assert re.search(rf"warning: checkpoint \S+ckpt-{latest} is unreadable", result.stderr), result.stderr
    assert f"warning: resumed from older checkpoint {os.path.join(out, 'checkpoints', f'ckpt-{latest - 1}')}" \
        in result.stderr
    assert "Traceback" not in result.stderr
    # Resumed at the last step of epoch 2, not restarted.
    assert f"(epoch 2, step {STEPS})" in result.stdout and "epoch 1/2" not in result.stdout
    _check_retrain_equals(out, retrain_pair[0])


@pytest.mark.slow
def test_search_truncated_latest_checkpoint_falls_back_to_the_previous_one(search_pair, data,
                                                                          tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(search_pair[0], out)
    latest = max(checkpoint_numbers(out))
    _truncate(_data_file(out, latest))
    result = check_ok(run_cli("search", *search_args(data, out)))
    assert "warning: resumed from older checkpoint" in result.stderr
    assert f"(epoch 2, step {STEPS})" in result.stdout and "epoch 1/2" not in result.stdout
    _check_search_equals(out, search_pair[0])


def test_every_checkpoint_corrupt_is_a_clear_error_not_a_fresh_start(retrain_pair, data,
                                                                     genotype_path, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(retrain_pair[0], out)
    for number in checkpoint_numbers(out):
        _scramble(_data_file(out, number))
    before = snapshot(out)
    result = run_cli("retrain", *retrain_args(data, genotype_path, out))
    assert result.returncode == 2
    line = one_error_line(result)
    assert f"--output_dir={out}" in line and "no readable checkpoint" in line
    assert snapshot(out) == before


def test_corrupt_checkpoint_state_file_does_not_restart_from_scratch_and_stale_temps_go(retrain_pair, data,
                                                                     genotype_path, tmp_path):
    """TF reads a garbage `checkpoint` file as "no checkpoints" (with only a log line); the run must
    still find its checkpoint files instead of training from epoch 1 over them."""
    out = str(tmp_path / "run")
    shutil.copytree(retrain_pair[0], out)
    with open(os.path.join(out, "checkpoints", "checkpoint"), "w") as f:
        f.write("model_checkpoint_path: \x00\x01 garbage {{{\n")
    # What a SIGKILL inside an atomic write leaves behind (io_utils' and TF's temp files).
    for stale in (".tmp-metrics.json-x1y2", os.path.join("checkpoints", "checkpoint.tmp0123abcd")):
        with open(os.path.join(out, stale), "w") as f:
            f.write("{half")
    metrics_before = read_json(os.path.join(out, "metrics.json"))
    result = check_ok(run_cli("retrain", *retrain_args(data, genotype_path, out)))
    assert "already finished" in result.stdout and "epoch 1/2" not in result.stdout
    assert read_json(os.path.join(out, "metrics.json")) == metrics_before
    _check_retrain_equals(out, retrain_pair[0])
    assert temp_leftovers(out) == []  # the stale temp files are cleaned up on resume


# === d. Bad input through the CLIs ===

G = GENOTYPE_1NODE


def _genotype_file(name, **changes):
    def setup(root, ctx):
        write_json(os.path.join(root, name), {**G, **changes})
    return setup


def _text_file(name, text):
    def setup(root, ctx):
        with open(os.path.join(root, name), "w") as f:
            f.write(text)
    return setup


def _npz(name, **arrays):
    def setup(root, ctx):
        np.savez(os.path.join(root, name), **{k: v() for k, v in arrays.items()})
    return setup


def _pixels(n, size=32):
    return np.random.RandomState(n).randint(0, 256, (n, size, size, 3)).astype(np.uint8)


def _image_folder(name, bad_png=False, mixed=False, classes=("cat", "dog")):
    def setup(root, ctx):
        from PIL import Image

        for c, cls in enumerate(classes):
            folder = os.path.join(root, name, cls)
            os.makedirs(folder)
            for i, image in enumerate(_pixels(3)):
                if mixed and c == 1:
                    image = image[:16, :16]
                Image.fromarray(image).save(os.path.join(folder, f"{i}.png"))
        if bad_png:
            with open(os.path.join(root, name, classes[-1], "broken.png"), "wb") as f:
                f.write(np.random.RandomState(1).bytes(300))
    return setup


def _missing_keys_genotype(root, ctx):
    write_json(os.path.join(root, "g.json"), {k: v for k, v in G.items() if k != "reduce_concat"})


def _file_at_out(root, ctx):
    with open(os.path.join(root, "out"), "w") as f:
        f.write("not a directory\n")


def _read_only_out(root, ctx):
    os.makedirs(os.path.join(root, "out"))
    os.chmod(os.path.join(root, "out"), 0o500)


def _search_config_of_another_run(root, ctx):
    from keras_darts.config import SearchConfig

    os.makedirs(os.path.join(root, "out"))
    other = SearchConfig(dataset=ctx["data"], output_dir=os.path.join(root, "out"), layers=5,
                         init_channels=8, nodes=1)
    write_json(os.path.join(root, "out", "config.json"), {"config": other.to_dict()})


def _checkpoints_without_config(root, ctx):
    shutil.copytree(os.path.join(ctx["xrun4"], "checkpoints"), os.path.join(root, "out", "checkpoints"))


def _train_only_dataset(root, ctx):
    os.makedirs(os.path.join(root, "trainonly"))
    shutil.copy(os.path.join(ctx["data"], "train.npz"), os.path.join(root, "trainonly"))


def _retrain_config_of_another_run(root, ctx):
    os.makedirs(os.path.join(root, "out"))
    record = read_json(os.path.join(ctx["xrun4"], "config.json"))
    record.update(layers=8, init_channels=16, genotype_spec="DARTS_V2")
    write_json(os.path.join(root, "out", "config.json"), record)


def _retrain_with_foreign_checkpoints(root, ctx):
    """config.json of exactly this command, but checkpoints of another model (16 channels)."""
    from keras_darts.config import RetrainConfig

    out = os.path.join(root, "out")
    config = RetrainConfig(genotype=ctx["g1"], dataset=ctx["data"], output_dir=out, layers=3,
                           init_channels=4, batch_size=16, auxiliary=False, epochs=1,
                           steps_per_epoch=1)
    shutil.copytree(ctx["xrun16"], out)
    write_json(os.path.join(out, "config.json"), {**config.to_dict(), "genotype": G})


def _copy_run(which, **changes):
    def setup(root, ctx):
        shutil.copytree(ctx[which], os.path.join(root, "run"))
        if changes:
            path = os.path.join(root, "run", "config.json")
            write_json(path, {**read_json(path), **changes})
    return setup


def _run_without_checkpoints(root, ctx):
    os.makedirs(os.path.join(root, "run"))
    shutil.copy(os.path.join(ctx["xrun4"], "config.json"), os.path.join(root, "run"))


def _exported_once(root, ctx):
    from keras_darts.export import export_from_run

    shutil.copytree(ctx["xrun4"], os.path.join(root, "run"))
    export_from_run(os.path.join(root, "run"), os.path.join(root, "exports"), version=1)


def _history_garbage(root, ctx):
    os.makedirs(os.path.join(root, "run"))
    with open(os.path.join(root, "run", "history.jsonl"), "w") as f:
        f.write('{"epoch": 1, "alphas_normal": [[0.1\n')


class Case(NamedTuple):
    tool: str
    args: tuple
    expect: tuple  # substrings of the error line
    setup: Callable = None
    unprivileged: bool = False  # run without root's permission override (CAP_DAC_OVERRIDE)
    slow: bool = False  # loads TensorFlow and is not among the kinds the issue lists


S = ("--dataset={data}", "--output_dir={root}/out", *SEARCH_TINY, "--epochs=1", "--steps_per_epoch=1")
R = ("--genotype={g1}", "--dataset={data}", "--output_dir={root}/out", *RETRAIN_TINY, "--epochs=1",
     "--steps_per_epoch=1")
PWNED = "{root}/pwned"
PY_OP = f"__import__('os').system('touch {PWNED}')"


def _search(*args):
    return ("search", S + args)


def _search_data(path):
    return ("search", tuple(a for a in S if not a.startswith("--dataset")) + (f"--dataset={path}",))


def _retrain(*args):
    return ("retrain", R + args)


def _retrain_genotype(path):
    return ("retrain", tuple(a for a in R if not a.startswith("--genotype")) + (f"--genotype={path}",))


CASES = {
    # --- flag values (validated before TensorFlow loads) ---
    "search-layers-abc": Case(*_search("--layers=abc"), ("--layers=abc",)),
    "search-batch-size-negative": Case(*_search("--batch_size=-1"), ("--batch_size=-1",)),
    "search-train-portion-2": Case(*_search("--train_portion=2"), ("--train_portion=2",)),
    "search-epochs-0": Case(*_search("--epochs=0"), ("--epochs=0",)),
    "search-strategy-foo": Case(*_search("--strategy=foo"), ("--strategy=foo",)),
    "search-mixed-precision-fp8": Case(*_search("--mixed_precision=fp8"), ("--mixed_precision=fp8",)),
    "search-several-bad-flags": Case(*_search("--layers=2", "--init_channels=3", "--batch_size=0"),
                                     ("--layers=2",)),
    "search-learning-rate-nan": Case(*_search("--learning_rate=nan"), ("--learning_rate",)),
    "search-misspelt-flag": Case(*_search("--learning_rat=0.1"), ("learning_rat",)),
    "search-positional-argument": Case(*_search("stray"), ("unexpected argument", "stray")),
    "search-no-output-dir": Case("search", ("--dataset={data}",), ("--output_dir",)),
    "retrain-cutout-length-0": Case(*_retrain("--cutout_length=0"), ("--cutout_length=0",)),
    "retrain-drop-path-1.5": Case(*_retrain("--drop_path_prob=1.5"), ("--drop_path_prob=1.5",)),
    "retrain-version-0": Case(*_retrain("--export_dir={root}/exports", "--version=0"), ("--version=0",)),
    "retrain-model-name-path": Case(*_retrain("--export_dir={root}/exports", "--model_name=../x"),
                                    ("--model_name=../x",)),
    # --- data (fail right after data loading starts; nothing written yet) ---
    "search-missing-dataset": Case(*_search_data("{root}/nope.npz"), ("--dataset={root}/nope.npz",
                                                                      "no such file")),
    "search-empty-npz": Case(*_search_data("{root}/empty.npz"), ("empty.npz", "x, y"),
                             _npz("empty.npz")),
    "search-corrupt-npz": Case(*_search_data("{root}/corrupt.npz"), ("corrupt.npz", "not an .npz"),
                               _text_file("corrupt.npz", "PK\x03\x04 not really a zip " * 20)),
    "search-mismatched-x-y": Case(*_search_data("{root}/xy.npz"), ("xy.npz", "20 images but 19 labels"),
                                  _npz("xy.npz", x=lambda: _pixels(20),
                                       y=lambda: np.arange(19) % 2)),
    "search-single-class": Case(*_search_data("{root}/one.npz"), ("one.npz", "single class"),
                                _npz("one.npz", x=lambda: _pixels(20),
                                     y=lambda: np.zeros(20, np.int64))),
    "search-zero-classes": Case(*_search_data("{root}/empty_folder"),
                                ("empty_folder", "no class sub-folders"),
                                lambda root, ctx: os.makedirs(os.path.join(root, "empty_folder"))),
    "search-unreadable-png": Case(*_search_data("{root}/images"), ("broken.png",),
                                  _image_folder("images", bad_png=True)),
    "search-mixed-image-sizes": Case(*_search_data("{root}/images"), ("mixed image sizes",),
                                     _image_folder("images", mixed=True)),
    "retrain-no-test-split": Case(*_retrain("--dataset={root}/trainonly"), ("trainonly", "test"),
                                  _train_only_dataset, slow=True),
    "retrain-batch-larger-than-data": Case(*_retrain("--batch_size=1000"), ("--batch_size=1000",),
                                           slow=True),
    # --- output dir ---
    "search-output-dir-is-a-file": Case(*_search(), ("--output_dir={root}/out", "not a directory"),
                                        _file_at_out),
    "search-output-dir-read-only": Case(*_search(), ("--output_dir={root}/out", "not writable"),
                                        _read_only_out, unprivileged=True),
    "search-output-dir-of-another-run": Case(*_search(), ("--output_dir={root}/out", "incompatible"),
                                             _search_config_of_another_run),
    "search-checkpoints-without-config": Case(*_search(), ("--output_dir={root}/out", "config.json"),
                                              _checkpoints_without_config, slow=True),
    "retrain-output-dir-of-another-run": Case(*_retrain(), ("--output_dir={root}/out", "incompatible"),
                                              _retrain_config_of_another_run, slow=True),
    "retrain-foreign-checkpoints": Case(*_retrain(), ("--output_dir={root}/out", "no readable checkpoint"),
                                        _retrain_with_foreign_checkpoints, slow=True),
    # --- genotype files (checked before TensorFlow loads) ---
    "retrain-genotype-missing": Case(*_retrain_genotype("{root}/nope.json"),
                                     ("--genotype={root}/nope.json",)),
    "retrain-genotype-malformed-json": Case(*_retrain_genotype("{root}/g.json"), ("g.json", "not valid JSON"),
                                            _text_file("g.json", '{"normal": [["sep_conv_3x3", 0],')),
    "retrain-genotype-unknown-op": Case(*_retrain_genotype("{root}/g.json"), ("g.json", "unknown op 'conv_7x7'"),
                                        _genotype_file("g.json", normal=[["conv_7x7", 0], ["skip_connect", 1]])),
    "retrain-genotype-python-expression": Case(
        *_retrain_genotype("{root}/g.json"), ("g.json", "unknown op"),
        _genotype_file("g.json", normal=[[PY_OP, 0], ["skip_connect", 1]])),
    "retrain-genotype-index-out-of-range": Case(*_retrain_genotype("{root}/g.json"), ("g.json", "out of range"),
                                                _genotype_file("g.json", reduce=[["max_pool_3x3", 0],
                                                                                 ["sep_conv_3x3", 2]])),
    "retrain-genotype-odd-edge-count": Case(*_retrain_genotype("{root}/g.json"), ("g.json", "two (op, input)"),
                                            _genotype_file("g.json", normal=[["sep_conv_3x3", 0]])),
    "retrain-genotype-missing-keys": Case(*_retrain_genotype("{root}/g.json"), ("g.json", "reduce_concat"),
                                          _missing_keys_genotype),
    "retrain-genotype-json-list": Case(*_retrain_genotype("{root}/g.json"), ("g.json", "JSON object"),
                                       _text_file("g.json", '[["sep_conv_3x3", 0]]')),
    # --- bin/export ---
    "export-no-checkpoint-dir-flag": Case("export", ("--export_dir={root}/exports",), ("--checkpoint_dir",)),
    "export-positional-argument": Case("export", ("--checkpoint_dir={root}/run",
                                                  "--export_dir={root}/exports", "stray"),
                                       ("unexpected argument", "stray")),
    "export-version-0": Case("export", ("--checkpoint_dir={root}/run", "--export_dir={root}/exports",
                                        "--version=0"), ("--version=0",)),
    "export-no-such-run": Case("export", ("--checkpoint_dir={root}/nope", "--export_dir={root}/exports"),
                               ("--checkpoint_dir={root}/nope",), slow=True),
    "export-run-without-checkpoints": Case(
        "export", ("--checkpoint_dir={root}/run", "--export_dir={root}/exports"),
        ("--checkpoint_dir={root}/run", "no checkpoint"), _run_without_checkpoints, slow=True),
    "export-checkpoint-of-another-model": Case(
        "export", ("--checkpoint_dir={root}/run", "--export_dir={root}/exports"),
        ("does not match",), _copy_run("xrun4", init_channels=6)),
    "export-version-clash": Case(
        "export", ("--checkpoint_dir={root}/run", "--export_dir={root}/exports", "--version=1"),
        ("--version=1", "already exists"), _exported_once),
    # --- bin/visualize ---
    "visualize-unknown-genotype": Case("visualize", ("NOPE", "--output_dir={root}/figs"), ("NOPE",)),
    "visualize-python-expression": Case("visualize", ("{root}/g.json", "--output_dir={root}/figs"),
                                        ("g.json", "unknown op"),
                                        _genotype_file("g.json", reduce=[[PY_OP, 0], ["skip_connect", 1]])),
    "visualize-format-jpg": Case("visualize", ("DARTS_V2", "--format=jpg", "--output_dir={root}/figs"),
                                 ("--format=jpg",)),
    "visualize-two-genotypes": Case("visualize", ("DARTS_V1", "DARTS_V2"), ("at most one GENOTYPE",)),
    "visualize-nothing-to-draw": Case("visualize", (), ("GENOTYPE",)),
    "visualize-no-such-run": Case("visualize", ("--run={root}/nope",), ("{root}/nope",)),
    "visualize-garbage-history": Case("visualize", ("--run={root}/run",), ("history.jsonl", "line 1"),
                                      _history_garbage),
    "visualize-output-dir-is-a-file": Case("visualize", ("DARTS_V2", "--output_dir={root}/out"),
                                           ("--output_dir",), _file_at_out),
}

XFAIL = {}  # case id -> reason, for known bugs (strict: fixing one fails until it is removed)


def _can_drop_dac():
    return shutil.which("setpriv") is not None


UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                "--inh-caps=-dac_override,-dac_read_search"]


@pytest.fixture(scope="module")
def bad_input_ctx(data, genotype_path, tmp_path_factory):
    """Small valid inputs the cases build on: data, a genotype, and two retrain-like run dirs with a
    checkpoint of the 1-node network (4 and 16 initial channels), written in-process."""
    from keras_darts.network import build_network_from_config

    base = tmp_path_factory.mktemp("bad_input_ctx")
    ctx = {"data": data, "g1": genotype_path}
    with np.load(os.path.join(data, "train.npz")) as f:
        x = f["x"].astype(np.float64) / 255.0
    for channels in (4, 16):
        run = str(base / f"xrun{channels}")
        record = {"genotype": G, "num_classes": 10, "layers": 3, "init_channels": channels,
                  "image_shape": [32, 32, 3], "auxiliary": False, "variant": "cifar",
                  "mean": x.mean(axis=(0, 1, 2)).tolist(), "std": x.std(axis=(0, 1, 2)).tolist(),
                  "class_names": None}
        model = build_network_from_config(record)
        os.makedirs(run)
        write_json(os.path.join(run, "config.json"), record)
        tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                                   os.path.join(run, "checkpoints"), max_to_keep=1).save()
        ctx[f"xrun{channels}"] = run
    return ctx


def _prepare_case(case_id, base, ctx):
    case = CASES[case_id]
    root = os.path.join(base, case_id)
    os.makedirs(root)
    if case.setup:
        case.setup(root, ctx)
    argv = cli_argv(case.tool, *[a.format(**ctx, root=root) for a in case.args])
    return root, (UNPRIVILEGED + argv) if case.unprivileged else argv


def _run_case(root, argv):
    before = snapshot(root)
    result = subprocess.run(argv, capture_output=True, text=True, cwd=root, env=cli_env(),
                            timeout=600)
    return result, before, snapshot(root), root


@pytest.fixture(scope="module")
def bad_input_results(request, bad_input_ctx, tmp_path_factory):
    """Runs every selected case, two at a time; {case id: (result, before, after, root)}."""
    selected = {item.callspec.params["case_id"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_bad_input"
                and item.module is request.module and not item.get_closest_marker("skip")}
    selected = [c for c in CASES if c in selected
                and not (CASES[c].unprivileged and not _can_drop_dac())]
    base = str(tmp_path_factory.mktemp("bad_input"))
    # Setups (some use TensorFlow in this process) run serially; the CLIs two at a time.
    prepared = {cid: _prepare_case(cid, base, bad_input_ctx) for cid in selected}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {cid: pool.submit(_run_case, *prepared[cid]) for cid in selected}
        results = {cid: f.result() for cid, f in futures.items()}
    for cid in selected:
        if CASES[cid].unprivileged:  # let pytest clean up
            os.chmod(os.path.join(prepared[cid][0], "out"), 0o755)
    return results


def _case_params():
    for cid, case in CASES.items():
        marks = [pytest.mark.xfail(strict=True, reason=XFAIL[cid])] if cid in XFAIL else []
        if case.slow:
            marks.append(pytest.mark.slow)
        yield pytest.param(cid, id=cid, marks=marks)


@pytest.mark.parametrize("case_id", list(_case_params()))
def test_bad_input(case_id, bad_input_results):
    case = CASES[case_id]
    if case_id not in bad_input_results:
        pytest.skip("setpriv (util-linux) is needed to drop root's permission override")
    result, before, after, root = bad_input_results[case_id]
    line = one_error_line(result)  # no traceback, one "error: " line
    assert result.returncode == 2, (result.returncode, line)
    for expected in case.expect:
        assert expected.format(root=root) in line, (expected, line)
    assert after == before, "the command changed its directory"
    assert not os.path.exists(os.path.join(root, "pwned")) and not os.path.exists("/tmp/pwned")


def test_there_are_at_least_20_kinds_of_bad_input():
    assert len(CASES) >= 20
    assert {c.tool for c in CASES.values()} == {"search", "retrain", "export", "visualize"}


def test_read_only_output_dir_as_root(tmp_path):
    """What root gets: permission bits do not bind root (CAP_DAC_OVERRIDE), so a 0o500 directory is
    writable for it and a run proceeds (the unprivileged case is `search-output-dir-read-only`)."""
    from keras_darts import run_utils

    if os.geteuid() != 0:
        pytest.skip("only meaningful as root")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    os.chmod(read_only, 0o500)
    try:
        assert os.access(read_only, os.W_OK)
        assert run_utils.check_output_dir(str(read_only), {}) is False  # accepted, nothing written
        assert os.listdir(read_only) == []
    finally:
        os.chmod(read_only, 0o755)


# === e. Safe loading ===

def _sources():
    paths = [os.path.join(ROOT, "keras_darts", n) for n in sorted(os.listdir(
        os.path.join(ROOT, "keras_darts"))) if n.endswith(".py")]
    paths += [os.path.join(ROOT, "bin", n) for n in sorted(os.listdir(os.path.join(ROOT, "bin")))]
    return paths


def test_no_eval_exec_pickle_or_unsafe_model_loading():
    problems = []
    for path in _sources():
        with open(path) as f:
            source = f.read()
        rel = os.path.relpath(path, ROOT)
        tree = ast.parse(source, path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                for name in names:
                    if name.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "marshal",
                                              "shelve", "joblib"):
                        problems.append(f"{rel}:{node.lineno}: imports {name}")
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in ("eval", "exec", "__import__", "compile") and isinstance(func, ast.Name):
                problems.append(f"{rel}:{node.lineno}: calls {name}()")
            for kw in node.keywords:
                if kw.arg == "safe_mode" and not (isinstance(kw.value, ast.Constant) and kw.value.value is True):
                    problems.append(f"{rel}:{node.lineno}: {name}(safe_mode=...) not True")
                if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant)
                                                     and kw.value.value is False):
                    problems.append(f"{rel}:{node.lineno}: {name}(allow_pickle=...) not False")
            if name in ("load", "unsafe_load", "full_load") and "yaml" in ast.unparse(func):
                problems.append(f"{rel}:{node.lineno}: yaml loading")
        # grep-style, on the tokens (comments and docstrings aside)
        with open(path, "rb") as f:
            tokens = list(tokenize.tokenize(f.readline))
        for i, tok in enumerate(tokens):
            if tok.type == tokenize.NAME and tok.string in ("eval", "exec") and i + 1 < len(tokens) \
                    and tokens[i + 1].string == "(" and tokens[i - 1].string != "def":
                problems.append(f"{rel}:{tok.start[0]}: {tok.string}(")
            if tok.type == tokenize.NAME and "pickle" in tok.string.lower() and tok.string != "allow_pickle":
                problems.append(f"{rel}:{tok.start[0]}: {tok.string}")
    assert not problems, "\n".join(problems)


def test_load_model_calls_never_disable_safe_mode():
    """Every keras load_model call in the package leaves safe_mode on (default or True)."""
    for path in _sources():
        with open(path) as f:
            source = f.read()
        for match in re.finditer(r"load_model\s*\(", source):
            call = source[match.start():source.find(")", match.end()) + 1]
            assert not re.search(r"safe_mode\s*=\s*(False|0|None)", call), (path, call)


# === f. Divergence ===

def test_retrain_divergence_stops_naming_epoch_and_step_and_keeps_checkpoints(data, genotype_path,
                                                                              tmp_path):
    out = str(tmp_path / "run")
    args = [f"--genotype={genotype_path}", f"--dataset={data}", f"--output_dir={out}",
            *RETRAIN_TINY, "--epochs=2", "--steps_per_epoch=3", "--checkpoint_every=1",
            "--learning_rate=1e30", "--grad_clip=0"]
    result = run_cli("retrain", *args)
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_error_line(result)
    match = re.search(r"(nan|inf) at epoch (\d+) step (\d+)", line)
    assert match, line
    epoch, step = int(match.group(2)), int(match.group(3))
    assert "--learning_rate" in line
    assert not os.path.exists(os.path.join(out, "metrics.json"))
    kept = checkpoint_numbers(out)
    assert kept, "the checkpoint written before the divergence is gone"
    last_good = (epoch - 1) * 3 + step - 1
    assert max(kept) == last_good  # nothing saved from the diverged step on
    assert os.path.join(out, "checkpoints", f"ckpt-{last_good}") in line
    # The kept checkpoint is intact: it reads back, every value finite, at the step before.
    tensors = checkpoint_tensors(out, last_good)
    for name, value in tensors.items():
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), name
    step_key = [k for k in tensors if k.startswith("step_in_epoch/")][0]
    assert int(tensors[step_key]) == (step - 1) % 3


def test_run_dir_from_before_an_option_existed_still_resumes(tmp_path):
    """A config.json written before an option was added lacks its key: it resumes when the run
    leaves the option at its default, and is refused (naming the option) when it does not."""
    import json

    from keras_darts import run_utils
    from keras_darts.config import SearchConfig
    from keras_darts.errors import UserError

    out = tmp_path / "run"
    out.mkdir()
    old = SearchConfig(output_dir=str(out)).to_dict()
    del old["unrolled"]  # "an option this old run did not know"
    (out / "config.json").write_text(json.dumps({"config": old}))
    defaults = SearchConfig().to_dict()
    same = SearchConfig(output_dir=str(out)).to_dict()
    assert run_utils.check_output_dir(str(out), same, defaults=defaults) is True
    changed = SearchConfig(output_dir=str(out), unrolled=True).to_dict()
    with pytest.raises(UserError, match=r"incompatible configuration \(unrolled False -> True\)"):
        run_utils.check_output_dir(str(out), changed, defaults=defaults)
    with pytest.raises(UserError, match=r"unrolled None -> False"):  # without defaults: refused
        run_utils.check_output_dir(str(out), same)
