"""Shared helpers for the subprocess tests (test_retrain, test_e2e, test_robustness).

Tiny settings: graph tracing dominates every run, so all runs use 3 cells of 4 channels and cells of
one intermediate node; data are small slices of the offline CIFAR-10 copy written to tmp dirs.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from keras_darts.genotype import Genotype

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bin")

# 3 nodes, every op type, inputs from intermediate nodes, and concats of different widths that
# leave a node out (3 of 3 nodes in normal cells, 2 in reduction cells).
EVERY_OP_GENOTYPE = Genotype(
    normal=[("dil_conv_5x5", 0), ("avg_pool_3x3", 1), ("sep_conv_5x5", 2), ("skip_connect", 0),
            ("max_pool_3x3", 1), ("dil_conv_3x3", 3)],
    normal_concat=(2, 3, 4),
    reduce=[("sep_conv_3x3", 0), ("skip_connect", 1), ("avg_pool_3x3", 2), ("dil_conv_5x5", 0),
            ("skip_connect", 3), ("sep_conv_5x5", 1)],
    reduce_concat=(3, 4),
)

# A one-node genotype (cells of --nodes=1), valid for bin/retrain.
GENOTYPE_1NODE = {
    "normal": [["sep_conv_3x3", 0], ["skip_connect", 1]], "normal_concat": [2],
    "reduce": [["max_pool_3x3", 0], ["sep_conv_3x3", 1]], "reduce_concat": [2],
}

SEARCH_TINY = ["--layers=3", "--init_channels=4", "--nodes=1", "--batch_size=16"]
RETRAIN_TINY = ["--layers=3", "--init_channels=4", "--batch_size=16", "--noauxiliary"]


def cli_env(tf_log_level=None):
    """The environment of a CLI subprocess: the user's, without the test session's TF log level
    (the CLIs must keep stderr clean on their own), and with the repo importable."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if tf_log_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = str(tf_log_level)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli_argv(tool, *args):
    return [sys.executable, os.path.join(BIN, tool), *[str(a) for a in args]]


def run_cli(tool, *args, timeout=900, cwd=None, **kw):
    """Runs `bin/<tool> args...` to completion; returns the CompletedProcess (text output)."""
    return subprocess.run(cli_argv(tool, *args), capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or ROOT, env=kw.pop("env", None) or cli_env(), **kw)


class Background:
    """A CLI subprocess writing stdout/stderr to files (so a SIGKILL loses nothing we read)."""

    def __init__(self, argv, log_prefix, env=None, cwd=None):
        self.argv = argv
        self.out_path, self.err_path = log_prefix + ".out", log_prefix + ".err"
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err, cwd=cwd or ROOT,
                                     env=env or cli_env())

    def wait(self, timeout=900):
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self._out.close()
            self._err.close()
        return subprocess.CompletedProcess(self.argv, rc, _read(self.out_path), _read(self.err_path))

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        return self.wait()


def _read(path):
    with open(path) as f:
        return f.read()


def run_parallel(argv_list, log_dir, names, timeout=900):
    """Starts every command at once (tracing is mostly single-threaded: two runs on two cores take
    little longer than one) and returns their CompletedProcesses in order."""
    runs = [Background(a, os.path.join(log_dir, n)) for a, n in zip(argv_list, names)]
    return [r.wait(timeout) for r in runs]


def check_ok(result):
    assert result.returncode == 0, (
        f"{' '.join(result.args[1:])} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-3000:]}")
    return result


def kill_when(background, predicate, timeout=900, poll=0.02):
    """SIGKILLs the process as soon as `predicate()` holds; fails if it ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return background.kill()
        if background.proc.poll() is not None:
            result = background.wait()
            raise AssertionError(f"process ended (rc {result.returncode}) before the kill point:\n"
                                 f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        time.sleep(poll)
    background.kill()
    raise AssertionError("kill point not reached in time")


# A launcher that runs a bin/ script with a SIGKILL injected into TensorFlow's checkpoint writer:
# KD_CRASH_AT="merge:N" kills the process inside the N-th checkpoint save, after the variables were
# written to `ckpt-K_temp/` but before they are merged into `ckpt-K.index/.data` (a crash in the
# middle of writing); "state:N" kills it after the files are complete but before the `checkpoint`
# state file names the new checkpoint.
CRASH_LAUNCHER = r"""
import os, runpy, signal, sys
point, n = os.environ["KD_CRASH_AT"].split(":")
# CheckpointManager.save writes the state file twice (before and after deleting old checkpoints).
n = int(n) if point == "merge" else 2 * int(n) - 1
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow  # noqa: F401  (patched before the script runs)
from tensorflow.python.checkpoint import checkpoint_management
from tensorflow.python.ops import gen_io_ops
calls = [0]
def wrap(fn):
    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return wrapped
if point == "merge":
    gen_io_ops.merge_v2_checkpoints = wrap(gen_io_ops.merge_v2_checkpoints)
elif point == "state":
    checkpoint_management.update_checkpoint_state_internal = wrap(
        checkpoint_management.update_checkpoint_state_internal)
else:
    raise SystemExit("bad KD_CRASH_AT")
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def crash_argv(tool, *args):
    return [sys.executable, "-c", CRASH_LAUNCHER, os.path.join(BIN, tool), *[str(a) for a in args]]


def crash_env(point, n):
    return {**cli_env(), "KD_CRASH_AT": f"{point}:{n}"}


# === Data ===

def write_cifar_slice(cifar_dir, dest, n_train, n_test, offset=0):
    """Writes dest/train.npz and dest/test.npz: the first images of the offline CIFAR-10 copy."""
    os.makedirs(dest, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        if not n:
            continue
        with np.load(os.path.join(cifar_dir, f"{split}.npz")) as f:
            x, y = f["x"][offset:offset + n], f["y"][offset:offset + n]
        np.savez(os.path.join(dest, f"{split}.npz"), x=x, y=y)
    return dest


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_history(path, drop=("epoch_time_s", "timing")):
    """history.jsonl records without the wall-clock fields."""
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in r.items() if k not in drop} for r in records]


# === Directory state ===

def snapshot(path):
    """{relative path: sha256 or 'dir' or 'link->target'} of everything under `path`, plus the
    mode bits; None when `path` does not exist."""
    if not os.path.lexists(path):
        return None
    if not os.path.isdir(path):
        return {".": _digest(path)}
    state = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, path)
            if os.path.islink(full):
                state[rel] = "link->" + os.readlink(full)
            elif os.path.isdir(full):
                state[rel] = f"dir {oct(os.stat(full).st_mode)}"
            else:
                state[rel] = _digest(full)
    return state


def _digest(path):
    with open(path, "rb") as f:
        return f"{oct(os.stat(path).st_mode)} {hashlib.sha256(f.read()).hexdigest()}"


def temp_leftovers(path):
    """Names a crash-safe writer would leave behind: `.tmp-*` files/folders, `*_temp` checkpoint
    folders."""
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            if name.startswith(".tmp-") or name.endswith("_temp") or ".tmp" in name:
                found.append(os.path.relpath(os.path.join(dirpath, name), path))
    return found


def checkpoint_numbers(run_dir):
    ckpt = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(ckpt):
        return []
    return sorted(int(n[len("ckpt-"):-len(".index")]) for n in os.listdir(ckpt)
                  if n.startswith("ckpt-") and n.endswith(".index"))


def saved_checkpoints(run_dir):
    """Numbers of the checkpoints TF's `checkpoint` state file lists: it is rewritten (atomically)
    only after a save has finished, while `ckpt-N.index` appears while the save is under way, so a
    kill timed on the index file can tear the checkpoint it waited for."""
    import re

    try:
        with open(os.path.join(run_dir, "checkpoints", "checkpoint")) as f:
            text = f.read()
    except OSError:
        return []
    return sorted(int(n) for n in re.findall(r'all_model_checkpoint_paths: "ckpt-(\d+)"', text))


def one_error_line(result):
    """Asserts the one-line error contract and returns that line."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr[-3000:]}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]
