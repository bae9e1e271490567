"""A stride-1 dilated depthwise conv ('same' padding) that runs oneDNN's native dilated kernel.

`tf.nn.depthwise_conv2d` with a dilation wraps an undilated conv in SpaceToBatch / BatchToSpace,
and its gradient does the same again: four full-size copies per conv and pass, 7% of a search
step's op time, and the SpaceToBatch output is kept for the filter gradient. oneDNN's
DepthwiseConv2dNative takes the dilation itself (3x faster here, bit-identical output); its
dilated backprop kernels do not (they ignore the dilation on this build), so the gradient is
written out:
  * input: the same dilated conv of dy with the kernel flipped in both spatial axes (a stride-1
    'same' conv with an odd kernel is its own transpose up to the flip; float32 round-off apart
    from the SpaceToBatch route's);
  * filter: the undilated filter gradient of the SpaceToBatch phases of the padded input and of dy
    (every tap sees the same products in the same order: bit-identical to TF's own gradient).
Only the input is kept for the backward pass; the phases are made there.

TF's own (Eigen) kernel refuses dilations, and it is the one float64 runs on; GPUs have their own
kernels. So `available()` is true only on CPU-only hosts with oneDNN on, callers use it for float32
only, and elsewhere `tf.nn.depthwise_conv2d` runs as before.
"""

import functools

import tensorflow as tf


@functools.lru_cache(maxsize=1)
def available():
    """Whether the native dilated kernel runs here (oneDNN on, no GPU to place the op on)."""
    from keras_darts import onednn_enabled

    return bool(onednn_enabled()) and not tf.config.list_physical_devices("GPU")


def _conv(x, kernel, dilation):
    return tf.raw_ops.DepthwiseConv2dNative(input=x, filter=kernel, strides=[1, 1, 1, 1],
                                            padding="SAME", dilations=[1, dilation, dilation, 1])


def dilated_depthwise_conv(x, kernel, dilation):
    """x (NHWC, static spatial size) convolved with `kernel` (k_h, k_w, C, 1; odd sizes) at
    `dilation`, stride 1, padding dilation * (k - 1) / 2 on each side."""
    k_h, k_w = kernel.shape[0], kernel.shape[1]
    if k_h % 2 == 0 or k_w % 2 == 0 or kernel.shape[3] != 1:
        raise ValueError(f"dilated_depthwise_conv needs an odd kernel and multiplier 1, got "
                         f"{kernel.shape}")
    h, w = x.shape[1], x.shape[2]
    if h is None or w is None:
        raise ValueError("dilated_depthwise_conv needs static spatial sizes")
    # Pad to a multiple of the dilation at the end (zeros add nothing), then split x and dy into
    # the dilation's phases: each tap pairs x[h + d*i] with dy[h], phase by phase.
    block = [dilation, dilation]
    eh, ew = -h % dilation, -w % dilation
    ph, pw = dilation * (k_h - 1) // 2, dilation * (k_w - 1) // 2

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            # Through this function again, so that differentiating the gradient (the Hessian in
            # hessian.py, the exact second order in the tests) never meets TF's dilated backprops.
            dx = dilated_depthwise_conv(dy, tf.reverse(kernel, [0, 1]), dilation)
            x_phases = tf.space_to_batch_nd(x, block, [[ph, ph + eh], [pw, pw + ew]])
            dy_phases = tf.space_to_batch_nd(dy, block, [[0, eh], [0, ew]])
            dk = tf.raw_ops.DepthwiseConv2dNativeBackpropFilter(
                input=x_phases, filter_sizes=tf.shape(kernel), out_backprop=dy_phases,
                strides=[1, 1, 1, 1], padding="VALID")
            return dx, dk

        return _conv(x, kernel, dilation), grad

    return conv(x, kernel)
