#!/usr/bin/env python3
"""Does each collapse guard change what a CPU-sized search finds? Plain DARTS against each guard.

  python benchmarks/collapse.py --work_dir=/tmp/collapse --epochs=10 --train_images=2000
      [--variants=plain,beta_decay,aux_skip,pc_darts] [--retrain_epochs=5]
      [--search_flags=--image_size=16,--arch_learning_rate=3e-3] [--noperturbation]

Runs `bin/search` once per search variant (5 cells, C=8, a slice of ../shared/data/cifar10 by
default; --search_flags go to every search) in WORK_DIR/<variant> (rerun to resume). The plain run
tracks the Hessian eigenvalue. Guards that need no other search are computed from the plain run:
max_skip2 (P-DARTS) re-derives its final alphas, early_stop_skip2 (DARTS+) takes the genotype of
the first epoch whose normal cell has 2 skips, early_stop_hessian (RobustDARTS) the genotype of
the epoch the eigenvalue rule would have stopped at (the final one if it never fires), and
perturbation (DARTS-PT) re-selects from the plain run's final checkpoint.
Per variant: parameter-free ops in the final normal cell, skip count per epoch, the genotype's
parameter count (CIFAR network, 20 cells, C=36, as the paper evaluates) and, with
--retrain_epochs, a short retrain's test accuracy (layers/channels of the search). The last line
printed is one JSON object.
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from keras_darts.errors import run  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Search variants: extra bin/search flags.
SEARCH_VARIANTS = {
    "plain": [],
    "beta_decay": ["--beta_decay=50"],
    "aux_skip": ["--aux_skip"],
    "pc_darts": ["--partial_channels=4"],
}
DERIVED_VARIANTS = ("max_skip2", "early_stop_skip2", "early_stop_hessian", "perturbation")

_WORK = flags.DEFINE_string("work_dir", None, "Run directories go here (resumable).")
_DATA = flags.DEFINE_string("data", os.path.join(ROOT, "..", "shared", "data", "cifar10"),
                            "Directory with train.npz/test.npz.")
_TRAIN = flags.DEFINE_integer("train_images", 2000, "First N training images (search splits them).")
_TEST = flags.DEFINE_integer("test_images", 1000, "First N test images (retrain only).")
_EPOCHS = flags.DEFINE_integer("epochs", 10, "Search epochs.")
_LAYERS = flags.DEFINE_integer("layers", 5, "Search cells.")
_CHANNELS = flags.DEFINE_integer("init_channels", 8, "Search channels.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_STEPS = flags.DEFINE_integer("steps_per_epoch", None, "Cap on steps per epoch.")
_VARIANTS = flags.DEFINE_list("variants", list(SEARCH_VARIANTS), "Search variants to run.")
_RETRAIN = flags.DEFINE_integer("retrain_epochs", 0, "Short retrain of each genotype (0: off).")
_SEARCH_FLAGS = flags.DEFINE_list("search_flags", [], "Extra bin/search flags for every search.")
_PERTURB = flags.DEFINE_bool("perturbation", True, "Also re-select the plain run with DARTS-PT.")
_FINETUNE = flags.DEFINE_integer("selection_finetune_epochs", 0,
                                 "DARTS-PT fine-tuning epochs between decisions (bin/search: 1).")


def skip_counts(history):
    """Skip connections in the normal cell per epoch (history.jsonl records)."""
    return [sum(op == "skip_connect" for op, _ in r["genotype"]["normal"]) for r in history]


def first_epoch_with_skips(history, n):
    """(1-based epoch, genotype dict) of the first epoch with >= n skips in the normal cell, or
    None: what --early_stop=skip:n would have kept."""
    for r, count in zip(history, skip_counts(history)):
        if count >= n:
            return r["epoch"], r["genotype"]
    return None


def derived_genotypes(history, max_skip=2):
    """{variant: genotype dict} of the derivation-only guards, from the plain run's history."""
    import numpy as np

    from keras_darts.genotype import derive_genotype

    last = history[-1]
    # history holds softmaxed alphas; log() gives alphas up to a per-row constant (same softmax).
    steps = len(last["genotype"]["normal"]) // 2
    out = {"max_skip2": derive_genotype(np.log(last["alphas_normal"]), np.log(last["alphas_reduce"]),
                                        steps, steps, max_skip=max_skip).to_dict()}
    stop = first_epoch_with_skips(history, 2)
    out["early_stop_skip2"] = stop[1] if stop else last["genotype"]
    stop = hessian_stop(history)
    if stop is not None:
        out["early_stop_hessian"] = stop[1]
    return out


def hessian_stop(history):
    """(1-based epoch, genotype dict) that --early_stop=hessian would have kept, from a run that
    tracked the eigenvalue: the RobustDARTS rule applied after each epoch as the loop applies it
    (never after the last); the last epoch's if it never fires. None without eigenvalues."""
    from keras_darts import hessian

    if not history or "hessian_eigenvalue" not in history[0]:
        return None
    evs = [r["hessian_eigenvalue"] for r in history]
    for end in range(1, len(evs)):  # after epoch `end` (1-based), not the last
        stop = hessian.stop_epoch(evs[:end])
        if stop is not None:
            return stop + 1, history[stop]["genotype"]
    return history[-1]["epoch"], history[-1]["genotype"]


def parameter_free(genotype, cell="normal"):
    from keras_darts.genotype import PARAMETER_FREE_OPS

    return sum(op in PARAMETER_FREE_OPS for op, _ in genotype[cell])


def genotype_parameters(genotype, layers=20, channels=36):
    """Weights of the derived CIFAR network (no auxiliary head), as the paper counts them."""
    from keras_darts.network import NetworkCIFAR, count_parameters

    model = NetworkCIFAR(genotype, 10, layers, channels, auxiliary=False)
    model.build((None, 32, 32, 3))
    return count_parameters(model)


def row(name, genotype, history=None, accuracy=None):
    return {"variant": name, "parameter_free_normal": parameter_free(genotype),
            "parameter_free_reduce": parameter_free(genotype, "reduce"),
            "skip_count_per_epoch": skip_counts(history) if history else None,
            "genotype_parameters": genotype_parameters(genotype), "retrain_accuracy": accuracy,
            "genotype": genotype}


def _read_history(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _slice_data(work):
    import numpy as np

    dest = os.path.join(work, "data")
    if not os.path.exists(os.path.join(dest, "test.npz")):
        os.makedirs(dest, exist_ok=True)
        for split, n in (("train", _TRAIN.value), ("test", _TEST.value)):
            with np.load(os.path.join(_DATA.value, f"{split}.npz")) as f:
                np.savez(os.path.join(dest, f"{split}.npz"), x=f["x"][:n], y=f["y"][:n])
    return dest


def _bin(tool, *args):
    if subprocess.run([sys.executable, os.path.join(ROOT, "bin", tool), *args]).returncode:
        raise SystemExit(f"bin/{tool} failed (its error is above): {' '.join(args)}")


def main(argv):
    del argv
    work = _WORK.value
    if not work:
        raise SystemExit("--work_dir is required")
    data = _slice_data(work)
    common = [f"--dataset={data}", f"--layers={_LAYERS.value}",
              f"--init_channels={_CHANNELS.value}", f"--batch_size={_BATCH.value}",
              f"--epochs={_EPOCHS.value}"] + (
        [f"--steps_per_epoch={_STEPS.value}"] if _STEPS.value else []) + _SEARCH_FLAGS.value
    results, histories = [], {}
    for name in _VARIANTS.value:
        out = os.path.join(work, name)
        extra = ["--track_hessian"] if name == "plain" else []
        _bin("search", f"--output_dir={out}", *common, *SEARCH_VARIANTS[name], *extra)
        histories[name] = _read_history(os.path.join(out, "history.jsonl"))
        results.append((name, histories[name][-1]["genotype"], histories[name]))
    if "plain" in histories:
        for name, g in derived_genotypes(histories["plain"]).items():
            results.append((name, g, None))
        if _PERTURB.value:
            out = os.path.join(work, "plain")
            path = os.path.join(out, "genotype_perturbation.json")
            if not os.path.exists(path):
                _bin("search", f"--output_dir={out}", *common, "--track_hessian",
                     "--selection=perturbation",
                     f"--selection_finetune_epochs={_FINETUNE.value}")
            with open(path) as f:
                results.append(("perturbation", json.load(f), None))
    rows = []
    for name, genotype, history in results:
        accuracy = None
        if _RETRAIN.value:
            path = os.path.join(work, f"{name}.genotype.json")
            with open(path, "w") as f:
                json.dump(genotype, f)
            out = os.path.join(work, f"retrain_{name}")
            _bin("retrain", f"--genotype={path}", f"--dataset={data}", f"--output_dir={out}",
                 f"--layers={_LAYERS.value}", f"--init_channels={_CHANNELS.value}",
                 f"--epochs={_RETRAIN.value}", "--noauxiliary")
            with open(os.path.join(out, "metrics.json")) as f:
                accuracy = json.load(f).get("test_accuracy")
        rows.append(row(name, genotype, history, accuracy))
    print(f"{'variant':18s} {'param-free n/r':>14s} {'params (20/36)':>15s} {'acc':>6s}  "
          "skips per epoch (normal cell)")
    for r in rows:
        acc = "-" if r["retrain_accuracy"] is None else f"{r['retrain_accuracy']:.3f}"
        free = f"{r['parameter_free_normal']}/{r['parameter_free_reduce']}"
        print(f"{r['variant']:18s} {free:>14s} {r['genotype_parameters']:15,d} "
              f"{acc:>6s}  {r['skip_count_per_epoch'] or '(derived from plain)'}")
    print(json.dumps({"rows": rows, "epochs": _EPOCHS.value, "train_images": _TRAIN.value,
                      "layers": _LAYERS.value, "init_channels": _CHANNELS.value}))


if __name__ == "__main__":
    run(main)
