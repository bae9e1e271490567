"""Reading and checking a search's `history.jsonl`, and the per-epoch signals drawn from it."""

import json
import os

import numpy as np

from keras_darts.errors import UserError
from keras_darts.genotype import PARAMETER_FREE_OPS, PRIMITIVES, count_ops, genotype_from_dict, num_edges


_HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                 "alphas_normal", "alphas_reduce", "genotype")


def _number(record, key):
    v = record[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{key} must be a number, got {v!r:.40}")
    return float(v)


def _check_alpha_shape(name, a, n_ops):
    """Returns the number of intermediate nodes an (edges, ops) alpha matrix implies."""
    steps = 1
    while a.ndim == 2 and num_edges(steps) < a.shape[0]:
        steps += 1
    if a.ndim != 2 or a.shape != (num_edges(steps), n_ops):
        raise ValueError(f"{name} has shape {a.shape}; expected (edges, {n_ops}) with edges = 2, "
                         f"5, 9, 14, ... (14 for 4 nodes)")
    return steps


def _alphas(record, key, n_ops):
    """(edges, ops) softmaxed weights and the number of intermediate nodes they imply."""
    try:
        a = np.asarray(record[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{key} is not a rectangular list of numbers") from None
    steps = _check_alpha_shape(key, a, n_ops)
    if not np.all(np.isfinite(a)) or a.min() < 0 or not np.allclose(a.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(f"{key} rows are not softmax weights (non-negative, summing to 1)")
    return a, steps


def _check_record(record):
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    missing = [k for k in _HISTORY_KEYS if k not in record]
    if missing:
        raise ValueError(f"missing key(s): {', '.join(missing)}")
    epoch = record["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise ValueError(f"epoch must be an integer, got {epoch!r:.40}")
    primitives = tuple(record.get("primitives", PRIMITIVES))
    if not primitives or not all(isinstance(p, str) for p in primitives):
        raise ValueError("primitives must be a list of op names")
    normal, steps = _alphas(record, "alphas_normal", len(primitives))
    reduce, steps_reduce = _alphas(record, "alphas_reduce", len(primitives))
    if steps != steps_reduce:
        raise ValueError(f"alphas_normal has {normal.shape[0]} edges but alphas_reduce has "
                         f"{reduce.shape[0]}")
    try:
        genotype = genotype_from_dict(record["genotype"])
    except ValueError as e:
        raise ValueError(f"genotype: {e}") from None
    if genotype.steps != steps:
        raise ValueError(f"genotype has {genotype.steps} nodes but the alphas have {steps}")
    out = {k: _number(record, k)
           for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")}
    out.update(epoch=epoch, primitives=primitives, alphas_normal=normal, alphas_reduce=reduce,
               genotype=genotype, steps=steps)
    return out


def load_history(path):
    """Reads and checks a search `history.jsonl`; returns one dict per epoch with numpy alphas.

    Raises:
      UserError: one line naming the file (and line) and what is wrong.
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: not found (bin/search writes it after each completed epoch)")
    records = []
    try:
        with open(path) as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = _check_record(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {lineno}: not valid JSON ({e.msg} at column {e.colno})"
                            ) from None
        except ValueError as e:
            raise UserError(f"{path}: line {lineno}: {e}") from None
        if records and (record["steps"], record["primitives"]) != (records[0]["steps"],
                                                                   records[0]["primitives"]):
            raise UserError(f"{path}: line {lineno}: alpha shape or primitives differ from line 1")
        records.append(record)
    if not records:
        raise UserError(f"{path}: empty, no completed epoch recorded yet")
    return records


def collapse_signal(genotypes):
    """Per genotype, the counts in its normal cell of skip_connect and of parameter-free ops.

    DARTS "collapses" when skip connections crowd out convolutions as search goes on; a rising count
    in the derived normal cell is the early sign (DARTS+ stops the search at 2 skips).
    """
    return {
        "skip_connect": [count_ops(g.normal, ("skip_connect",)) for g in genotypes],
        "parameter_free": [count_ops(g.normal, PARAMETER_FREE_OPS) for g in genotypes],
    }


def per_op_mean_weights(alphas, primitives=PRIMITIVES):
    """{op: mean softmaxed weight of that op over all edges} for (edges, ops) weights."""
    a = np.asarray(alphas, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != len(primitives):
        raise ValueError(f"alphas has shape {a.shape}, expected (edges, {len(primitives)})")
    return {op: float(w) for op, w in zip(primitives, a.mean(axis=0))}
