"""NetworkCIFAR / NetworkImageNet forward of a known genotype against an independent numpy forward.

The numpy side is the reference's `cnn/model.py` (`Cell.forward`, `NetworkCIFAR.forward`,
`NetworkImageNet.forward`) written out below on top of tests/numpy_reference.py's ops (float64,
NCHW, PyTorch layouts); only the weights come from the Keras model. Drop path is off (rate 0) and
there is no auxiliary head, as at evaluation.

Tolerance: rtol 1e-4, atol 2e-5 on logits of magnitude ~0.5-3 (as test_supernet): the Keras model
computes in float32, with its rounding through ~20 convolutions and batch norms; measured here:
|difference| <= 2.5e-6, relative <= 4e-6 (float32 round-off). A wrong input index, concat list,
stride, padding or BN statistic moves the logits by far more (checked while writing the test:
swapping the normal cells' inputs 0 and 1 moves them by 0.3; a wrong concat changes the shapes).
"""

import numpy as np
import pytest

import numpy_reference as ref
from helpers import EVERY_OP_GENOTYPE
from keras_darts.genotype import DARTS_V2
from keras_darts.network import NetworkCIFAR, NetworkImageNet

RTOL, ATOL = 1e-4, 2e-5

# Every op type, intermediate-node inputs, concats that leave a node out (tests/helpers.py).
EVERY_OP = EVERY_OP_GENOTYPE


# === The numpy forward (the reference's model.py) ===

def _bn(x, bn):
    """Training-mode BN (batch statistics), or evaluation BN when `bn` carries running stats."""
    bn = bn or {}
    if "mean" in bn:
        return ref.batch_norm_eval(x, bn["mean"], bn["var"], bn.get("gamma"), bn.get("beta"))
    return ref.batch_norm_train(x, bn.get("gamma"), bn.get("beta"))


def _cell(s0, s1, p, genotype, reduction, reduction_prev):
    """model.Cell.forward with drop_prob = 0: node i = op_a(states[j_a]) + op_b(states[j_b])."""
    edges = genotype.reduce if reduction else genotype.normal
    concat = genotype.reduce_concat if reduction else genotype.normal_concat
    if reduction_prev:
        s0 = ref.factorized_reduce(s0, p["preprocess0"])
    else:
        s0 = ref.relu_conv_bn(s0, p["preprocess0"])
    states = [s0, ref.relu_conv_bn(s1, p["preprocess1"])]
    for i in range(len(edges) // 2):
        node = 0
        for k in (2 * i, 2 * i + 1):
            name, j = edges[k]
            stride = 2 if reduction and j < 2 else 1
            node = node + ref.op_forward(name, states[j], p["ops"][k], stride, search=False)
        states.append(node)
    return np.concatenate([states[i] for i in concat], axis=1)


def _network(x, p, genotype, layers, imagenet):
    """NetworkCIFAR.forward / NetworkImageNet.forward (no auxiliary head)."""
    if imagenet:
        h = ref.relu(_bn(ref.conv2d(x, p["stem0_conv1"], 2, 1), p["stem0_bn1"]))
        s0 = _bn(ref.conv2d(h, p["stem0_conv2"], 2, 1), p["stem0_bn2"])
        s1 = _bn(ref.conv2d(ref.relu(s0), p["stem1_conv"], 2, 1), p["stem1_bn"])
    else:
        s0 = s1 = _bn(ref.conv2d(x, p["stem_conv"], 1, 1), p["stem_bn"])
    reduction_prev = imagenet
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        s0, s1 = s1, _cell(s0, s1, p["cells"][i], genotype, reduction, reduction_prev)
        reduction_prev = reduction
    return s1.mean(axis=(2, 3)) @ p["classifier_w"].T + p["classifier_b"]


# === Weights of the Keras model, in torch layouts ===

def _stats(bn_layer):
    return {"mean": bn_layer.moving_mean.numpy().astype(np.float64),
            "var": bn_layer.moving_variance.numpy().astype(np.float64)}


def _op(layer, running):
    p = ref.op_params(layer)
    if running:
        for key in ("bn", "bn1", "bn2"):
            if key in p:
                p[key] = {**p[key], **_stats(getattr(layer, key))}
    return p


def _params(model, running):
    p = {"cells": [{"preprocess0": _op(c.preprocess0, running),
                    "preprocess1": _op(c.preprocess1, running),
                    "ops": [_op(op, running) for op in c.cell_ops]} for c in model.cells],
         "classifier_w": model.classifier.kernel.numpy().astype(np.float64).T,
         "classifier_b": model.classifier.bias.numpy().astype(np.float64)}
    stems = ([("stem0_conv1", "stem0_bn1"), ("stem0_conv2", "stem0_bn2"), ("stem1_conv", "stem1_bn")]
             if isinstance(model, NetworkImageNet) else [("stem_conv", "stem_bn")])
    for conv, bn in stems:
        p[conv] = ref.conv_weight(getattr(model, conv))
        bn_layer = getattr(model, bn)
        p[bn] = {**ref.bn_params(bn_layer), **(_stats(bn_layer) if running else {})}
    return p


def _randomise_bn_and_bias(model, seed):
    """BN at its init (gamma 1, beta 0, mean 0, var 1) would hide a mixed-up BN: draw them."""
    rng = np.random.default_rng(seed)
    for v in model.variables:
        name, shape = v.path.split("/")[-1], v.shape
        draw = {"gamma": lambda: rng.uniform(0.5, 1.5, shape),
                "beta": lambda: rng.normal(0.0, 0.3, shape),
                "moving_mean": lambda: rng.normal(0.0, 0.3, shape),
                "moving_variance": lambda: rng.uniform(0.5, 2.0, shape),
                "bias": lambda: rng.normal(0.0, 0.3, shape)}.get(name)
        if draw is not None:
            v.assign(draw().astype(np.float32))


def _build(cls, genotype, layers, size, seed):
    model = cls(genotype, num_classes=5, layers=layers, init_channels=4, auxiliary=False, seed=seed)
    model.build((None, size, size, 3))
    _randomise_bn_and_bias(model, seed)
    return model


@pytest.fixture(scope="module")
def cifar():
    # 4 cells: normal, reduction, reduction (after a reduction), normal after a reduction.
    return _build(NetworkCIFAR, DARTS_V2, layers=4, size=16, seed=3)


def _images(n, size, seed):
    return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)


def _check(model, genotype, x, training, imagenet=False):
    p = _params(model, running=not training)  # before the call: training updates the stats
    y = model(x, training=training).numpy()
    expected = _network(ref.nhwc_to_nchw(x).astype(np.float64), p, genotype, model.num_layers,
                        imagenet)
    assert y.shape == expected.shape == (len(x), 5)
    assert np.abs(expected).max() > 0.05  # not a degenerate all-zero comparison
    np.testing.assert_allclose(y, expected, rtol=RTOL, atol=ATOL)


@pytest.fixture(autouse=True)
def _ops_use_this_files_bn(monkeypatch):
    # The reference ops call ref._bn (batch statistics only); route them through `_bn` so that
    # evaluation mode uses each layer's running statistics.
    monkeypatch.setattr(ref, "_bn", _bn)


def test_cifar_darts_v2_training_forward_matches_numpy(cifar):
    _check(cifar, DARTS_V2, _images(2, 16, seed=0), training=True)


def test_cifar_darts_v2_inference_forward_matches_numpy(cifar):
    _check(cifar, DARTS_V2, _images(2, 16, seed=1), training=False)


def test_cifar_every_op_and_partial_concat_matches_numpy():
    model = _build(NetworkCIFAR, EVERY_OP, layers=3, size=16, seed=4)
    _check(model, EVERY_OP, _images(2, 16, seed=2), training=False)


def test_imagenet_darts_v2_forward_matches_numpy():
    # 32x32: the three stride-2 stems leave 4x4 for the cells (s0 is 8x8, hence FactorizedReduce).
    model = _build(NetworkImageNet, DARTS_V2, layers=3, size=32, seed=5)
    _check(model, DARTS_V2, _images(2, 32, seed=3), training=False, imagenet=True)
    _check(model, DARTS_V2, _images(4, 32, seed=4), training=True, imagenet=True)
