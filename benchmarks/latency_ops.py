#!/usr/bin/env python3
"""Measures the per-op latency table behind `bin/search --cost=latency`.

  python benchmarks/latency_ops.py --layers=8 --init_channels=16 --image_size=32 \
      --output=/tmp/latency_table.json
  bin/search ... --cost=latency --cost_penalty=0.1 --latency_table=/tmp/latency_table.json

Every non-`none` candidate op at every (channels, size, stride) the supernet has, built as a
derived network builds it, timed at batch 1 with Keras/TF on this CPU (fastest of --runs after
--warmup calls). Prints one line per op and, last, one JSON object (the table's summary).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from keras_darts.errors import quiet_import, run  # noqa: E402

_LAYERS = flags.DEFINE_integer("layers", 8, "Cells of the supernet.")
_CHANNELS = flags.DEFINE_integer("init_channels", 16, "Initial channels.")
_NODES = flags.DEFINE_integer("nodes", 4, "Intermediate nodes per cell.")
_IMAGE = flags.DEFINE_integer("image_size", 32, "Square input size.")
_RUNS = flags.DEFINE_integer("runs", 20, "Timed calls per op.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls first (include tracing).")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the table (JSON).")


def main(argv):
    latency = quiet_import("keras_darts.latency")
    from keras_darts.cost.latency_table import required_entries

    entries = required_entries(_LAYERS.value, _CHANNELS.value, (_IMAGE.value,) * 2,
                                       _NODES.value)
    t0 = time.time()
    table = latency.measure_table(entries, _RUNS.value, _WARMUP.value, log=print)
    if _OUTPUT.value:
        table.save(_OUTPUT.value)
    by_op = {}
    for (op, *_), ms in table.ms.items():
        by_op[op] = by_op.get(op, 0.0) + ms
    print(json.dumps({"entries": len(table.ms), "ms_sum_by_op": by_op, "device": table.device,
                      "source": latency.latency_source(), "output": _OUTPUT.value,
                      "wall_s": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    run(main)
