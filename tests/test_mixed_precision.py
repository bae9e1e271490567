"""Mixed precision keeps the architecture signal (issue 11, item 1), checked against float32.

bfloat16: the edge weights softmax(alpha) stay float32 and each edge's mixture is summed in float32
(supernet.mixing_dtype). float16: a step skipped for overflow holds back neither the learning-rate
schedule nor xi (both follow the epoch counter), and an overflow in the architecture step lowers
the loss scale too. Tiny networks (3 cells, C=4, 8x8 images), eager.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_darts import data as data_lib
from keras_darts.config import SearchConfig
from keras_darts.search_cells import MixedOp
from keras_darts.search_loop import SearchRun
from keras_darts.supernet import SearchNetwork

SIZE, BATCH, CLASSES = 8, 8, 10


@pytest.fixture
def bfloat16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def _batch(seed, n=BATCH):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.standard_normal((n, SIZE, SIZE, 3)), tf.float32),
            tf.constant(rng.integers(0, CLASSES, n), tf.int64))


# === bfloat16: the mixture ===


def test_bfloat16_edge_mixes_in_float32_so_1e3_alpha_differences_survive(bfloat16_policy):
    """One edge under mixed_bfloat16, weights softmax(1e-3 * N(0,1)): its output is the float32
    sum of the (bfloat16) op outputs times the float32 weights. Rounding the weights to bfloat16
    first (as before) makes them all 1/8 and the mixture that of alpha = 0."""
    edge = MixedOp(4, name="edge")
    edge.build((2, SIZE, SIZE, 4))
    x = tf.cast(tf.random.stateless_normal((2, SIZE, SIZE, 4), (1, 2)), "bfloat16")
    alphas = 1e-3 * np.random.default_rng(0).standard_normal(8)
    weights = tf.nn.softmax(tf.constant(alphas, tf.float32))
    out = edge(x, weights, training=True)
    assert out.dtype == tf.float32

    outputs = [np.zeros(1) if op is None else op(x, training=True).numpy().astype(np.float64)
               for op in edge.candidate_ops]  # the op outputs as the edge saw them (bfloat16)
    w = weights.numpy().astype(np.float64)
    expected = sum(w[k] * outputs[k] for k in range(8) if edge.candidate_ops[k] is not None)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)
    rounded = tf.cast(tf.cast(weights, "bfloat16"), tf.float64).numpy()
    assert np.all(rounded == 0.125), "bfloat16 would keep these weights apart: pick others"
    uniform = sum(0.125 * outputs[k] for k in range(8) if edge.candidate_ops[k] is not None)
    # The alpha differences move the output by ~1e-4 relative, far above float32 round-off.
    shift = np.abs(expected - uniform).max() / np.abs(uniform).max()
    assert shift > 1e-5, shift
    assert np.abs(out.numpy() - uniform).max() > 0.3 * np.abs(expected - uniform).max()


def _alpha_grads(model, x, y):
    alphas = [a.value for a in model.arch_variables]
    with tf.GradientTape() as tape:
        tape.watch(alphas)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            y, model(x, training=True), from_logits=True))
    return np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, alphas)])


def _supernet(seed):
    keras.utils.set_random_seed(seed)
    model = SearchNetwork(num_classes=CLASSES, layers=3, init_channels=4, steps=1, multiplier=1,
                          alpha_seed=seed)
    model.build((None, SIZE, SIZE, 3))
    return model


def test_bfloat16_alpha_gradient_agrees_with_float32(bfloat16_policy):
    """Same weights, alphas (the reference's 1e-3 * N(0,1) init) and batch in a float32 and a
    mixed_bfloat16 supernet (1 node: 32 alpha entries).

    Measured (BUILD_NOTES "Mixed precision"): relative L2 error 0.05-0.20 over 1-2 nodes, batches
    8 and 64, fresh and briefly trained weights, seeds 0-2; sign disagreements (0-5 entries) only
    where |g| < 13% of max |g|. The error is the ops' own bfloat16 rounding (weights and
    activations), not the mixture, and does not shrink with the batch; it is 5-20x smaller than
    the float32 gradient's own change from one batch to the next. Bounds: relative error < 0.3,
    under half the batch-to-batch change, every sign right where |g| >= 20% of max |g|."""
    bf16 = _supernet(0)
    keras.mixed_precision.set_global_policy("float32")
    f32 = _supernet(0)
    for a, b in zip(f32.variables, bf16.variables):
        b.assign(a.numpy())
    x, y = _batch(5)
    g32, g16 = _alpha_grads(f32, x, y), _alpha_grads(bf16, x, y)
    other = _alpha_grads(f32, *_batch(6))
    rel = np.linalg.norm(g16 - g32) / np.linalg.norm(g32)
    sampling = np.linalg.norm(other - g32) / np.linalg.norm(g32)
    big = np.abs(g32) >= 0.2 * np.abs(g32).max()
    print(f"bfloat16 vs float32 alpha gradient: relative L2 {rel:.3f} (another batch: "
          f"{sampling:.2f}), {int(np.sum(np.sign(g16) != np.sign(g32)))}/{g32.size} signs differ")
    assert rel < 0.3, rel
    assert rel < 0.5 * sampling, (rel, sampling)
    assert big.sum() >= 8
    np.testing.assert_array_equal(np.sign(g16[big]), np.sign(g32[big]))


def _step(model, arch_float32=False):
    from keras_darts.architect import BilevelStep
    from keras_darts.optimizers import TorchSGD

    weight_opt = TorchSGD(0.025, 0.9, 3e-4)
    weight_opt.build(model.trainable_variables)
    # Plain SGD with lr 1 for the alphas: their change is minus the gradient (plus decay), where
    # Adam's first step would be ~lr * sign(g).
    arch_opt = keras.optimizers.SGD(learning_rate=1.0)
    arch_opt.build(model.arch_variables)
    return BilevelStep(model, weight_opt, arch_opt, BATCH, arch_float32=arch_float32)


@pytest.mark.parametrize("unrolled", [
    pytest.param(False, id="first_order", marks=pytest.mark.slow), pytest.param(True, id="unrolled")])
def test_arch_float32_gives_float32s_alpha_step_and_keeps_the_weight_step_bfloat16(
        bfloat16_policy, unrolled):
    """--arch_float32 under mixed_bfloat16: one traced replica_step (both steps in one graph) on a
    bfloat16 supernet moves the alphas as the float32 supernet's step does, to float32 round-off
    (so every sign of the gradient agrees), while its weight step still computes in bfloat16
    (its update differs from float32's as bfloat16 rounding does). The unrolled step runs every
    kind of pass (w', val at w', the two finite-difference passes) under the switched policy; the
    first-order case is the same switch around one pass (--run_slow)."""
    bf16 = _supernet(0)
    keras.mixed_precision.set_global_policy("float32")
    f32 = _supernet(0)
    for a, b in zip(f32.variables, bf16.variables):
        b.assign(a.numpy())
    steps = {"bf16": _step(bf16, arch_float32=True), "f32": _step(f32)}
    models = {"bf16": bf16, "f32": f32}
    train, val = _batch(5), _batch(6)
    moved = {}
    for name, step in steps.items():
        step.unrolled = unrolled
        model = models[name]
        before = [v.numpy().copy() for v in model.arch_variables + model.trainable_variables]
        tf.function(step.replica_step)(train, val)
        after = [v.numpy() for v in model.arch_variables + model.trainable_variables]
        moved[name] = [b - a for a, b in zip(before, after)]
    n_alpha = len(f32.arch_variables)
    d16 = np.concatenate([d.ravel() for d in moved["bf16"][:n_alpha]])
    d32 = np.concatenate([d.ravel() for d in moved["f32"][:n_alpha]])
    assert np.abs(d32).max() > 1e-4  # the alphas did move
    np.testing.assert_allclose(d16, d32, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(np.sign(d16), np.sign(d32))
    w16 = np.concatenate([d.ravel() for d in moved["bf16"][n_alpha:]])
    w32 = np.concatenate([d.ravel() for d in moved["f32"][n_alpha:]])
    weight_rel = np.linalg.norm(w16 - w32) / np.linalg.norm(w32)
    assert weight_rel > 1e-3, weight_rel  # bfloat16, not float32
    assert bf16.layers[0].dtype_policy.name == "mixed_bfloat16"  # restored after the step


def test_arch_float32_needs_mixed_precision():
    from keras_darts.errors import UserError

    with pytest.raises(UserError) as e:
        SearchConfig(dataset="cifar10", arch_float32=True).validate()
    assert str(e.value) == ("--arch_float32=True: needs --mixed_precision=bfloat16 or float16 "
                            "(without it every step is float32 already)")
    SearchConfig(dataset="cifar10", arch_float32=True, mixed_precision="bfloat16").validate()
    # The option reaches the step SearchRun builds (float32 policy here: the wiring only).
    config = SearchConfig(dataset="synthetic", output_dir="unused", layers=3, init_channels=4,
                          nodes=1, batch_size=BATCH, epochs=1, mixed_precision="float16",
                          arch_float32=True)
    run = SearchRun(config, data_lib.synthetic_image_data(4 * BATCH, 0, (SIZE, SIZE, 3), CLASSES))
    assert run.step.arch_float32 is True


# === float16: skipped steps and the loss scale ===


def _values(variables):
    return [v.numpy().copy() for v in variables]


def test_float16_overflow_keeps_lr_schedule_and_xi_and_lowers_the_scale_in_both_steps():
    """A SearchRun with --mixed_precision=float16 (loss scaling on; float32 policy, so the numbers
    are float32's). Overflows are forced with a NaN pixel."""
    config = SearchConfig(dataset="synthetic", output_dir="unused", layers=3, init_channels=4,
                          nodes=1, batch_size=BATCH, epochs=4, mixed_precision="float16")
    run = SearchRun(config, data_lib.synthetic_image_data(8 * BATCH, 0, (SIZE, SIZE, 3), CLASSES))
    step, scale, opt = run.step, run.loss_scale, run.weight_optimizer
    assert scale.enabled and run.steps == 4
    x, y = _batch(0)
    x_nan = tf.where(tf.range(SIZE)[None, :, None, None] == 0, np.nan, x)

    # An overflowing weight step is skipped (iterations stay 0) and halves the scale.
    variables = run.model.trainable_variables
    weights = _values(variables)
    step.weight_step(x_nan, y)
    assert int(opt.iterations.numpy()) == 0 and float(scale.scale.numpy()) == 2.0**14
    for w, v in zip(weights, variables):
        np.testing.assert_array_equal(w, v.numpy())

    # Next epoch: lr and xi are float32's schedule value at that epoch, whatever iterations says
    # (schedule(iterations) would still be epoch 0's).
    run.epoch.assign(1)
    expected = run.schedule.at_epoch(1)
    assert expected < run.schedule.at_epoch(0)
    assert float(opt.learning_rate) == pytest.approx(expected, rel=1e-6)
    assert float(step.learning_rate()) == pytest.approx(expected, rel=1e-6)
    assert float(run.schedule(opt.iterations)) == pytest.approx(run.schedule.at_epoch(0), rel=1e-6)

    # An overflowing architecture step leaves the alphas and halves the scale too.
    alphas = _values(run.model.arch_variables)
    step.weight_step(x, y)  # one finite weight step: counted
    assert int(scale.good_steps.numpy()) == 1
    step.architecture_step((x, y), (x_nan, y))
    for a, v in zip(alphas, run.model.arch_variables):
        np.testing.assert_array_equal(a, v.numpy())
    assert float(scale.scale.numpy()) == 2.0**13 and int(scale.good_steps.numpy()) == 0
    assert int(run.arch_optimizer.iterations.numpy()) == 0
    # A finite architecture step is applied and leaves the scale and its count alone.
    step.architecture_step((x, y), _batch(1))
    assert float(scale.scale.numpy()) == 2.0**13 and int(scale.good_steps.numpy()) == 0
    assert int(run.arch_optimizer.iterations.numpy()) == 1
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(alphas, run.model.arch_variables))
