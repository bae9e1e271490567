#!/usr/bin/env python3
"""Times full DARTS search steps (architecture step + weight step, as bin/search runs them).

  python benchmarks/search_step.py --layers=8 --init_channels=16 --batch_size=64 --steps=5

Random data, after `--warmup` steps (tracing and graph optimisation excluded). The last line printed
is one JSON object: ms_per_step_median/min, images_per_s (total and per replica), peak_rss_mb,
trace_s / first_step_s (the warm-up: tracing, then graph optimisation + the first run), the memory
stages (RSS after importing TF, building the model, tracing, the first step, the timed steps),
the machine (CPU, AVX-512, load average) and the config. `--memory_profile` also prints the stages
as they happen.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import flags  # noqa: E402

from _common import Stages, define_step_flags, machine, tf_threads, time_steps  # noqa: E402
from keras_darts.errors import quiet_import, run  # noqa: E402

STEP = define_step_flags()
_LAYERS = flags.DEFINE_integer("layers", 8, "Cells.")
_CHANNELS = flags.DEFINE_integer("init_channels", 16, "Initial channels.")
_NODES = flags.DEFINE_integer("nodes", 4, "Intermediate nodes per cell.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_UNROLLED = flags.DEFINE_bool("unrolled", False, "Second-order architecture gradient.")
_PARTIAL = flags.DEFINE_integer("partial_channels", 1, "PC-DARTS K (1: plain DARTS).")
_PROFILE_DIR = flags.DEFINE_string("profile_dir", None, "If set, profile one more step with "
                                   "tf.profiler into this dir (TensorBoard's Profile tab reads it) "
                                   "and print the time per TF op type.")
_TOP_OPS = 25


def op_time_by_type(profile_dir):
    """{op type: (total ms, count)} of the TF ops in the newest trace under `profile_dir`.

    Reads the XSpace protobuf the profiler writes; op events are named "node_name:OpType" (oneDNN
    kernels as "_MklNative<Op>"). Times are summed over threads, so they add up to more than the
    wall time of the step.
    """
    import collections
    import glob

    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(glob.glob(os.path.join(profile_dir, "**", "*.xplane.pb"), recursive=True),
                   key=os.path.getmtime)
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    total, count = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                node, sep, op = name.rpartition(":")
                # Skip the executor's own events ("ExecutorState::Process", "...::Run").
                if sep and node and "::" not in name and (op[:1].isupper() or op[:1] == "_"):
                    total[op] += event.duration_ps / 1e9
                    count[op] += 1
    return {op: (ms, count[op]) for op, ms in total.most_common()}


def main(argv):
    del argv
    stages = Stages(STEP["memory_profile"].value)
    np = quiet_import("numpy")
    tf = quiet_import("tensorflow")
    stages.mark("import tensorflow")
    search_loop = quiet_import("keras_darts.search_loop")
    data_lib = quiet_import("keras_darts.data")
    distribute = quiet_import("keras_darts.distribute")
    stages.mark("import keras_darts")
    load_before = machine()["load_avg_1m"]

    config = search_loop.SearchConfig(
        dataset="synthetic", output_dir="unused", layers=_LAYERS.value,
        init_channels=_CHANNELS.value, nodes=_NODES.value, batch_size=_BATCH.value, epochs=1,
        unrolled=_UNROLLED.value, strategy=STEP["strategy"].value, cpu_devices=STEP["cpu_devices"].value,
        mixed_precision=STEP["mixed_precision"].value, jit_compile=STEP["jit_compile"].value, recompute=STEP["recompute"].value,
        intra_op_threads=STEP["intra_op_threads"].value, inter_op_threads=STEP["inter_op_threads"].value,
        augment="none", partial_channels=_PARTIAL.value)
    config.validate()
    distribute.set_mixed_precision(config.mixed_precision)
    n = 2 * _BATCH.value
    data = data_lib.synthetic_image_data(n, 0, (STEP["image_size"].value, STEP["image_size"].value, 3), 10, seed=0)
    search = search_loop.SearchRun(config, data)
    stages.mark("build model + optimisers")
    batch = next(iter(search.epoch_dataset(0, 0)))
    stages.mark("first batch")
    search._train_fn.trace(batch)
    stages.mark("trace")
    float(search._train_fn(batch)["train_loss_sum"])
    stages.mark("first step (optimise + run)")
    wait = lambda logs: float(logs["train_loss_sum"])  # noqa: E731 (waits for the step to finish)
    _, times = time_steps(search._train_fn, batch, max(STEP["warmup"].value - 1, 0), STEP["steps"].value, wait)
    stages.mark("warm-up rest + timed steps")
    ms = np.array(times) * 1e3
    top_ops = None
    if _PROFILE_DIR.value:
        tf.profiler.experimental.start(_PROFILE_DIR.value)
        float(search._train_fn(batch)["train_loss_sum"])
        tf.profiler.experimental.stop()
        ops_ms = op_time_by_type(_PROFILE_DIR.value)
        all_ms = sum(t for t, _ in ops_ms.values())
        print(f"{'op type':44s} {'ms':>9s} {'calls':>6s}  share (op time summed over threads)")
        for op, (t, n) in list(ops_ms.items())[:_TOP_OPS]:
            print(f"{op:44s} {t:9.0f} {n:6d}  {100 * t / all_ms:5.1f}%")
        top_ops = {op: round(t, 1) for op, (t, _) in list(ops_ms.items())[:_TOP_OPS]}
    median = float(np.median(ms))
    images_per_s = 1e3 * _BATCH.value / median
    by_stage = {r["stage"]: r for r in stages.rows}
    result = {
        "ms_per_step_median": round(median, 1),
        "ms_per_step_min": round(float(ms.min()), 1),
        "images_per_s": round(images_per_s, 2),
        "images_per_s_per_replica": round(images_per_s / search.replicas, 2),
        "replicas": search.replicas,
        "trace_s": by_stage["trace"]["s"],
        "first_step_s": by_stage["first step (optimise + run)"]["s"],
        "warmup_s": round(by_stage["trace"]["s"] + by_stage["first step (optimise + run)"]["s"], 1),
        "peak_rss_mb": stages.rows[-1]["peak_rss_mb"],
        "memory_stages": stages.rows,
        "weights": search.model.count_weight_parameters(),
        "config": {k: getattr(config, k) for k in (
            "layers", "init_channels", "nodes", "batch_size", "unrolled", "strategy",
            "cpu_devices", "mixed_precision", "jit_compile", "recompute", "partial_channels")}
        | {"image_size": STEP["image_size"].value, "steps": STEP["steps"].value, "warmup": STEP["warmup"].value},
        "tensorflow": tf.__version__,
        "threads": tf_threads(),
        "machine": machine() | {"load_avg_1m_at_start": load_before},
    }
    if top_ops:
        result["top_ops_ms"] = top_ops
    print(json.dumps(result))


if __name__ == "__main__":
    run(main)
