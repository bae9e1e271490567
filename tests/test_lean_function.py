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
