"""What diagrams and plots share: node names, op colours, output formats, atomic figure writes."""

import os
import tempfile

from keras_darts.errors import UserError
from keras_darts.genotype import PRIMITIVES


FORMATS = ("png", "svg", "pdf")
INPUT_NODES = ("c_{k-2}", "c_{k-1}")
OUTPUT_NODE = "c_{k}"


# One colour per op, shared by diagrams and plots. Skip is red: it is the op that signals collapse.
OP_COLORS = {
    "none": "#8c8c8c",
    "max_pool_3x3": "#1f77b4",
    "avg_pool_3x3": "#17a2b8",
    "skip_connect": "#d62728",
    "sep_conv_3x3": "#2ca02c",
    "sep_conv_5x5": "#e67e00",
    "dil_conv_3x3": "#9467bd",
    "dil_conv_5x5": "#8c564b",
}
_FALLBACK_COLORS = ("#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def op_color(op, primitives=PRIMITIVES):
    if op in OP_COLORS:
        return OP_COLORS[op]
    return _FALLBACK_COLORS[list(primitives).index(op) % len(_FALLBACK_COLORS)]


def node_name(index):
    """Genotype input index -> node name: 0, 1 are the cell inputs, j >= 2 is the node j-2."""
    return INPUT_NODES[index] if index < 2 else str(index - 2)


def _write_bytes(path, data):
    """Writes atomically, so a viewer never opens a half-written figure."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; figures are readable like any file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _make_output_dir(path):
    """Creates `path` (like `mkdir -p`), or says in one line why it cannot be the output dir."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--output_dir={path}: exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output_dir={path}: cannot create it ({e.strerror})") from None
