"""Measured latency with Keras/TensorFlow on this machine's CPU: candidate ops (the table behind
--cost=latency, `keras_darts.cost.latency_table`) and derived networks. Batch 1, inside a
`tf.function`, after warm-up calls; the figure is the fastest call. LiteRT latency of an exported
model is `benchmarks/latency.py`'s (the export side's) business.
"""

import os
import time

import numpy as np

from keras_darts.cost.latency_table import LatencyTable, cpu_name


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


def network_latency(genotype, settings):
    """Single-image ms of a derived network built from `settings` (layers, init_channels,
    image_shape, num_classes, variant), untrained: latency needs no trained weights."""
    from keras_darts.network import VARIANTS

    s = settings
    model = VARIANTS[s["variant"]](genotype, num_classes=s["num_classes"], layers=s["layers"],
                                   init_channels=s["init_channels"], auxiliary=False,
                                   in_channels=s["image_shape"][2])
    model.build((None, *s["image_shape"]))
    return measure_model_latency(model, s["image_shape"])


def retrain_cost_fields(retrain):
    """metrics.json's cost fields of a finished retrain (`retrain_loop.RetrainRun`): parameters
    and MACs from the counter at the run's input size and, with --latency, the measured ms."""
    from keras_darts.cost.derived import cost_record, format_cost, network_cost
    from keras_darts.genotype import genotype_from_dict

    info, config = retrain.record, retrain.config
    cost = network_cost(genotype_from_dict(info["genotype"]), config.layers, config.init_channels,
                        info["image_shape"], info["num_classes"], config.variant)
    ms = measure_model_latency(retrain.model, info["image_shape"]) if config.latency else None
    print(f"network: {format_cost(cost, ms)}")
    return cost_record(cost, ms)
