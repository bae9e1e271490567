#!/usr/bin/env python3
"""Times the search input pipeline alone: the (search-train, search-val) batches bin/search feeds
its step, from a real dataset, with nothing consuming them.

  python benchmarks/search_input.py --dataset=../shared/data/cifar10 --batch_size=64 --batches=100

If a batch takes far less than a step (benchmarks/search_step.py at the same batch size), the
pipeline, which bin/search prefetches (tf.data AUTOTUNE), never makes the step wait: the step's
time per iteration in a capped `bin/search` epoch then equals the benchmark's. The last line
printed is one JSON object: ms_per_batch_median/max, the first batch's latency, peak RSS, machine.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import flags  # noqa: E402

from _common import machine, peak_rss_mb  # noqa: E402
from keras_darts.errors import quiet_import, run  # noqa: E402

_DATASET = flags.DEFINE_string("dataset", "cifar10", "As bin/search --dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "As bin/search --data_dir.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_BATCHES = flags.DEFINE_integer("batches", 100, "Batches timed after the first.")
_AUGMENT = flags.DEFINE_string("augment", "auto", "As bin/search --augment.")


def main(argv):
    del argv
    np = quiet_import("numpy")
    search_loop = quiet_import("keras_darts.search_loop")
    data_lib = quiet_import("keras_darts.data")
    data = data_lib.load_image_data(_DATASET.value, _DATA_DIR.value)
    # The smallest supernet: the dataset does not depend on the model.
    config = search_loop.SearchConfig(
        dataset=_DATASET.value, output_dir="unused", layers=3, init_channels=2, nodes=1,
        batch_size=_BATCH.value, epochs=1, steps_per_epoch=_BATCHES.value + 1,
        augment=_AUGMENT.value, strategy="one_device")
    config.validate()
    search = search_loop.SearchRun(config, data)
    t = time.perf_counter()
    it = iter(search.epoch_dataset(0, 0))
    next(it)
    first_s = time.perf_counter() - t
    times = []
    for _ in range(_BATCHES.value):
        t = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    print(json.dumps({
        "ms_per_batch_median": round(float(np.median(ms)), 2),
        "ms_per_batch_max": round(float(ms.max()), 2),
        "first_batch_s": round(first_s, 2),
        "batches": _BATCHES.value, "batch_size": _BATCH.value, "augment": _AUGMENT.value,
        "dataset": _DATASET.value, "train_images": int(len(search.train_idx)),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "machine": machine(),
    }))


if __name__ == "__main__":
    run(main)
