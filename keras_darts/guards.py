"""Collapse guards: the schedules and rules of beta-DARTS, DARTS-, DARTS+ and the architecture-loss
regularizer of beta-DARTS. Pure functions (numpy/Python) except `BetaDecay`, a callable for
`BilevelStep(arch_regularizers=...)`.

Schedules are functions of the 0-based epoch, so a resumed run recomputes them from the
checkpointed epoch counter; nothing else needs saving.
"""

import numpy as np

from keras_darts.genotype import count_ops


def beta_decay_weight(lam, epoch, epochs):
    """beta-DARTS lambda_t: linear from 0 at epoch 0 (the official code: 50 * epoch / 100 over its
    100 epochs, i.e. lambda * epoch / epochs with lambda = 50)."""
    return lam * epoch / epochs


def aux_skip_weight(epoch, epochs):
    """DARTS- beta_t: the auxiliary skip's weight, linear from 1 at epoch 0 towards 0."""
    return 1.0 - epoch / epochs


def beta_decay_loss_np(alphas):
    """mean over edges (rows of all given alpha matrices) of logsumexp(alpha_edge), in numpy."""
    a = np.concatenate([np.asarray(x, dtype=np.float64) for x in alphas], axis=0)
    m = a.max(axis=1, keepdims=True)
    return float(np.mean(m[:, 0] + np.log(np.exp(a - m).sum(axis=1))))


class BetaDecay:
    """reg(model) -> lambda_t * mean over the edges of both cells of logsumexp(alpha_edge)
    (beta-DARTS `mlc_loss`); lambda_t is read from a variable the search loop sets each epoch."""

    def __init__(self, weight_variable):
        self.weight = weight_variable

    def __call__(self, model):
        import tensorflow as tf

        a = tf.concat([model.alphas_normal, model.alphas_reduce], axis=0)
        return self.weight * tf.reduce_mean(tf.reduce_logsumexp(a, axis=-1))


def skip_count(genotype):
    """Skip connections in the genotype's normal cell."""
    return count_ops(genotype.normal, ("skip_connect",))


def skip_stop(genotype, n):
    """DARTS+ rule: stop once the normal cell has n or more skip connections."""
    return skip_count(genotype) >= n
