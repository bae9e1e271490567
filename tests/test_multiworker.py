"""Multi-worker search: two `bin/search` processes on 127.0.0.1 under MultiWorkerMirroredStrategy.

One worker is killed mid-run; the job is restarted with the same commands, resumes from the chief's
checkpoint and completes. Only the chief writes into --output_dir; the other worker's temporary dirs
are removed; both derive the same genotype.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

SEARCH = os.path.join(ROOT, "bin", "search")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_workers(data, out, tmpdir, ports):
    os.makedirs(tmpdir, exist_ok=True)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = dict(os.environ, TMPDIR=tmpdir, TF_CPP_MIN_LOG_LEVEL="3",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        cmd = [sys.executable, SEARCH, "--strategy=multi_worker", f"--dataset={data}",
               f"--output_dir={out}", "--layers=3", "--init_channels=4", "--nodes=1",
               "--batch_size=16", "--epochs=2", "--steps_per_epoch=2", "--checkpoint_every=1",
               "--seed=5"]
        log = open(os.path.join(tmpdir, f"..w{i}.log"), "w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    return procs


def _final_genotype_line(log_path):
    with open(log_path) as f:
        lines = [line for line in f.read().splitlines() if line.startswith("epoch 2:")]
    assert lines, f"no 'epoch 2:' line in {log_path}"
    return lines[-1].split("| genotype ", 1)[1]


@pytest.fixture
def small_npz(cifar_dir, tmp_path):
    d = np.load(os.path.join(cifar_dir, "train.npz"))
    path = tmp_path / "train.npz"
    np.savez(path, x=d["x"][:128], y=d["y"][:128])
    return str(path)


def test_two_workers_kill_and_resume(small_npz, tmp_path):
    out = str(tmp_path / "out")
    ports = _free_ports(2)

    # Phase 1: run until the chief has a checkpoint, then kill worker 1 (SIGKILL, mid-run).
    procs = _start_workers(small_npz, out, str(tmp_path / "tmp1"), ports)
    ckpt_state = os.path.join(out, "checkpoints", "checkpoint")
    deadline = time.time() + 600
    while not os.path.exists(ckpt_state):
        assert time.time() < deadline, "no checkpoint within 10 minutes"
        assert all(p.poll() is None for p, _ in procs), "a worker exited before checkpointing"
        time.sleep(0.5)
    procs[1][0].send_signal(signal.SIGKILL)
    procs[1][0].wait()
    # The chief loses its peer: it fails at the next collective or is stuck in it; stop it too, as a
    # cluster manager would, then restart the whole job.
    try:
        procs[0][0].wait(timeout=60)
    except subprocess.TimeoutExpired:
        procs[0][0].send_signal(signal.SIGKILL)
        procs[0][0].wait()
    for _, log in procs:
        log.close()
    history = os.path.join(out, "history.jsonl")
    assert not os.path.exists(history) or len(open(history).read().splitlines()) < 2

    # Phase 2: the same commands resume from the chief's checkpoint and complete.
    tmp2 = str(tmp_path / "tmp2")
    procs = _start_workers(small_npz, out, tmp2, _free_ports(2))
    codes = [p.wait(timeout=900) for p, _ in procs]
    for _, log in procs:
        log.close()
    logs = [os.path.join(tmp2, f"..w{i}.log") for i in range(2)]
    assert codes == [0, 0], [open(p).read()[-2000:] for p in logs]
    for path in logs:
        assert "resuming from" in open(path).read()

    # Only the chief wrote into the output dir; the other worker's temporary dirs are gone.
    assert sorted(os.listdir(out)) == ["checkpoints", "config.json", "figures", "genotype.json",
                                       "history.jsonl", "tensorboard"]
    assert os.listdir(tmp2) == [] or all(n.startswith("..w") for n in os.listdir(tmp2))
    epochs = [json.loads(line)["epoch"] for line in open(history)]
    assert epochs == [1, 2]
    # Both workers derived the same genotype, and it is the one the chief saved.
    g0, g1 = (_final_genotype_line(p) for p in logs)
    assert g0 == g1
    saved = json.load(open(os.path.join(out, "genotype.json")))
    assert json.loads(open(history).read().splitlines()[-1])["genotype"] == saved
