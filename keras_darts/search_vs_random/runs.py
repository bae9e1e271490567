"""The benchmark's runs: work-dir layout, the plan, resume checks, and the subprocesses.

Every search and retrain is a bin/search or bin/retrain subprocess (each run gets a fresh process,
as a user's would; memory is returned between runs). The runner that launches them is injectable,
so tests check the plan and the resume logic without TensorFlow.
"""

import concurrent.futures
import dataclasses
import os
import re
import subprocess
import sys
import threading
import time

from keras_darts import genotype as genotype_lib
from keras_darts.errors import UserError
from keras_darts.io_utils import atomic_write_json, read_jsonl
from keras_darts.random_cells import random_genotype
from keras_darts.search_vs_random import protocol
from keras_darts.search_vs_random.summary import read_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Layout:
    """Where everything lives under `--work_dir` (the script's docstring shows the tree).

    `tag` names a search setting: several settings then share one work dir, and with it the
    random and named cells' retrains, which do not depend on the search.
    """

    def __init__(self, work_dir, tag=""):
        if tag and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", tag):
            raise UserError(f"--tag={tag}: use letters, digits, '_', '.' and '-' only")
        self.root = os.path.abspath(work_dir)
        self.tag = tag

    def search_id(self, seed):
        """`seed_<s>` or `<tag>_seed_<s>`: the search's folder, log and retrain names."""
        return f"{self.tag}_seed_{seed}" if self.tag else f"seed_{seed}"

    def search_label(self, seed):
        return f"search {self.tag + ' ' if self.tag else ''}seed {seed}"

    def search_dir(self, seed):
        return os.path.join(self.root, "search", self.search_id(seed))

    def retrain_dir(self, name):
        return os.path.join(self.root, "retrain", name)

    def cell_path(self, index):
        return os.path.join(self.root, "cells", f"random_{index}.json")

    def log_path(self, run_id):
        return os.path.join(self.root, "logs", f"{run_id}.log")

    def timing_path(self, run_id):
        return os.path.join(self.root, "logs", f"{run_id}.time.json")

    def results_path(self):
        return os.path.join(self.root, "results.json")


@dataclasses.dataclass(frozen=True)
class Retrain:
    """One cell to retrain: `genotype` is what bin/retrain's --genotype gets."""

    name: str  # folder under retrain/
    label: str  # table row
    kind: str  # searched | random | named
    genotype: str
    seed: int = None  # the search seed, for searched cells


def plan_retrains(layout, search_seeds, n_random, named):
    runs = [Retrain(f"search_{layout.search_id(s)}", layout.search_label(s), "searched",
                    os.path.join(layout.search_dir(s), "genotype.json"), s) for s in search_seeds]
    runs += [Retrain(f"random_{i}", f"random {i}", "random", layout.cell_path(i))
             for i in range(n_random)]
    runs += [Retrain(f"named_{n}", n, "named", n) for n in named]
    return runs


def write_random_cells(layout, n, random_seed, steps):
    """cells/random_<i>.json, cell i drawn with seed (random_seed, i): more cells keep the first."""
    for i in range(n):
        genotype = random_genotype((random_seed, i), steps=steps)
        path = layout.cell_path(i)
        previous = read_json(path)
        if previous is None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write_json(path, genotype.to_dict())
        elif previous != genotype.to_dict():
            raise UserError(f"{path}: holds a cell drawn with another --random_seed or --nodes; "
                            "use a new --work_dir or the same flags")


def subprocess_runner(argv, log_path):
    """Runs `argv` with stdout and stderr appended to `log_path`; returns the exit code."""
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False).returncode


def _last_line(path):
    try:
        with open(path) as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


class Benchmark:
    """Plans, checks and launches the runs; resumable: finished runs are skipped."""

    def __init__(self, layout, search, search_argv, retrain, retrain_argv, search_seeds,
                 n_random=0, random_seed=0, named=(), retrain_cells=True,
                 runner=subprocess_runner, python=sys.executable, log=print):
        self.layout = layout
        self.search, self.search_argv = search, list(search_argv)
        self.retrain, self.retrain_argv = retrain, list(retrain_argv)
        self.search_seeds = list(search_seeds)
        self.n_random, self.random_seed = n_random, random_seed
        self.runs = plan_retrains(layout, self.search_seeds, n_random, named) if retrain_cells else []
        self.runner, self.python, self.log = runner, python, log
        self.launched = []  # run ids launched by this invocation

    # === Configs and command lines ===
    def search_config(self, seed):
        return protocol.with_run(self.search, seed=seed, output_dir=self.layout.search_dir(seed))

    def retrain_config(self, run):
        return protocol.with_run(self.retrain, genotype=run.genotype,
                                 output_dir=self.layout.retrain_dir(run.name))

    def search_command(self, seed):
        c = self.search_config(seed)
        argv = [self.python, os.path.join(ROOT, "bin", "search"), f"--dataset={c.dataset}",
                f"--output_dir={c.output_dir}", f"--seed={seed}"]
        return argv + ([f"--data_dir={c.data_dir}"] if c.data_dir else []) + self.search_argv

    def retrain_command(self, run):
        c = self.retrain_config(run)
        argv = [self.python, os.path.join(ROOT, "bin", "retrain"), f"--genotype={c.genotype}",
                f"--dataset={c.dataset}", f"--output_dir={c.output_dir}", f"--layers={c.layers}",
                f"--init_channels={c.init_channels}", f"--epochs={c.epochs}",
                f"--batch_size={c.batch_size}", f"--seed={c.seed}"]
        return argv + ([f"--data_dir={c.data_dir}"] if c.data_dir else []) + self.retrain_argv

    # === Resume checks ===
    def _matches(self, directory, expected, neutral):
        """False when the run has not started; raises when it belongs to another configuration."""
        record = read_json(os.path.join(directory, "config.json"))
        if record is None:
            return False
        differ = protocol.config_differences(record, expected, neutral)
        if differ:
            previous = record.get("config", record)
            details = ", ".join(f"{k} {previous.get(k)!r} -> {expected.get(k)!r}" for k in differ[:3])
            raise UserError(f"{directory}: holds a run of another configuration ({details}); "
                            "use a new --work_dir or the same flags")
        return True

    def search_finished(self, seed):
        config = self.search_config(seed)
        if not self._matches(config.output_dir, config.to_dict(), protocol.SEARCH_NEUTRAL):
            return False
        try:
            history = read_jsonl(os.path.join(config.output_dir, "history.jsonl"))
            genotype_lib.load_genotype(os.path.join(config.output_dir, "genotype.json"))
        except (OSError, ValueError, UserError):
            return False
        return bool(history) and history[-1].get("epoch") == config.epochs

    def retrain_finished(self, run):
        config = self.retrain_config(run)
        if run.kind == "searched" and not os.path.exists(run.genotype):
            return False  # its search has not finished: nothing to compare yet
        expected = {**config.to_dict(),
                    "genotype": genotype_lib.load_genotype(run.genotype).to_dict()}
        if not self._matches(config.output_dir, expected, protocol.RETRAIN_NEUTRAL):
            return False
        return read_json(os.path.join(config.output_dir, "metrics.json")) is not None

    # === Running ===
    def _launch(self, run_id, argv, what):
        log_path = self.layout.log_path(run_id)
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        self.log(f"{what}: running (log: {log_path})")
        start = time.time()
        try:
            code = self.runner(argv, log_path)
        finally:  # an interrupted launch's minutes count too: the budget paid them
            elapsed = time.time() - start
            timing = read_json(self.layout.timing_path(run_id)) or {"wall_s": 0.0, "launches": 0}
            atomic_write_json(self.layout.timing_path(run_id), {
                "wall_s": timing["wall_s"] + elapsed, "launches": timing["launches"] + 1})
        self.launched.append(run_id)
        if code != 0:
            raise UserError(f"{what} failed (exit {code}): {_last_line(log_path)} "
                            f"(log: {log_path}); fix it and rerun to resume")
        self.log(f"{what}: done in {elapsed / 60:.1f} min")

    def check_all(self):
        """Refuses a work dir holding runs of other configurations before anything is launched."""
        for seed in self.search_seeds:
            self.search_finished(seed)
        for run in self.runs:  # a searched cell's retrain only once its genotype exists
            self.retrain_finished(run)

    def _search_task(self, seed):
        what = self.layout.search_label(seed)
        if self.search_finished(seed):
            self.log(f"{what}: finished, skipped")
        else:
            self._launch(f"search_{self.layout.search_id(seed)}", self.search_command(seed), what)

    def _retrain_task(self, run):
        # Checked when it is its turn: a searched cell's genotype exists only after its search.
        if self.retrain_finished(run):
            self.log(f"retrain {run.label}: finished, skipped")
        else:
            self._launch(f"retrain_{run.name}", self.retrain_command(run), f"retrain {run.label}")

    def execute(self, jobs=1):
        """Runs what is unfinished, `jobs` runs at a time. One run: searches, then their cells'
        retrains, then the random and named cells'. Several: the random and named cells go before
        the searched ones, which then rarely wait for their search. After a failure no new run
        starts; the running ones finish, then the first failure is raised. (`run` checks `jobs`
        before anything is written.)"""
        if any(run.kind == "random" for run in self.runs):
            write_random_cells(self.layout, self.n_random, self.random_seed, self.search.nodes)
        self.check_all()
        searched = [r for r in self.runs if r.kind == "searched"]
        others = [r for r in self.runs if r.kind != "searched"]
        failures, lock = [], threading.Lock()
        searches = {}

        def task(fn, arg, after=None, done=None):
            try:
                if after is not None:
                    after.wait()  # submitted after its search, so that search holds a worker
                if not failures:
                    fn(arg)
            except Exception as e:  # noqa: BLE001 (re-raised below, in the caller's thread)
                with lock:
                    failures.append(e)
            finally:
                if done is not None:
                    done.set()

        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            for seed in self.search_seeds:
                searches[seed] = threading.Event()
                pool.submit(task, self._search_task, seed, done=searches[seed])
            for run in (searched + others if jobs == 1 else others + searched):
                pool.submit(task, self._retrain_task, run, after=searches.get(run.seed))
        if failures:
            raise failures[0]
