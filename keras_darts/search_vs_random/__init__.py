"""Search vs random (issue 15): searched cells, random cells and named cells under one retrain
protocol. The entry point is benchmarks/search_vs_random.py; its docstring documents the work dir.

Imports no TensorFlow: every search and retrain runs as a bin/ subprocess.
"""

import json
import os

from keras_darts.errors import UserError
from keras_darts.io_utils import atomic_write_json
from keras_darts.search_vs_random import protocol, slices, summary
from keras_darts.search_vs_random.runs import Benchmark, Layout, Retrain, plan_retrains

__all__ = ["Benchmark", "Layout", "Retrain", "SELECT_ON", "plan_retrains", "run"]

# What the summary scores: test (the final figure), search_val (searches only: the supernet's
# search-val accuracy from history.jsonl), heldout (every cell retrained on the training split
# minus a held-out part and scored on that part; the test split is never read).
SELECT_ON = {"test": "test_accuracy", "search_val": "search_val_accuracy",
             "heldout": "test_accuracy"}


def run(work_dir, dataset="cifar10", data_dir=None, search_seeds=2, search_args="", random=5,
        random_seed=0, named=(), retrain_layers=8, retrain_channels=16, retrain_epochs=10,
        retrain_batch_size=96, retrain_seed=0, retrain_args="", select_on="test",
        heldout_size=5000, tag="", train_images=None, jobs=1, runner=None, log=print):
    """Runs (or resumes) the benchmark; returns (rows, summary dict). Flags: the script's."""
    if not work_dir:
        raise UserError("--work_dir is required")
    if select_on not in SELECT_ON:
        raise UserError(f"--select_on={select_on}: must be one of {', '.join(SELECT_ON)}")
    for flag, value in (("--search_seeds", search_seeds), ("--random", random)):
        if value < 0:
            raise UserError(f"{flag}={value}: must be >= 0")
    if jobs < 1:
        raise UserError(f"--jobs={jobs}: must be >= 1")
    if train_images is not None and train_images < 1:
        raise UserError(f"--train_images={train_images}: must be >= 1")
    if os.path.exists(work_dir) and not os.path.isdir(work_dir):
        raise UserError(f"--work_dir={work_dir}: exists and is not a directory")
    # Parse both protocols before anything is written: a bad flag costs nothing.
    search, search_argv = protocol.search_config(search_args, dataset, data_dir)
    retrain, retrain_argv = protocol.retrain_config(
        retrain_args, dataset, data_dir, retrain_layers, retrain_channels, retrain_epochs,
        retrain_batch_size, retrain_seed)
    layout = Layout(work_dir, tag)
    if select_on == "heldout" or train_images is not None:
        split = slices.make_data_dir(os.path.join(layout.root, "data"), dataset, data_dir,
                                     train_images, heldout_size if select_on == "heldout" else None)
        search = protocol.with_run(search, dataset=split, data_dir=None)
        retrain = protocol.with_run(retrain, dataset=split, data_dir=None)
    kwargs = {"runner": runner} if runner else {}
    bench = Benchmark(layout, search, search_argv, retrain, retrain_argv, range(search_seeds),
                      random, random_seed, named, retrain_cells=select_on != "search_val",
                      log=log, **kwargs)
    bench.execute(jobs)
    score = SELECT_ON[select_on]
    rows = summary.collect_rows(layout, bench.runs, bench.search_seeds, score)
    result = {**summary.summarize(rows, score), "select_on": select_on, "tag": tag,
              "work_dir": layout.root}
    atomic_write_json(layout.results_path(), {"rows": rows, "summary": result})
    log(summary.format_table(rows, "held-out acc" if select_on == "heldout" else "test acc"))
    log(json.dumps(result, sort_keys=True))
    return rows, result
