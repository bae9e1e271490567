"""The benchmark's results: one row per cell read back from the runs' files, the table, the JSON.

Pure functions of the work dir's files (metrics.json, history.jsonl, timing records), so the figures
can be recomputed at any time from what is on disk.
"""

import json
import math
import os

import numpy as np

from keras_darts.io_utils import read_jsonl


def read_json(path):
    """The JSON object in `path`, or None when it is missing or unreadable (a run not finished)."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_minutes(timing_path, fallback_s=None):
    """Wall minutes of a run's subprocesses (summed over resumed launches), else `fallback_s`/60."""
    timing = read_json(timing_path)
    if timing and isinstance(timing.get("wall_s"), (int, float)):
        return timing["wall_s"] / 60
    return None if fallback_s is None else fallback_s / 60


def search_figures(search_dir, timing_path):
    """(final search-val accuracy, search minutes) of a search dir from its history.jsonl."""
    try:
        history = read_jsonl(os.path.join(search_dir, "history.jsonl"))
    except (OSError, ValueError):
        history = []
    val = history[-1].get("val_accuracy") if history else None
    epoch_s = sum(r.get("epoch_time_s", 0.0) for r in history) if history else None
    return val, read_minutes(timing_path, epoch_s)


def cell_row(run, layout):
    """A table row for one planned retrain `run` (see runs.plan_retrains)."""
    metrics = read_json(os.path.join(layout.retrain_dir(run.name), "metrics.json")) or {}
    row = {"cell": run.label, "kind": run.kind, "test_accuracy": metrics.get("test_accuracy"),
           "parameters": metrics.get("parameters"),
           "retrain_minutes": read_minutes(layout.timing_path(f"retrain_{run.name}"),
                                           metrics.get("wall_time_s")),
           "search_minutes": None, "search_val_accuracy": None}
    if run.kind == "searched":
        row["search_val_accuracy"], row["search_minutes"] = search_figures(
            layout.search_dir(run.seed), layout.timing_path(f"search_{layout.search_id(run.seed)}"))
    return row


def search_row(seed, layout):
    """A row for a search alone (`--select_on=search_val`: no retrain, no test figure)."""
    val, minutes = search_figures(layout.search_dir(seed),
                                  layout.timing_path(f"search_{layout.search_id(seed)}"))
    return {"cell": layout.search_label(seed), "kind": "searched", "test_accuracy": None,
            "parameters": None, "retrain_minutes": None, "search_minutes": minutes,
            "search_val_accuracy": val}


def spread(values):
    """n, mean, median, best (max), min, max and sample sd (n - 1; None for one value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "best": float(v.max()), "min": float(v.min()), "max": float(v.max()),
            "sd": float(v.std(ddof=1)) if v.size > 1 else None}


def summarize(rows, score="test_accuracy"):
    """The JSON summary: searched cells' mean, random cells' mean/median/best/spread, named cells.

    `verdict` compares the searched mean with the random cells' [min, max] (>= 2 of them): inside
    it is a tie (issue 15: differences within the random spread are not a win).
    """
    def scores(kind):
        return [r[score] for r in rows if r["kind"] == kind and r[score] is not None]

    searched, random = spread(scores("searched")), spread(scores("random"))
    out = {"score": score, "searched": {**searched, "values": scores("searched")},
           "random": {**random, "values": scores("random")},
           "named": {r["cell"]: r[score] for r in rows if r["kind"] == "named"},
           "missing": [r["cell"] for r in rows if r[score] is None]}
    if searched["n"] and random["n"]:
        mean = searched["mean"]
        out["searched_minus_random_median"] = mean - random["median"]
        if random["n"] >= 2:  # one random cell has no spread to be a tie within
            out["verdict"] = ("above" if mean > random["max"] else
                              "below" if mean < random["min"] else "within") + " random spread"
    return out


def _fmt(value, kind):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "int":
        return f"{int(value):,}"
    return f"{value:.1f}"


COLUMNS = (("cell", "cell", None), ("test acc", "test_accuracy", "pct"),
           ("search-val acc", "search_val_accuracy", "pct"), ("params", "parameters", "int"),
           ("search min", "search_minutes", "min"), ("retrain min", "retrain_minutes", "min"))


def format_table(rows, test_label="test acc"):
    """A Markdown table (pastes into BUILD_NOTES.md as it is); `test_label` names the score column
    (with --select_on=heldout it is the held-out accuracy)."""
    cells = [[r["cell"] if key == "cell" else _fmt(r[key], kind) for _, key, kind in COLUMNS]
             for r in rows]
    head = [test_label if key == "test_accuracy" else name for name, key, _ in COLUMNS]
    widths = [max(len(x) for x in col) for col in zip(head, *cells)]
    line = lambda xs: "| " + " | ".join(x.ljust(w) for x, w in zip(xs, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(c) for c in cells])


def collect_rows(layout, runs, search_seeds, score):
    """One row per retrained cell, or per search when scoring on search-val (no retrains)."""
    if score == "search_val_accuracy":
        return [search_row(seed, layout) for seed in search_seeds]
    return [cell_row(run, layout) for run in runs]
