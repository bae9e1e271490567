"""The 8 DARTS candidate ops against an independent numpy reference of the PyTorch code.

Expected values come from `tests/numpy_reference.py` (PyTorch semantics written out in numpy, with
the Keras layer's weights copied in) or are worked by hand; nothing is copied from running the code
under test.
"""


import keras
import numpy as np
import pytest
import tensorflow as tf

import numpy_reference as ref
from keras_darts import ops
from keras_darts.ops import PRIMITIVES, make_op

C = 4
N = 2
SIZES = (8, 7)
STRIDES = (1, 2)


# float32 layers against the float64 reference.
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def float64():
    """Sets a global float64 dtype policy for the test; restores the previous one."""
    old_floatx = keras.config.floatx()
    old_policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(old_policy)
        keras.config.set_floatx(old_floatx)


def _input(size, seed=0, dtype=np.float32, channels=C):
    return np.random.default_rng(seed).standard_normal((N, size, size, channels)).astype(dtype)


def _reference(name, x_nhwc, layer, stride, search=True):
    x = ref.nhwc_to_nchw(x_nhwc).astype(np.float64)
    y = ref.op_forward(name, x, ref.op_params(layer), stride, search=search)
    return ref.nchw_to_nhwc(y)


def _build(layer, x):
    layer.build(x.shape)
    return layer


def _sublayers(layer):
    return list(layer._flatten_layers(include_self=False, recursive=True))


def _is_bn(layer):
    """Any batch-norm layer (Keras' or the package's own): it keeps running statistics."""
    return (getattr(layer, "moving_mean", None) is not None
            and getattr(layer, "moving_variance", None) is not None)


def _bns(layer):
    return [l for l in _sublayers(layer) if _is_bn(l)]


def _cases():
    for name in PRIMITIVES:
        for stride in STRIDES:
            for size in SIZES:
                # The reference FactorizedReduce cannot run on odd sizes (its two halves differ).
                if name == "skip_connect" and stride == 2 and size % 2:
                    continue
                yield pytest.param(name, stride, size, id=f"{name}-s{stride}-{size}x{size}")


# ----------------------------------------------------------------------------------------------
# The numpy reference itself, against hand-worked values
# ----------------------------------------------------------------------------------------------

def test_reference_pools_hand_worked():
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)  # [[0,1,2],[3,4,5],[6,7,8]]
    avg = ref.avg_pool2d(x, 3, 1, 1, count_include_pad=False)[0, 0]
    # Corner (0,0) averages the 4 real pixels 0,1,3,4; edge (0,1) the 6 pixels 0..5; centre all 9.
    assert avg[0, 0] == pytest.approx((0 + 1 + 3 + 4) / 4)
    assert avg[0, 1] == pytest.approx((0 + 1 + 2 + 3 + 4 + 5) / 6)
    assert avg[1, 1] == pytest.approx(4.0)
    assert ref.avg_pool2d(x, 3, 1, 1, count_include_pad=True)[0, 0, 0, 0] == pytest.approx(8 / 9)
    mx = ref.max_pool2d(-x - 1, 3, 1, 1)[0, 0]  # all negative: -inf padding never wins, 0 would
    assert mx[0, 0] == -1.0 and mx[2, 2] == -5.0
    # Stride 2, pad 1 on 3x3: windows centred on rows/cols 0 and 2.
    np.testing.assert_array_equal(ref.max_pool2d(x, 3, 2, 1)[0, 0], [[4, 5], [7, 8]])


def test_reference_conv_hand_worked():
    x = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    w = np.ones((1, 1, 3, 3))
    # Dilation 2, padding 2, stride 2: output (0,0) is centred on (0,0) and touches rows/cols
    # {-2, 0, 2}; the real ones are (0,0),(0,2),(2,0),(2,2) -> 0 + 2 + 10 + 12.
    y = ref.conv2d(x, w, stride=2, padding=2, dilation=2)
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 0, 0] == 24.0
    # Centre (1,1) is centred on (2,2): rows/cols {0, 2, 4} all real.
    assert y[0, 0, 1, 1] == sum(x[0, 0, r, c] for r in (0, 2, 4) for c in (0, 2, 4))
    # Groups: a depthwise conv treats channels independently.
    x2 = np.stack([x[0, 0], 10 * x[0, 0]])[None]
    w2 = np.stack([np.ones((1, 3, 3)), 2 * np.ones((1, 3, 3))])
    y2 = ref.conv2d(x2, w2, 1, 1, groups=2)
    single = ref.conv2d(x, w, 1, 1)[0, 0]
    np.testing.assert_allclose(y2[0, 0], single)
    np.testing.assert_allclose(y2[0, 1], 20 * single)


def test_reference_batch_norm_hand_worked():
    x = np.array([1.0, 3.0]).reshape(1, 1, 2, 1)  # mean 2, biased var 1, unbiased var 2
    y = ref.batch_norm_train(x)
    np.testing.assert_allclose(y.ravel(), [-1 / np.sqrt(1 + 1e-5), 1 / np.sqrt(1 + 1e-5)])
    rm, rv = ref.batch_norm_running_update(x, np.zeros(1), np.ones(1))
    np.testing.assert_allclose(rm, [0.2])
    np.testing.assert_allclose(rv, [0.9 + 0.1 * 2.0])


# ----------------------------------------------------------------------------------------------
# Constants and structure
# ----------------------------------------------------------------------------------------------

def test_primitives_order():
    assert tuple(PRIMITIVES) == (
        "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
        "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
    )


def _kernel_shapes(layer):
    return sorted(tuple(v.shape) for v in layer.trainable_variables)


# Trainable kernels by hand, C = 4: depthwise (k, k, C, 1), pointwise (1, 1, C, C), FR halves
# (1, 1, C, C/2). No biases, and no BN gamma/beta in search mode.
EXPECTED_KERNELS = {
    "none": [],
    "max_pool_3x3": [],
    "avg_pool_3x3": [],
    "skip_connect": [],
    "sep_conv_3x3": sorted([(3, 3, C, 1), (1, 1, C, C)] * 2),
    "sep_conv_5x5": sorted([(5, 5, C, 1), (1, 1, C, C)] * 2),
    "dil_conv_3x3": sorted([(3, 3, C, 1), (1, 1, C, C)]),
    "dil_conv_5x5": sorted([(5, 5, C, 1), (1, 1, C, C)]),
}
# BatchNorm layers per op in a search MixedOp (pools get one non-affine BN).
EXPECTED_BNS = {"none": 0, "max_pool_3x3": 1, "avg_pool_3x3": 1, "skip_connect": 0,
                "sep_conv_3x3": 2, "sep_conv_5x5": 2, "dil_conv_3x3": 1, "dil_conv_5x5": 1}


@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("name", PRIMITIVES)
def test_op_structure_search_mode(name, stride):
    layer = _build(make_op(name, C, stride, affine=False, search=True), _input(8))
    kernels = EXPECTED_KERNELS[name]
    n_bn = EXPECTED_BNS[name]
    if name == "skip_connect" and stride == 2:  # FactorizedReduce
        kernels, n_bn = sorted([(1, 1, C, C // 2)] * 2), 1
    assert _kernel_shapes(layer) == kernels
    assert all(v.name not in ("bias", "gamma", "beta") for v in layer.variables)
    for sub in _sublayers(layer):
        if isinstance(sub, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            assert sub.use_bias is False
    bns = _bns(layer)
    assert len(bns) == n_bn
    assert len({id(b) for b in bns}) == n_bn  # distinct layers, not one BN reused
    for bn in bns:  # momentum is checked by behaviour in test_bn_momentum (conventions differ)
        assert bn.epsilon == pytest.approx(1e-5)
        assert sorted(v.name for v in bn.variables) == ["moving_mean", "moving_variance"]
    # Only BN moving statistics are non-trainable.
    assert sorted(v.name for v in layer.non_trainable_variables) == sorted(
        ["moving_mean", "moving_variance"] * n_bn)


@pytest.mark.parametrize("name", ["dil_conv_3x3", "dil_conv_5x5"])
def test_dil_conv_has_dilation_two_at_stride_one(name):
    layer = _build(make_op(name, C, 1, affine=False, search=True), _input(8))
    dw = [l for l in _sublayers(layer) if isinstance(l, keras.layers.DepthwiseConv2D)]
    assert len(dw) == 1
    assert tuple(dw[0].dilation_rate) == (2, 2)


@pytest.mark.parametrize("name", ["max_pool_3x3", "avg_pool_3x3"])
@pytest.mark.parametrize("stride", STRIDES)
def test_pools_in_derived_mode_have_no_bn(name, stride):
    x = _input(8)
    layer = _build(make_op(name, C, stride, affine=True, search=False), x)
    assert _bns(layer) == [] and layer.variables == []
    np.testing.assert_allclose(np.asarray(layer(x, training=True)),
                               _reference(name, x, layer, stride, search=False), **TOL)


@pytest.mark.parametrize("stride", STRIDES)
def test_skip_connect(stride):
    layer = make_op("skip_connect", C, stride, affine=False, search=True)
    if stride == 1:
        assert layer.variables == []
        x = _input(7)
        np.testing.assert_array_equal(np.asarray(layer(x)), x)
    else:
        assert isinstance(layer, ops.FactorizedReduce)


def test_unknown_op_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown operation"):
        make_op("conv_7x1_1x7", C, 1, affine=False)
    with pytest.raises(ValueError, match="even"):
        ops.FactorizedReduce(5)
    with pytest.raises(ValueError, match="pool_type"):
        ops.Pool("min")


# ----------------------------------------------------------------------------------------------
# Numerics against the reference
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,stride,size", list(_cases()))
def test_op_matches_reference(name, stride, size):
    x = _input(size, seed=size * 10 + stride)
    layer = _build(make_op(name, C, stride, affine=False, search=True), x)
    y = np.asarray(layer(x, training=True))
    expected = _reference(name, x, layer, stride)
    out = -(-size // stride)  # ceil(size / stride): PyTorch's size for every op here
    assert expected.shape == (N, out, out, C)
    assert y.shape == expected.shape
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, **TOL)


AFFINE_OPS = ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "skip_connect"]


@pytest.mark.parametrize("name,stride", [(n, s) for n in AFFINE_OPS for s in STRIDES
                                         if (n, s) != ("skip_connect", 1)])  # identity: no BN
def test_derived_affine_op_matches_reference(name, stride):
    x = _input(8, seed=7)
    layer = _build(make_op(name, C, stride, affine=True, search=False), x)
    rng = np.random.default_rng(11)
    bns = _bns(layer)
    assert bns and all(getattr(bn, "gamma", None) is not None and getattr(bn, "beta", None)
                       is not None for bn in bns)
    affine_vars = [v for v in layer.trainable_variables if v.name in ("gamma", "beta")]
    assert len(affine_vars) == 2 * len(bns)
    for bn in bns:  # non-trivial gamma/beta so the affine part is exercised
        bn.gamma.assign(rng.uniform(0.5, 2.0, size=bn.gamma.shape))
        bn.beta.assign(rng.standard_normal(bn.beta.shape))
    np.testing.assert_allclose(np.asarray(layer(x, training=True)),
                               _reference(name, x, layer, stride, search=False), **TOL)


def test_zero_op_shapes_and_values():
    for size in SIZES:
        for stride in STRIDES:
            x = _input(size) + 5.0
            y = np.asarray(make_op("none", C, stride, affine=False, search=True)(x))
            out = -(-size // stride)
            assert y.shape == (N, out, out, C)
            assert not y.any()


def test_factorized_reduce_second_conv_sees_input_shifted_by_one():
    """Hand-worked: only pixel (1, 1) is non-zero. The first conv samples even pixels and sees
    nothing; the second conv samples x[1:, 1:] at even positions and sees it at output (0, 0)."""
    x = np.zeros((N, 8, 8, C), np.float32)
    x[:, 1, 1, :] = 1.0
    layer = _build(ops.FactorizedReduce(C, affine=False), x)
    # Pointwise kernels that copy input channel 0 to every output channel.
    k = np.zeros((1, 1, C, C // 2))
    k[0, 0, 0, :] = 1.0
    layer.conv1.kernel.assign(k)
    layer.conv2.kernel.assign(k)
    y = np.asarray(layer(x, training=True))
    assert y.shape == (N, 4, 4, C)
    # First half: conv1 output is all zero -> BN of a constant is 0.
    np.testing.assert_allclose(y[..., : C // 2], 0.0, atol=1e-6)
    # Second half: pre-BN value 1 at (0,0) of each image, 0 on the other 15 pixels. Batch stats over
    # N*16 values: mean 1/16, biased var 1/16 - 1/256 = 15/256.
    mean, var = 1 / 16, 15 / 256
    hi = (1 - mean) / np.sqrt(var + 1e-5)
    lo = (0 - mean) / np.sqrt(var + 1e-5)
    second = y[..., C // 2:]
    np.testing.assert_allclose(second[:, 0, 0, :], hi, rtol=1e-5)
    mask = np.ones((4, 4), bool)
    mask[0, 0] = False
    np.testing.assert_allclose(second[:, mask, :], lo, rtol=1e-5)


def test_factorized_reduce_odd_input():
    """The reference cannot run on odd inputs; here the first half must still be the reference's
    conv_1 path, and the second half the shifted input with the missing far row/column zero."""
    x = _input(7, seed=5)
    layer = _build(make_op("skip_connect", C, 2, affine=False, search=True), x)
    y = np.asarray(layer(x, training=True))
    assert y.shape == (N, 4, 4, C)
    p = ref.op_params(layer)
    xr = ref.relu(ref.nhwc_to_nchw(x).astype(np.float64))
    a = ref.batch_norm_train(ref.conv2d(xr, p["conv1"], stride=2))
    shifted = np.pad(xr[:, :, 1:, 1:], ((0, 0), (0, 0), (0, 1), (0, 1)))
    b = ref.batch_norm_train(ref.conv2d(shifted, p["conv2"], stride=2))
    np.testing.assert_allclose(y[..., : C // 2], ref.nchw_to_nhwc(a), **TOL)
    np.testing.assert_allclose(y[..., C // 2:], ref.nchw_to_nhwc(b), **TOL)


# ----------------------------------------------------------------------------------------------
# Symmetric padding vs TF 'same'
# ----------------------------------------------------------------------------------------------

def test_tf_same_padding_is_asymmetric_at_stride_2_but_ours_is_symmetric():
    x = _input(8, seed=21)
    xr = np.maximum(x, 0)
    xr64 = ref.nhwc_to_nchw(xr).astype(np.float64)

    # A single depthwise 3x3 stride-2 conv: TF 'same' on 8x8 pads (0, 1), PyTorch pads (1, 1).
    layer = _build(make_op("sep_conv_3x3", C, 2, affine=False, search=True), x)
    dw = layer.depthwise1.kernel.numpy()
    same = tf.nn.depthwise_conv2d(xr, dw, strides=[1, 2, 2, 1], padding="SAME").numpy()
    sym = ref.nchw_to_nhwc(ref.conv2d(xr64, ref.depthwise_weight(layer.depthwise1),
                                      stride=2, padding=1, groups=C))
    assert same.shape == sym.shape == (N, 4, 4, C)
    assert np.abs(same - sym).max() > 1e-2
    # 'same' is exactly the reference with the window shifted by one pixel (pad 0 before, 1 after).
    shifted = ref.conv2d(np.pad(xr64, ((0, 0), (0, 0), (0, 1), (0, 1))),
                         ref.depthwise_weight(layer.depthwise1), stride=2, padding=0, groups=C)
    np.testing.assert_allclose(same, ref.nchw_to_nhwc(shifted), **TOL)

    # The whole sep_conv with TF 'same' padding differs from the reference; ours matches it.
    def sep_same(inp):
        h = tf.nn.depthwise_conv2d(tf.nn.relu(inp), dw, [1, 2, 2, 1], "SAME")
        h = tf.nn.conv2d(h, layer.pointwise1.kernel.numpy(), 1, "VALID")
        m, v = tf.nn.moments(h, [0, 1, 2])
        h = (h - m) / tf.sqrt(v + 1e-5)
        h = tf.nn.depthwise_conv2d(tf.nn.relu(h), layer.depthwise2.kernel.numpy(), [1, 1, 1, 1],
                                   "SAME")
        h = tf.nn.conv2d(h, layer.pointwise2.kernel.numpy(), 1, "VALID")
        m, v = tf.nn.moments(h, [0, 1, 2])
        return ((h - m) / tf.sqrt(v + 1e-5)).numpy()

    expected = _reference("sep_conv_3x3", x, layer, 2)
    ours = np.asarray(layer(x, training=True))
    assert np.abs(sep_same(x) - expected).max() > 1e-2
    np.testing.assert_allclose(ours, expected, **TOL)

    # Pools: TF 'SAME' stride-2 pooling on 8x8 is also shifted; ours is not.
    xn = ref.nhwc_to_nchw(x).astype(np.float64)
    for name, tf_pool, ref_pool in (
            ("max_pool_3x3", tf.nn.max_pool2d, lambda a: ref.max_pool2d(a, 3, 2, 1)),
            ("avg_pool_3x3", tf.nn.avg_pool2d, lambda a: ref.avg_pool2d(a, 3, 2, 1))):
        tf_same = tf_pool(x, 3, 2, "SAME").numpy()
        expected_pool = ref.nchw_to_nhwc(ref_pool(xn))
        assert np.abs(tf_same - expected_pool).max() > 1e-2
        pool_layer = _build(make_op(name, C, 2, affine=False, search=False), x)
        np.testing.assert_allclose(np.asarray(pool_layer(x)), expected_pool, **TOL)

    # On odd sizes TF's 'same' happens to be symmetric (total pad 2 -> (1, 1)): no difference.
    x7 = _input(7, seed=22)
    same7 = tf.nn.depthwise_conv2d(x7, dw, [1, 2, 2, 1], "SAME").numpy()
    sym7 = ref.conv2d(ref.nhwc_to_nchw(x7).astype(np.float64),
                      ref.depthwise_weight(layer.depthwise1), 2, 1, groups=C)
    np.testing.assert_allclose(same7, ref.nchw_to_nhwc(sym7), **TOL)


# ----------------------------------------------------------------------------------------------
# BatchNorm semantics
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sync_bn", [False, True])
def test_bn_epsilon_hand_worked(sync_bn):
    """Batch variance 1e-5 (values +-sqrt(1e-5), mean 0): with eps = 1e-5 the output is
    +-sqrt(1e-5 / 2e-5) = +-0.70711; eps 1e-3 would give 0.0995, a 1.001e-5 clamp 0.70693."""
    a = np.sqrt(1e-5)
    x = np.array([a, -a] * 4, np.float32).reshape(2, 2, 2, 1)
    bn = ops.batch_norm(affine=False, sync_bn=sync_bn)
    bn.build(x.shape)
    y = np.asarray(bn(x, training=True))
    np.testing.assert_allclose(y.ravel(), np.sign(x.ravel()) * np.sqrt(0.5), rtol=2e-5)


BN_OPS = [(n, s) for n in PRIMITIVES for s in STRIDES
          if n not in ("none",) and (n, s) != ("skip_connect", 1)]


@pytest.mark.parametrize("name,stride", BN_OPS)
def test_bn_momentum(name, stride):
    """PyTorch momentum 0.1: from (0, 1), one step gives m1 = 0.1 b and v1 = 0.9 + 0.1 v; a second
    step on the same input (BN outputs do not depend on running stats in training) gives
    m2 = 0.19 b = 1.9 m1 and v2 - 0.81 = 1.9 (v1 - 0.9), whatever the BN's inputs are."""
    keras.utils.set_random_seed(51)  # fixed weights: the non-vacuity check below is then exact
    x = _input(8, seed=51) + 0.3
    layer = _build(make_op(name, C, stride, affine=False, search=True), x)
    bns = _bns(layer)
    assert bns
    layer(x, training=True)
    m1 = [bn.moving_mean.numpy().astype(np.float64) for bn in bns]
    v1 = [bn.moving_variance.numpy().astype(np.float64) for bn in bns]
    layer(x, training=True)
    for bn, m, v in zip(bns, m1, v1):
        assert np.abs(m).max() > 1e-3  # the check below is not vacuous
        np.testing.assert_allclose(bn.moving_mean.numpy(), 1.9 * m, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(bn.moving_variance.numpy() - 0.81, 1.9 * (v - 0.9),
                                   rtol=1e-4, atol=1e-6)
    # Inference is not training: running statistics do not move.
    before = [bn.moving_mean.numpy().copy() for bn in bns]
    layer(x, training=False)
    for bn, b in zip(bns, before):
        np.testing.assert_array_equal(bn.moving_mean.numpy(), b)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_bn_scale_argument_multiplies_the_output(affine, training):
    """FusedBatchNorm(x, scale=w) = w * FusedBatchNorm(x), gamma/beta included, in training and
    at inference; the running statistics move as without it."""
    x = _input(8, seed=61) + 0.4
    bn = ops.FusedBatchNorm(affine=affine)
    bn.build(x.shape)
    if affine:
        bn.gamma.assign(np.linspace(0.5, 2.0, C).astype(np.float32))
        bn.beta.assign(np.linspace(-1.0, 1.0, C).astype(np.float32))
    w = tf.constant(-0.37)
    plain = np.asarray(bn(x, training=training)).astype(np.float64)
    stats = bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()
    bn.moving_mean.assign(np.zeros(C, np.float32))
    bn.moving_variance.assign(np.ones(C, np.float32))
    scaled = np.asarray(bn(x, training=training, scale=w))
    np.testing.assert_allclose(scaled, -0.37 * plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_mean.numpy(), stats[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bn.moving_variance.numpy(), stats[1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,stride", BN_OPS)
def test_out_scale_equals_multiplying_the_output(name, stride):
    """What MixedOp folds: op(x, out_scale=w) against w * op(x) — outputs and the gradients to x,
    w and every weight of the op (training mode)."""
    x = tf.constant(_input(8, seed=62))
    layer = _build(make_op(name, C, stride, affine=False, search=True), x)
    assert layer.folds_scale
    w = tf.Variable(0.61)
    r = tf.constant(np.random.default_rng(63).standard_normal(
        layer(x, training=True).shape).astype(np.float32))

    def run(fold):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = layer(x, training=True, out_scale=w) if fold else w * layer(x, training=True)
            loss = tf.reduce_sum(y * r)
        grads = tape.gradient(loss, [x, w] + layer.trainable_weights)
        return [y] + grads

    # dL/dw is one sum over every output element, most of which cancel: its round-off scales
    # with the sum of the magnitudes of its terms, not with its value.
    terms = float(tf.reduce_sum(tf.abs(layer(x, training=True) * r)))
    for i, (a, b) in enumerate(zip(run(True), run(False))):
        b = np.asarray(b)
        atol = 2e-7 * terms if i == 2 else 1e-5 * np.abs(b).max()
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=atol)


def test_mixed_op_folds_its_weights_into_the_ops_bns():
    """In float32 the edge's traced graph multiplies no BN output by a weight (each weight is the
    BN's scale); the skip connection (no BN) still multiplies. Under mixed bfloat16 the ops compute
    in 16 bits and the mixture in float32, so nothing is folded."""
    from keras_darts.search_cells import MixedOp

    def muls_of_bn_outputs(policy):
        old = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            edge = MixedOp(C, 1, name="edge")
            edge.build((N, 8, 8, C))
            x = tf.constant(_input(8, seed=64)).numpy()
            if policy != "float32":
                x = x.astype(np.float32)
            graph = tf.function(lambda x, w: edge(tf.cast(x, edge.compute_dtype), w,
                                                  training=True)).get_concrete_function(
                tf.TensorSpec((N, 8, 8, C)), tf.TensorSpec((len(PRIMITIVES),))).graph
        finally:
            keras.config.set_dtype_policy(old)
        muls = [op for op in graph.get_operations() if op.type == "Mul"]
        from_bn = [op for op in muls if any(
            i.op.type == "FusedBatchNormV3" or (i.op.type == "Cast"
                                                and i.op.inputs[0].op.type == "FusedBatchNormV3")
            for i in op.inputs)]
        return len(muls), len(from_bn)

    assert muls_of_bn_outputs("float32") == (1, 0)  # the skip connection's weight
    assert muls_of_bn_outputs("mixed_bfloat16")[1] == 6  # two pools, two sep, two dil convs

def _pool_running_stats(sync_bn):
    x = _input(8, seed=31) + 0.5
    layer = _build(make_op("max_pool_3x3", C, 1, affine=False, sync_bn=sync_bn, search=True), x)
    layer(x, training=True)
    pooled = ref.max_pool2d(ref.nhwc_to_nchw(x).astype(np.float64), 3, 1, 1)
    rm, rv = ref.batch_norm_running_update(pooled, np.zeros(C), np.ones(C))
    return x, layer, pooled, rm, rv


@pytest.mark.parametrize("sync_bn", [False, True])
def test_bn_running_mean_matches_pytorch(sync_bn):
    _, layer, _, rm, _ = _pool_running_stats(sync_bn)
    np.testing.assert_allclose(layer.bn.moving_mean.numpy(), rm, rtol=1e-5, atol=1e-7)


_BIASED_VAR = (
    "keras_darts/ops/batchnorm.py batch_norm(sync_bn=True) returns keras.layers.BatchNormalization, "
    "which updates moving_variance with the biased batch variance; PyTorch's BatchNorm2d (and the "
    "package's own FusedBatchNorm used when sync_bn=False) use the unbiased one, n/(n-1) larger. "
    "With sync_bn the running variance used at eval time deviates from the reference.")


@pytest.mark.parametrize("sync_bn", [
    False, pytest.param(True, marks=pytest.mark.xfail(strict=True, reason=_BIASED_VAR))])
def test_bn_running_variance_matches_pytorch(sync_bn):
    _, layer, _, _, rv = _pool_running_stats(sync_bn)
    np.testing.assert_allclose(layer.bn.moving_variance.numpy(), rv, rtol=1e-5)


@pytest.mark.parametrize("sync_bn", [
    False, pytest.param(True, marks=pytest.mark.xfail(strict=True, reason=_BIASED_VAR))])
def test_bn_inference_uses_pytorch_running_statistics(sync_bn):
    x, layer, pooled, rm, rv = _pool_running_stats(sync_bn)
    expected = ref.nchw_to_nhwc(ref.batch_norm_eval(pooled, rm, rv))
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), expected, **TOL)


def test_fresh_bn_inference():
    x = _input(8, seed=32)
    layer = _build(make_op("avg_pool_3x3", C, 1, affine=False, search=True), x)
    # Fresh BN: running mean 0, var 1 -> y = pool(x) / sqrt(1 + eps).
    expected = ref.batch_norm_eval(ref.avg_pool2d(ref.nhwc_to_nchw(x).astype(np.float64), 3, 1, 1),
                                   np.zeros(C), np.ones(C))
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), ref.nchw_to_nhwc(expected),
                               **TOL)


# ----------------------------------------------------------------------------------------------
# Serialization
# ----------------------------------------------------------------------------------------------

def _layer_cases():
    for name in PRIMITIVES:
        for stride in STRIDES:
            for search in (True, False):
                yield pytest.param(
                    lambda name=name, stride=stride, search=search: make_op(
                        name, C, stride, affine=not search, search=search),
                    id=f"{name}-s{stride}-{'search' if search else 'derived'}")
    yield pytest.param(lambda: ops.ReLUConvBN(C, 1, 1, 0, affine=False), id="ReLUConvBN-1x1")
    yield pytest.param(lambda: ops.ReLUConvBN(C, 3, 2, 1, affine=True), id="ReLUConvBN-3x3-s2")
    yield pytest.param(lambda: ops.batch_norm(affine=False), id="batch_norm")
    yield pytest.param(lambda: ops.batch_norm(affine=True), id="batch_norm-affine")


@pytest.mark.parametrize("factory", list(_layer_cases()))
def test_get_config_round_trip(factory):
    x = _input(8, seed=41)
    layer = _build(factory(), x)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == config
    _build(clone, x)
    assert [w.shape for w in clone.get_weights()] == [w.shape for w in layer.get_weights()]
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x, training=True)),
                                  np.asarray(layer(x, training=True)))
    # Registered: the generic Keras deserializer finds the class by its registered name.
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == config


# ----------------------------------------------------------------------------------------------
# dtype policy
# ----------------------------------------------------------------------------------------------

_DTYPE_BUG = (
    "A composite op ignores its own `dtype`: keras_darts/ops/layers_util.py conv2d(), "
    "depthwise_conv2d() and ops/batchnorm.py batch_norm() build sublayers without "
    "dtype=self.dtype_policy (ReLUConvBN/DilConv/SepConv/"
    "FactorizedReduce/Pool __init__), so e.g. SepConv(dtype='float64') reports a float64 policy "
    "(and get_config records it) but creates float32 sublayers and variables; from_config of such "
    "a layer does not reproduce it.")


@pytest.mark.xfail(strict=True, reason=_DTYPE_BUG)
@pytest.mark.parametrize("factory", [
    pytest.param(lambda: ops.SepConv(C, 3, 1, 1, affine=False, dtype="float64"), id="SepConv"),
    pytest.param(lambda: ops.DilConv(C, 3, 2, 2, 2, affine=False, dtype="float64"), id="DilConv"),
    pytest.param(lambda: ops.FactorizedReduce(C, affine=False, dtype="float64"), id="FR"),
    pytest.param(lambda: ops.ReLUConvBN(C, 1, 1, 0, affine=False, dtype="float64"), id="RCB"),
    pytest.param(lambda: ops.Pool("max", 1, with_bn=True, affine=False, dtype="float64"),
                 id="Pool-bn"),
])
def test_dtype_argument_reaches_sublayers(factory):
    layer = _build(factory(), _input(8))
    assert layer.dtype_policy.name == "float64"
    assert {l.dtype_policy.name for l in _sublayers(layer)} == {"float64"}
    assert {str(v.dtype) for v in layer.variables} == {"float64"}



@pytest.mark.parametrize("name", ["sep_conv_3x3", "max_pool_3x3"])
def test_ops_run_under_float64_policy(name, float64):
    x = _input(8, dtype=np.float64)
    layer = _build(make_op(name, C, 1, affine=False, search=True), x)
    y = np.asarray(layer(x, training=True))
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, _reference(name, x, layer, 1), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (5, 4)])
@pytest.mark.parametrize("offset", [0, 1])
def test_subsample_equals_strided_slice_with_the_same_gradient(size, offset):
    h, w = size
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, h, w, 3)).astype("float32")
    oh, ow = -(-h // 2), -(-w // 2)
    # Reference: x[offset::2, offset::2], zero where offset runs past the edge, ceil(size/2) long.
    expected = np.zeros((2, oh, ow, 3), np.float32)
    part = x[:, offset::2, offset::2, :]
    expected[:, : part.shape[1], : part.shape[2]] = part
    r = rng.normal(size=expected.shape).astype("float32")
    expected_grad = np.zeros_like(x)
    expected_grad[:, offset::2, offset::2, :] = r[:, : part.shape[1], : part.shape[2]]

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = ops.subsample(xt, 2, offset=offset)
        loss = tf.reduce_sum(y * r)
    np.testing.assert_array_equal(y.numpy(), expected)
    np.testing.assert_array_equal(tape.gradient(loss, xt).numpy(), expected_grad)
    # Unknown height/width (e.g. a traced serving signature) takes the strided-slice path.
    dynamic = tf.function(lambda t: ops.subsample(t, 2, offset=offset),
                          input_signature=[tf.TensorSpec([None, None, None, 3])])
    np.testing.assert_array_equal(dynamic(xt).numpy(), expected)
