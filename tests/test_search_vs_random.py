"""benchmarks/search_vs_random.py's pieces, with a fake runner in place of bin/search and
bin/retrain subprocesses: the plan, pass-through flags, resume, and the figures. No TensorFlow run.
"""

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from keras_darts import search_vs_random as svr
from keras_darts.config import RetrainConfig, SearchConfig
from keras_darts.errors import UserError
from keras_darts.genotype import DARTS_V2, load_genotype
from keras_darts.io_utils import atomic_write_json
from keras_darts.random_cells import random_genotype
from keras_darts.search_vs_random import protocol, slices, summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEARCH_ARGS = "--layers=3 --init_channels=4 --nodes=2 --epochs=2 --batch_size=8"
RETRAIN = dict(retrain_layers=3, retrain_channels=4, retrain_epochs=1, retrain_batch_size=8,
               retrain_seed=5)


def write_search(out, config, epochs_done, val_accuracy=0.3):
    """What bin/search leaves in `out`: config.json, history.jsonl, genotype.json."""
    os.makedirs(out, exist_ok=True)
    atomic_write_json(os.path.join(out, "config.json"), {"config": config.to_dict()})
    with open(os.path.join(out, "history.jsonl"), "w") as f:
        for e in range(1, epochs_done + 1):
            f.write(json.dumps({"epoch": e, "val_accuracy": val_accuracy, "epoch_time_s": 30.0}) + "\n")
    atomic_write_json(os.path.join(out, "genotype.json"),
                      random_genotype(config.seed + 100, steps=config.nodes).to_dict())


def write_retrain(out, config, accuracy, parameters=1000, wall_s=90.0):
    """What bin/retrain leaves: config.json (genotype by content) and metrics.json."""
    genotype = load_genotype(config.genotype).to_dict()
    os.makedirs(out, exist_ok=True)
    atomic_write_json(os.path.join(out, "config.json"),
                      {**config.to_dict(), "genotype_spec": config.genotype, "genotype": genotype})
    atomic_write_json(os.path.join(out, "metrics.json"),
                      {"test_accuracy": accuracy, "parameters": parameters, "wall_time_s": wall_s})


class FakeTools:
    """Stands in for the subprocesses: parses the command line as the tool would and writes its
    outputs; records every launch."""

    def __init__(self, accuracies=None, fail=None):
        self.calls, self.accuracies, self.fail = [], accuracies or {}, fail

    def __call__(self, argv, log_path):
        tool = os.path.basename(argv[1])
        cls = SearchConfig if tool == "search" else RetrainConfig
        config, _ = protocol.parse_passthrough(cls, shlex.join(argv[2:]), "argv", {}, {})
        name = os.path.basename(config.output_dir)
        self.calls.append(f"{tool}:{name}")
        if self.fail == name:
            with open(log_path, "a") as f:
                f.write("epoch 1/2\nerror: --dataset=x: no such file or directory\n")
            return 2
        if tool == "search":
            write_search(config.output_dir, config, config.epochs)
        else:
            write_retrain(config.output_dir, config, self.accuracies.get(name, 0.5))
        return 0


def bench_kwargs(tmp_path, **over):
    return {"work_dir": str(tmp_path / "work"), "dataset": str(tmp_path / "data"),
            "search_seeds": 2, "search_args": SEARCH_ARGS, "random": 2, "random_seed": 9,
            "named": ["DARTS_V2"], **RETRAIN, "log": lambda line: None, **over}


def test_runs_everything_once_then_resumes_without_launching(tmp_path):
    tools = FakeTools()
    svr.run(runner=tools, **bench_kwargs(tmp_path))
    assert tools.calls == ["search:seed_0", "search:seed_1", "retrain:search_seed_0",
                           "retrain:search_seed_1", "retrain:random_0", "retrain:random_1",
                           "retrain:named_DARTS_V2"]
    again = FakeTools()
    svr.run(runner=again, **bench_kwargs(tmp_path))
    assert again.calls == []
    # An unfinished retrain (no metrics.json) and an unfinished search (1 of 2 epochs) are
    # relaunched, nothing else. The search's cell is unchanged, so its retrain stays finished.
    work = tmp_path / "work"
    os.remove(work / "retrain" / "random_1" / "metrics.json")
    history = (work / "search" / "seed_1" / "history.jsonl").read_text().splitlines()
    (work / "search" / "seed_1" / "history.jsonl").write_text(history[0] + "\n")
    third = FakeTools()
    svr.run(runner=third, **bench_kwargs(tmp_path))
    assert third.calls == ["search:seed_1", "retrain:random_1"]


def test_tagged_settings_share_the_random_and_named_retrains(tmp_path):
    svr.run(runner=FakeTools(), **bench_kwargs(tmp_path, search_seeds=1, random=1, tag="a"))
    tools = FakeTools()
    rows, _ = svr.run(runner=tools, **bench_kwargs(
        tmp_path, search_seeds=1, random=1, tag="b-2", search_args=SEARCH_ARGS + " --epochs=1"))
    assert tools.calls == ["search:b-2_seed_0", "retrain:search_b-2_seed_0"]
    assert [r["cell"] for r in rows] == ["search b-2 seed 0", "random 0", "DARTS_V2"]
    with pytest.raises(UserError, match=r"--tag=a/b: use letters, digits"):
        svr.run(runner=tools, **bench_kwargs(tmp_path, tag="a/b"))


def test_hand_made_finished_run_is_not_launched(tmp_path):
    # The named cell's run dir, written by hand from the protocol's values, counts as finished.
    work = tmp_path / "work"
    out = str(work / "retrain" / "named_DARTS_V2")
    config = RetrainConfig(genotype="DARTS_V2", dataset=str(tmp_path / "data"), output_dir=out,
                           layers=3, init_channels=4, epochs=1, batch_size=8, seed=5)
    write_retrain(out, config, 0.6)
    tools = FakeTools()
    svr.run(runner=tools, **bench_kwargs(tmp_path, search_seeds=0, random=1))
    assert tools.calls == ["retrain:random_0"]


def test_commands_pass_flags_through_and_share_one_retrain_protocol(tmp_path):
    tools = FakeTools()
    commands = []
    runner = lambda argv, log: commands.append(argv) or tools(argv, log)  # noqa: E731
    svr.run(runner=runner, **bench_kwargs(tmp_path, search_seeds=1, random=1,
                                           retrain_args="--noauxiliary --drop_path_prob=0.1"))
    search, *retrains = commands
    assert search[1].endswith("bin/search") and search[-5:] == shlex.split(SEARCH_ARGS)
    assert "--seed=0" in search
    assert [c[-2:] for c in retrains] == [["--noauxiliary", "--drop_path_prob=0.1"]] * 3
    # Every cell gets the identical protocol: the commands differ only in genotype and output dir.
    strip = lambda c: [a for a in c if not a.startswith(("--genotype=", "--output_dir="))]  # noqa
    assert strip(retrains[0]) == strip(retrains[1]) == strip(retrains[2])
    assert "--layers=3" in retrains[0] and "--seed=5" in retrains[0]
    work = tmp_path / "work"
    # The random cell is drawn from the search's space (--nodes=2) with seed (random_seed, 0).
    cell = json.loads((work / "cells" / "random_0.json").read_text())
    assert cell == random_genotype((9, 0), steps=2).to_dict()
    assert json.loads((work / "retrain" / "random_0" / "config.json").read_text())["genotype"] == cell


def test_future_search_flags_pass_through(tmp_path):
    # A field another helper adds to SearchConfig is a flag of the pass-through at once.
    @dataclasses.dataclass(frozen=True)
    class Future(SearchConfig):
        pc_k: int = 1
        beta_decay: bool = False

    config, argv = protocol.parse_passthrough(Future, "--pc_k=4 --beta_decay --epochs=3",
                                              "--search_args", protocol.SEARCH_RESERVED, {})
    assert (config.pc_k, config.beta_decay, config.epochs) == (4, True, 3)
    assert argv == ["--pc_k=4", "--beta_decay", "--epochs=3"]


@pytest.mark.parametrize("over, message", [
    ({"search_args": "--bogus=1"}, "--search_args='--bogus=1': Unknown command line flag 'bogus'"),
    ({"search_args": "--seed=3"}, "--search_args: --seed is fixed by the benchmark: use "
                                  "--search_seeds"),
    ({"search_args": "--epochs=0"}, "--search_args: --epochs=0: must be > 0"),
    ({"search_args": "--nodes=2 extra"}, "--search_args='--nodes=2 extra': unexpected argument "
                                         "'extra'"),
    ({"retrain_args": "--layers=4"}, "--retrain_args: --layers is fixed by the benchmark: use "
                                     "--retrain_layers"),
    ({"retrain_args": "--eval_steps=2"}, "--retrain_args: --eval_steps is fixed by the benchmark: "
                                         "every cell is scored on the full test split"),
    ({"retrain_args": "--drop_path_prob=1"}, "--retrain_args: --drop_path_prob=1.0: must be in "
                                             "[0, 1)"),
    ({"select_on": "val"}, "--select_on=val: must be one of test, search_val, heldout"),
    ({"random": -1}, "--random=-1: must be >= 0"),
    ({"train_images": 0}, "--train_images=0: must be >= 1"),
])
def test_bad_flags_fail_before_anything_is_written(tmp_path, over, message):
    tools = FakeTools()
    with pytest.raises(UserError) as e:
        svr.run(runner=tools, **bench_kwargs(tmp_path, **over))
    assert str(e.value) == message
    assert tools.calls == [] and not (tmp_path / "work").exists()


def test_run_of_another_configuration_stops_before_launching(tmp_path):
    svr.run(runner=FakeTools(), **bench_kwargs(tmp_path, random=0, named=[]))
    tools = FakeTools()
    with pytest.raises(UserError, match=r"search/seed_0: holds a run of another configuration "
                                        r"\(epochs 2 -> 3\); use a new --work_dir"):
        svr.run(runner=tools, **bench_kwargs(tmp_path, random=0, named=[],
                                             search_args=SEARCH_ARGS + " --epochs=3"))
    assert tools.calls == []
    with pytest.raises(UserError, match=r"retrain/search_seed_0: holds a run of another "
                                        r"configuration \(epochs 1 -> 2\)"):
        svr.run(runner=tools, **bench_kwargs(tmp_path, random=0, named=[],
                                             retrain_epochs=2))
    assert tools.calls == []


def test_failed_run_reports_its_last_log_line(tmp_path):
    tools = FakeTools(fail="seed_1")
    with pytest.raises(UserError) as e:
        svr.run(runner=tools, **bench_kwargs(tmp_path))
    log = tmp_path / "work" / "logs" / "search_seed_1.log"
    assert str(e.value) == (f"search seed 1 failed (exit 2): error: --dataset=x: no such file or "
                            f"directory (log: {log}); fix it and rerun to resume")
    assert tools.calls == ["search:seed_0", "search:seed_1"]


class Concurrent:
    """Wraps a runner: each launch takes `seconds`; records how many ran at once and when each
    started and ended."""

    def __init__(self, runner, seconds=0.15, quick=()):
        self.runner, self.seconds, self.quick = runner, seconds, set(quick)
        self.lock, self.running, self.most, self.spans = threading.Lock(), 0, 0, {}

    def __call__(self, argv, log_path):
        name = os.path.basename(log_path).removesuffix(".log")
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        start = time.monotonic()
        time.sleep(0 if name in self.quick else self.seconds)
        code = self.runner(argv, log_path)
        with self.lock:
            self.running -= 1
            self.spans[name] = (start, time.monotonic())
        return code


def test_jobs_run_side_by_side_and_a_cell_after_its_search(tmp_path):
    tools = FakeTools()
    runner = Concurrent(tools)
    svr.run(runner=runner, jobs=2, **bench_kwargs(tmp_path))
    assert runner.most == 2  # never more than --jobs
    assert sorted(tools.calls) == sorted([
        "search:seed_0", "search:seed_1", "retrain:search_seed_0", "retrain:search_seed_1",
        "retrain:random_0", "retrain:random_1", "retrain:named_DARTS_V2"])
    # Random and named cells are queued before the searched ones; each searched cell's retrain
    # starts only once its search has ended.
    # (The two searches start together, in either order.)
    assert sorted(tools.calls[:2]) == ["search:seed_0", "search:seed_1"]
    assert tools.calls.index("retrain:random_0") < tools.calls.index("retrain:search_seed_0")
    for seed in (0, 1):
        assert runner.spans[f"retrain_search_seed_{seed}"][0] >= runner.spans[f"search_seed_{seed}"][1]
    again = FakeTools()
    svr.run(runner=again, jobs=2, **bench_kwargs(tmp_path))
    assert again.calls == []  # resume is the same with jobs


def test_after_a_failure_with_jobs_no_new_run_starts(tmp_path):
    tools = FakeTools(fail="seed_0")
    with pytest.raises(UserError, match=r"^search seed 0 failed \(exit 2\)"):
        svr.run(runner=Concurrent(tools, quick={"search_seed_0"}), jobs=2, **bench_kwargs(tmp_path))
    # seed 1 was already running beside it and finishes; nothing is launched after the failure
    # (seed 0 fails at once, so the failure is in before seed 1 frees its worker).
    assert sorted(tools.calls) == ["search:seed_0", "search:seed_1"]
    with pytest.raises(UserError, match=r"^--jobs=0: must be >= 1$"):
        svr.run(runner=tools, jobs=0, **bench_kwargs(tmp_path))


def test_figures_come_from_the_runs_metrics(tmp_path):
    # Hand-made finished runs; the runner must not be called at all.
    work, data = tmp_path / "work", str(tmp_path / "data")
    layout = svr.Layout(str(work))
    search = protocol.search_config(SEARCH_ARGS, data, None)[0]
    for seed in (0, 1):
        write_search(layout.search_dir(seed), dataclasses.replace(
            search, seed=seed, output_dir=layout.search_dir(seed)), 2, val_accuracy=0.3 + seed / 10)
    os.makedirs(work / "logs")
    atomic_write_json(layout.timing_path("search_seed_0"), {"wall_s": 600.0, "launches": 2})
    base = RetrainConfig(dataset=data, layers=3, init_channels=4, epochs=1, batch_size=8, seed=5)
    accuracy = {"search_seed_0": 0.58, "search_seed_1": 0.50, "random_0": 0.40, "random_1": 0.52,
                "random_2": 0.46, "random_3": 0.61, "random_4": 0.55, "named_DARTS_V2": 0.637}
    for run in svr.plan_retrains(layout, [0, 1], 5, ["DARTS_V2"]):
        if run.kind == "random":
            os.makedirs(os.path.dirname(run.genotype), exist_ok=True)
            atomic_write_json(run.genotype, random_genotype((9, int(run.name[-1])), steps=2).to_dict())
        write_retrain(layout.retrain_dir(run.name), dataclasses.replace(
            base, genotype=run.genotype, output_dir=layout.retrain_dir(run.name)),
            accuracy[run.name], parameters=1234567, wall_s=120.0)
    lines = []
    rows, result = svr.run(runner=lambda *a: pytest.fail("launched"),
                           **bench_kwargs(tmp_path, random=5, log=lines.append))
    # Random 0.40 0.52 0.46 0.61 0.55: mean 2.54/5, median 0.52, squared deviations from the mean
    # sum to 0.02628, so the sample sd is sqrt(0.02628 / 4).
    r = result["random"]
    assert r["n"] == 5 and r["values"] == [0.40, 0.52, 0.46, 0.61, 0.55]
    assert r["mean"] == pytest.approx(0.508, abs=1e-12)
    assert (r["median"], r["best"], r["min"], r["max"]) == (0.52, 0.61, 0.40, 0.61)
    assert r["sd"] == pytest.approx(np.sqrt(0.02628 / 4), abs=1e-12)
    assert result["searched"]["mean"] == pytest.approx(0.54, abs=1e-12)
    assert result["searched_minus_random_median"] == pytest.approx(0.02, abs=1e-12)
    assert result["verdict"] == "within random spread" and result["named"] == {"DARTS_V2": 0.637}
    assert json.loads(lines[-1]) == result  # the JSON is the last line printed
    assert json.loads((work / "results.json").read_text())["summary"] == result
    table = lines[-2].splitlines()
    assert table[0].split("|")[1:-1] == [
        " cell          ", " test acc ", " search-val acc ", " params    ", " search min ",
        " retrain min "]
    # Search minutes: the timing record (600 s) when there is one, else the epochs' 2 x 30 s.
    assert [c.strip() for c in table[2].split("|")[1:-1]] == [
        "search seed 0", "58.00%", "30.00%", "1,234,567", "10.0", "2.0"]
    assert [c.strip() for c in table[3].split("|")[1:-1]][2:5] == ["40.00%", "1,234,567", "1.0"]
    assert [c.strip() for c in table[4].split("|")[1:-1]] == [
        "random 0", "40.00%", "-", "1,234,567", "-", "2.0"]
    # The script, given the same flags, finds every run finished (so each flag reaches its
    # config) and prints the same JSON last.
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "search_vs_random.py"),
         f"--work_dir={work}", f"--dataset={data}", "--search_seeds=2", f"--search_args={SEARCH_ARGS}",
         "--random=5", "--random_seed=9", "--named=DARTS_V2", "--retrain_layers=3",
         "--retrain_channels=4", "--retrain_epochs=1", "--retrain_batch_size=8",
         "--retrain_seed=5"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    stdout = out.stdout.splitlines()
    assert sum(line.endswith(": finished, skipped") for line in stdout) == 2 + 8  # searches, cells
    assert not any(": running" in line for line in stdout)
    assert json.loads(stdout[-1]) == result


def test_verdicts_and_single_values():
    rows = lambda s, r: ([{"kind": "searched", "cell": "s", "test_accuracy": v} for v in s]  # noqa
                         + [{"kind": "random", "cell": "r", "test_accuracy": v} for v in r])
    assert summary.summarize(rows([0.7], [0.5, 0.6]))["verdict"] == "above random spread"
    assert summary.summarize(rows([0.4], [0.5, 0.6]))["verdict"] == "below random spread"
    one = summary.summarize(rows([0.5], [0.6]))  # one random cell: no spread, no verdict
    assert one["random"]["sd"] is None and "verdict" not in one
    assert one["searched_minus_random_median"] == pytest.approx(-0.1, abs=1e-12)
    assert summary.summarize(rows([0.5], [0.5, 0.6]))["verdict"] == "within random spread"
    missing = summary.summarize(rows([None], [0.6]))
    assert missing["searched"]["n"] == 0 and missing["missing"] == ["s"] and "verdict" not in missing


def test_search_val_mode_runs_searches_only(tmp_path):
    tools = FakeTools()
    lines = []
    rows, result = svr.run(runner=tools, **bench_kwargs(tmp_path, select_on="search_val",
                                                         log=lines.append))
    assert tools.calls == ["search:seed_0", "search:seed_1"]
    assert [r["search_val_accuracy"] for r in rows] == [0.3, 0.3]
    assert result["score"] == "search_val_accuracy" and result["searched"]["mean"] == 0.3
    assert result["random"] == {"n": 0, "values": []}
    assert not (tmp_path / "work" / "cells").exists()


def test_data_slices(tmp_path):
    assert [list(a) for a in slices.split_indices(5, 2)] == [[0, 1, 2], [3, 4]]
    with pytest.raises(UserError, match=r"--heldout_size=5: must be in 1..4 \(the training images "
                                        r"number 5\)"):
        slices.split_indices(5, 5)
    data = tmp_path / "data"
    data.mkdir()
    x = np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3)
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(data / "train.npz", x=x, y=y)
    np.savez(data / "test.npz", x=x[:2] + 1, y=y[:2])
    # The first 5 training images, the last 2 of them held out: train 0..2, "test" 3..4.
    out = str(tmp_path / "held")
    assert slices.make_data_dir(out, str(data), None, 5, 2) == out
    train, test = np.load(f"{out}/train.npz"), np.load(f"{out}/test.npz")
    np.testing.assert_array_equal(train["x"], x[:3])
    np.testing.assert_array_equal(train["y"], y[:3])
    np.testing.assert_array_equal(test["x"], x[3:5])  # the held-out part: never the test split
    np.testing.assert_array_equal(test["y"], y[3:5])
    with pytest.raises(UserError, match="holds a data slice of"):
        slices.make_data_dir(out, str(data), None, 5, 3)
    # The first 4 training images with the full test split.
    out = str(tmp_path / "slice")
    slices.make_data_dir(out, str(data), None, 4)
    train, test = np.load(f"{out}/train.npz"), np.load(f"{out}/test.npz")
    np.testing.assert_array_equal(train["x"], x[:4])
    np.testing.assert_array_equal(test["x"], x[:2] + 1)
    np.testing.assert_array_equal(test["y"], y[:2])
    with pytest.raises(UserError, match=r"--train_images=7: must be in 1..6 \(the training split "):
        slices.make_data_dir(str(tmp_path / "bad"), str(data), None, 7)


@pytest.mark.parametrize("over, made_args", [
    ({"select_on": "heldout", "heldout_size": 123}, (None, 123)),
    ({"select_on": "heldout", "heldout_size": 123, "train_images": 800}, (800, 123)),
    ({"train_images": 800}, (800, None)),
])
def test_sliced_runs_train_and_score_on_the_slice(tmp_path, monkeypatch, over, made_args):
    made = []
    monkeypatch.setattr(slices, "make_data_dir", lambda d, *a: made.append(a) or d)
    commands = []
    tools = FakeTools()
    runner = lambda argv, log: commands.append(argv) or tools(argv, log)  # noqa: E731
    rows, result = svr.run(runner=runner, **bench_kwargs(
        tmp_path, search_seeds=1, random=0, named=[], **over))
    split = str(tmp_path / "work" / "data")
    assert made == [(str(tmp_path / "data"), None, *made_args)]
    datasets = [a for c in commands for a in c if a.startswith("--dataset=")]
    assert datasets == [f"--dataset={split}"] * 2  # the search and the retrain
    assert result["select_on"] == over.get("select_on", "test")
    assert result["searched"]["mean"] == 0.5


def test_config_differences_compare_as_config_json_holds_them():
    record = {"config": {"size": [16, 16], "epochs": 1, "output_dir": "/a"}}
    assert protocol.config_differences(
        record, {"size": (16, 16), "epochs": 1, "output_dir": "/b"}, ("output_dir",)) == []
    assert protocol.config_differences(record, {"size": (16, 32), "epochs": 2}, ()) == [
        "epochs", "size"]
    flat = {"epochs": 1, "genotype": {"normal": []}}  # bin/retrain's config.json is flat
    assert protocol.config_differences(flat, {"epochs": 1, "genotype": {"normal": []}}, ()) == []
