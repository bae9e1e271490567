"""`--cost_penalty=λ --cost=params|macs|latency`: λ · E[cost] / cost(all sep_conv_5x5) added to the
architecture loss (FBNet, Wu et al. 2019; ProxylessNAS, Cai et al. 2019), as an
`arch_regularizers` callable of `BilevelStep`: reg(model) -> scalar tensor.

E[cost] is `supernet_cost.expected_cost`: the per-(edge, op) costs of all cells that share an
alpha matrix, weighted by softmax(alpha). Its gradient w.r.t. alpha is p * (c - p.c) per edge,
so the penalty pushes weight from expensive ops to cheap ones (and to `none`, which costs 0).
"""

import numpy as np
import tensorflow as tf

from keras_darts.cost import supernet_cost


class CostPenalty:
    """reg(model) = weight * E[cost](softmax(model alphas)) / normaliser.

    Args:
      weight: λ.
      table_normal, table_reduce: (edges, len(PRIMITIVES)) costs (`supernet_cost.cost_tables`).
      metric: the cost's name (for logs).
    """

    def __init__(self, weight, table_normal, table_reduce, metric="macs"):
        self.weight = float(weight)
        self.metric = metric
        self.norm = supernet_cost.normaliser(table_normal, table_reduce)
        if not self.norm > 0:
            raise ValueError(f"the all-sep_conv_5x5 {metric} cost is {self.norm}; cannot normalise")
        self.table_normal = np.asarray(table_normal, np.float64)
        self.table_reduce = np.asarray(table_reduce, np.float64)
        self._c_normal = tf.constant(self.table_normal / self.norm, tf.float32)
        self._c_reduce = tf.constant(self.table_reduce / self.norm, tf.float32)

    def __call__(self, model):
        normal = tf.reduce_sum(tf.nn.softmax(tf.cast(model.alphas_normal, tf.float32)) * self._c_normal)
        reduce = tf.reduce_sum(tf.nn.softmax(tf.cast(model.alphas_reduce, tf.float32)) * self._c_reduce)
        return self.weight * (normal + reduce)

    def relative(self, alphas_normal, alphas_reduce):
        """E[cost] / normaliser for numpy alphas (1.0: as costly as all-sep_conv_5x5)."""
        return supernet_cost.expected_cost(alphas_normal, alphas_reduce, self.table_normal,
                                           self.table_reduce) / self.norm
