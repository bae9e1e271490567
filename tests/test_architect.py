"""BilevelStep (architect.py) and the optimisers it uses, against hand computations.

Everything runs eagerly on one tiny SearchNetwork (3 cells, C=4, 1 node, 8x8 images, batch 8),
built once per module: eager execution of this graph costs a few seconds per step, tracing it
costs more. Each test restores the initial variable values and builds fresh optimisers.
"""

import importlib
import math
import pkgutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops as keras_ops

import keras_darts.ops as darts_ops
from keras_darts.architect import BilevelStep
from keras_darts.gradients import LossScale, apply_gradients
from keras_darts.optimizers import EpochCosineDecay, TorchSGD, arch_adam
from keras_darts.supernet import SearchNetwork

NUM_CLASSES, BATCH, SIZE = 3, 8, 8


# === Fixtures and helpers ===


@pytest.fixture(scope="module")
def net_and_snapshot():
    keras.utils.set_random_seed(0)
    model = SearchNetwork(num_classes=NUM_CLASSES, layers=3, init_channels=4, steps=1, multiplier=1,
                          alpha_seed=0, name="arch_test_net")
    model.build((None, SIZE, SIZE, 3))
    # Alphas of N(0, 0.5): far from uniform, so every op's weight matters in the gradients.
    rng = np.random.default_rng(1)
    for a in model.arch_variables:
        a.assign(0.5 * rng.standard_normal(a.shape).astype(np.float32))
    return model, [v.numpy().copy() for v in model.variables]


@pytest.fixture
def net(net_and_snapshot):
    model, snapshot = net_and_snapshot
    for v, value in zip(model.variables, snapshot):
        v.assign(value)
    return model


def _batch(seed):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((BATCH, SIZE, SIZE, 3)), tf.float32)
    y = tf.constant(np.arange(BATCH) % NUM_CLASSES, tf.int64)
    return x, y


TRAIN, VAL = _batch(10), _batch(11)


def _make_step(model, lr=0.1, momentum=0.9, wd=3e-4, arch_lr=3e-3, arch_wd=1e-3, grad_clip=5.0,
               unrolled=False, loss_scale=None, **kwargs):
    opt = TorchSGD(lr, momentum, wd)
    opt.build(model.trainable_variables)
    aopt = arch_adam(arch_lr)
    aopt.build(model.arch_variables)
    return BilevelStep(model, opt, aopt, BATCH, grad_clip=grad_clip, arch_weight_decay=arch_wd,
                       unrolled=unrolled, loss_scale=loss_scale, **kwargs)


def _mean_ce(y, logits):
    return tf.reduce_mean(
        keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))


def _logits_at(model, weights, alphas, x):
    """Logits with weight values `weights` and alpha values `alphas` (written independently of
    BilevelStep)."""
    index = {id(v): i for i, v in enumerate(model.arch_variables)}
    non_trainable = [alphas[index[id(v)]] if id(v) in index else v.value
                     for v in model.non_trainable_variables]
    logits, _ = model.stateless_call(list(weights), non_trainable, x, training=True)
    return logits


def _values(variables):
    return [v.numpy().copy() for v in variables]


def _assert_bitwise_equal(before, variables, what):
    for b, v in zip(before, variables):
        np.testing.assert_array_equal(b, v.numpy(), err_msg=f"{what}: {v.path} changed")


def _rel(a, b):
    a, b = np.concatenate([np.ravel(x) for x in a]), np.concatenate([np.ravel(x) for x in b])
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _ops_modules():
    return [importlib.import_module(f"keras_darts.ops.{m.name}")
            for m in pkgutil.iter_modules(darts_ops.__path__)]


class _SmoothOps:
    """`keras.ops` with relu -> softplus and max_pool -> average_pool (both smooth)."""

    def __getattr__(self, name):
        return getattr(keras_ops, name)

    @staticmethod
    def relu(x):
        return keras_ops.softplus(x)

    @staticmethod
    def max_pool(x, *args, **kwargs):
        return keras_ops.average_pool(x, *args, **kwargs)


# === Unrolled (second-order) architecture gradient ===


def test_unrolled_gradient_matches_exact_second_order(net, monkeypatch):
    """Eq. 7-8 of the paper against the exact total derivative d/da L_val(w'(a), a).

    The exact gradient differentiates through the virtual step
      w'(a) = w - xi * (momentum * buf + grad_w L_train(w, a) + wd * w)
    with nested GradientTapes (true second derivatives), via `model.stateless_call`.

    Smoothness: BilevelStep replaces the Hessian-vector product by a central finite difference
    with eps = 0.01 / ||v||, i.e. the weights move by 0.01 in norm. Its O(eps^2) error bound holds
    for a smooth loss only. With ReLU and max-pool the gradient jumps whenever an activation crosses
    a kink, and on this tiny network the finite difference is then several times off the exact
    Hessian-vector product (measured while writing this test: relative error ~5x). That is the
    reference algorithm itself, not an implementation error, so here relu -> softplus and
    max_pool -> average_pool (patched in the keras_darts.ops modules for this test only).

    Tolerance: relative L2 error 2e-2. Measured: 2e-4 to 4e-3 depending on the initial weights
    (O(eps^2) truncation with eps*||v|| = 0.01, plus float32 round-off in the alpha gradients
    amplified by xi / (2 eps); float64 weights with synchronised BN gave 6e-4, so truncation
    dominates). The first-order gradient is ~80% away, and dropping the momentum term from w' moves
    the exact gradient by >5%, far more than the measured error, so the test can
    fail. float32 on purpose: the network casts its logits to float32 anyway, and FusedBatchNorm's
    float64 fallback uses tf.nn.moments, whose stop_gradient on the mean makes *second* derivatives
    wrong (measured: the nested-tape "exact" gradient was then 16% off finite differences of the
    loss, which the unrolled gradient matched); the fused float32 kernel's grad-of-grad is right.
    """
    # Every ops module that calls keras.ops (as K), as when ops was one module.
    patched = [m for m in _ops_modules() if hasattr(m, "K")]
    assert {m.__name__ for m in patched} >= {"keras_darts.ops.conv_ops", "keras_darts.ops.pool_ops"}, (
        "the ops modules no longer import keras.ops as K")
    for module in patched:
        monkeypatch.setattr(module, "K", _SmoothOps())
    xi, momentum, wd = 0.1, 0.9, 0.05
    step = _make_step(net, lr=xi, momentum=momentum, wd=wd, unrolled=True)
    rng = np.random.default_rng(2)
    for v in net.trainable_variables:  # A non-zero momentum buffer, as after a few steps.
        step.weight_optimizer.momentum_buffer(v).assign(
            0.05 * rng.standard_normal(v.shape).astype(np.float32))
    weights_before = _values(net.trainable_variables)

    unrolled, _ = step.arch_gradients(TRAIN, VAL)
    unrolled = [g.numpy() for g in unrolled]
    _assert_bitwise_equal(weights_before, net.trainable_variables, "unrolled gradient")

    w = [tf.constant(v) for v in weights_before]
    a = [tf.identity(v.value) for v in net.arch_variables]
    bufs = [step.weight_optimizer.momentum_buffer(v).value for v in net.trainable_variables]

    def exact_gradient(with_momentum=True):
        with tf.GradientTape() as outer:
            outer.watch(a)
            with tf.GradientTape() as inner:
                inner.watch(w)
                loss_train = _mean_ce(TRAIN[1], _logits_at(net, w, a, TRAIN[0]))
            g_w = inner.gradient(loss_train, w)
            w_virtual = [wi - xi * ((momentum * b if with_momentum else 0.0) + gi + wd * wi)
                         for wi, b, gi in zip(w, bufs, g_w)]
            loss_val = _mean_ce(VAL[1], _logits_at(net, w_virtual, a, VAL[0]))
        return [g.numpy() for g in outer.gradient(loss_val, a)]

    exact = exact_gradient()
    step.unrolled = False
    first_order = [g.numpy() for g in step.arch_gradients(TRAIN, VAL)[0]]

    error = _rel(unrolled, exact)
    print(f"relative error: unrolled {error:.2e}, first order {_rel(first_order, exact):.2e}, "
          f"no momentum {_rel(exact_gradient(with_momentum=False), exact):.2e}")
    assert error < 2e-2, f"unrolled vs exact: relative error {error}"
    assert _rel(first_order, exact) > 0.3, "first order too close: the test could not fail"
    assert _rel(exact_gradient(with_momentum=False), exact) > 5e-2, "momentum term undetectable"


def test_unrolled_arch_step_changes_only_alphas(net):
    step = _make_step(net, unrolled=True)
    weights = _values(net.trainable_variables)
    buffers = _values([step.weight_optimizer.momentum_buffer(v) for v in net.trainable_variables])
    alphas = _values(net.arch_variables)
    step.architecture_step(TRAIN, VAL)
    _assert_bitwise_equal(weights, net.trainable_variables, "unrolled arch step")
    _assert_bitwise_equal(
        buffers, [step.weight_optimizer.momentum_buffer(v) for v in net.trainable_variables],
        "unrolled arch step (momentum buffer)")
    assert int(step.weight_optimizer.iterations.numpy()) == 0
    for before, a in zip(alphas, net.arch_variables):
        assert not np.array_equal(before, a.numpy())


# === The arch_regularizers hook ===


def test_arch_regularizers_add_their_alpha_gradient_first_order_and_unrolled(net):
    """R = c * sum(alphas_normal^2) + sum(alphas_reduce): the gradient with R minus the gradient
    without it is dR/da = (2c * alphas_normal, 1) in both modes (in the unrolled one R depends on
    the alphas only, so v and the Hessian term are untouched), and the step logs R."""
    c = 0.7
    a_normal = net.alphas_normal.numpy().astype(np.float64)
    expected = [2 * c * a_normal, np.ones(net.alphas_reduce.shape)]
    regs = (lambda m: c * tf.reduce_sum(tf.square(m.alphas_normal)),
            lambda m: tf.reduce_sum(m.alphas_reduce))
    for unrolled in (False, True):
        plain = _make_step(net, unrolled=unrolled)
        with_reg = _make_step(net, unrolled=unrolled, arch_regularizers=regs)
        g0 = [g.numpy() for g in plain.arch_gradients(TRAIN, VAL)[0]]
        g1 = [g.numpy() for g in with_reg.arch_gradients(TRAIN, VAL)[0]]
        for a, b, e in zip(g1, g0, expected):
            np.testing.assert_allclose(a - b, e, rtol=1e-4, atol=1e-5, err_msg=f"unrolled={unrolled}")
    r = c * np.sum(a_normal**2) + np.sum(net.alphas_reduce.numpy())  # at the alphas before the step
    logs = _make_step(net, arch_regularizers=regs).replica_step(TRAIN, VAL)
    assert float(logs["arch_regularization"]) == pytest.approx(r, rel=1e-5)


# === First-order architecture step: Adam on the alphas ===


def test_first_order_arch_step_is_adam_on_alphas_only(net):
    """Weights bitwise unchanged; alpha update = Adam step 1 on grad + arch_wd * alpha.

    BN moving statistics are not weights: the arch step's forward pass in training mode may update
    them (the reference's does too), so they are not checked.
    """
    arch_lr, arch_wd = 3e-3, 0.1
    step = _make_step(net, arch_lr=arch_lr, arch_wd=arch_wd)
    opt = step.arch_optimizer
    assert (opt.beta_1, opt.beta_2, opt.epsilon) == (0.5, 0.999, 1e-8)
    weights = _values(net.trainable_variables)
    a0 = _values(net.arch_variables)

    alphas = [tf.identity(v.value) for v in net.arch_variables]
    with tf.GradientTape() as tape:
        tape.watch(alphas)
        loss = _mean_ce(VAL[1], _logits_at(net, [v.value for v in net.trainable_variables],
                                           alphas, VAL[0]))
    grads = [g.numpy().astype(np.float64) for g in tape.gradient(loss, alphas)]

    step.architecture_step(TRAIN, VAL)
    _assert_bitwise_equal(weights, net.trainable_variables, "first-order arch step")
    assert int(step.weight_optimizer.iterations.numpy()) == 0

    b1, b2, eps = 0.5, 0.999, 1e-8
    for g, before, var in zip(grads, a0, net.arch_variables):
        g_total = g + arch_wd * before  # L2 decay added to the gradient, as PyTorch's Adam does.
        # Keras Adam, step 1: m = (1-b1) g, v = (1-b2) g^2, lr_t = lr sqrt(1-b2) / (1-b1).
        update = (arch_lr * math.sqrt(1 - b2) / (1 - b1) * (1 - b1) * g_total
                  / (np.sqrt((1 - b2) * g_total**2) + eps))
        np.testing.assert_allclose(var.numpy(), before - update, rtol=1e-5, atol=1e-7)
        # ... which is lr * sign(g) up to epsilon (PyTorch: lr * g / (|g| + eps)).
        big = np.abs(g_total) > 1e-4
        assert big.mean() > 0.5
        np.testing.assert_allclose((before - var.numpy())[big], arch_lr * np.sign(g_total[big]),
                                   rtol=2e-3)


# === Weight step: clip, L2, PyTorch momentum ===


def test_weight_step_matches_hand_computation(net):
    """w1 = w0 - lr * buf1, buf1 = clip(g0) + wd * w0;
    w2 = w1 - lr * (m * buf1 + clip(g1) + wd * w1).

    The raw gradient is clipped to global norm `grad_clip` before weight decay is added (clipping
    is active here, and wd is large enough that the other order is detectably different).
    """
    lr, momentum, wd = 0.05, 0.9, 0.2
    step = _make_step(net, lr=lr, momentum=momentum, wd=wd)  # grad_clip set below
    alphas = _values(net.arch_variables)
    variables = net.trainable_variables

    def grads_at(x, y):
        with tf.GradientTape() as tape:
            loss = _mean_ce(y, net(x, training=True))
        return [g.numpy().astype(np.float64) for g in tape.gradient(loss, variables)]

    def clip(grads, norm):
        total = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
        return [g * min(1.0, norm / total) for g in grads], total

    w0 = [v.numpy().astype(np.float64) for v in variables]
    g0 = grads_at(*TRAIN)
    raw_norm = math.sqrt(sum(float(np.sum(g * g)) for g in g0))
    step.grad_clip = 0.5 * raw_norm  # Clipping halves the gradient.
    g0c, _ = clip(g0, step.grad_clip)
    buf1 = [g + wd * w for g, w in zip(g0c, w0)]
    w1 = [w - lr * b for w, b in zip(w0, buf1)]

    step.weight_step(*TRAIN)
    _assert_bitwise_equal(alphas, net.arch_variables, "weight step")
    for expected, v in zip(w1, variables):
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-5, atol=1e-6, err_msg=v.path)
    for expected, v in zip(buf1, variables):
        np.testing.assert_allclose(step.weight_optimizer.momentum_buffer(v).numpy(), expected,
                                   rtol=1e-5, atol=1e-6)
    # Clipping after weight decay would have given a detectably different step.
    wrong, _ = clip([g + wd * w for g, w in zip(g0, w0)], step.grad_clip)
    wrong_w1 = [w - lr * b for w, b in zip(w0, wrong)]
    assert max(np.abs(a - b).max() for a, b in zip(wrong_w1, w1)) > 1e-3

    # Second step: buf2 = momentum * buf1 + (clip(g1) + wd * w1).
    w1 = [v.numpy().astype(np.float64) for v in variables]
    g1, _ = clip(grads_at(*VAL), step.grad_clip)
    buf2 = [momentum * b + g + wd * w for b, g, w in zip(buf1, g1, w1)]
    w2 = [w - lr * b for w, b in zip(w1, buf2)]
    step.weight_step(*VAL)
    _assert_bitwise_equal(alphas, net.arch_variables, "second weight step")
    for expected, v in zip(w2, variables):
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-5, atol=1e-6, err_msg=v.path)
    assert int(step.weight_optimizer.iterations.numpy()) == 2


def test_torch_sgd_pytorch_momentum_with_changing_lr():
    """buf = m * buf + (g + wd * w); w -= lr * buf, with the learning rate changing every step
    (Keras' SGD, v = m * v - lr * g, would differ from the second step on)."""
    lr0, lr_min, epochs, momentum, wd = 0.5, 0.01, 4, 0.9, 0.1
    schedule = EpochCosineDecay(lr0, epochs, 1, lr_min)  # one step per epoch
    var = keras.Variable(np.array([1.0, -2.0, 3.0], np.float32))
    opt = TorchSGD(schedule, momentum, wd)
    opt.build([var])
    rng = np.random.default_rng(0)
    w, buf = var.numpy().astype(np.float64), np.zeros(3)
    for t in range(4):
        g = rng.standard_normal(3)
        lr = lr_min + (lr0 - lr_min) * (1 + math.cos(math.pi * t / epochs)) / 2
        buf = momentum * buf + g + wd * w
        w = w - lr * buf
        opt.apply([tf.constant(g, tf.float32)], [var])
        np.testing.assert_allclose(var.numpy(), w, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(opt.momentum_buffer(var).numpy(), buf, rtol=1e-6, atol=1e-6)
    assert TorchSGD.from_config(opt.get_config()).l2 == wd


def test_epoch_cosine_decay_closed_form():
    lr, lr_min, epochs, spe = 0.025, 0.001, 5, 3
    schedule = EpochCosineDecay(lr, epochs, spe, lr_min)
    for step in range(epochs * spe + 1):
        e = step // spe
        expected = lr_min + (lr - lr_min) * (1 + math.cos(math.pi * e / epochs)) / 2
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)
        assert schedule.at_epoch(e) == pytest.approx(expected, rel=1e-12)
    assert float(schedule(0)) == pytest.approx(lr)
    assert float(schedule(spe - 1)) == float(schedule(0))  # constant within an epoch
    assert float(schedule(epochs * spe)) == pytest.approx(lr_min)
    again = EpochCosineDecay.from_config(schedule.get_config())
    assert float(again(7)) == float(schedule(7))


# === Loss scaling (float16) ===


def test_loss_scale_grows_after_period_and_halves_on_overflow():
    ls = LossScale(True, initial=8.0, period=3)
    for _ in range(2):
        ls.update(tf.constant(True))
    assert float(ls.scale.numpy()) == 8.0 and int(ls.good_steps.numpy()) == 2
    ls.update(tf.constant(True))  # third finite step in a row: grow
    assert float(ls.scale.numpy()) == 16.0 and int(ls.good_steps.numpy()) == 0
    ls.update(tf.constant(True))
    ls.update(tf.constant(False))  # overflow: halve and restart the count
    assert float(ls.scale.numpy()) == 8.0 and int(ls.good_steps.numpy()) == 0
    small = LossScale(True, initial=1.0, period=3)
    small.update(tf.constant(False))
    assert float(small.scale.numpy()) == 1.0  # never below 1
    off = LossScale(False)
    off.update(tf.constant(False))
    assert float(off.scale.numpy()) == 1.0 and int(off.good_steps.numpy()) == 0


def test_apply_gradients_skips_non_finite_update():
    var = keras.Variable(np.array([1.0, 2.0], np.float32))
    opt = TorchSGD(0.1, 0.9, 0.0)
    opt.build([var])
    ls = LossScale(True, initial=4.0, period=100)
    apply_gradients(opt, [tf.constant([np.nan, 1.0])], [var], tf.constant(False), ls)
    np.testing.assert_array_equal(var.numpy(), [1.0, 2.0])
    assert int(opt.iterations.numpy()) == 0 and float(ls.scale.numpy()) == 2.0
    apply_gradients(opt, [tf.constant([1.0, 1.0])], [var], tf.constant(True), ls)
    np.testing.assert_allclose(var.numpy(), [0.9, 1.9], rtol=1e-6)
    assert int(opt.iterations.numpy()) == 1 and int(ls.good_steps.numpy()) == 1


def test_weight_step_with_loss_scale_skips_nan_batch(net):
    ls = LossScale(True, initial=2.0**15, period=2000)
    step = _make_step(net, loss_scale=ls)
    weights = _values(net.trainable_variables)
    x_nan = tf.where(tf.range(SIZE)[None, :, None, None] == 0, np.nan, TRAIN[0])
    step.weight_step(x_nan, TRAIN[1])
    _assert_bitwise_equal(weights, net.trainable_variables, "weight step on a NaN batch")
    assert int(step.weight_optimizer.iterations.numpy()) == 0
    assert float(ls.scale.numpy()) == 2.0**14
    # A finite batch: the unscaled update is applied and the good-step count starts.
    for v, w in zip(net.trainable_variables, weights):
        v.assign(w)
    step.weight_step(*TRAIN)
    assert int(step.weight_optimizer.iterations.numpy()) == 1
    assert int(ls.good_steps.numpy()) == 1 and float(ls.scale.numpy()) == 2.0**14
    assert all(np.all(np.isfinite(v.numpy())) for v in net.trainable_variables)
    assert any(not np.array_equal(w, v.numpy()) for w, v in zip(weights, net.trainable_variables))
