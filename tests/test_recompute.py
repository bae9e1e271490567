"""`--recompute`: the same gradients and state updates as without it, on tiny networks.

Recomputation changes only what the backward pass keeps, so every gradient (weights and alphas,
first order and unrolled, retrain with drop path) must agree with the plain computation to float32
round-off, and the BN running statistics and the drop-path RNG state must be updated exactly once.
The graph-mode paths (custom gradient inside `tf.function`, where the control dependency matters)
run traced; the unrolled step runs eagerly (its stateless passes are the point, and tracing them
twice would cost more than the rest of this file).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_darts.architect import BilevelStep
from keras_darts.config import RetrainConfig, SearchConfig
from keras_darts.errors import UserError
from keras_darts.genotype import genotype_from_dict
from keras_darts.network import NetworkCIFAR
from keras_darts.optimizers import TorchSGD, arch_adam
from keras_darts.supernet import SearchNetwork

from helpers import GENOTYPE_1NODE

NUM_CLASSES, BATCH, SIZE = 3, 8, 8
RTOL = 1e-5  # float32 round-off of a few hundred accumulated terms, relative to each array's max
ATOL = 1e-7  # ... plus round-off of O(1) terms in arrays that are nearly zero (some BN means)
# The unrolled gradient's finite difference (g+ - g-) * xi / (2 eps) multiplies the round-off of g+-
# by xi * ||v|| / 0.02: traced on an AMX Xeon the two differ by 1.3e-5 of the max.
RTOL_FD = 5e-5


def _batch(seed):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.standard_normal((BATCH, SIZE, SIZE, 3)), tf.float32)
    y = tf.constant(np.arange(BATCH) % NUM_CLASSES, tf.int64)
    return x, y


TRAIN, VAL = _batch(10), _batch(11)


def _restore(model, snapshot):
    for v, value in zip(model.variables, snapshot):
        v.assign(value)


def _assert_close(plain, recomputed, names, what, rtol=RTOL):
    assert len(plain) == len(recomputed)
    for a, b, name in zip(plain, recomputed, names):
        a, b = np.asarray(a), np.asarray(b)
        atol = rtol * float(np.max(np.abs(a))) + ATOL
        np.testing.assert_allclose(b, a, rtol=0, atol=atol, err_msg=f"{what}: {name}")


# === Search network ===


@pytest.fixture(scope="module")
def supernet():
    keras.utils.set_random_seed(0)
    model = SearchNetwork(num_classes=NUM_CLASSES, layers=3, init_channels=4, steps=1,
                          multiplier=1, alpha_seed=0, name="recompute_test_net")
    model.build((None, SIZE, SIZE, 3))
    rng = np.random.default_rng(1)
    for a in model.arch_variables:  # far from uniform: every op's weight matters
        a.assign(0.5 * rng.standard_normal(a.shape).astype(np.float32))
    return model, [v.numpy().copy() for v in model.variables]


def _bilevel(model, unrolled):
    opt = TorchSGD(0.1, 0.9, 3e-4)
    opt.build(model.trainable_variables)
    aopt = arch_adam(3e-3)
    aopt.build(model.arch_variables)
    return BilevelStep(model, opt, aopt, BATCH, unrolled=unrolled)


@pytest.fixture(scope="module")
def first_order_results(supernet):
    """Per setting, from one traced forward/backward pass on the live variables (the first-order
    architecture and weight steps' pass): weight gradients, alpha gradients, BN statistics."""
    model, snapshot = supernet
    stats = [v for v in model.non_trainable_variables if "moving_" in v.path]
    results = {}
    for recompute in (False, True):
        model.recompute = recompute
        _restore(model, snapshot)

        @tf.function
        def grads(x, y):
            alphas = [a.value for a in model.arch_variables]
            with tf.GradientTape() as tape:
                tape.watch(alphas)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                    y, model(x, training=True), from_logits=True))
            g = tape.gradient(loss, model.trainable_variables + alphas)
            return g[:-2], g[-2:]

        w_grads, a_grads = grads(*TRAIN)
        results[recompute] = ([g.numpy() for g in w_grads], [v.numpy().copy() for v in stats],
                              [g.numpy() for g in a_grads])
    model.recompute = False
    _restore(model, snapshot)
    return model, stats, results


def test_first_order_weight_and_alpha_gradients_match(first_order_results):
    model, _, results = first_order_results
    names = [v.path for v in model.trainable_variables]
    _assert_close(results[False][0], results[True][0], names, "weight gradient")
    _assert_close(results[False][2], results[True][2], ["alphas_normal", "alphas_reduce"],
                  "alpha gradient")
    # Not vacuous: the gradients are far from zero and the alphas' differ between cell types.
    assert all(np.max(np.abs(g)) > 1e-4 for g in results[True][2])


def test_bn_statistics_updated_once(first_order_results, supernet):
    _, stats, results = first_order_results
    model, snapshot = supernet
    plain, recomputed = results[False][1], results[True][1]
    _assert_close(plain, recomputed, [v.path for v in stats], "BN statistics")
    # The step moved them (running = 0.9 * running + 0.1 * batch): a second update by the
    # recomputed pass would have moved them again, by 0.1 * (batch - running), which is as large.
    index = {id(v): i for i, v in enumerate(model.variables)}
    moved = [np.max(np.abs(r - snapshot[index[id(v)]])) for r, v in zip(recomputed, stats)]
    assert min(moved) > 1e-4


@pytest.mark.parametrize("traced", [
    pytest.param(False, id="eager"),
    pytest.param(True, id="traced", marks=pytest.mark.slow)])  # 50 s; the walk test pins the fix
def test_unrolled_gradient_matches(supernet, traced):
    """Eager, and traced: there each pass's BN statistics feed the next pass's cells as tensors
    (what the custom gradient's state inputs are for)."""
    model, snapshot = supernet
    grads, stats = {}, {}
    for recompute in (False, True):
        model.recompute = recompute
        _restore(model, snapshot)
        step = _bilevel(model, unrolled=True)
        arch_gradients = tf.function(step.arch_gradients) if traced else step.arch_gradients
        g, _ = arch_gradients(TRAIN, VAL)  # stateless_call with virtual weights
        grads[recompute] = [x.numpy() for x in g]
        # The stateless passes' BN updates are written back (the recomputed ones once).
        stats[recompute] = [v.numpy().copy() for v in model.non_trainable_variables
                            if "moving_" in v.path]
        # The unrolled step never writes the weights (with or without recomputation).
        index = {id(v): i for i, v in enumerate(model.variables)}
        for v in model.trainable_variables:
            np.testing.assert_array_equal(v.numpy(), snapshot[index[id(v)]])
    model.recompute = False
    _restore(model, snapshot)
    _assert_close(grads[False], grads[True], ["alphas_normal", "alphas_reduce"], "unrolled gradient",
                  rtol=RTOL_FD)
    _assert_close(stats[False], stats[True], range(len(stats[False])), "BN statistics")
    assert all(np.max(np.abs(g)) > 1e-4 for g in grads[True])


def test_custom_gradient_walk_stops_at_the_layer(monkeypatch):
    """In graph mode tf.custom_gradient walks back from the outputs to the inputs to find the
    variables read inside. A state value that is not an input (here: a moving mean computed by a
    long chain of ops, as the unrolled step's earlier passes compute it) would send the walk
    through all of that chain, once per cell and pass: 250 s instead of 128 s of tracing at 3
    cells. Spies on TF's walk (a private module: a TF upgrade may need this test adjusted)."""
    from tensorflow.python.ops import op_selector

    from keras_darts.recompute import call_with_recompute

    walked = []
    walk = op_selector.get_backward_walk_ops

    def spy(*args, **kwargs):
        ops = walk(*args, **kwargs)
        walked.append(len(ops))
        return ops

    monkeypatch.setattr(op_selector, "get_backward_walk_ops", spy)
    bn = keras.layers.BatchNormalization()
    bn.build((None, 4))
    chain_length = 300

    @tf.function
    def run(x):
        mean = tf.zeros([4])
        for _ in range(chain_length):
            mean = mean + 0.001
        with keras.StatelessScope([(bn.moving_mean, mean)]):
            y = call_with_recompute(bn, lambda t: bn(t, training=True), x)
        return tf.reduce_sum(y)

    run.get_concrete_function(tf.TensorSpec([8, 4], tf.float32))
    assert walked, "custom_gradient no longer walks the graph: this test has nothing to check"
    assert max(walked) < chain_length, walked


# === Derived network (retrain) ===


def _retrain_net(recompute):
    keras.utils.set_random_seed(3)
    model = NetworkCIFAR(genotype_from_dict(GENOTYPE_1NODE), num_classes=NUM_CLASSES, layers=3,
                         init_channels=4, auxiliary=False, seed=7, recompute=recompute)
    model.build((None, SIZE, SIZE, 3))
    model.set_drop_path_prob(0.5)  # half the samples dropped per op: a different mask shows
    return model


def _retrain_grads(model):
    @tf.function
    def grads(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True))
        return tape.gradient(loss, model.trainable_variables)

    return [g.numpy() for g in grads(*TRAIN)]


def test_retrain_gradients_state_and_drop_path_match():
    plain, recomputed = _retrain_net(False), _retrain_net(True)
    for a, b in zip(plain.variables, recomputed.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # the same start
    g_plain, g_recomputed = _retrain_grads(plain), _retrain_grads(recomputed)
    names = [v.path for v in plain.trainable_variables]
    # A different drop-path mask in the recomputed pass would change these by O(1).
    _assert_close(g_plain, g_recomputed, names, "retrain gradient")
    # BN statistics and the drop-path RNG states: updated once, to the same values.
    state_names = [v.path for v in plain.non_trainable_variables]
    _assert_close([v.numpy() for v in plain.non_trainable_variables],
                  [v.numpy() for v in recomputed.non_trainable_variables], state_names, "state")
    seeds = [v.numpy() for v in recomputed.non_trainable_variables if "seed_generator" in v.path]
    assert seeds, "no drop-path RNG state found"
    assert {"recompute": True}.items() <= recomputed.get_config().items()


def test_retrain_gradients_match_under_bfloat16():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        plain, recomputed = _retrain_net(False), _retrain_net(True)
        for a, b in zip(plain.variables, recomputed.variables):
            b.assign(a.numpy())
        g_plain, g_recomputed = _retrain_grads(plain), _retrain_grads(recomputed)
    finally:
        keras.config.set_dtype_policy(policy)
    assert all(g.dtype == np.float32 for g in g_recomputed)
    # The recomputed pass runs the same bfloat16 ops on the same inputs.
    for a, b, v in zip(g_plain, g_recomputed, plain.trainable_variables):
        scale = max(float(np.max(np.abs(a))), 1e-12)
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-2 * scale, err_msg=v.path)


# === Options ===


@pytest.mark.parametrize("config_cls", [SearchConfig, RetrainConfig])
@pytest.mark.parametrize("other, message", [
    ({"jit_compile": True}, "--recompute=True: cannot be combined with --jit_compile"),
    ({"sync_bn": True}, "--recompute=True: cannot be combined with --sync_bn"),
])
def test_recompute_refuses_untested_combinations(config_cls, other, message):
    with pytest.raises(UserError, match=message):
        config_cls(recompute=True, **other).validate()
    config_cls(recompute=True).validate()
    assert config_cls().recompute is False  # default: today's behaviour
