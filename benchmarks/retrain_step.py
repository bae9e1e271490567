#!/usr/bin/env python3
"""Times the training step of a derived network (as bin/retrain runs it).

  python benchmarks/retrain_step.py --genotype=DARTS_V2 --layers=20 --init_channels=36 \\
      --batch_size=96 --steps=5

Random data, after `--warmup` steps (tracing and graph optimisation excluded); drop path at
`--drop_path_prob` (the rate the schedule reaches at the end of a retrain). The last line printed
is one JSON object: ms_per_step_median/min, images_per_s, peak_rss_mb, trace_s / first_step_s,
the memory stages (`--memory_profile` also prints them as they happen), machine and config.
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
_GENOTYPE = flags.DEFINE_string("genotype", "DARTS_V2", "Published genotype or genotype.json.")
_LAYERS = flags.DEFINE_integer("layers", 20, "Cells.")
_CHANNELS = flags.DEFINE_integer("init_channels", 36, "Initial channels.")
_BATCH = flags.DEFINE_integer("batch_size", 96, "Global batch size.")
_AUXILIARY = flags.DEFINE_bool("auxiliary", True, "Auxiliary head and loss.")
_DROP_PATH = flags.DEFINE_float("drop_path_prob", 0.2, "Drop-path rate during the timed steps.")


def main(argv):
    del argv
    stages = Stages(STEP["memory_profile"].value)
    np = quiet_import("numpy")
    tf = quiet_import("tensorflow")
    stages.mark("import tensorflow")
    retrain_loop = quiet_import("keras_darts.retrain_loop")
    data_lib = quiet_import("keras_darts.data")
    distribute = quiet_import("keras_darts.distribute")
    genotype_lib = quiet_import("keras_darts.genotype")
    stages.mark("import keras_darts")
    load_before = machine()["load_avg_1m"]

    config = retrain_loop.RetrainConfig(
        genotype=_GENOTYPE.value, dataset="synthetic", output_dir="unused", layers=_LAYERS.value,
        init_channels=_CHANNELS.value, batch_size=_BATCH.value, epochs=1,
        auxiliary=_AUXILIARY.value, drop_path_prob=_DROP_PATH.value, cutout=False, augment="none",
        strategy=STEP["strategy"].value, cpu_devices=STEP["cpu_devices"].value, mixed_precision=STEP["mixed_precision"].value,
        jit_compile=STEP["jit_compile"].value, recompute=STEP["recompute"].value,
        intra_op_threads=STEP["intra_op_threads"].value, inter_op_threads=STEP["inter_op_threads"].value)
    config.validate()
    genotype = genotype_lib.load_genotype(config.genotype)
    distribute.set_mixed_precision(config.mixed_precision)
    data = data_lib.synthetic_image_data(_BATCH.value, 0, (STEP["image_size"].value, STEP["image_size"].value, 3), 10, seed=0)
    retrain = retrain_loop.RetrainRun(config, data, genotype)
    retrain.model.set_drop_path_prob(_DROP_PATH.value)
    stages.mark("build model + optimiser")
    batch = next(iter(retrain.epoch_dataset(0, 0)))
    stages.mark("first batch")
    retrain._train_fn.get_concrete_function(batch)
    stages.mark("trace")
    float(retrain._train_fn(batch)["loss_sum"])
    stages.mark("first step (optimise + run)")
    wait = lambda logs: float(logs["loss_sum"])  # noqa: E731 (waits for the step to finish)
    _, times = time_steps(retrain._train_fn, batch, max(STEP["warmup"].value - 1, 0), STEP["steps"].value, wait)
    stages.mark("warm-up rest + timed steps")
    ms = np.array(times) * 1e3
    median = float(np.median(ms))
    images_per_s = 1e3 * _BATCH.value / median
    by_stage = {r["stage"]: r for r in stages.rows}
    result = {
        "ms_per_step_median": round(median, 1),
        "ms_per_step_min": round(float(ms.min()), 1),
        "images_per_s": round(images_per_s, 2),
        "images_per_s_per_replica": round(images_per_s / retrain.replicas, 2),
        "replicas": retrain.replicas,
        "trace_s": by_stage["trace"]["s"],
        "first_step_s": by_stage["first step (optimise + run)"]["s"],
        "peak_rss_mb": stages.rows[-1]["peak_rss_mb"],
        "memory_stages": stages.rows,
        "parameters": retrain_loop.count_parameters(retrain.model),
        "config": {k: getattr(config, k) for k in (
            "genotype", "layers", "init_channels", "batch_size", "auxiliary", "drop_path_prob",
            "strategy", "cpu_devices", "mixed_precision", "jit_compile", "recompute")}
        | {"image_size": STEP["image_size"].value, "steps": STEP["steps"].value, "warmup": STEP["warmup"].value},
        "tensorflow": tf.__version__,
        "threads": tf_threads(),
        "machine": machine() | {"load_avg_1m_at_start": load_before},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    run(main)
