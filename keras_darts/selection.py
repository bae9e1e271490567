"""DARTS-PT perturbation-based selection (Wang et al., ICLR 2021; ruocwang/darts-pt).

After the search, the supernet picks its ops by how much masking them hurts instead of by alpha
magnitude: edges are visited in random order (one normal and one reduction edge per decision);
each candidate op of the edge is masked in turn (its mixing weight set to 0) and the search-val
accuracy measured; the op whose removal hurts most is kept and the edge is projected onto it
(one-hot). The supernet's weights are fine-tuned for `--selection_finetune_epochs` between
decisions. Then each node's two inputs are chosen the same way: mask each incoming edge, keep the
two whose removal hurts most. Accuracy uses BatchNorm batch statistics, as darts-pt evaluates in
train mode, through `stateless_call` so BN statistics are not changed by the measuring.

The fine-tuning changes the live weights but nothing is checkpointed: rerunning the selection on
the same run starts again from the final checkpoint.
"""

import numpy as np
import tensorflow as tf

from keras_darts.architect import all_reduce_sum, apply_gradients
from keras_darts.genotype import PRIMITIVES, Genotype
from keras_darts.genotype.derive import _NONE

GENOTYPE_FILE = "genotype_perturbation.json"
CELLS = ("normal", "reduce")


class _Projection:
    """The supernet's mixing weights as numpy arrays, with projected ops and edges."""

    def __init__(self, model):
        wn, wr, en, er = model.mixing_weights()
        k = wn.shape[0]
        self.ops = {"normal": np.array(wn), "reduce": np.array(wr)}
        ones = np.ones(k, np.float32)
        self.edges = {"normal": ones.copy() if en is None else np.array(en),
                      "reduce": ones.copy() if er is None else np.array(er)}
        self.chosen_op = {cell: {} for cell in CELLS}  # alpha row -> op index
        self.kept_inputs = {cell: {} for cell in CELLS}  # node -> [input, input]

    def tensors(self, ops=None, edges=None):
        ops = ops or self.ops
        edges = edges or self.edges
        return tuple(tf.constant(a, tf.float32) for a in
                     (ops["normal"], ops["reduce"], edges["normal"], edges["reduce"]))


def _rows_of_node(node):
    start = sum(2 + i for i in range(node - 2))
    return list(range(start, start + node))


def perturbation_select(search, accuracy=None, tune=None):
    """Returns the DARTS-PT genotype of the SearchRun's current supernet (fine-tuning it).

    `accuracy(weights)` (search-val accuracy with the mixing weights (w_normal, w_reduce, e_normal,
    e_reduce)) and `tune(weights)` default to the real ones; tests pass their own.
    """
    model, config = search.model, search.config
    rng = np.random.default_rng([config.seed, 31])
    proj = _Projection(model)
    accuracy = accuracy or _accuracy_fn(search)
    tune = tune or _finetune_fn(search)
    k = proj.ops["normal"].shape[0]
    order = {cell: list(rng.permutation(k)) for cell in CELLS}
    for t in range(k):
        for cell in CELLS:
            row = int(order[cell][t])
            accs = {}
            for op in range(len(PRIMITIVES)):
                if op == _NONE:
                    continue
                masked = {**proj.ops, cell: proj.ops[cell].copy()}
                masked[cell][row, op] = 0.0
                accs[op] = accuracy(proj.tensors(ops=masked))
            best = min(accs, key=lambda o: (accs[o], o))  # removal hurts most: lowest accuracy
            proj.chosen_op[cell][row] = best
            proj.ops[cell][row] = np.eye(len(PRIMITIVES), dtype=np.float32)[best]
        tune(proj.tensors())
    for node in rng.permutation(np.arange(2, model.steps + 2)):
        for cell in CELLS:
            rows = _rows_of_node(int(node))
            accs = {}
            for j, row in enumerate(rows):
                masked = {**proj.edges, cell: proj.edges[cell].copy()}
                masked[cell][row] = 0.0
                accs[j] = accuracy(proj.tensors(edges=masked))
            keep = sorted(sorted(accs, key=lambda j: (accs[j], j))[:2])
            proj.kept_inputs[cell][int(node)] = keep
            for j, row in enumerate(rows):
                if j not in keep:
                    proj.edges[cell][row] = 0.0
        tune(proj.tensors())
    return _genotype(proj, model.steps, model.multiplier)


def _genotype(proj, steps, multiplier):
    genes = {}
    for cell in CELLS:
        gene = []
        for node in range(2, steps + 2):
            rows = _rows_of_node(node)
            for j in proj.kept_inputs[cell][node]:
                gene.append((PRIMITIVES[proj.chosen_op[cell][rows[j]]], j))
        genes[cell] = gene
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    return Genotype(normal=genes["normal"], normal_concat=concat, reduce=genes["reduce"],
                    reduce_concat=concat)


def _accuracy_fn(search):
    """Search-val accuracy with given mixing weights (BN batch statistics, no state change)."""
    import keras  # noqa: F401  (keras' TF backend must be loaded for stateless_call)

    model = search.model

    @tf.function
    def correct(x, y, weights):
        logits, _ = model.stateless_call([v.value for v in model.trainable_variables],
                                         [v.value for v in model.non_trainable_variables], x,
                                         training=True, arch_weights=weights)
        hits = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32))
        return tf.reduce_sum(tf.cast(hits, tf.float32))

    from keras_darts.robust_search import val_batches

    batches = list(val_batches(search))

    def accuracy(weights):
        total = sum(float(correct(x, y, weights)) for x, y in batches)
        return total / max(sum(int(y.shape[0]) for _, y in batches), 1)

    return accuracy


def _finetune_fn(search):
    """Weight steps on search-train with the projected mixing weights fixed."""
    step, model, config = search.step, search.model, search.config

    def replica(x, y, weights):
        with tf.GradientTape() as tape:
            loss = step.loss(y, model(x, training=True, arch_weights=weights))
        grads = all_reduce_sum(tape.gradient(loss, model.trainable_variables))
        if config.grad_clip > 0:
            grads, _ = tf.clip_by_global_norm(grads, config.grad_clip)
        apply_gradients(step.weight_optimizer, grads, model.trainable_variables)
        return loss

    @tf.function
    def train_step(batch, weights):
        (x, y), _ = batch
        return search.strategy.run(replica, args=(x, y, weights))

    def tune(weights):
        for e in range(config.selection_finetune_epochs):
            # Epoch numbers past the search: their own data order, the search's untouched.
            for batch in search.epoch_dataset(config.epochs + e, 0):
                train_step(batch, weights)

    return tune


def select_and_save(search, out, chief):
    """Runs the selection and writes GENOTYPE_FILE (genotype.json stays the magnitude one)."""
    import os

    from keras_darts.genotype import save_genotype

    genotype = perturbation_select(search)
    if chief:
        path = os.path.join(out, GENOTYPE_FILE)
        save_genotype(genotype, path)
        print(f"perturbation selection (DARTS-PT): {genotype} -> {path}")
    return genotype
