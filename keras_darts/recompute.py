"""Rematerialisation (`--recompute`): a layer call whose activations are recomputed in the backward
pass instead of being kept from the forward pass.

Why not `tf.recompute_grad(layer)`: the recomputed forward runs inside the gradient computation,
outside whatever `keras.StatelessScope` the forward ran in (the unrolled step's
`model.stateless_call` feeds virtual weights as tensors), so it would silently read the variables'
stored values, and the gradient would not reach the tensors fed in. BN running statistics and the
drop-path RNG state would also be updated a second time. Here every variable of the layer is an
explicit input instead:
  * trainable values are inputs of the custom gradient (their gradients flow to whatever they
    were read from: a variable, or a tensor of an outer StatelessScope);
  * non-trainable values (BN statistics, RNG state) are read once, before the call; both forward
    passes run in a StatelessScope that maps them to those values, so the recomputed pass draws the
    same drop-path mask and normalises the same way; the first pass's updates are returned as
    outputs and assigned once, and the recomputed pass's updates are discarded.
"""

import keras
import tensorflow as tf


def call_with_recompute(layer, fn, *inputs):
    """`fn(*inputs)` (which calls `layer`), keeping only `inputs` and the layer's weights for the
    backward pass, which recomputes the rest.

    Args:
      layer: the Keras layer `fn` calls; all variables `fn` touches must belong to it.
      fn: function of the float tensors `inputs` returning one tensor.
      inputs: float tensors (gradients flow to them).
    """
    trainable = list(layer.trainable_variables)
    state = list(layer.non_trainable_variables)
    # Read outside the custom gradient: the reads (or the outer scope's tensors) carry the gradient.
    weights = [tf.convert_to_tensor(v.value) for v in trainable]
    state_values = [tf.convert_to_tensor(v.value) for v in state]
    n_in, n_w = len(inputs), len(weights)
    changed = []  # indices of the state variables the forward pass updates (found when traced)

    def forward(args):
        mapping = (list(zip(trainable, args[n_in:n_in + n_w]))
                   + list(zip(state, args[n_in + n_w:])))
        with keras.StatelessScope(mapping) as scope:
            initial = [scope.get_current_value(v) for v in state]
            out = fn(*args[:n_in])
        new_state = [scope.get_current_value(v) for v in state]
        return out, [i for i, (a, b) in enumerate(zip(initial, new_state)) if a is not b], new_state

    # The state values are inputs too, though they get no gradient: in graph mode, custom_gradient
    # walks back from the outputs to the inputs to find the variables the function reads, and a
    # state value that is not an input (in the unrolled step: the statistics the previous pass
    # wrote) would send that walk through the whole graph before this cell, once per cell and
    # pass (at 3 cells unrolled, 250 s of tracing instead of ~100).
    @tf.custom_gradient
    def run(*args):
        out, changed[:], new_state = forward(args)

        def grad(*dys, variables=None):
            dy = dys[0]  # the state outputs carry no gradient
            # Recompute only once the backward pass has reached this layer; without the dependency
            # the executor would run it as soon as its inputs exist, in the forward pass, and hold
            # its activations as before.
            with tf.control_dependencies([dy]):
                xs = [tf.identity(a) for a in args]
            differentiable = xs[:n_in + n_w]
            with tf.GradientTape() as tape:
                tape.watch(differentiable)
                out2, _, _ = forward(xs)
            grads = tape.gradient(out2, differentiable, output_gradients=dy)
            grads = list(grads) + [None] * (len(xs) - len(differentiable))
            if variables is not None:  # nothing is read inside, but the API may still ask
                return grads, [None] * len(variables)
            return grads

        return (out, *[new_state[i] for i in changed]), grad

    out, *updates = run(*inputs, *weights, *state_values)
    for i, value in zip(changed, updates):
        state[i].assign(value)
    return out
