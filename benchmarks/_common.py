"""Shared pieces of the step benchmarks: memory stages, timing, the machine's description."""

import os
import resource
import time

from absl import flags

from keras_darts import onednn_enabled


def define_step_flags():
    """The flags both step benchmarks share (how long to time, where and how the step runs)."""
    d = flags
    return {
        "image_size": d.DEFINE_integer("image_size", 32, "Square image size."),
        "steps": d.DEFINE_integer("steps", 5, "Timed steps."),
        "warmup": d.DEFINE_integer("warmup", 2, "Untimed steps first (include tracing)."),
        "strategy": d.DEFINE_string("strategy", "one_device",
                                    "auto|one_device|mirrored|multi_worker."),
        "cpu_devices": d.DEFINE_integer("cpu_devices", 1, "Logical CPU devices (replicas on CPU)."),
        "mixed_precision": d.DEFINE_string("mixed_precision", "none", "none|bfloat16|float16."),
        "jit_compile": d.DEFINE_bool("jit_compile", False, "XLA-compile forward/backward."),
        "recompute": d.DEFINE_bool("recompute", False,
                                   "Recompute cell activations in the backward pass."),
        "intra_op_threads": d.DEFINE_integer("intra_op_threads", None, "Threads per op (default: "
                                             "keras-darts' choice; 0: TensorFlow's)."),
        "inter_op_threads": d.DEFINE_integer("inter_op_threads", 0, "Ops side by side (0: "
                                             "TensorFlow's default)."),
        "memory_profile": d.DEFINE_bool("memory_profile", False, "Print time and RSS per stage "
                                        "as they happen (they are in the JSON line either way)."),
    }


def rss_mb():
    """Current resident set size of this process (MiB), from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stages:
    """Records (stage, seconds since the previous stage, RSS, peak RSS) as a run goes on."""

    def __init__(self, verbose):
        self.verbose = verbose
        self.rows = []
        self._t = time.perf_counter()

    def mark(self, stage):
        now = time.perf_counter()
        row = {"stage": stage, "s": round(now - self._t, 1), "rss_mb": round(rss_mb(), 1),
               "peak_rss_mb": round(peak_rss_mb(), 1)}
        self._t = now
        self.rows.append(row)
        if self.verbose:
            print(f"{stage:34s} {row['s']:8.1f} s  rss {row['rss_mb']:9.1f} MiB  "
                  f"peak {row['peak_rss_mb']:9.1f} MiB", flush=True)


def time_steps(step_fn, batch, warmup, steps, wait):
    """(warm-up seconds, [seconds per timed step]); `wait(logs)` blocks until a step is done."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        wait(step_fn(batch))
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        wait(step_fn(batch))
        times.append(time.perf_counter() - t)
    return warmup_s, times


def tf_threads():
    """TensorFlow's thread pools as configured (0: its default, one thread per core)."""
    import tensorflow as tf

    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


def machine():
    """CPU model, whether it has AVX-512 / AVX-512 BF16, the load average, oneDNN on or off."""
    flags, model = set(), None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if model is None and line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"cpu": model, "cpus": os.cpu_count(), "avx512f": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "load_avg_1m": round(os.getloadavg()[0], 2),
            "onednn": onednn_enabled()}
