"""The cost model against the real Keras layers: parameters against the built layers' weights and
`count_params()`, MACs against the convolutions and matmuls in the traced TF graph (an
independent count: kernel shape x output shape of every Conv2D/DepthwiseConv2dNative/MatMul op).
And the TF cost penalty's value and alpha gradient against the numpy formula."""

import numpy as np
import pytest
import tensorflow as tf

from keras_darts.cost import derived, ops_cost, supernet_cost
from keras_darts.cost_penalty import CostPenalty
from keras_darts.genotype import PRIMITIVES, Genotype
from keras_darts.network import NetworkCIFAR, NetworkImageNet, count_parameters
from keras_darts.ops import make_op

BN_COUNT = {"sep_conv_3x3": 2, "sep_conv_5x5": 2, "dil_conv_3x3": 1, "dil_conv_5x5": 1}


def graph_macs(fn, shape):
    """Multiply-adds of the convs and matmuls of `fn` traced on a (1, ...) input."""
    graph = tf.function(fn).get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    total = 0
    for op in graph.get_operations():
        out = int(np.prod(op.outputs[0].shape)) if op.outputs else 0
        if op.type == "Conv2D":  # filter (kh, kw, c_in, c_out)
            kh, kw, c_in, _ = op.inputs[1].shape
            total += out * kh * kw * c_in
        elif op.type == "DepthwiseConv2dNative":  # filter (kh, kw, c_in, multiplier)
            kh, kw = op.inputs[1].shape[:2]
            total += out * kh * kw
        elif op.type in ("MatMul", "BatchMatMulV2"):
            total += out * op.inputs[0].shape[-1]
    return total


def _trainable(layer):
    return int(sum(np.prod(w.shape) for w in layer.trainable_weights))


@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride", [1, 2])
def test_op_cost_matches_the_keras_layer(name, stride):
    c, size = 4, (7, 8)  # odd height: the padding arithmetic
    for search in (True, False):  # search ops (BN affine=False, pools + BN), derived ops
        op = make_op(name, c, stride, affine=not search, search=search)
        op.build((1, *size, c))
        cost, (ho, wo) = ops_cost.op_cost(name, c, size, stride, affine=not search, search=search)
        assert _trainable(op) == cost.params, search
        # count_params() also counts each BN's moving mean and variance (2C, not parameters here)
        bns = BN_COUNT.get(name, 0) + (name == "skip_connect" and stride == 2) + (
            search and name in ("max_pool_3x3", "avg_pool_3x3"))
        assert (op.count_params() if op.weights else 0) == cost.params + 2 * c * bns, search
    # MACs do not depend on BN: checked on the derived op
    assert tuple(op(tf.zeros((1, *size, c)), training=False).shape[1:3]) == (ho, wo)
    if name.startswith("dil_conv") and stride == 1:
        # TF runs a dilated 'same' depthwise conv through SpaceToBatchND, which pads an odd size
        # up to a multiple of the dilation: the graph computes a few discarded outputs there.
        size = (8, 8)
        cost, _ = ops_cost.op_cost(name, c, size, stride)
    assert graph_macs(lambda x: op(x, training=False), (1, *size, c)) == cost.macs


# Two nodes per cell, every op type, a stride-2 skip (FactorizedReduce) and a pool in each cell.
SMALL = Genotype(
    normal=[("sep_conv_5x5", 0), ("dil_conv_5x5", 1), ("max_pool_3x3", 0), ("skip_connect", 2)],
    normal_concat=[2, 3],
    reduce=[("skip_connect", 0), ("sep_conv_3x3", 1), ("dil_conv_3x3", 2), ("avg_pool_3x3", 0)],
    reduce_concat=[2, 3])


@pytest.mark.parametrize("variant,shape", [("cifar", (16, 16, 3)), ("imagenet", (64, 64, 3))])
def test_network_cost_matches_the_keras_model(variant, shape):
    # (sizes where every stride-1 dilated conv sees an even size: see the test above)
    cls = NetworkCIFAR if variant == "cifar" else NetworkImageNet
    model = cls(SMALL, num_classes=10, layers=3, init_channels=4, auxiliary=variant == "cifar")
    model.build((None, *shape))
    cost = derived.network_cost(SMALL, 3, 4, shape, 10, variant)
    assert count_parameters(model) == cost.params  # auxiliary head excluded
    assert graph_macs(lambda x: model(x, training=False), (1, *shape)) == cost.macs


class _Alphas:
    def __init__(self, normal, reduce):
        self.alphas_normal = tf.Variable(normal, dtype=tf.float32)
        self.alphas_reduce = tf.Variable(reduce, dtype=tf.float32)


def test_penalty_value_and_gradient_match_numpy():
    normal, reduce = supernet_cost.cost_tables(3, 4, (8, 8), steps=2, metric="macs")
    penalty = CostPenalty(0.5, normal, reduce, "macs")
    rng = np.random.default_rng(0)
    an, ar = rng.normal(size=normal.shape), rng.normal(size=reduce.shape)
    model = _Alphas(an, ar)
    with tf.GradientTape() as tape:
        value = penalty(model)
    gn, gr = tape.gradient(value, [model.alphas_normal, model.alphas_reduce])
    norm = supernet_cost.normaliser(normal, reduce)
    expected = 0.5 * supernet_cost.expected_cost(an, ar, normal, reduce) / norm
    assert float(value) == pytest.approx(expected, rel=1e-5)
    assert penalty.relative(an, ar) == pytest.approx(expected / 0.5, rel=1e-12)
    np.testing.assert_allclose(gn.numpy(), 0.5 * supernet_cost.expected_cost_grad(an, normal) / norm,
                               rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(gr.numpy(), 0.5 * supernet_cost.expected_cost_grad(ar, reduce) / norm,
                               rtol=1e-4, atol=1e-7)
    # all weight on sep_conv_5x5 everywhere: exactly 1 x lambda
    k = PRIMITIVES.index("sep_conv_5x5")
    one_hot = np.full(normal.shape, -30.0)
    one_hot[:, k] = 30.0
    assert float(penalty(_Alphas(one_hot, one_hot))) == pytest.approx(0.5, rel=1e-5)
