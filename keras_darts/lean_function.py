"""`LeanFunction`: a `tf.function` that keeps only the runtime function once it is traced.

A traced `tf.function` keeps, per input signature, a `ConcreteFunction` with its Python graph, its
forward/backward rewrites for tapes, and (after the first call) a Python protobuf copy of the
FunctionDef that its call path reads. Running a training step needs none of it: tracing registers
the FunctionDef with the TensorFlow runtime, which instantiates and runs it from there. So
`LeanFunction` traces through a throw-away `tf.function`, keeps the runtime function
(`AtomicFunction`, which keeps the FunctionDef registered while it lives), the input/output
contract and the captured inputs, drops the rest before the first call, and calls the runtime
function as `call_flat` does in eager mode. The same FunctionDef runs, so results are identical.

The Python graph is freed too, which takes one more step: `tf.custom_gradient` in graph mode
registers its gradient function in TensorFlow's global gradient registry, under a fresh name, and
that function holds tensors of the graph, so the graph lives as long as the process. Every step
that applies an optimizer traces one (`ReplicaContext.all_reduce` of the gradients is a custom
gradient), `--recompute` one per cell and pass. Nothing can differentiate the trace once only the
runtime function is left, so the registrations the trace made that hold its tensors are removed.

What the trace and the first call's graph optimisation freed is handed back to the OS before the
step's tensors need memory (`heap.py`): after tracing, and from a background thread during each
trace's first call.

Not covered (a training step needs neither): gradients through the call (refused under a
recording tape) and calls from inside another `tf.function` (they trace the plain function).
It reads TensorFlow internals (`ConcreteFunction.inference_fn`, its captured inputs, the
`AtomicFunction`'s context call; TF 2.16-2.21); if they move, it falls back to a plain
`tf.function` (same results, the old memory) with a one-line warning.
"""

import gc
import warnings

import tensorflow as tf
from tensorflow.python.eager import record  # whether a GradientTape is recording
from tensorflow.python.framework import ops as tf_ops  # the gradient registry

from keras_darts import heap


class LeanFunction:
    """Calls like `tf.function(python_fn, **kwargs)`: positional tensor arguments, one trace per
    input signature (structure, shapes and dtypes of the flattened arguments)."""

    def __init__(self, python_fn, **tf_function_kwargs):
        self.python_function = python_fn
        self._kwargs = tf_function_kwargs
        self._calls = {}  # input signature -> how to call its trace
        self._ran = set()  # the signatures whose trace has run once
        self._plain = None  # the tf.function, once the internals turned out to differ

    def __call__(self, *args):
        if self._plain is None and tf.executing_eagerly():
            key = _signature(args)
            call = self._call_for(args, key)
            if call is not None:
                if record.could_possibly_record():
                    raise RuntimeError("LeanFunction: called under a recording GradientTape; its "
                                       "calls are not differentiable (use tf.function)")
                if key in self._ran:
                    return call(args)
                # The first call optimises the graph (transient copies, freed) before it allocates
                # the step's tensors: the freed pages go back to the OS in between (heap.py).
                with heap.releasing_free_memory():
                    outputs = call(args)
                self._ran.add(key)
                return outputs
        return self._plain_function()(*args)

    def trace(self, *args):
        """Traces for `args`' signature now (what the first call would do), without running."""
        if self._plain is None:
            self._call_for(args, _signature(args))

    def _plain_function(self):
        if self._plain is None:
            self._plain = tf.function(self.python_function, **self._kwargs)
        return self._plain

    def _call_for(self, args, key):
        if key not in self._calls:
            call = _runtime_call(tf.function(self.python_function, **self._kwargs), args)
            if call is None:
                self._plain_function()
                return None
            self._calls[key] = call
            gc.collect()  # the throw-away tf.function and ConcreteFunction hold reference cycles
            heap.release_free_memory()  # the freed Python graph's pages
        return self._calls[key]


def _runtime_call(fn, args):
    """Traces `fn` for `args`; returns a function args -> structured outputs that runs the trace's
    runtime function, or None (with a warning) if this TensorFlow's internals differ."""
    registered = set(_gradient_registrations())
    concrete = fn.get_concrete_function(*args)
    _release_gradient_registrations(
        [k for k in _gradient_registrations() if k not in registered], concrete.graph)
    try:
        from tensorflow.python.eager.polymorphic_function import function_type_utils

        atomic = concrete.inference_fn
        function_type, outputs_type = concrete.function_type, atomic.function_type
        captures = list(concrete._captured_inputs)  # noqa: SLF001 (callables: read per call)
        run, name = atomic._bound_context.call_function, atomic.name  # noqa: SLF001
        n_outputs = len(outputs_type.flat_outputs)
        canonicalize = function_type_utils.canonicalize_function_inputs
    except (AttributeError, ImportError) as e:
        warnings.warn(f"LeanFunction: this TensorFlow's function internals differ ({e}); using a "
                      "plain tf.function (same results, more memory)", RuntimeWarning, stacklevel=4)
        return None
    pending = [atomic]  # graph caches, down through the functions it calls (loop bodies, branches)
    while pending:
        f = pending.pop()
        f._cached_graph = None  # noqa: SLF001
        pending.extend(getattr(f, "children", []))

    def call(call_args):
        flat = function_type.unpack_inputs(canonicalize(call_args, {}, function_type))
        inputs = list(flat) + tf.nest.flatten([c() if callable(c) else c for c in captures],
                                              expand_composites=True)
        return outputs_type.pack_output(run(name, inputs, n_outputs))

    call.atomic = atomic  # keeps the runtime function registered (and lets tests look at it)
    return call


def _gradient_registrations():
    return getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", {})


def _release_gradient_registrations(names, graph):
    """Removes the registered gradient functions among `names` that hold tensors of `graph` or of
    the graphs inside it (loop bodies, branches): those the trace's custom gradients made."""
    registrations = _gradient_registrations()
    for name in names:
        if _holds_tensor_of(registrations[name].get("type"), graph):
            del registrations[name]


def _holds_tensor_of(fn, graph, depth=4):
    """Whether `fn`'s closure (followed through nested closures, lists and tuples) holds a tensor
    of `graph` or of a graph nested in it."""
    pending, seen = [(fn, 0)], set()
    while pending:
        obj, d = pending.pop()
        if id(obj) in seen or d > depth:
            continue
        seen.add(id(obj))
        owner = getattr(obj, "graph", None) if isinstance(obj, tf.Tensor) else None
        while owner is not None:
            if owner is graph:
                return True
            owner = getattr(owner, "outer_graph", None)
        if callable(obj) and getattr(obj, "__closure__", None):
            for cell in obj.__closure__:
                try:
                    pending.append((cell.cell_contents, d + 1))
                except ValueError:  # an empty cell
                    pass
        elif isinstance(obj, (list, tuple)):
            pending.extend((x, d + 1) for x in obj)
    return False


def _signature(args):
    flat = tf.nest.flatten(args, expand_composites=True)
    return (repr(tf.nest.map_structure(lambda _: None, args)),
            tuple((tuple(t.shape), t.dtype) for t in flat))
