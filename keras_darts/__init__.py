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
