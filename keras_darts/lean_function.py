"""`LeanFunction`: a `tf.function` that keeps only the runtime function once it is traced.

A traced `tf.function` keeps, per input signature, a `ConcreteFunction` with its Python graph, its
forward/backward rewrites for tapes, and (after the first call) a Python protobuf copy of the
FunctionDef that its call path reads. Running a training step needs none of it: tracing registers
the FunctionDef with the TensorFlow runtime, which instantiates and runs it from there. So
`LeanFunction` traces through a throw-away `tf.function`, keeps the runtime function
(`AtomicFunction`, which keeps the FunctionDef registered while it lives), the input/output
contract and the captured inputs, drops the rest before the first call, and calls the runtime
function as `call_flat` does in eager mode. The same FunctionDef runs, so results are identical.

Measured at 8 cells, C=16, batch 64, unrolled with `--recompute`: peak RSS 6,636 -> 6,231-6,429
MiB in two runs (BUILD_NOTES, "The unrolled step's memory, this session"). The Python graph object
itself is not freed (something in TensorFlow still references it; not pinned down), so this is the
smaller part of what the graph costs.

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


class LeanFunction:
    """Calls like `tf.function(python_fn, **kwargs)`: positional tensor arguments, one trace per
    input signature (structure, shapes and dtypes of the flattened arguments)."""

    def __init__(self, python_fn, **tf_function_kwargs):
        self.python_function = python_fn
        self._kwargs = tf_function_kwargs
        self._calls = {}  # input signature -> how to call its trace
        self._plain = None  # the tf.function, once the internals turned out to differ

    def __call__(self, *args):
        if self._plain is None and tf.executing_eagerly():
            call = self._call_for(args)
            if call is not None:
                if record.could_possibly_record():
                    raise RuntimeError("LeanFunction: called under a recording GradientTape; its "
                                       "calls are not differentiable (use tf.function)")
                return call(args)
        return self._plain_function()(*args)

    def trace(self, *args):
        """Traces for `args`' signature now (what the first call would do), without running."""
        if self._plain is None:
            self._call_for(args)

    def _plain_function(self):
        if self._plain is None:
            self._plain = tf.function(self.python_function, **self._kwargs)
        return self._plain

    def _call_for(self, args):
        key = _signature(args)
        if key not in self._calls:
            call = _runtime_call(tf.function(self.python_function, **self._kwargs), args)
            if call is None:
                self._plain_function()
                return None
            self._calls[key] = call
            gc.collect()  # the throw-away tf.function and ConcreteFunction hold reference cycles
        return self._calls[key]


def _runtime_call(fn, args):
    """Traces `fn` for `args`; returns a function args -> structured outputs that runs the trace's
    runtime function, or None (with a warning) if this TensorFlow's internals differ."""
    concrete = fn.get_concrete_function(*args)
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


def _signature(args):
    flat = tf.nest.flatten(args, expand_composites=True)
    return (repr(tf.nest.map_structure(lambda _: None, args)),
            tuple((tuple(t.shape), t.dtype) for t in flat))
