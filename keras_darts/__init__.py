"""keras-darts: Differentiable Architecture Search (DARTS) in TensorFlow/Keras.

The Python API (`keras_darts.search`, `retrain`, `build_model`, `export`, `Genotype`,
`DropPathSchedule`, `SearchResult`, `RetrainResult`) is imported on first use, so
`import keras_darts` does not import TensorFlow (see keras_darts/api/).
"""

import importlib
import os
import sys

# TensorFlow's pip wheel enables its oneDNN CPU kernels only on CPUs with AVX-512 (or newer); on
# others (AVX2, e.g. most AMD EPYC) it falls back to Eigen kernels that are 2-3x slower for the
# search network's depthwise convs, BatchNorm and pooling (BUILD_NOTES, "Benchmarks"). The switch is
# read once when TensorFlow is imported, so it is set here, before any module imports TF; an
# explicit TF_ENABLE_ONEDNN_OPTS=0 from the user wins. GPU kernels are unaffected.
if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN CPU kernels (imports TF); None if this build cannot say."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # what TF itself reads (private)
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


# TensorFlow imported first with oneDNN off: too late to turn it on, so say so. An explicit
# TF_ENABLE_ONEDNN_OPTS=0 is the user's choice and not warned.
if ("tensorflow" in sys.modules and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0"
        and onednn_enabled() is False):
    import warnings

    warnings.warn("TensorFlow was imported before keras_darts with its oneDNN CPU kernels off, so "
                  "CPU steps run 3-5x slower: import keras_darts first, or set "
                  "TF_ENABLE_ONEDNN_OPTS=1 before Python starts", RuntimeWarning, stacklevel=2)

_API = ("search", "retrain", "build_model", "Genotype", "DropPathSchedule", "SearchResult",
        "RetrainResult")
__all__ = list(_API) + ["export"]


def __getattr__(name):
    # `export` is the callable keras_darts.export package; importing it also sets the attribute.
    if name == "export":
        return importlib.import_module("keras_darts.export")
    if name in _API:
        return getattr(importlib.import_module("keras_darts.api"), name)
    raise AttributeError(f"module 'keras_darts' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
