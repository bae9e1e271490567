#!/usr/bin/env python3
"""Search vs random (issue 15): does the search find a better cell than chance, at this budget?

Runs --search_seeds searches (bin/search, seeds 0..N-1) and retrains each searched cell, --random
cells drawn uniformly from the same space (keras_darts.random_cells; cell i from seed
(--random_seed, i)) and the --named published cells, all under one retrain protocol (bin/retrain),
scored on the full test split. Prints a table (cell, accuracy, parameters, search and retrain
minutes) and, last, one JSON line: the searched cells' mean and the random cells' mean, median,
best, min, max and sample sd (n-1), plus the verdict (searched mean above / within / below the
random cells' [min, max]; within = a tie).

  python benchmarks/search_vs_random.py --work_dir=/tmp/svr --dataset=../shared/data/cifar10 \\
      --train_images=10000 --search_seeds=2 --random=5 --named=DARTS_V2 \\
      --search_args="--layers=5 --init_channels=8 --batch_size=32 --epochs=10" \\
      --retrain_layers=8 --retrain_channels=16 --retrain_epochs=10 --retrain_batch_size=96 \\
      --retrain_args="--noauxiliary --drop_path_prob=0.2"

--search_args and --retrain_args are handed to bin/search and bin/retrain as they are (any flag
of those tools, present or future); the benchmark sets dataset, output dir, seed (and for retrain
the protocol flags above and the genotype) itself and refuses them there.

--select_on chooses what is scored, so settings can be compared without the test split:
  test        every cell retrained and scored on the test split (the final figure; score once);
  search_val  searches only: each search's final search-val accuracy (history.jsonl), no retrain;
  heldout     the last --heldout_size training images are held out (written once as
              WORK_DIR/data/{train,test}.npz); searches and retrains train on the rest and
              every cell is scored on the held-out part. The test split is never read.
              (Its runs see other data: give heldout and test runs separate work dirs.)
--train_images=N uses the first N training images only (e.g. the issue's 10,000 of CIFAR-10;
with heldout, the held-out part is the last --heldout_size of those), written once to
WORK_DIR/data/ with the full test split.

--jobs=N runs N searches/retrains at a time (each a process that takes every core it can get).
On a 2-core CPU two at a time finish the set sooner; the minutes in the table are then those of
a shared machine (the budget a user pays for the pair), and the searched cells' retrains come
after the random and named ones, so they rarely wait for their search.

Resumable: rerun the same command. A search is finished when its config.json matches this
command's search config and history.jsonl has all epochs (and genotype.json is valid); a retrain
when its config.json matches (genotype compared by content) and metrics.json exists. Unfinished
runs are relaunched and resume from their checkpoints. A run dir holding another configuration
stops the benchmark before anything is launched. To compare search settings, give each its own
--tag in one work dir: the random and named cells are retrained once and shared. Work dir:

  WORK_DIR/
    search/seed_<s>/           bin/search output (config.json, history.jsonl, genotype.json, ...);
                               search/<tag>_seed_<s>/ with --tag (and retrain/search_<tag>_seed_<s>/)
    cells/random_<i>.json      the random genotypes
    retrain/search_seed_<s>/   bin/retrain output for each cell (config.json, metrics.json, ...)
    retrain/random_<i>/
    retrain/named_<NAME>/
    logs/<run>.log             each subprocess's stdout and stderr (appended over launches)
    logs/<run>.time.json       wall seconds of its launches (the table's minutes)
    data/                      with --train_images or --select_on=heldout: the data all runs use
    results.json               rows and summary of the last invocation
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from keras_darts.errors import run  # noqa: E402

_WORK_DIR = flags.DEFINE_string("work_dir", None, "Where every run, log and result goes. Rerun "
                                "with the same dir to resume.")
_DATASET = flags.DEFINE_string("dataset", "cifar10", "Any --dataset of bin/search (tfds name, "
                               ".npz, dir with train.npz/test.npz, class folders).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tensorflow_datasets data directory.")
_SEARCH_SEEDS = flags.DEFINE_integer("search_seeds", 2, "Searches to run (seeds 0..N-1).")
_SEARCH_ARGS = flags.DEFINE_string("search_args", "", "Flags for bin/search, as one string.")
_RANDOM = flags.DEFINE_integer("random", 5, "Random cells to draw and retrain.")
_RANDOM_SEED = flags.DEFINE_integer("random_seed", 0, "Base seed of the random cells.")
_NAMED = flags.DEFINE_list("named", [], "Published cells to retrain too, e.g. DARTS_V2.")
_LAYERS = flags.DEFINE_integer("retrain_layers", 8, "Retrain protocol: cells.")
_CHANNELS = flags.DEFINE_integer("retrain_channels", 16, "Retrain protocol: initial channels.")
_EPOCHS = flags.DEFINE_integer("retrain_epochs", 10, "Retrain protocol: epochs.")
_BATCH = flags.DEFINE_integer("retrain_batch_size", 96, "Retrain protocol: batch size.")
_SEED = flags.DEFINE_integer("retrain_seed", 0, "Retrain protocol: seed (the same for every cell).")
_RETRAIN_ARGS = flags.DEFINE_string("retrain_args", "", "More flags for bin/retrain, as one "
                                    "string (e.g. \"--noauxiliary --drop_path_prob=0.2\").")
_SELECT_ON = flags.DEFINE_enum("select_on", "test", ["test", "search_val", "heldout"],
                               "What is scored (see the docstring).")
_TAG = flags.DEFINE_string("tag", "", "Names the search setting: settings with different tags "
                           "share one work dir and its random/named retrains.")
_TRAIN_IMAGES = flags.DEFINE_integer("train_images", None, "Use only the first N training images "
                                     "(written once to WORK_DIR/data/).")
_HELDOUT = flags.DEFINE_integer("heldout_size", 5000, "With --select_on=heldout: training images "
                                "held out for scoring.")
_JOBS = flags.DEFINE_integer("jobs", 1, "Runs at a time. Each takes every core it can get; on a "
                             "2-core CPU two at a time finish the set sooner, but every run's "
                             "minutes then count a shared machine.")


def main(argv):
    from keras_darts.errors import UserError

    if len(argv) > 1:
        raise UserError(f"unexpected argument {argv[1]!r}")
    from keras_darts import search_vs_random

    search_vs_random.run(
        work_dir=_WORK_DIR.value, dataset=_DATASET.value, data_dir=_DATA_DIR.value,
        search_seeds=_SEARCH_SEEDS.value, search_args=_SEARCH_ARGS.value, random=_RANDOM.value,
        random_seed=_RANDOM_SEED.value, named=_NAMED.value, retrain_layers=_LAYERS.value,
        retrain_channels=_CHANNELS.value, retrain_epochs=_EPOCHS.value,
        retrain_batch_size=_BATCH.value, retrain_seed=_SEED.value,
        retrain_args=_RETRAIN_ARGS.value, select_on=_SELECT_ON.value,
        heldout_size=_HELDOUT.value, tag=_TAG.value, train_images=_TRAIN_IMAGES.value,
        jobs=_JOBS.value, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
    flags.mark_flags_as_required(["work_dir"])
    run(main)
