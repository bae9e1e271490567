#!/usr/bin/env python3
"""Times the reference implementation's search step, for the ratios of issue 13.

  python benchmarks/reference_step.py --darts_dir=/path/to/darts/cnn --layers=8 --init_channels=16 \
      --batch_size=64 --steps=3 --warmup=1 [--unrolled]

Runs the official DARTS code (https://github.com/quark0/darts, `cnn/`) on PyTorch's CPU kernels,
one search iteration as its `train_search.py` does it: `Architect.step` on a val batch (first order,
or unrolled), then the weight step on a train batch (SGD, momentum 0.9, weight decay 3e-4, clip 5),
on random data, with `--threads` intra-op threads. The reference is imported as it is; its `.cuda()`
calls are made no-ops (`train_search.py` itself does not import on Python 3: `cuda(async=True)`).
The last line printed is one JSON object with the fields of `search_step.py` it has
(ms_per_step_median/min, images_per_s, peak_rss_mb, warmup_s, machine, config).

Needs torch, numpy and absl-py, not in requirements.txt (a venv of their own is best: this is a
measurement of somebody else's code, not part of keras-darts).
"""

import json
import os
import statistics
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from _common import machine, peak_rss_mb, time_steps  # noqa: E402

_DARTS_DIR = flags.DEFINE_string("darts_dir", None, "The reference's cnn/ directory.")
_LAYERS = flags.DEFINE_integer("layers", 8, "Cells.")
_CHANNELS = flags.DEFINE_integer("init_channels", 16, "Initial channels.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_IMAGE = flags.DEFINE_integer("image_size", 32, "Square image size.")
_UNROLLED = flags.DEFINE_bool("unrolled", False, "Second-order architecture gradient.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps first.")
_THREADS = flags.DEFINE_integer("threads", 2, "torch.set_num_threads.")
flags.mark_flag_as_required("darts_dir")


def main(argv):
    del argv
    if not os.path.isfile(os.path.join(_DARTS_DIR.value, "model_search.py")):
        raise app.UsageError(f"--darts_dir={_DARTS_DIR.value}: no model_search.py there (give the "
                             "reference's cnn/ directory)")
    import torch
    from torch import nn

    torch.set_num_threads(_THREADS.value)
    torch.manual_seed(0)
    torch.Tensor.cuda = lambda self, *a, **k: self  # CPU: the reference calls .cuda() throughout
    nn.Module.cuda = lambda self, *a, **k: self
    sys.path.insert(0, _DARTS_DIR.value)
    from architect import Architect
    from model_search import Network

    criterion = nn.CrossEntropyLoss()
    model = Network(_CHANNELS.value, 10, _LAYERS.value, criterion)
    optimizer = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    args = types.SimpleNamespace(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4,
                                 arch_weight_decay=1e-3)
    architect = Architect(model, args)
    shape = (_BATCH.value, 3, _IMAGE.value, _IMAGE.value)
    x_train, x_val = torch.randn(shape), torch.randn(shape)
    y_train = torch.randint(0, 10, (_BATCH.value,))
    y_val = torch.randint(0, 10, (_BATCH.value,))

    def step(_):  # train_search.py's train() loop body
        model.train()
        architect.step(x_train, y_train, x_val, y_val, 0.025, optimizer, unrolled=_UNROLLED.value)
        optimizer.zero_grad()
        loss = criterion(model(x_train), y_train)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        return loss

    load_before = machine()["load_avg_1m"]
    warmup_s, times = time_steps(step, None, _WARMUP.value, _STEPS.value, lambda loss: loss.item())
    ms = [t * 1e3 for t in times]
    median = statistics.median(ms)
    print(json.dumps({
        "implementation": "quark0/darts cnn/ (PyTorch CPU)",
        "ms_per_step_median": round(median, 1), "ms_per_step_min": round(min(ms), 1),
        "images_per_s": round(1e3 * _BATCH.value / median, 2), "warmup_s": round(warmup_s, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "config": {"layers": _LAYERS.value, "init_channels": _CHANNELS.value,
                   "batch_size": _BATCH.value, "image_size": _IMAGE.value,
                   "unrolled": _UNROLLED.value, "threads": _THREADS.value,
                   "steps": _STEPS.value, "warmup": _WARMUP.value},
        "torch": torch.__version__,
        "machine": machine() | {"load_avg_1m_at_start": load_before},
    }))


if __name__ == "__main__":
    app.run(main)
