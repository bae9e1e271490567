"""ops/dilated.py: oneDNN's native dilated depthwise conv with a written-out gradient equals TF's
SpaceToBatch route: output and filter gradient bit for bit, input gradient to round-off, second
derivatives too; DilConv trains through it on CPU and exports without it."""

import numpy as np
import pytest
import tensorflow as tf

from keras_darts.ops import make_op
from keras_darts.ops.dilated import available, dilated_depthwise_conv

pytestmark = pytest.mark.skipif(not available(), reason="needs oneDNN's CPU kernels")

CASES = [(2, 9, 7, 3, 3, 2), (2, 8, 8, 4, 5, 2), (3, 11, 10, 2, 3, 3)]  # n, h, w, c, k, dilation


def _tensors(n, h, w, c, k, seed):
    rng = np.random.default_rng(seed)
    f = lambda *s: tf.constant(rng.standard_normal(s).astype(np.float32))  # noqa: E731
    return f(n, h, w, c), f(k, k, c, 1), f(n, h, w, c)


def _tf_route(x, kernel, d):
    return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME", dilations=[d, d])


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("n,h,w,c,k,d", CASES)
def test_output_and_gradients_equal_the_space_to_batch_route(n, h, w, c, k, d, graph):
    x, kernel, dy = _tensors(n, h, w, c, k, seed=k * 10 + d)

    def both(x, kernel):
        out = []
        for fn in (_tf_route, dilated_depthwise_conv):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = fn(x, kernel, d)
            out.append([y] + tape.gradient(y, [x, kernel], output_gradients=dy))
        return out

    (y0, dx0, dk0), (y1, dx1, dk1) = (tf.function(both) if graph else both)(x, kernel)
    np.testing.assert_array_equal(y1.numpy(), y0.numpy())
    np.testing.assert_array_equal(dk1.numpy(), dk0.numpy())
    np.testing.assert_allclose(dx1.numpy(), dx0.numpy(), rtol=0, atol=1e-6 * np.abs(dx0).max())
    assert np.abs(dx0).max() > 1 and np.abs(dk0).max() > 1


def test_second_derivatives_equal_the_space_to_batch_route():
    """A Hessian-vector product through the conv (what hessian.py takes through whole networks):
    d/dx of <dL/dx, v> with L = sum(softplus(conv(x)) * r)."""
    x, kernel, r = _tensors(2, 9, 8, 3, 3, seed=5)
    v = tf.constant(np.random.default_rng(6).standard_normal(x.shape).astype(np.float32))
    results = []
    for fn in (_tf_route, dilated_depthwise_conv):
        with tf.GradientTape() as outer:
            outer.watch([x, kernel])
            with tf.GradientTape() as inner:
                inner.watch(x)
                loss = tf.reduce_sum(tf.nn.softplus(fn(x, kernel, 2)) * r)
            gx = inner.gradient(loss, x)
            gv = tf.reduce_sum(gx * v)
        results.append(outer.gradient(gv, [x, kernel]))
    for a, b in zip(results[1], results[0]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-5 * np.abs(b).max())
        assert np.abs(b.numpy()).max() > 0.1


def test_refuses_even_kernels_and_dynamic_sizes():
    x, kernel, _ = _tensors(1, 6, 6, 2, 3, seed=0)
    with pytest.raises(ValueError, match="odd kernel"):
        dilated_depthwise_conv(x, tf.zeros((2, 2, 2, 1)), 2)
    with pytest.raises(ValueError, match="static spatial sizes"):
        tf.function(lambda t: dilated_depthwise_conv(t, kernel, 2)).get_concrete_function(
            tf.TensorSpec((1, None, None, 2), tf.float32))


def _op_types(fn, *args):
    graph = tf.function(fn).get_concrete_function(*args).graph
    return [op for op in graph.get_operations()]


def test_dil_conv_trains_through_the_native_kernel_and_infers_through_tf():
    """Training: a dilated DepthwiseConv2dNative and no SpaceToBatch in the forward pass; inference
    (what is exported): TF's route, unchanged; the two give the same output."""
    x = tf.constant(np.random.default_rng(1).standard_normal((2, 8, 8, 4)).astype(np.float32))
    layer = make_op("dil_conv_3x3", 4, 1, affine=False, search=True)
    layer(x, training=False)
    train_ops = _op_types(lambda t: layer(t, training=True), x)
    infer_ops = _op_types(lambda t: layer(t, training=False), x)
    native = [op for op in train_ops if op.type == "DepthwiseConv2dNative"]
    assert len(native) == 1 and list(native[0].get_attr("dilations")) == [1, 2, 2, 1]
    assert not any(op.type == "SpaceToBatchND" for op in train_ops)
    assert any(op.type == "SpaceToBatchND" for op in infer_ops)
    # Same BN statistics in both calls: compare the depthwise part through the layer's pieces.
    kernel = layer.depthwise.kernel
    np.testing.assert_array_equal(
        dilated_depthwise_conv(tf.nn.relu(x), tf.convert_to_tensor(kernel), 2).numpy(),
        layer.depthwise(tf.nn.relu(x)).numpy())
