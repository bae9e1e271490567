"""Pictures of a search: cell diagrams (graphviz) and alpha/loss plots (matplotlib).

Everything here reads plain data (a Genotype, alpha arrays, `history.jsonl`), so a finished run
can be redrawn without building a model. Plots use matplotlib's object API on an Agg canvas, never
pyplot: no global state, no display, safe inside a training process (the TensorBoard images).

Modules: `common` (node names, colours, atomic writes), `cells` (graphviz diagrams), `history`
(load_history and its checks, collapse signal), `plots` (matplotlib figures), `cli` (whole runs,
summaries, `bin/visualize`'s run_command).
"""

from keras_darts.visualize.cells import INSTALL_HINT, cell_graph, draw_cells, install_hint
from keras_darts.visualize.cli import (format_genotype, format_summary, render_search_outputs,
                                       run_command, run_genotype)
from keras_darts.visualize.common import (FORMATS, INPUT_NODES, OP_COLORS, OUTPUT_NODE, node_name,
                                          op_color)
from keras_darts.visualize.history import collapse_signal, load_history, per_op_mean_weights
from keras_darts.visualize.plots import (alpha_heatmap_image, plot_collapse, plot_curves,
                                         plot_trajectories)

__all__ = [
    "FORMATS", "INPUT_NODES", "INSTALL_HINT", "OP_COLORS", "OUTPUT_NODE",
    "alpha_heatmap_image", "cell_graph", "collapse_signal", "draw_cells", "format_genotype",
    "format_summary", "install_hint", "load_history", "node_name", "op_color", "per_op_mean_weights",
    "plot_collapse", "plot_curves", "plot_trajectories", "render_search_outputs", "run_command",
    "run_genotype",
]
