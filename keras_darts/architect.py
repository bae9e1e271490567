"""The bi-level DARTS step (Liu et al. 2019, Sec. 2.3), from one replica's point of view.

`BilevelStep.replica_step(train_batch, val_batch)` runs, under `strategy.run`, the paper's two steps:
  1. `architecture_step` on the validation batch: the alpha gradient (first order, or the unrolled
     second-order approximation of Eq. 7-8 in `keras_darts.unrolled`), plus L2 weight decay,
     applied with Adam;
  2. `weight_step` on the training batch: the weight gradient clipped by global norm, plus L2
     weight decay, applied with PyTorch-style momentum SGD.
Gradients are all-reduced *before* clipping and weight decay, so N replicas with a global batch B
take the same step as one device with batch B. Losses are averaged over the global batch.
"""

import contextlib

import keras
import tensorflow as tf

from keras_darts import unrolled as unrolled_lib
from keras_darts.gradients import (LossScale, all_finite, all_reduce_sum, apply_gradients,  # noqa: F401
                                   global_norm, num_replicas)

BN_STATISTICS = ("moving_mean", "moving_variance")


class BilevelStep:
    """One DARTS search iteration: architecture step, then weight step.

    Args:
      model: a SearchNetwork built under the strategy scope.
      weight_optimizer: TorchSGD (lr schedule, momentum, L2 weight decay inside).
      arch_optimizer: Adam for the alphas.
      global_batch_size: the batch size over all replicas (losses are averaged over it).
      grad_clip: max global norm of the weight gradient (before weight decay, as in the reference).
      arch_weight_decay: L2 added to the alpha gradient.
      unrolled: second-order approximation instead of first order.
      jit_compile: XLA-compile the forward/backward passes (not the all-reduces and updates).
      loss_scale: a LossScale (float16 mixed precision) or None.
      arch_float32: under mixed precision, run the architecture step's passes in float32 (the
        exact alpha gradient, at float32's memory and time for that step); the weight step stays
        in the mixed policy. Policies are read when a pass is traced, so the step's graph holds
        both.
      arch_regularizers: callables `reg(model) -> scalar tensor`, added to the validation loss
        inside the architecture gradient's tape (first order: the val pass; unrolled: the val pass
        on w'). They must depend on the alphas only (`model.arch_variables`); in the unrolled
        gradient they add their plain gradient dR/da. Each is one scalar for the whole model (the
        step divides it by the number of replicas, whose gradients are summed).
    """

    def __init__(self, model, weight_optimizer, arch_optimizer, global_batch_size, grad_clip=5.0,
                 arch_weight_decay=1e-3, unrolled=False, jit_compile=False, loss_scale=None,
                 arch_regularizers=(), arch_float32=False):
        self.model = model
        self.arch_float32 = arch_float32
        self._float32_depth, self._saved_policies = 0, None
        self.weight_optimizer = weight_optimizer
        self.arch_optimizer = arch_optimizer
        self.global_batch_size = global_batch_size
        self.grad_clip = grad_clip
        self.arch_weight_decay = arch_weight_decay
        self.unrolled = unrolled
        self.loss_scale = loss_scale
        self.arch_regularizers = tuple(arch_regularizers)
        self._scaled = loss_scale is not None and loss_scale.enabled
        alpha_ids = {id(v) for v in model.arch_variables}
        non_trainable = model.non_trainable_variables
        self._alpha_index = [i for i, v in enumerate(non_trainable) if id(v) in alpha_ids]
        self._bn_index = [i for i, v in enumerate(non_trainable)
                          if id(v) not in alpha_ids and v.name in BN_STATISTICS]
        wrap = (lambda f: tf.function(f, jit_compile=True)) if jit_compile else (lambda f: f)
        self._weight_grads = wrap(self._weight_grads_fn)
        # The unrolled step's w' pass gets its own compiled function when it runs in float32: one
        # traced under the other policy would be reused by the weight step.
        self._live_weight_grads = wrap(self._weight_grads_fn) if arch_float32 else self._weight_grads
        self._arch_grads_first_order = wrap(self._arch_grads_first_order_fn)
        self._stateless_grads = wrap(self._stateless_grads_fn)

    # === Losses ===
    def loss(self, labels, logits):
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)

    def regularization(self):
        """Sum of the architecture regularizers, per replica (their sum over replicas is R)."""
        total = tf.add_n([tf.cast(reg(self.model), tf.float32) for reg in self.arch_regularizers])
        n = num_replicas()
        return total / n if n > 1 else total

    def _scale(self, loss):
        return loss * self.loss_scale.scale if self._scaled else loss

    def unscale(self, grads):
        if not self._scaled:
            return grads
        inv = 1.0 / self.loss_scale.scale
        return [tf.cast(g, tf.float32) * inv for g in grads]

    def learning_rate(self):
        """The weight optimiser's current learning rate: xi of the unrolled step."""
        return tf.cast(self.weight_optimizer.learning_rate, tf.float32)

    @staticmethod
    def _stats(labels, logits):
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                   tf.cast(labels, tf.int32)), tf.float32)
        return {"loss_sum": tf.reduce_sum(per_example), "correct": tf.reduce_sum(correct),
                "count": tf.cast(tf.shape(labels)[0], tf.float32)}

    # === Gradient passes (XLA-compilable: no collectives, no optimiser updates) ===
    def _weight_grads_fn(self, x, y):
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = self.loss(y, logits)
            scaled = self._scale(loss)
        grads = tape.gradient(scaled, self.model.trainable_variables)
        return grads, logits

    def _arch_grads_first_order_fn(self, x, y):
        alphas = [a.value for a in self.model.arch_variables]
        with tf.GradientTape() as tape:
            tape.watch(alphas)
            logits = self.model(x, training=True)
            loss = self.loss(y, logits)
            if self.arch_regularizers:
                loss = loss + self.regularization()
            scaled = self._scale(loss)
        grads = tape.gradient(scaled, alphas)
        return grads, logits

    def _stateless_grads_fn(self, weights, non_trainable, x, y, wrt_weights=True, regularize=False):
        """One pass at weight *values* `weights` and non-trainable values `non_trainable` (alphas,
        BN statistics); the variables are untouched. Returns the alpha gradient, the weight
        gradient if `wrt_weights` (else None: the HVP passes need only the alphas, and not asking
        skips every conv's filter gradient), the logits and the updated non-trainable values.
        `regularize` adds the architecture regularizers (on the live alphas, which these alpha
        values equal) to the loss."""
        non_trainable = list(non_trainable)
        alphas = [tf.identity(non_trainable[i]) for i in self._alpha_index]
        for i, a in zip(self._alpha_index, alphas):
            non_trainable[i] = a
        sources = alphas + list(weights) if wrt_weights else alphas
        live = [a.value for a in self.model.arch_variables]
        regularize = regularize and bool(self.arch_regularizers)
        with tf.GradientTape() as tape:
            tape.watch(sources + (live if regularize else []))
            logits, non_trainable = self.model.stateless_call(list(weights), non_trainable, x,
                                                              training=True)
            loss = self.loss(y, logits)
            if regularize:
                loss = loss + self.regularization()
            scaled = self._scale(loss)
        if regularize:
            grads = tape.gradient(scaled, sources + live,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            grads, d_reg = grads[: len(sources)], grads[len(sources):]
            grads = [g + r for g, r in zip(grads[: len(alphas)], d_reg)] + grads[len(alphas):]
        else:
            grads = tape.gradient(scaled, sources)
        return (grads[: len(alphas)], (grads[len(alphas):] if wrt_weights else None), logits,
                non_trainable)

    # === What keras_darts.unrolled asks of the step ===
    def live_weight_gradients(self, x, y):
        """grad_w L(w) on the live model (all-reduced, unscaled); updates the BN statistics."""
        grads, _ = self._live_weight_grads(x, y)
        return all_reduce_sum(self.unscale(grads))

    def stateless_gradients(self, weights, non_trainable, x, y, wrt_weights=True,
                            regularize=False):
        return self._stateless_grads(weights, non_trainable, x, y, wrt_weights=wrt_weights,
                                     regularize=regularize)

    def non_trainable_values(self):
        """The live non-trainable values (alphas, BN statistics) as tensors."""
        return [tf.identity(v.value) for v in self.model.non_trainable_variables]

    def assign_bn_statistics(self, non_trainable):
        """Writes back the BN running statistics of a stateless pass (never the alphas)."""
        variables = self.model.non_trainable_variables
        for i in self._bn_index:
            variables[i].assign(non_trainable[i])

    # === 1. Architecture step ===
    def arch_gradients(self, train_batch, val_batch):
        """The alpha gradient (all-reduced, without weight decay) and the val-batch logits."""
        if self.unrolled:
            return unrolled_lib.unrolled_arch_gradients(self, train_batch, val_batch)
        x_val, y_val = val_batch
        grads, logits = self._arch_grads_first_order(x_val, y_val)
        return all_reduce_sum(self.unscale(grads)), logits

    def architecture_step(self, train_batch, val_batch):
        """alpha <- Adam(grad_alpha L_val + arch_wd * alpha); returns the val logits."""
        with self._arch_precision():
            grads, logits = self.arch_gradients(train_batch, val_batch)
        alphas = self.model.arch_variables
        grads = [g + self.arch_weight_decay * a.value for g, a in zip(grads, alphas)]
        finite = all_finite(grads) if self._scaled else None
        # An overflow here lowers the loss scale too (finite steps are counted by the weight step).
        apply_gradients(self.arch_optimizer, grads, alphas, finite,
                        self.loss_scale if self._scaled else None, count=False)
        return logits

    arch_step = architecture_step  # the earlier name

    @contextlib.contextmanager
    def _arch_precision(self):
        """With arch_float32, every layer computes in float32 inside the block.

        Dtype policies are Python state shared by the replicas, and MirroredStrategy traces its
        replicas in threads that take turns at each all-reduce. So the first replica in switches
        the policies, the last one out restores them, and a barrier on either side keeps any
        replica from tracing a weight pass while another is still inside."""
        if not self.arch_float32:
            yield
            return
        _barrier()
        if self._float32_depth == 0:
            self._saved_policies = set_policies(self.model, "float32")
        self._float32_depth += 1
        try:
            yield
        finally:
            self._float32_depth -= 1
            if self._float32_depth == 0:
                restore_policies(self._saved_policies)
            _barrier()

    # === 2. Weight step ===
    def weight_step(self, x, y):
        """w <- TorchSGD(clip(grad_w L_train) + wd * w); returns the train logits."""
        grads, logits = self._weight_grads(x, y)
        grads = all_reduce_sum(self.unscale(grads))
        finite = all_finite(grads) if self._scaled else None
        if self.grad_clip and self.grad_clip > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.grad_clip)
        apply_gradients(self.weight_optimizer, grads, self.model.trainable_variables, finite,
                        self.loss_scale if self._scaled else None)
        return logits

    def replica_step(self, train_batch, val_batch):
        """Architecture step on `val_batch`, then weight step on `train_batch`; returns sums."""
        # R at the alphas the architecture gradient saw (summed over replicas by the loop: R).
        extra = {"arch_regularization": self.regularization()} if self.arch_regularizers else {}
        val_logits = self.architecture_step(train_batch, val_batch)
        x, y = train_batch
        train_logits = self.weight_step(x, y)
        train, val = self._stats(y, train_logits), self._stats(val_batch[1], val_logits)
        return {**{f"train_{k}": v for k, v in train.items()},
                **{f"val_{k}": v for k, v in val.items()}, **extra}


def set_policies(model, policy):
    """Sets the dtype policy of `model` and every layer in it; returns [(layer, old policy)].
    (Under mixed precision the variables are float32 already; only the compute dtype changes.)"""
    layers = [model, *model._flatten_layers(include_self=False, recursive=True)]
    saved = [(layer, layer.dtype_policy) for layer in layers]
    for layer in layers:
        layer.dtype_policy = policy
    return saved


def restore_policies(saved):
    for layer, policy in saved:
        layer.dtype_policy = policy


def _barrier():
    """Every replica reaches this point before any goes on (a no-op merge in replica context)."""
    tf.distribute.get_replica_context().merge_call(lambda strategy: None)
