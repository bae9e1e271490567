"""LeanFunction: the results of tf.function, from the runtime function alone."""

import gc

import keras
import numpy as np
import pytest
import tensorflow as tf

from tensorflow.python.eager.polymorphic_function import concrete_function  # what is patched

from keras_darts.lean_function import LeanFunction


def _training_step(seed):
    """A small model with BN and momentum SGD, and a step that trains it (state changes)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5),
                              keras.layers.BatchNormalization(), keras.layers.Dense(3)])
    opt = keras.optimizers.SGD(0.1, momentum=0.9)
    opt.build(model.trainable_variables)

    def step(batch):
        x, y = batch
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                model.trainable_variables))
        return {"loss": loss, "logits": logits}

    return model, step


def _batches():
    rng = np.random.default_rng(0)
    for n in (8, 8, 6, 8):  # a different batch size: a second trace
        yield (tf.constant(rng.standard_normal((n, 4)), tf.float32),
               tf.constant(rng.integers(0, 3, n), tf.int64))


def test_same_outputs_and_state_as_tf_function():
    model_a, step_a = _training_step(0)
    model_b, step_b = _training_step(0)
    plain, lean = tf.function(step_a), LeanFunction(step_b)
    for batch in _batches():
        out_a, out_b = plain(batch), lean(batch)
        assert out_b.keys() == out_a.keys()
        for k in out_a:
            np.testing.assert_array_equal(out_b[k].numpy(), out_a[k].numpy(), err_msg=k)
    for a, b in zip(model_a.variables, model_b.variables):  # weights, BN statistics
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=a.path)
    assert len(lean._calls) == 2  # one trace per batch size
    assert abs(float(out_a["loss"])) > 0


def test_first_call_of_each_trace_hands_freed_memory_back(monkeypatch):
    """Tracing releases free heap pages once; each trace's first call (graph optimisation, then
    the tensors) runs with the background trimming, later calls without it."""
    import contextlib

    from keras_darts import heap

    events = []

    @contextlib.contextmanager
    def recording(period_s=0.2):
        events.append("block start")
        yield
        events.append("block end")

    monkeypatch.setattr(heap, "release_free_memory", lambda: events.append("release"))
    monkeypatch.setattr(heap, "releasing_free_memory", recording)
    _, step = _training_step(0)
    lean = LeanFunction(step)
    batches = list(_batches())  # sizes 8, 8, 6, 8
    lean.trace(batches[0])
    assert events == ["release"]
    for batch in batches:
        lean(batch)
    # Size 8: traced above, block on its first call; size 6: traced (release), then its block.
    assert events == ["release", "block start", "block end",
                      "release", "block start", "block end"]


def test_calls_skip_the_function_def_copy():
    """The FunctionDef copy tf.function's call path makes (cached_definition) is never made."""
    _, step = _training_step(0)
    lean = LeanFunction(step)
    batch = next(_batches())
    lean(batch)
    lean(batch)
    (call,) = lean._calls.values()
    assert call.atomic._cached_definition is None
    plain = tf.function(step)  # the control: the plain call path does make it
    plain(batch)
    assert plain.get_concrete_function(batch).inference_fn._cached_definition is not None


def test_refuses_a_recording_tape():
    _, step = _training_step(0)
    lean = LeanFunction(step)
    batch = next(_batches())
    with tf.GradientTape():
        with pytest.raises(RuntimeError, match="recording GradientTape"):
            lean(batch)


def test_falls_back_to_tf_function_when_internals_differ(monkeypatch):
    model_a, step_a = _training_step(0)
    model_b, step_b = _training_step(0)
    lean = LeanFunction(step_b)
    monkeypatch.setattr(concrete_function.ConcreteFunction, "inference_fn",
                        property(lambda self: self.no_such_attribute))
    batch = next(_batches())
    with pytest.warns(RuntimeWarning, match="internals differ"):
        out = lean(batch)
    np.testing.assert_array_equal(out["loss"].numpy(), tf.function(step_a)(batch)["loss"].numpy())
    assert lean._plain is not None


def _concrete_functions():
    gc.collect()
    return sum(isinstance(o, concrete_function.ConcreteFunction) for o in gc.get_objects())


def test_keeps_no_concrete_function():
    """After tracing, only the runtime function is kept: the ConcreteFunction (graph, tape
    rewrites, FunctionDef copy) is gone, where a tf.function keeps one per signature."""
    _, step = _training_step(0)
    batch = next(_batches())
    before = _concrete_functions()
    lean = LeanFunction(step)
    lean(batch)
    assert _concrete_functions() == before
    plain = tf.function(step)
    plain(batch)
    assert _concrete_functions() > before


def _func_graphs():
    from tensorflow.python.framework import func_graph

    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, func_graph.FuncGraph)]


def _step_with_custom_gradients(seed):
    """_training_step's model trained by a step whose loss goes through a tf.custom_gradient,
    also inside a tf.while_loop body (a nested graph), and its optimizer all-reduces."""
    model, _ = _training_step(seed)
    opt = keras.optimizers.SGD(0.1)
    opt.build(model.trainable_variables)

    @tf.custom_gradient
    def doubled_gradient(x):
        return tf.identity(x), lambda dy: 2.0 * dy

    def step(batch):
        x, y = batch
        with tf.GradientTape() as tape:
            logits = doubled_gradient(model(x, training=True))
            _, logits = tf.while_loop(lambda i, z: i < 2,
                                      lambda i, z: (i + 1, doubled_gradient(z)), (0, logits))
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                model.trainable_variables))
        return {"loss": loss}

    return model, step


def test_frees_the_traced_graph():
    """tf.custom_gradient registers, in graph mode, a gradient function holding the trace's tensors
    in TensorFlow's global registry: a traced graph outlives its tf.function. LeanFunction removes
    those registrations, so no graph survives its trace, and the results stay those of tf.function."""
    from tensorflow.python.framework import ops as tf_ops

    registry = tf_ops._gradient_registry._registry  # noqa: SLF001
    batch = next(_batches())
    model_a, step_a = _step_with_custom_gradients(0)
    graphs, names = len(_func_graphs()), set(registry)
    plain = tf.function(step_a)
    outs_a = [plain(batch), plain(batch)]
    del plain
    assert len(_func_graphs()) > graphs  # the control: the registry keeps the plain trace alive
    assert len(set(registry) - names) >= 3  # custom gradients (2) and the optimizer's all-reduce

    model_b, step_b = _step_with_custom_gradients(0)
    graphs, names = _func_graphs(), set(registry)
    lean = LeanFunction(step_b)
    outs_b = [lean(batch)]
    assert [g for g in _func_graphs() if g not in graphs] == []
    assert set(registry) - names == set()
    outs_b.append(lean(batch))  # runs on without the graph
    for a, b in zip(outs_a, outs_b):
        np.testing.assert_array_equal(b["loss"].numpy(), a["loss"].numpy())
    for a, b in zip(model_a.variables, model_b.variables):
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=a.path)
    assert float(outs_b[1]["loss"]) != float(outs_b[0]["loss"])  # the second step trained on


def test_keeps_gradient_registrations_of_other_graphs():
    from keras_darts import lean_function

    registry = lean_function._gradient_registrations()
    ours, other = tf.Graph(), tf.Graph()
    with ours.as_default():
        mine = [tf.constant(1.0)]
    with other.as_default():
        theirs = (tf.constant(2.0),)
    registry["LeanFunctionTest-ours"] = {"type": lambda: mine}
    registry["LeanFunctionTest-other"] = {"type": lambda: theirs}
    registry["LeanFunctionTest-none"] = {"type": lambda: None}
    try:
        lean_function._release_gradient_registrations(
            ["LeanFunctionTest-ours", "LeanFunctionTest-other", "LeanFunctionTest-none"], ours)
        assert "LeanFunctionTest-ours" not in registry
        assert "LeanFunctionTest-other" in registry and "LeanFunctionTest-none" in registry
    finally:
        for k in ("LeanFunctionTest-ours", "LeanFunctionTest-other", "LeanFunctionTest-none"):
            registry.pop(k, None)
