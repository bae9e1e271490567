"""The bi-level DARTS step (Liu et al. 2019, Sec. 2.3), from one replica's point of view.

`BilevelStep.replica_step(train_batch, val_batch)` runs, under `strategy.run`:
  (a) the architecture step on the validation batch: alpha gradient (first order, or the unrolled
      second-order approximation of Eq. 7-8), plus L2 weight decay, applied with Adam;
  (b) the weight step on the training batch: gradient clipped by global norm, plus L2 weight decay,
      applied with PyTorch-style momentum SGD.
Gradients are all-reduced *before* clipping and weight decay, so N replicas with a global batch B
take the same step as one device with batch B. Losses are averaged over the global batch.

The unrolled step never touches the weight variables: the virtual weights w' and w +- eps*v are
tensors fed to `model.stateless_call`, so the weights are exactly as they were afterwards.
"""

import keras
import tensorflow as tf

SUM = tf.distribute.ReduceOp.SUM


def _replica_ctx():
    return tf.distribute.get_replica_context()


def all_reduce_sum(values):
    """Sums a list of tensors over replicas (a no-op with one replica)."""
    ctx = _replica_ctx()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return values
    return ctx.all_reduce(SUM, values)


def global_norm(tensors):
    return tf.linalg.global_norm([tf.cast(t, tf.float32) for t in tensors])


class LossScale:
    """Dynamic loss scaling for float16 (scale x2 after 2000 finite steps, /2 on overflow)."""

    def __init__(self, enabled, initial=2.0**15, period=2000):
        self.enabled = enabled
        self.period = period
        self.scale = tf.Variable(initial if enabled else 1.0, trainable=False, dtype=tf.float32,
                                 name="loss_scale")
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="loss_scale_good_steps")

    def update(self, finite):
        """Cross-replica: adjusts the scale after a step whose gradients were `finite`."""
        if not self.enabled:
            return
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.period)
        self.scale.assign(tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale),
                                   tf.maximum(self.scale / 2.0, 1.0)))
        self.good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)),
                                        self.good_steps + 1, tf.zeros_like(self.good_steps)))


def apply_gradients(optimizer, grads, variables, finite=None, loss_scale=None):
    """Applies gradients that are already all-reduced (summed over replicas).

    Keras optimisers sum gradients over replicas themselves (and clip before that sum, which is why
    we reduce and clip first). Handing each replica reduced/N makes their sum the reduced gradient
    again: one extra all-reduce, no private Keras API. With `finite` (float16 loss scaling) the
    update is skipped on overflow; the condition must be taken in cross-replica context, the way
    Keras' LossScaleOptimizer does it, because a Keras update calls merge_call.
    """
    ctx = _replica_ctx()
    n = ctx.num_replicas_in_sync if ctx is not None else 1
    if n > 1:
        grads = [g / n for g in grads]
    if finite is None:
        optimizer.apply(grads, variables)
        return

    def cross_replica(strategy, grads, finite):
        finite = strategy.experimental_local_results(finite)[0]

        def apply_fn():
            strategy.extended.call_for_each_replica(optimizer.apply, args=(grads, variables))
            return tf.constant(True)

        tf.cond(finite, apply_fn, lambda: tf.constant(False))
        if loss_scale is not None:
            loss_scale.update(finite)

    if ctx is None or n == 1 and not tf.distribute.has_strategy():
        cross_replica(tf.distribute.get_strategy(), grads, finite)
    else:
        ctx.merge_call(cross_replica, args=(grads, finite))


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
    """

    def __init__(self, model, weight_optimizer, arch_optimizer, global_batch_size, grad_clip=5.0,
                 arch_weight_decay=1e-3, unrolled=False, jit_compile=False, loss_scale=None):
        self.model = model
        self.weight_optimizer = weight_optimizer
        self.arch_optimizer = arch_optimizer
        self.global_batch_size = global_batch_size
        self.grad_clip = grad_clip
        self.arch_weight_decay = arch_weight_decay
        self.unrolled = unrolled
        self.loss_scale = loss_scale
        self._scaled = loss_scale is not None and loss_scale.enabled
        alpha_ids = {id(v) for v in model.arch_variables}
        self._alpha_index = [i for i, v in enumerate(model.non_trainable_variables)
                             if id(v) in alpha_ids]
        wrap = (lambda f: tf.function(f, jit_compile=True)) if jit_compile else (lambda f: f)
        self._weight_grads = wrap(self._weight_grads_fn)
        self._arch_grads_first_order = wrap(self._arch_grads_first_order_fn)
        self._stateless_grads = wrap(self._stateless_grads_fn)

    # === Losses ===
    def loss(self, labels, logits):
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)

    def _scale(self, loss):
        return loss * self.loss_scale.scale if self._scaled else loss

    def _unscale(self, grads):
        if not self._scaled:
            return grads
        inv = 1.0 / self.loss_scale.scale
        return [tf.cast(g, tf.float32) * inv for g in grads]

    @staticmethod
    def _stats(labels, logits):
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                   tf.cast(labels, tf.int32)), tf.float32)
        return {"loss_sum": tf.reduce_sum(per_example), "correct": tf.reduce_sum(correct),
                "count": tf.cast(tf.shape(labels)[0], tf.float32)}

    # === Gradient computations (XLA-compilable: no collectives, no optimiser updates) ===
    def _weight_grads_fn(self, x, y):
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = self.loss(y, logits)
            scaled = self._scale(loss)
        grads = tape.gradient(scaled, self.model.trainable_variables)
        return grads, logits

    def _arch_grads_first_order_fn(self, x, y):
        alphas = self.model.arch_variables
        with tf.GradientTape() as tape:
            tape.watch([a.value for a in alphas])
            logits = self.model(x, training=True)
            scaled = self._scale(self.loss(y, logits))
        grads = tape.gradient(scaled, [a.value for a in alphas])
        return grads, logits

    def _stateless_grads_fn(self, weights, x, y, wrt_weights=True):
        """Gradients of the loss at weight *values* `weights` w.r.t. the alphas and, if
        `wrt_weights`, the weights (else None: the HVP passes need only the alphas, and not asking
        skips every conv's filter gradient)."""
        alphas = [a.value for a in self.model.arch_variables]
        alphas = [tf.identity(a) for a in alphas]
        sources = alphas + list(weights) if wrt_weights else alphas
        with tf.GradientTape() as tape:
            tape.watch(sources)
            logits = self.stateless_logits(weights, alphas, x)
            scaled = self._scale(self.loss(y, logits))
        grads = tape.gradient(scaled, sources)
        return grads[: len(alphas)], (grads[len(alphas):] if wrt_weights else None), logits

    def stateless_logits(self, weights, alphas, x):
        """Logits with weight values `weights` and alpha values `alphas` (variables untouched)."""
        non_trainable = [v.value for v in self.model.non_trainable_variables]
        for i, a in zip(self._alpha_index, alphas):
            non_trainable[i] = a
        logits, _ = self.model.stateless_call(list(weights), non_trainable, x, training=True)
        return logits

    # === Architecture step ===
    def arch_gradients(self, train_batch, val_batch):
        """The alpha gradient (all-reduced, without weight decay) and the val-batch logits."""
        x_val, y_val = val_batch
        if not self.unrolled:
            grads, logits = self._arch_grads_first_order(x_val, y_val)
            return all_reduce_sum(self._unscale(grads)), logits
        return self._unrolled_arch_gradients(train_batch, val_batch)

    def virtual_weights(self, x_train, y_train):
        """w' = w - xi * (momentum * buf + grad_w L_train(w) + wd * w), xi = current weight lr."""
        opt = self.weight_optimizer
        weights = self.model.trainable_variables
        grads, _ = self._weight_grads(x_train, y_train)
        grads = all_reduce_sum(self._unscale(grads))
        xi = tf.cast(opt.learning_rate, tf.float32)
        w_values = [tf.identity(v.value) for v in weights]
        virtual = []
        for v, w, g in zip(weights, w_values, grads):
            step = tf.cast(g, w.dtype) + opt.l2 * w
            if opt.built:
                step = step + opt.momentum * opt.momentum_buffer(v).value
            virtual.append(w - tf.cast(xi, w.dtype) * step)  # float64 weights in precision tests
        return w_values, virtual, xi

    def _unrolled_arch_gradients(self, train_batch, val_batch):
        (x_train, y_train), (x_val, y_val) = train_batch, val_batch
        w_values, w_virtual, xi = self.virtual_weights(x_train, y_train)
        d_alpha, v, logits = self._stateless_grads(w_virtual, x_val, y_val)
        d_alpha = self._unscale(d_alpha)
        v = all_reduce_sum(self._unscale(v))  # the global gradient w.r.t. w'
        eps = 0.01 / global_norm(v)
        w_plus = [w + tf.cast(eps, w.dtype) * g for w, g in zip(w_values, v)]
        g_plus, _, _ = self._stateless_grads(w_plus, x_train, y_train, wrt_weights=False)
        # The two passes are independent, so the executor would interleave them and hold both
        # passes' activations at once; running the second after the first keeps peak memory at
        # one pass (BUILD_NOTES, "Benchmarks": 13.5 GB before, at 8 cells, C=16, batch 64).
        with tf.control_dependencies(g_plus):
            w_minus = [w - tf.cast(eps, w.dtype) * g for w, g in zip(w_values, v)]
        g_minus, _, _ = self._stateless_grads(w_minus, x_train, y_train, wrt_weights=False)
        g_plus, g_minus = self._unscale(g_plus), self._unscale(g_minus)
        # Finite-difference Hessian-vector product (Eq. 8): (grad_a L(w+) - grad_a L(w-)) / 2 eps.
        grads = [da - xi * (gp - gm) / (2.0 * eps) for da, gp, gm in zip(d_alpha, g_plus, g_minus)]
        return all_reduce_sum(grads), logits

    def arch_step(self, train_batch, val_batch):
        grads, logits = self.arch_gradients(train_batch, val_batch)
        alphas = self.model.arch_variables
        grads = [g + self.arch_weight_decay * a.value for g, a in zip(grads, alphas)]
        finite = self._all_finite(grads) if self._scaled else None
        apply_gradients(self.arch_optimizer, grads, alphas, finite)
        return logits

    # === Weight step ===
    def weight_step(self, x, y):
        grads, logits = self._weight_grads(x, y)
        grads = all_reduce_sum(self._unscale(grads))
        finite = self._all_finite(grads) if self._scaled else None
        if self.grad_clip and self.grad_clip > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.grad_clip)
        apply_gradients(self.weight_optimizer, grads, self.model.trainable_variables, finite,
                        self.loss_scale if self._scaled else None)
        return logits

    @staticmethod
    def _all_finite(grads):
        return tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])

    def replica_step(self, train_batch, val_batch):
        """Architecture step on `val_batch`, then weight step on `train_batch`; returns sums."""
        val_logits = self.arch_step(train_batch, val_batch)
        x, y = train_batch
        train_logits = self.weight_step(x, y)
        train, val = self._stats(y, train_logits), self._stats(val_batch[1], val_logits)
        return {**{f"train_{k}": v for k, v in train.items()}, **{f"val_{k}": v for k, v in val.items()}}
