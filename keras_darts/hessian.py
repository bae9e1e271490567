"""RobustDARTS (Zela et al., ICLR 2020): the dominant eigenvalue of the Hessian of the search-val
loss w.r.t. the alphas, and the paper's early-stopping rule on it (automl/RobustDARTS
`src/utils.py` EVLocalAvg: window 5, start epoch 10, delta 4, factor 1.3).

The eigenvalue comes from power iteration on exact Hessian-vector products (autodiff through the
gradient, nested tapes), warm-started from the previous epoch's vector, on one fixed search-val
batch with the live weights, BN in training mode as the architecture step sees it; the model's
variables (BN statistics included) are untouched (`stateless_call`).
"""

import math

import numpy as np

WINDOW, START_EPOCH, DELTA, FACTOR = 5, 10, 4, 1.3


def power_iteration(hvp, v, iterations):
    """(eigenvalue estimate, last unit vector) of the dominant eigenpair of the operator `hvp`.

    `v` is a flat numpy vector (any non-zero start); the estimate is the Rayleigh quotient v.Hv.
    """
    v = np.asarray(v, dtype=np.float64)
    v = v / np.linalg.norm(v)
    eig = 0.0
    for _ in range(iterations):
        hv = np.asarray(hvp(v), dtype=np.float64)
        eig = float(v @ hv)
        norm = np.linalg.norm(hv)
        if norm == 0.0:
            return 0.0, v
        v = hv / norm
    return eig, v


def local_averages(eigenvalues, window=WINDOW):
    """EVLocalAvg's list, one eigenvalue per epoch: from the ceil(window/2)-th epoch on, the mean of
    the last `window` values (fewer at the start); entry i belongs to epoch i + ceil(w/2) - 1 and
    is centred floor(w/2) epochs earlier."""
    first = math.ceil(window / 2)
    return [float(np.mean(eigenvalues[max(0, n - window):n]))
            for n in range(first, len(eigenvalues) + 1)]


def stop_epoch(eigenvalues, window=WINDOW, start_epoch=START_EPOCH, delta=DELTA, factor=FACTOR):
    """RobustDARTS' decision after the last epoch of `eigenvalues` (0-based epochs, one value per
    epoch): the epoch to stop at (whose genotype is kept) or None.

    It compares the local average centred at epoch e - floor(w/2) with the one `delta` epochs
    before it, and stops when it grew by more than `factor`, once that earlier epoch is at least
    `start_epoch`; the search returns the genotype of that earlier epoch.
    """
    epoch = len(eigenvalues) - 1
    la = local_averages(eigenvalues, window)
    centre = epoch - window // 2
    if len(la) <= delta or centre - delta < start_epoch:
        return None
    if la[-1] / la[-1 - delta] > factor:
        return centre - delta
    return None


class HessianTracker:
    """Dominant eigenvalue of d^2 L_val / d alpha^2 for a SearchNetwork, by power iteration.

    Args:
      model: the SearchNetwork (alphas only: betas, if any, are held fixed).
      batch: (x, y) search-val batch, fixed for the whole search (comparable epochs).
      seed: seed of the start vector.
      compiled: trace the Hessian-vector product with tf.function (fast). Its double-backward
        graph is not bitwise reproducible on CPU with oneDNN (repeated calls on the same inputs
        can alternate between two results; TF's op determinism does not cover oneDNN), so
        --deterministic runs it eagerly, which is.
    State `vector` (a tf.Variable, checkpointed) carries the last eigenvector between epochs.
    """

    def __init__(self, model, batch, seed=0, compiled=True):
        import tensorflow as tf

        self.model = model
        self.x, self.y = batch
        self.alphas = [model.alphas_normal, model.alphas_reduce]
        self.sizes = [int(np.prod(a.shape)) for a in self.alphas]
        start = np.random.default_rng([seed, 7]).standard_normal(sum(self.sizes))
        self.vector = tf.Variable(start.astype(np.float32), trainable=False, name="hessian_vector")
        self._hvp = tf.function(self._hvp_fn) if compiled else self._hvp_fn

    def _loss(self, alpha_values):
        import keras
        import tensorflow as tf

        ids = {id(a): v for a, v in zip(self.alphas, alpha_values)}
        non_trainable = [ids.get(id(v), v.value) for v in self.model.non_trainable_variables]
        logits, _ = self.model.stateless_call([v.value for v in self.model.trainable_variables],
                                              non_trainable, self.x, training=True)
        per_example = keras.losses.sparse_categorical_crossentropy(self.y, logits, from_logits=True)
        return tf.reduce_mean(tf.cast(per_example, tf.float32))

    def _hvp_fn(self, flat_v):
        import tensorflow as tf

        alphas = [tf.identity(a.value) for a in self.alphas]
        vs = [tf.reshape(p, a.shape) for p, a in zip(tf.split(flat_v, self.sizes), alphas)]
        with tf.GradientTape() as outer:
            outer.watch(alphas)
            with tf.GradientTape() as inner:
                inner.watch(alphas)
                loss = self._loss(alphas)
            grads = inner.gradient(loss, alphas)
            gv = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vs)])
        hv = outer.gradient(gv, alphas)
        return tf.concat([tf.reshape(h, [-1]) for h in hv], axis=0)

    def hvp(self, v):
        import tensorflow as tf

        return self._hvp(tf.constant(np.asarray(v, np.float32))).numpy()

    def dominant_eigenvalue(self, iterations):
        eig, v = power_iteration(self.hvp, self.vector.numpy(), iterations)
        self.vector.assign(v.astype(np.float32))
        return eig
