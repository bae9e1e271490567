"""Measured latency: single-image latency of candidate ops (the table behind --cost=latency) and
of derived networks, with Keras/TensorFlow on this machine's CPU.

A LatencyTable is JSON: {"device", "backend", "entries": [{"op", "channels", "height", "width",
"stride", "ms"}]}, one entry per (op, C, H, W, stride) the supernet has. Each op is timed as the
derived network builds it (affine BN, pools without BN), batch 1, inside a `tf.function`, after
warm-up calls; the figure is the fastest call (see `_best_ms`). `none` costs 0 and is never measured. LiteRT latency of a
whole exported model is `benchmarks/latency.py`'s (the export helper's) business.
"""

import json
import os
import platform
import time

import numpy as np

from keras_darts.cost.supernet_cost import edge_inputs, search_cells
from keras_darts.cost.ops_cost import strided
from keras_darts.errors import UserError
from keras_darts.genotype import PRIMITIVES


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _edge_keys(reduction, channels, size, steps):
    """(edge row, op, key) of every non-`none` op on every edge of one cell."""
    out_size = tuple(strided(s, 2) for s in size) if reduction else tuple(size)
    for e, j in enumerate(edge_inputs(steps)):
        stride = 2 if reduction and j < 2 else 1
        h, w = size if j < 2 else out_size
        for k, name in enumerate(PRIMITIVES):
            if name != "none":
                yield e, k, (name, int(channels), int(h), int(w), stride)


class LatencyTable:
    """ms per (op, channels, height, width, stride)."""

    def __init__(self, entries, device=None, backend="keras-cpu", source=None):
        self.ms = {tuple(k): float(v) for k, v in entries.items()}
        self.device = device or cpu_name()
        self.backend = backend
        self.source = source

    @classmethod
    def load(cls, path, flag="--latency_table"):
        try:
            with open(path) as f:
                record = json.load(f)
            entries = {(e["op"], int(e["channels"]), int(e["height"]), int(e["width"]),
                        int(e["stride"])): float(e["ms"]) for e in record["entries"]}
        except OSError as e:
            raise UserError(f"{flag}={path}: cannot read ({e.strerror})") from None
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{flag}={path}: not a latency table (expected {{'entries': [{{'op', "
                            f"'channels', 'height', 'width', 'stride', 'ms'}}]}}; {e!r:.80})") from None
        return cls(entries, record.get("device"), record.get("backend", "unknown"), source=path)

    def to_dict(self):
        return {"device": self.device, "backend": self.backend,
                "entries": [{"op": op, "channels": c, "height": h, "width": w, "stride": s, "ms": ms}
                            for (op, c, h, w, s), ms in sorted(self.ms.items())]}

    def save(self, path):
        from keras_darts.io_utils import atomic_write_json

        atomic_write_json(path, self.to_dict())

    def cell_table(self, reduction, channels, size, steps):
        """(edges, len(PRIMITIVES)) ms of each op on each edge of one cell."""
        table = np.zeros((len(edge_inputs(steps)), len(PRIMITIVES)))
        for e, k, key in _edge_keys(reduction, channels, size, steps):
            if key not in self.ms:
                where = f"--latency_table={self.source}" if self.source else "latency table"
                raise UserError(f"{where}: no entry for op {key[0]} at {key[1]} channels, "
                                f"{key[2]}x{key[3]}, stride {key[4]} (measure it with "
                                "benchmarks/latency_ops.py at this search's size)")
            table[e, k] = self.ms[key]
        return table


def required_entries(layers, init_channels, image_size, steps=4):
    """The (op, C, H, W, stride) keys a supernet's latency table needs."""
    return sorted({key for reduction, c, size in search_cells(layers, init_channels, image_size)
                   for _, _, key in _edge_keys(reduction, c, size, steps)})


def _best_ms(fn, x, runs, warmup):
    """The fastest of `runs` calls, in ms: on a shared machine other processes only ever add
    time, so the minimum is the stablest estimate of the op's own latency (the median of 20 calls
    at load 10 on 2 cores put sep_conv_3x3 above sep_conv_5x5)."""
    for _ in range(warmup):
        np.asarray(fn(x))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        np.asarray(fn(x))
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.min(times))


def measure_op_latency(name, channels, height, width, stride, runs=20, warmup=3):
    """Single-image ms (best of `runs`) of one candidate op, as a derived network builds it."""
    import tensorflow as tf

    from keras_darts.ops import make_op

    op = make_op(name, channels, stride, affine=True, search=False)
    op.build((1, height, width, channels))
    fn = tf.function(lambda x: op(x, training=False))
    return _best_ms(fn, tf.random.normal((1, height, width, channels)), runs, warmup)


def measure_table(entries, runs=20, warmup=3, log=None):
    """A LatencyTable for the given (op, C, H, W, stride) keys."""
    ms = {}
    for key in entries:
        ms[key] = measure_op_latency(*key, runs=runs, warmup=warmup)
        if log:
            log(f"{key[0]:>14} C={key[1]:<4} {key[2]}x{key[3]} stride {key[4]}: {ms[key]:.3f} ms")
    return LatencyTable(ms)


def measure_model_latency(model, image_shape, runs=20, warmup=3):
    """Single-image inference ms (best of `runs`) of a Keras model (training=False)."""
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False))
    return _best_ms(fn, tf.random.normal((1, *image_shape)), runs, warmup)


def latency_source():
    """What the figures mean (for reports)."""
    return f"Keras/TF {_tf_version()} on {cpu_name()}, batch 1, best of N; {os.cpu_count()} cores"


def _tf_version():
    import tensorflow as tf

    return tf.__version__
