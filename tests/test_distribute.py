"""Strategy choice (distribute.py), multi-replica equivalence of the search step, mixed precision.

conftest.py splits the CPU into two logical devices, so MirroredStrategy runs two replicas here.
The search steps run eagerly (`strategy.run` outside tf.function): tracing the step costs far more
than a few eager steps of these tiny networks (1 node per cell, 8x8 images).
"""


import functools
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_darts import distribute
from keras_darts.architect import BilevelStep, LossScale
from keras_darts.errors import UserError
from keras_darts.guards import BetaDecay
from keras_darts.optimizers import TorchSGD, arch_adam
from keras_darts.supernet import SearchNetwork

NUM_CLASSES, SIZE = 3, 8


def _two_cpus():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs the two logical CPUs that conftest.py configures")


# === get_strategy ===


def test_auto_and_one_device_use_one_replica():
    for name in ("auto", "one_device"):
        strategy = distribute.get_strategy(name)
        assert isinstance(strategy, tf.distribute.OneDeviceStrategy)  # no GPU on this machine
        assert strategy.num_replicas_in_sync == 1


def test_mirrored_uses_the_logical_cpus():
    _two_cpus()
    strategy = distribute.get_strategy("mirrored", cpu_devices=2)
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2


def test_unknown_strategy_is_a_user_error():
    with pytest.raises(UserError, match=r"^--strategy=mirored: unknown strategy; expected one of"):
        distribute.get_strategy("mirored")


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match=r"^--strategy=multi_worker: the TF_CONFIG environment"):
        distribute.get_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UserError, match=r"TF_CONFIG is not valid JSON"):
        distribute.get_strategy("multi_worker")


def test_cpu_devices_after_initialisation_is_a_user_error():
    _two_cpus()
    with pytest.raises(UserError, match=r"^--cpu_devices=3: TensorFlow is already initialised"):
        distribute.get_strategy("mirrored", cpu_devices=3)


# === configure_threads ===

# A fresh process: the thread pools can only be set before TensorFlow initialises.
_THREADS_PROBE = """
import sys
from keras_darts import distribute
import tensorflow as tf
distribute.configure_threads(*eval(sys.argv[1]))
tf.constant(1.0) + 1  # the runtime starts with these pools
print(tf.config.threading.get_intra_op_parallelism_threads(),
      tf.config.threading.get_inter_op_parallelism_threads())
"""


@pytest.mark.parametrize("args, env, expected", [
    ((), {}, "1 0"),  # no GPU here: one thread per op, TensorFlow's inter-op pool
    ((3, 2), {}, "3 2"),
    ((), {"TF_NUM_INTRAOP_THREADS": "2"}, "0 0"),  # the user's variable wins over the default
])
def test_configure_threads_before_tensorflow_starts(args, env, expected):
    environ = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTRAOP_THREADS"} | env
    out = subprocess.run([sys.executable, "-c", _THREADS_PROBE, repr(args)], capture_output=True,
                         text=True, env=environ, timeout=120, check=True).stdout
    assert out.split("\n")[-2] == expected


def test_configure_threads_after_initialisation():
    tf.constant(1.0) + 1  # the runtime is up (it is, in this process)
    threading = tf.config.threading
    pools = (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads())
    distribute.configure_threads()  # the default leaves the pools be
    distribute.configure_threads(*pools)  # explicit but unchanged: fine
    other = pools[0] + 1
    with pytest.raises(UserError, match=rf"^--intra_op_threads={other}, --inter_op_threads=0: "
                                        "TensorFlow is already initialised in this process"):
        distribute.configure_threads(other)
    assert (threading.get_intra_op_parallelism_threads(),
            threading.get_inter_op_parallelism_threads()) == pools


def test_thread_options_are_checked():
    from keras_darts.config.retrain import RetrainConfig
    from keras_darts.config.search import SearchConfig

    with pytest.raises(UserError, match=r"^--intra_op_threads=-1: must be >= 0 \(0: TensorFlow's default\)$"):
        SearchConfig(intra_op_threads=-1).validate()
    with pytest.raises(UserError, match=r"^--inter_op_threads=-2: must be >= 0"):
        RetrainConfig(inter_op_threads=-2).validate()


def test_write_dir_off_multi_worker_is_the_output_dir(tmp_path):
    write_dir = distribute.WriteDir(str(tmp_path), distribute.get_strategy("one_device"))
    assert write_dir.chief and write_dir.path == str(tmp_path)
    write_dir.cleanup()
    assert tmp_path.exists()


def test_unknown_mixed_precision_is_a_user_error():
    with pytest.raises(UserError, match=r"^--mixed_precision=fp8"):
        distribute.set_mixed_precision("fp8")
    assert keras.mixed_precision.global_policy().name == "float32"


# === One device with batch B == N replicas with global batch B ===

BATCH = 8  # global batch


def _build(strategy, source=None, arch_optimizer=None, robust=False):
    """A tiny SearchNetwork with synchronised BN, its optimisers and BilevelStep, under `strategy`.

    With `source`, every variable (weights, BN statistics, alphas) is copied from that model.
    `robust`: PC-DARTS (K=2, betas), the DARTS- aux skip at weight 0.6 and beta-DARTS' term
    (lambda_t = 2) in the architecture loss.
    """
    with strategy.scope():
        keras.utils.set_random_seed(0)
        extra = dict(partial_channels=2, aux_skip=True) if robust else {}
        model = SearchNetwork(num_classes=NUM_CLASSES, layers=3, init_channels=4, steps=1,
                              multiplier=1, sync_bn=True, alpha_seed=0, **extra)
        model.build((None, SIZE, SIZE, 3))
        if source is not None:
            model.set_weights(source.get_weights())
        weight_opt = TorchSGD(0.05, 0.9, 3e-4)
        weight_opt.build(model.trainable_variables)
        arch_opt = arch_optimizer() if arch_optimizer else arch_adam(3e-3)
        arch_opt.build(model.arch_variables)
        regularizers = ()
        if robust:
            model.aux_skip_weight.assign(0.6)
            regularizers = (BetaDecay(tf.Variable(2.0, trainable=False)),)
        step = BilevelStep(model, weight_opt, arch_opt, BATCH, grad_clip=5.0,
                           arch_weight_decay=1e-3, arch_regularizers=regularizers)
    return model, step


def _global_batches(steps, seed=0):
    """`steps` (train, val) pairs of global batches of BATCH, as a dataset of global batches."""
    rng = np.random.default_rng(seed)
    n = steps * BATCH

    def split():
        x = rng.standard_normal((n, SIZE, SIZE, 3)).astype(np.float32)
        return x, rng.integers(0, NUM_CLASSES, n).astype(np.int32)

    return tf.data.Dataset.from_tensor_slices((split(), split())).batch(BATCH)


def _run_step(strategy, step, batch):
    out = strategy.run(step.replica_step, args=batch)
    return {k: float(strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None))
            for k, v in out.items()}


def _state(model, step):
    """Every model variable and every weight momentum buffer, by name."""
    state = {_name(v): v.numpy() for v in model.variables}
    for v in model.trainable_variables:
        state["momentum/" + _name(v)] = step.weight_optimizer.momentum_buffer(v).numpy()
    return state


def _name(variable):
    return variable.path.split("/", 1)[1]  # without the model name (search_network_1, ...)


def _compare(one, many, rtol, atol, what):
    assert one.keys() == many.keys()
    for name in one:
        np.testing.assert_allclose(many[name], one[name], rtol=rtol, atol=atol,
                                   err_msg=f"{what}: {name}")


@functools.lru_cache(maxsize=None)
def _mirrored():
    """One MirroredStrategy for all tests: a second one in the same process reuses the first's
    eager collective instance keys with other shapes and aborts (a test-process artefact; a search
    process has one strategy)."""
    return distribute.get_strategy("mirrored")


def _equivalence(schedule, arch_optimizer, alpha_tol, rtol=1e-4, atol=1e-5, robust=False):
    """Runs `schedule` (a list of (unrolled, grad_clip)) on one device and on two replicas with the
    same global batches, comparing everything after every step."""
    _two_cpus()
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    mirrored = _mirrored()
    assert mirrored.num_replicas_in_sync == 2
    model_1, step_1 = _build(one, arch_optimizer=arch_optimizer, robust=robust)
    model_n, step_n = _build(mirrored, model_1, arch_optimizer=arch_optimizer, robust=robust)
    _compare(_state(model_1, step_1), _state(model_n, step_n), 0, 0, "initial copy")

    data = _global_batches(len(schedule))
    batches_1 = iter(one.experimental_distribute_dataset(data))
    batches_n = iter(mirrored.experimental_distribute_dataset(data))
    previous = _state(model_1, step_1)
    for i, (unrolled, grad_clip) in enumerate(schedule):
        for step in (step_1, step_n):
            step.unrolled, step.grad_clip = unrolled, grad_clip
        batch_n = next(batches_n)
        local_sizes = [int(t.shape[0]) for t in mirrored.experimental_local_results(batch_n[0][0])]
        assert local_sizes == [BATCH // 2] * 2  # each replica sees half of the global batch
        logs_1 = _run_step(one, step_1, next(batches_1))
        logs_n = _run_step(mirrored, step_n, batch_n)
        what = f"step {i + 1} ({'unrolled' if unrolled else 'first order'}, clip {grad_clip})"
        for k in logs_1:
            assert logs_n[k] == pytest.approx(logs_1[k], rel=1e-5, abs=1e-5), f"{what}: {k}"
        state_1, state_n = _state(model_1, step_1), _state(model_n, step_n)
        alphas = {_name(v) for v in model_1.arch_variables}
        _compare({k: v for k, v in state_1.items() if k not in alphas},
                 {k: v for k, v in state_n.items() if k not in alphas}, rtol, atol, what)
        _compare({k: state_1[k] for k in alphas}, {k: state_n[k] for k in alphas}, 0, alpha_tol,
                 what + " alphas")
        # The steps moved things by far more than the tolerances (so the test can fail).
        for k in alphas:  # (the betas' gradient is ~10x smaller than the alphas')
            factor = 20 if "betas" in k else 100
            assert np.abs(state_1[k] - previous[k]).max() > factor * alpha_tol, (what, k)
        moved = max(np.abs(state_1[_name(v)] - previous[_name(v)]).max()
                    for v in model_1.trainable_variables)
        assert moved > 100 * atol, what
        previous = state_1


def test_mirrored_matches_one_device_first_order_then_unrolled():
    """Two replicas with global batch B take the same steps as one device with batch B.

    Synchronised BN in both: with it, each replica normalises with the mean/variance of the global
    batch, so the forward pass (and the BN statistics) equal the one-device ones; unsynchronised BN
    would normalise each half-batch by its own statistics, a genuinely different function.

    Step 1 is first order with clipping inactive (a wrongly scaled all-reduce would show in the
    weights); step 2 is unrolled, with a non-zero momentum buffer in w', and clipping active
    (clipping per replica before the all-reduce would give a different step).

    The alphas use plain SGD (lr 1) here, not Adam: Adam's first steps are ~lr * sign(g), invariant
    to the gradient's scale (it would hide a factor-of-2 all-reduce bug) and hugely sensitive to
    round-off where g ~ 0. `test_mirrored_matches_one_device_with_adam` (slow) uses Adam.

    Tolerances: rtol 1e-4 / atol 1e-5 on weights, momentum buffers and BN statistics, atol 1e-5 on
    alphas, 1e-5 on the summed losses. The replicas sum in a different order (float32 round-off
    ~1e-7 relative), and the unrolled step's finite difference divides round-off by 2*eps, so its
    alpha gradients agree to ~1e-5 relative (measured). Every step moves weights and alphas by more
    than 100x these tolerances.
    """
    _equivalence([(False, 100.0), (True, 0.05)],
                 lambda: keras.optimizers.SGD(learning_rate=1.0, name="arch_sgd"), alpha_tol=1e-5)


@pytest.mark.slow  # --run_slow (suite time)
def test_mirrored_matches_one_device_with_the_robust_search_options():
    """The same check for PC-DARTS (channel slices, shuffle, betas among the architecture
    variables), the DARTS- aux skip and beta-DARTS' regulariser: first order, then unrolled (the
    regulariser in the finite-difference passes too). Betas are compared like the alphas."""
    _equivalence([(False, 100.0), (True, 0.05)],
                 lambda: keras.optimizers.SGD(learning_rate=1.0, name="arch_sgd"), alpha_tol=1e-5,
                 robust=True)


@pytest.mark.slow
def test_mirrored_matches_one_device_with_adam():
    """As above with the real arch optimiser (Adam), three first-order then three unrolled steps.

    Alphas atol 2e-5 (Adam moves each alpha by ~lr = 3e-3 per step; where a gradient component is
    near zero Adam turns its round-off into a visible difference: ~6e-6 measured)."""
    _equivalence([(False, 5.0)] * 3 + [(True, 5.0)] * 3, None, alpha_tol=2e-5)


# === Mixed precision and XLA ===


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _learnable_batch(n, seed):
    """3 classes told apart by the dominant colour: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, n)
    x = 0.5 * rng.standard_normal((n, SIZE, SIZE, 3)) + 2.0 * np.eye(3)[y][:, None, None, :]
    return tf.constant(x, tf.float32), tf.constant(y, tf.int64)


def _search_steps(mode, jit_compile=False, steps=6, batch=8):
    distribute.set_mixed_precision(mode)
    keras.utils.set_random_seed(0)
    model = SearchNetwork(num_classes=NUM_CLASSES, layers=3, init_channels=4, steps=1,
                          multiplier=1, alpha_seed=0)
    model.build((None, SIZE, SIZE, 3))
    weight_opt = TorchSGD(0.05, 0.9, 3e-4)
    weight_opt.build(model.trainable_variables)
    arch_opt = arch_adam(3e-3)
    arch_opt.build(model.arch_variables)
    loss_scale = LossScale(mode == "float16")
    step = BilevelStep(model, weight_opt, arch_opt, batch, jit_compile=jit_compile,
                       loss_scale=loss_scale)
    alphas0 = [a.numpy().copy() for a in model.arch_variables]
    losses = []
    for i in range(steps):
        out = step.replica_step(_learnable_batch(batch, 2 * i), _learnable_batch(batch, 2 * i + 1))
        losses.append(float(out["train_loss_sum"]) / batch)
    print(f"{mode} jit={jit_compile} losses: {np.round(losses, 3).tolist()}")
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-2:]) < 0.5 * np.mean(losses[:2]), losses
    for a, before in zip(model.arch_variables, alphas0):
        assert a.dtype == "float32" and np.all(np.isfinite(a.numpy()))
        assert not np.array_equal(a.numpy(), before)
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    return model, loss_scale


@pytest.mark.parametrize("mode", ["bfloat16", "float16"])
def test_mixed_precision_search_steps_learn(mode, restore_policy):
    model, loss_scale = _search_steps(mode)
    assert model.compute_dtype == mode
    assert model.alphas_normal.dtype == "float32"
    if mode == "float16":
        scale = float(loss_scale.scale.numpy())
        assert np.isfinite(scale) and scale >= 1.0
    else:
        assert float(loss_scale.scale.numpy()) == 1.0


@pytest.mark.slow  # --run_slow (suite time; XLA on CPU compiles for minutes)
def test_jit_compile_search_steps_learn(restore_policy):
    """XLA-compiled gradient functions on CPU (the compile alone takes ~1 minute here)."""
    _search_steps("none", jit_compile=True)


@pytest.mark.slow  # --run_slow (suite time)
def test_arch_float32_under_mirrored_matches_float32_and_restores_the_policies(restore_policy):
    """--arch_float32 with two replicas: MirroredStrategy traces its replicas in threads that take
    turns at each all-reduce, while dtype policies are shared Python state. One traced step of a
    mixed_bfloat16 supernet must still move the alphas as the float32 supernet's step does (every
    replica's architecture pass in float32), its weights as bfloat16 does (no replica's weight
    pass in float32), and leave every layer's policy as it was."""
    _two_cpus()
    mirrored = _mirrored()
    models, moved = {}, {}
    for name, policy in (("f32", "float32"), ("bf16", "mixed_bfloat16")):
        keras.mixed_precision.set_global_policy(policy)
        with mirrored.scope():
            model = SearchNetwork(num_classes=NUM_CLASSES, layers=3, init_channels=4, steps=1,
                                  multiplier=1, alpha_seed=0)
            model.build((None, SIZE, SIZE, 3))
            if name == "bf16":
                model.set_weights(models["f32"][0].get_weights())
            weight_opt = TorchSGD(0.05, 0.9, 3e-4)
            weight_opt.build(model.trainable_variables)
            arch_opt = keras.optimizers.SGD(learning_rate=1.0)
            arch_opt.build(model.arch_variables)
            step = BilevelStep(model, weight_opt, arch_opt, BATCH, arch_float32=name == "bf16")
        models[name] = (model, step)
    keras.mixed_precision.set_global_policy("float32")
    batch = next(iter(mirrored.experimental_distribute_dataset(_global_batches(1))))
    model16 = models["bf16"][0]
    layers = [model16, *model16._flatten_layers(include_self=False, recursive=True)]
    policies = [layer.dtype_policy.name for layer in layers]
    assert policies.count("mixed_bfloat16") > 100  # (the classifier is float32 on purpose)
    for name, (model, step) in models.items():
        variables = model.arch_variables + model.trainable_variables
        before = [v.numpy().copy() for v in variables]
        tf.function(lambda b: mirrored.run(step.replica_step, args=b))(batch)
        moved[name] = [v.numpy() - b for v, b in zip(variables, before)]
    assert [layer.dtype_policy.name for layer in layers] == policies
    n = len(model16.arch_variables)
    a16, a32 = (np.concatenate([d.ravel() for d in moved[k][:n]]) for k in ("bf16", "f32"))
    assert np.abs(a32).max() > 1e-4
    np.testing.assert_allclose(a16, a32, rtol=1e-4, atol=1e-7)
    w16, w32 = (np.concatenate([d.ravel() for d in moved[k][n:]]) for k in ("bf16", "f32"))
    assert np.linalg.norm(w16 - w32) / np.linalg.norm(w32) > 1e-3


def test_hessian_tracker_under_mirrored_equals_one_device():
    """The RobustDARTS tracker runs in cross-replica context on the whole batch: under two
    replicas its power iteration gives one device's eigenvalue and vector (eager products, as
    --deterministic runs them)."""
    from keras_darts.hessian import HessianTracker

    _two_cpus()
    rng = np.random.default_rng(4)
    batch = (tf.constant(rng.standard_normal((BATCH, SIZE, SIZE, 3)), tf.float32),
             tf.constant(rng.integers(0, NUM_CLASSES, BATCH)))
    results = []
    for strategy in (tf.distribute.OneDeviceStrategy("/cpu:0"), _mirrored()):
        with strategy.scope():
            model = SearchNetwork(num_classes=NUM_CLASSES, layers=3, init_channels=4, steps=1,
                                  multiplier=1, alpha_seed=0)
            model.build((None, SIZE, SIZE, 3))
            if results:
                model.set_weights(results[0][2])
        tracker = HessianTracker(model, batch, seed=1, compiled=False)
        eig = tracker.dominant_eigenvalue(3)
        results.append((eig, tracker.vector.numpy(), model.get_weights()))
    (eig_1, v_1, _), (eig_n, v_n, _) = results
    assert abs(eig_1) > 1e-4
    assert eig_n == pytest.approx(eig_1, rel=1e-5)
    np.testing.assert_allclose(v_n, v_1, rtol=1e-4, atol=1e-6)
