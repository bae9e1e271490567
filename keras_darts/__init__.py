"""keras-darts: Differentiable Architecture Search (DARTS) in TensorFlow/Keras."""

import os
import sys

# TensorFlow's pip wheel enables its oneDNN CPU kernels only on CPUs with AVX-512 (or newer); on
# others (AVX2, e.g. most AMD EPYC) it falls back to Eigen kernels that are 2-3x slower for the
# search network's depthwise convs, BatchNorm and pooling (BUILD_NOTES, "Benchmarks"). The switch is
# read once when TensorFlow is imported, so it is set here, before any module imports TF; an
# explicit TF_ENABLE_ONEDNN_OPTS=0 from the user wins. GPU kernels are unaffected.
if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
