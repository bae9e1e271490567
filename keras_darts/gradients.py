"""Cross-replica gradient plumbing shared by the search and retrain steps: all-reduce, global norm,
dynamic loss scaling (float16) and optimiser updates that can be skipped on overflow."""

import tensorflow as tf

SUM = tf.distribute.ReduceOp.SUM


def _replica_ctx():
    return tf.distribute.get_replica_context()


def num_replicas():
    ctx = _replica_ctx()
    return ctx.num_replicas_in_sync if ctx is not None else 1


def all_reduce_sum(values):
    """Sums a list of tensors over replicas (a no-op with one replica)."""
    ctx = _replica_ctx()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return values
    return ctx.all_reduce(SUM, values)


def global_norm(tensors):
    return tf.linalg.global_norm([tf.cast(t, tf.float32) for t in tensors])


def all_finite(grads):
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])


class LossScale:
    """Dynamic loss scaling for float16 (scale x2 after 2000 finite steps, /2 on overflow)."""

    def __init__(self, enabled, initial=2.0**15, period=2000):
        self.enabled = enabled
        self.period = period
        self.scale = tf.Variable(initial if enabled else 1.0, trainable=False, dtype=tf.float32,
                                 name="loss_scale")
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="loss_scale_good_steps")

    def update(self, finite, count=True):
        """Cross-replica: adjusts the scale after a step whose gradients were `finite`.

        With `count=False` (the architecture step) a finite step changes nothing; an overflow
        still halves the scale and restarts the count, so the growth period counts iterations.
        """
        if not self.enabled:
            return
        if not count:
            self.scale.assign(tf.where(finite, self.scale, tf.maximum(self.scale / 2.0, 1.0)))
            self.good_steps.assign(tf.where(finite, self.good_steps,
                                            tf.zeros_like(self.good_steps)))
            return
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.period)
        self.scale.assign(tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale),
                                   tf.maximum(self.scale / 2.0, 1.0)))
        self.good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)),
                                        self.good_steps + 1, tf.zeros_like(self.good_steps)))


def apply_gradients(optimizer, grads, variables, finite=None, loss_scale=None, count=True):
    """Applies gradients that are already all-reduced (summed over replicas).

    Keras optimisers sum gradients over replicas themselves (and clip before that sum, which is why
    we reduce and clip first). Handing each replica reduced/N makes their sum the reduced gradient
    again: one extra all-reduce, no private Keras API. With `finite` (float16 loss scaling) the
    update is skipped on overflow and `loss_scale` is updated (`count`: see LossScale.update); the
    condition must be taken in cross-replica context, the way Keras' LossScaleOptimizer does it,
    because a Keras update calls merge_call.
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
            loss_scale.update(finite, count)

    if ctx is None or n == 1 and not tf.distribute.has_strategy():
        cross_replica(tf.distribute.get_strategy(), grads, finite)
    else:
        ctx.merge_call(cross_replica, args=(grads, finite))
