"""The unrolled (second-order) architecture gradient of DARTS (Liu et al. 2019, Eq. 7-8).

  grad_a L_val(w', a) - xi * grad2_{a,w} L_train(w, a) . v,   v = grad_w' L_val(w', a),
  w' = w - xi * (momentum * buf + grad_w L_train(w, a) + wd * w)   (the weight step, not applied),

with the Hessian-vector product replaced by a central finite difference (Eq. 8):
  (grad_a L_train(w+, a) - grad_a L_train(w-, a)) / (2 eps),  w+- = w +- eps * v,  eps = 0.01/||v||.

The weights are never written: w', w+ and w- are tensors fed to `model.stateless_call`.
BatchNorm running statistics follow the reference (`architect.py` there): the pass that computes w'
(live model, train batch) and both finite-difference passes (live model at w+ then w-, train batch)
update the live statistics, in that order; the val pass on w' runs on a copy of the model there, so
its statistics are dropped here. The stateless passes thread the statistics as tensors; the
finite-difference pair writes its final ones back. In training mode BN normalises with batch
statistics, so none of this changes a gradient.

The two finite-difference passes are one pass at two weight values, run as the two iterations of
a `tf.while_loop`, so the step's graph holds that pass once (BUILD_NOTES, "The unrolled step's
memory, this session").

Architecture regularizers (BilevelStep's `arch_regularizers`) are added to L_val in the w' pass.
They depend on the alphas only, so they contribute their plain gradient dR/da and leave v alone.
"""

import tensorflow as tf

from keras_darts.gradients import all_reduce_sum, global_norm

FD_RADIUS = 0.01  # the reference's r: w+- are 0.01 away from w in global norm


def virtual_weights(weights, grads, buffers, xi, momentum, weight_decay):
    """w' = w - xi * (g + wd * w + momentum * buf): TorchSGD's step (buffers None: first step)."""
    virtual = []
    for i, (w, g) in enumerate(zip(weights, grads)):
        step = tf.cast(g, w.dtype) + weight_decay * w
        if buffers is not None:
            step = step + momentum * buffers[i]
        virtual.append(w - tf.cast(xi, w.dtype) * step)  # float64 weights in precision tests
    return virtual


def fd_epsilon(v):
    """eps = r / ||v||: the finite-difference step along v (global norm over all weights)."""
    return FD_RADIUS / global_norm(v)


def hessian_vector_terms(step, weights, v, eps, x, y):
    """grad_a L_train(w + eps*v) - grad_a L_train(w - eps*v) (unscaled, not all-reduced), on the
    live model's running statistics, which both passes update in sequence (written back at the
    end).

    The two passes are one pass at two weight values, so they are the two iterations of a
    `tf.while_loop`: its body is traced and instantiated once, where two calls would put two copies
    of the pass in the step's graph (at 8/16/64 that graph, not the activations, is most of the
    unrolled step's memory: BUILD_NOTES, "The memory is the graph"). `parallel_iterations=1` runs
    the second after the first, so peak memory holds one pass's activations (the executor would
    otherwise interleave the independent passes: 13.5 GB instead of 10.6 at 8/16/64).
    w - eps*v is computed as w + (-eps)*v and the difference as (0 + g+) - g-: the same floats.
    """
    def fd_pass(i, diff, non_trainable):
        sign = 1.0 - 2.0 * tf.cast(i, tf.float32)  # +1, then -1
        shifted = [w + tf.cast(sign * eps, w.dtype) * g for w, g in zip(weights, v)]
        g, _, _, non_trainable = step.stateless_gradients(shifted, non_trainable, x, y,
                                                          wrt_weights=False)
        diff = [d + tf.cast(sign, d.dtype) * g for d, g in zip(diff, step.unscale(g))]
        return i + 1, diff, non_trainable

    zeros = [tf.zeros_like(a.value) for a in step.model.arch_variables]
    _, diff, non_trainable = tf.while_loop(
        lambda i, *_: i < 2, fd_pass, (tf.constant(0), zeros, step.non_trainable_values()),
        parallel_iterations=1)
    step.assign_bn_statistics(non_trainable)
    return diff


def unrolled_arch_gradients(step, train_batch, val_batch):
    """The unrolled alpha gradient (all-reduced, without arch weight decay) and the val logits.

    `step` is the BilevelStep: it supplies the loss, the gradient passes and the weight optimiser
    (its momentum buffers, L2 and current learning rate xi).
    """
    (x_train, y_train), (x_val, y_val) = train_batch, val_batch
    opt = step.weight_optimizer
    variables = step.model.trainable_variables
    grads = step.live_weight_gradients(x_train, y_train)
    xi = step.learning_rate()
    weights = [tf.identity(v.value) for v in variables]
    buffers = [opt.momentum_buffer(v).value for v in variables] if opt.built else None
    w_virtual = virtual_weights(weights, grads, buffers, xi, opt.momentum, opt.l2)

    d_alpha, v, logits, _ = step.stateless_gradients(
        w_virtual, step.non_trainable_values(), x_val, y_val, regularize=True)
    d_alpha = step.unscale(d_alpha)
    v = all_reduce_sum(step.unscale(v))  # the global gradient w.r.t. w'
    eps = fd_epsilon(v)
    diff = hessian_vector_terms(step, weights, v, eps, x_train, y_train)
    grads = [da - xi * d / (2.0 * eps) for da, d in zip(d_alpha, diff)]
    return all_reduce_sum(grads), logits
