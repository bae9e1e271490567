"""A small pure-numpy reference of the DARTS search space, written from the PyTorch reference code
(quark0/darts `cnn/operations.py` and `cnn/model_search.py`), independent of keras_darts.

Everything here is NCHW with PyTorch weight layouts:
  conv weight (C_out, C_in // groups, kh, kw); depthwise conv = conv with groups = C_in.
PyTorch semantics, implemented literally:
  * conv2d: symmetric zero padding `p` on both sides, stride, dilation, groups, no bias,
    out = floor((H + 2p - d(k-1) - 1) / s) + 1.
  * max_pool2d: -inf padding, floor mode.
  * avg_pool2d: zero padding, `count_include_pad=False` (divide by the number of real pixels).
  * batch_norm in training mode: batch mean and *biased* batch variance for normalising, eps 1e-5;
    running stats updated with momentum 0.1 and the *unbiased* batch variance.

The last section only converts Keras layer weights (NHWC kernels) into these layouts; it computes
nothing.
"""

import numpy as np

BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # PyTorch convention: running = (1 - m) * running + m * batch

PRIMITIVES = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]


# ----------------------------------------------------------------------------------------------
# Layout helpers
# ----------------------------------------------------------------------------------------------

def nhwc_to_nchw(x):
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


def nchw_to_nhwc(x):
    return np.transpose(np.asarray(x), (0, 2, 3, 1))


def _out_size(size, k, stride, padding, dilation=1):
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


# ----------------------------------------------------------------------------------------------
# Primitive functions (torch.nn.functional semantics)
# ----------------------------------------------------------------------------------------------

def relu(x):
    return np.maximum(x, 0)


def conv2d(x, w, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d(x, w, bias=None, stride, padding, dilation, groups)."""
    n, c_in, h, wd = x.shape
    c_out, c_in_g, kh, kw = w.shape
    assert c_in == c_in_g * groups, (x.shape, w.shape, groups)
    assert c_out % groups == 0
    c_out_g = c_out // groups
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = _out_size(h, kh, stride, padding, dilation)
    wo = _out_size(wd, kw, stride, padding, dilation)
    assert ho > 0 and wo > 0
    out = np.zeros((n, c_out, ho, wo), dtype=np.result_type(x, w))
    for g in range(groups):
        xg = xp[:, g * c_in_g:(g + 1) * c_in_g]
        wg = w[g * c_out_g:(g + 1) * c_out_g]
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dilation, j * dilation
                patch = xg[:, :, r0:r0 + stride * (ho - 1) + 1:stride,
                           c0:c0 + stride * (wo - 1) + 1:stride]
                out[:, g * c_out_g:(g + 1) * c_out_g] += np.einsum(
                    "nchw,oc->nohw", patch, wg[:, :, i, j])
    return out


def max_pool2d(x, k=3, stride=1, padding=1):
    """nn.MaxPool2d(k, stride, padding): implicit -inf padding, floor mode."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                constant_values=-np.inf)
    ho, wo = _out_size(h, k, stride, padding), _out_size(w, k, stride, padding)
    out = np.full((n, c, ho, wo), -np.inf, dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, xp[:, :, i:i + stride * (ho - 1) + 1:stride,
                                     j:j + stride * (wo - 1) + 1:stride])
    return out


def avg_pool2d(x, k=3, stride=1, padding=1, count_include_pad=False):
    """nn.AvgPool2d(k, stride, padding, count_include_pad)."""
    n, c, h, w = x.shape
    pad = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    xp = np.pad(x, pad)
    ones = np.pad(np.ones((1, 1, h, w), dtype=x.dtype), pad)
    ho, wo = _out_size(h, k, stride, padding), _out_size(w, k, stride, padding)
    total = np.zeros((n, c, ho, wo), dtype=x.dtype)
    count = np.zeros((1, 1, ho, wo), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            sl = (slice(None), slice(None), slice(i, i + stride * (ho - 1) + 1, stride),
                  slice(j, j + stride * (wo - 1) + 1, stride))
            total += xp[sl]
            count += ones[sl]
    if count_include_pad:
        return total / (k * k)
    return total / count


def batch_norm_train(x, gamma=None, beta=None, eps=BN_EPS):
    """BatchNorm2d forward in training mode (batch statistics, biased variance)."""
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * np.reshape(gamma, (1, -1, 1, 1))
    if beta is not None:
        y = y + np.reshape(beta, (1, -1, 1, 1))
    return y


def batch_norm_running_update(x, running_mean, running_var, momentum=BN_MOMENTUM):
    """The running statistics PyTorch's BatchNorm2d holds after one training-mode forward of x."""
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.mean(axis=(0, 2, 3))
    var_unbiased = ((x - mean[None, :, None, None]) ** 2).sum(axis=(0, 2, 3)) / (n - 1)
    return ((1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * var_unbiased)


def batch_norm_eval(x, running_mean, running_var, gamma=None, beta=None, eps=BN_EPS):
    y = (x - np.reshape(running_mean, (1, -1, 1, 1))) / np.sqrt(
        np.reshape(running_var, (1, -1, 1, 1)) + eps)
    if gamma is not None:
        y = y * np.reshape(gamma, (1, -1, 1, 1))
    if beta is not None:
        y = y + np.reshape(beta, (1, -1, 1, 1))
    return y


def softmax(a, axis=-1):
    a = np.asarray(a, dtype=np.float64)
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ----------------------------------------------------------------------------------------------
# operations.py
# ----------------------------------------------------------------------------------------------
# Each op takes x (NCHW) and `p`, a dict of torch-layout weights; BN entries are dicts with
# optional "gamma"/"beta" (absent for affine=False).

def _bn(x, bn):
    bn = bn or {}
    return batch_norm_train(x, bn.get("gamma"), bn.get("beta"))


def relu_conv_bn(x, p, stride=1, padding=0):
    return _bn(conv2d(relu(x), p["conv"], stride, padding), p.get("bn"))


def dil_conv(x, p, stride, padding, dilation):
    c_in = x.shape[1]
    y = conv2d(relu(x), p["depthwise"], stride, padding, dilation, groups=c_in)
    y = conv2d(y, p["pointwise"])
    return _bn(y, p.get("bn"))


def sep_conv(x, p, stride, padding):
    c_in = x.shape[1]
    y = conv2d(relu(x), p["depthwise1"], stride, padding, groups=c_in)
    y = _bn(conv2d(y, p["pointwise1"]), p.get("bn1"))
    y = conv2d(relu(y), p["depthwise2"], 1, padding, groups=y.shape[1])
    return _bn(conv2d(y, p["pointwise2"]), p.get("bn2"))


def factorized_reduce(x, p):
    """Literal: cat([conv_1(relu(x)), conv_2(relu(x)[:, :, 1:, 1:])]) -> BN. (Fails on odd sizes,
    as the reference does, because the halves differ in size.)"""
    x = relu(x)
    a = conv2d(x, p["conv1"], stride=2)
    b = conv2d(x[:, :, 1:, 1:], p["conv2"], stride=2)
    return _bn(np.concatenate([a, b], axis=1), p.get("bn"))


def zero(x, stride):
    return x[:, :, ::stride, ::stride] * 0.0


def pool(x, pool_type, stride, p=None, with_bn=False):
    if pool_type == "max":
        y = max_pool2d(x, 3, stride, 1)
    else:
        y = avg_pool2d(x, 3, stride, 1, count_include_pad=False)
    if with_bn:
        y = _bn(y, (p or {}).get("bn"))
    return y


def op_forward(name, x, p, stride, search=True):
    """OPS[name](C, stride, affine)(x); with search=True pools get BatchNorm2d(C, affine=False)
    as in model_search.MixedOp."""
    if name == "none":
        return zero(x, stride)
    if name == "max_pool_3x3":
        return pool(x, "max", stride, p, with_bn=search)
    if name == "avg_pool_3x3":
        return pool(x, "avg", stride, p, with_bn=search)
    if name == "skip_connect":
        return x if stride == 1 else factorized_reduce(x, p)
    if name == "sep_conv_3x3":
        return sep_conv(x, p, stride, 1)
    if name == "sep_conv_5x5":
        return sep_conv(x, p, stride, 2)
    if name == "dil_conv_3x3":
        return dil_conv(x, p, stride, 2, 2)
    if name == "dil_conv_5x5":
        return dil_conv(x, p, stride, 4, 2)
    raise KeyError(name)


# ----------------------------------------------------------------------------------------------
# model_search.py
# ----------------------------------------------------------------------------------------------

def mixed_op(x, weights, op_params, stride):
    """sum(w * op(x) for w, op in zip(weights, ops)); op_params[k]: params of PRIMITIVES[k]."""
    return sum(w * op_forward(name, x, op_params[k], stride, search=True)
               for k, (w, name) in enumerate(zip(weights, PRIMITIVES)))


def search_cell(s0, s1, weights, p, reduction, reduction_prev, steps=4, multiplier=4):
    """model_search.Cell.forward. p: {"preprocess0", "preprocess1", "edges": [op_params list]}."""
    if reduction_prev:
        s0 = factorized_reduce(s0, p["preprocess0"])
    else:
        s0 = relu_conv_bn(s0, p["preprocess0"])
    s1 = relu_conv_bn(s1, p["preprocess1"])
    states = [s0, s1]
    offset = 0
    for _ in range(steps):
        s = 0
        for j, h in enumerate(states):
            stride = 2 if reduction and j < 2 else 1
            s = s + mixed_op(h, weights[offset + j], p["edges"][offset + j], stride)
        offset += len(states)
        states.append(s)
    return np.concatenate(states[-multiplier:], axis=1)


def search_network(x, p, alphas_normal, alphas_reduce, layers, steps=4, multiplier=4):
    """model_search.Network.forward (training mode). p: {"stem_conv", "stem_bn", "cells": [...],
    "classifier_w" (out, in), "classifier_b"}."""
    w_normal = softmax(alphas_normal)
    w_reduce = softmax(alphas_reduce)
    s = batch_norm_train(conv2d(x, p["stem_conv"], 1, 1), p["stem_bn"].get("gamma"),
                         p["stem_bn"].get("beta"))
    s0 = s1 = s
    reduction_prev = False
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        weights = w_reduce if reduction else w_normal
        s0, s1 = s1, search_cell(s0, s1, weights, p["cells"][i], reduction, reduction_prev,
                                 steps, multiplier)
        reduction_prev = reduction
    pooled = s1.mean(axis=(2, 3))
    return pooled @ p["classifier_w"].T + p["classifier_b"]


# ----------------------------------------------------------------------------------------------
# Weight extraction from Keras layers (layout conversion only; duck-typed, no keras import)
# ----------------------------------------------------------------------------------------------

def conv_weight(keras_conv):
    """Conv2D kernel (kh, kw, C_in, C_out) -> torch (C_out, C_in, kh, kw)."""
    return np.transpose(np.asarray(keras_conv.kernel.numpy(), dtype=np.float64), (3, 2, 0, 1))


def depthwise_weight(keras_dw):
    """DepthwiseConv2D kernel (kh, kw, C, 1) -> torch grouped (C, 1, kh, kw)."""
    k = np.asarray(keras_dw.kernel.numpy(), dtype=np.float64)
    assert k.shape[3] == 1, k.shape
    return np.transpose(k, (2, 3, 0, 1))


def bn_params(bn_layer):
    """gamma/beta of a BatchNorm layer if it has them (affine), else {} (works for any BN class
    that names them `gamma`/`beta`)."""
    p = {}
    for name in ("gamma", "beta"):
        v = getattr(bn_layer, name, None)
        if v is not None:
            p[name] = np.asarray(v.numpy(), dtype=np.float64)
    return p


def op_params(layer):
    """Torch-layout params of a keras_darts op layer, keyed as the functions above expect."""
    if layer is None:
        return {}
    cls = type(layer).__name__
    if cls == "SepConv":
        return {"depthwise1": depthwise_weight(layer.depthwise1),
                "pointwise1": conv_weight(layer.pointwise1), "bn1": bn_params(layer.bn1),
                "depthwise2": depthwise_weight(layer.depthwise2),
                "pointwise2": conv_weight(layer.pointwise2), "bn2": bn_params(layer.bn2)}
    if cls == "DilConv":
        return {"depthwise": depthwise_weight(layer.depthwise),
                "pointwise": conv_weight(layer.pointwise), "bn": bn_params(layer.bn)}
    if cls == "FactorizedReduce":
        return {"conv1": conv_weight(layer.conv1), "conv2": conv_weight(layer.conv2),
                "bn": bn_params(layer.bn)}
    if cls == "ReLUConvBN":
        return {"conv": conv_weight(layer.conv), "bn": bn_params(layer.bn)}
    if cls == "Pool":
        return {"bn": bn_params(layer.bn)} if layer.bn is not None else {}
    if cls in ("Zero", "Identity"):
        return {}
    raise TypeError(f"no weight mapping for {cls}")


def cell_params(cell):
    return {"preprocess0": op_params(cell.preprocess0),
            "preprocess1": op_params(cell.preprocess1),
            "edges": [[op_params(op) for op in edge.candidate_ops] for edge in cell.edges]}


def network_params(model):
    return {"stem_conv": conv_weight(model.stem_conv), "stem_bn": bn_params(model.stem_bn),
            "cells": [cell_params(c) for c in model.cells],
            "classifier_w": np.asarray(model.classifier.kernel.numpy(), dtype=np.float64).T,
            "classifier_b": np.asarray(model.classifier.bias.numpy(), dtype=np.float64)}
