"""The latency table behind --cost=latency (pure; `keras_darts.latency` measures it).

A LatencyTable is JSON: {"device", "backend", "entries": [{"op", "channels", "height", "width",
"stride", "ms"}]}, one entry per (op, C, H, W, stride) the supernet has. Each op is timed as the
derived network builds it (affine BN, pools without BN), batch 1, inside a `tf.function`, after
warm-up calls; the figure is the fastest call. `none` costs 0 and is never measured.
"""

import json
import platform

import numpy as np

from keras_darts.cost.ops_cost import strided
from keras_darts.cost.supernet_cost import edge_inputs, search_cells
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
