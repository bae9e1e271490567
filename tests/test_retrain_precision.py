"""Retrain under --mixed_precision and --jit_compile: the step runs on CPU and learns a toy problem."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_darts import distribute
from keras_darts.config import RetrainConfig
from keras_darts.data import ImageData
from keras_darts.genotype import genotype_from_dict
from keras_darts.retrain_loop import RetrainRun

GENOTYPE = genotype_from_dict({
    "normal": [["sep_conv_3x3", 0], ["skip_connect", 1]], "normal_concat": [2],
    "reduce": [["max_pool_3x3", 0], ["sep_conv_3x3", 1]], "reduce_concat": [2]})


def _toy_data(n=64, seed=0):
    """Two classes told apart by brightness: learnable in a few steps by any network."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 100, (n, 8, 8, 3)) + 120 * y[:, None, None, None]
    return ImageData("toy", x.astype(np.uint8), y.astype(np.int64), x[:16].astype(np.uint8),
                     y[:16].astype(np.int64), ("dark", "bright"))


@pytest.fixture
def policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("mixed_precision,jit_compile", [
    ("bfloat16", False), ("float16", False), ("none", True)])
def test_retrain_step_learns(policy, mixed_precision, jit_compile):
    distribute.set_mixed_precision(mixed_precision)
    config = RetrainConfig(output_dir="unused", layers=3, init_channels=4, batch_size=16, epochs=1,
                           learning_rate=0.1, auxiliary=False, cutout=False, drop_path_prob=0.0,
                           strategy="one_device", mixed_precision=mixed_precision,
                           jit_compile=jit_compile, augment="none", seed=1)
    run = RetrainRun(config, _toy_data(), GENOTYPE)
    losses = []
    for epoch in range(3):
        for batch in run.epoch_dataset(epoch, 0):
            logs = run._train_fn(batch)
            losses.append(float(logs["loss_sum"]) / float(logs["count"]))
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses
    # Variables stay float32 under mixed precision; the compute dtype follows the policy.
    assert all(v.dtype == "float32" for v in run.model.trainable_variables)
    expected = {"none": "float32", "bfloat16": "bfloat16", "float16": "float16"}[mixed_precision]
    assert run.model.cells[0].compute_dtype == expected
    if mixed_precision == "float16":
        assert float(run.loss_scale.scale.numpy()) >= 1.0
    assert isinstance(run.strategy, tf.distribute.OneDeviceStrategy)
