"""Alpha heatmaps and trajectories, the collapse signal and loss curves (matplotlib).

Plots use matplotlib's object API on an Agg canvas, never pyplot: no global state, no display, safe
inside a training process (the TensorBoard images).
"""

import io

import numpy as np

from keras_darts.genotype import edge_labels
from keras_darts.visualize.common import OP_COLORS, _write_bytes, node_name, op_color
from keras_darts.visualize.history import _check_alpha_shape, collapse_signal


def _figure(figsize, layout="constrained"):
    """A Figure on an Agg canvas (headless, no pyplot); imported lazily so diagrams start fast."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, fmt):
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110)
    _write_bytes(path, buf.getvalue())
    return path


def _tex(name):
    return f"${name}$" if name.startswith("c_{") else name


def _edge_names(steps):
    return [f"{_tex(node_name(j))} → {i - 2}" for j, i in edge_labels(steps)]


def _heatmap_axes(ax, weights, steps, primitives, title, chosen=()):
    """One cell's (edges, ops) weights: fixed [0, 1] scale, values written in, `chosen` outlined."""
    from matplotlib.colors import PowerNorm
    from matplotlib.patches import Rectangle

    # A fixed scale keeps epochs and runs comparable; sqrt stretches the 0.1-0.4 band of weights.
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    im = ax.imshow(weights, cmap="viridis", norm=norm, aspect="auto")
    ax.set_xticks(range(len(primitives)), primitives, rotation=35, ha="right",
                  rotation_mode="anchor")
    ax.set_yticks(range(weights.shape[0]), _edge_names(steps))
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=13)
    for r in range(weights.shape[0]):
        for c in range(weights.shape[1]):
            w = weights[r, c]
            ax.text(c, r, f"{w:.2f}", ha="center", va="center", fontsize=8.5,
                    color="black" if norm(w) > 0.7 else "white")
    # Lines between target nodes group each node's incoming edges.
    start = 0
    for i in range(steps - 1):
        start += i + 2
        ax.axhline(start - 0.5, color="white", linewidth=2)
    rows = {edge: r for r, edge in enumerate(edge_labels(steps))}
    for i, node in enumerate(chosen):
        for op, j in node:
            if op in primitives and (j, i + 2) in rows:
                ax.add_patch(Rectangle((primitives.index(op) - 0.5, rows[(j, i + 2)] - 0.5), 1, 1,
                                       fill=False, edgecolor="#ff2d55", linewidth=2.2))
    return im


def _heatmap_figure(alphas_normal, alphas_reduce, primitives, title=None, genotype=None):
    primitives = list(primitives)
    normal = np.asarray(alphas_normal, dtype=np.float64)
    reduce = np.asarray(alphas_reduce, dtype=np.float64)
    steps = _check_alpha_shape("alphas_normal", normal, len(primitives))
    if _check_alpha_shape("alphas_reduce", reduce, len(primitives)) != steps:
        raise ValueError(f"alphas_normal {normal.shape} and alphas_reduce {reduce.shape} differ")
    # Fixed margins in inches (row labels left, rotated op names below, colour bar right): cheaper
    # than constrained layout, which matters when this is drawn every epoch for TensorBoard.
    width, height = 13.0, max(0.42 * normal.shape[0], 2.5) + 1.85
    left, gap, right, bottom, top = 0.95, 1.0, 1.15, 1.05, 0.8
    panel = (width - left - gap - right) / 2
    fig = _figure((width, height), layout=None)
    axes = [fig.add_axes([(left + k * (panel + gap)) / width, bottom / height, panel / width,
                          (height - bottom - top) / height]) for k in range(2)]
    _heatmap_axes(axes[0], normal, steps, primitives, "normal cell",
                  genotype.nodes("normal") if genotype else ())
    im = _heatmap_axes(axes[1], reduce, steps, primitives, "reduction cell",
                       genotype.nodes("reduce") if genotype else ())
    cax = fig.add_axes([(width - right + 0.2) / width, bottom / height, 0.18 / width,
                        (height - bottom - top) / height])
    cbar = fig.colorbar(im, cax=cax)
    cbar.set_ticks([0, 0.05, 0.125, 0.25, 0.5, 0.75, 1.0])
    cbar.set_label("softmax weight (sqrt scale)")
    suptitle = title or "architecture weights"
    if genotype:
        suptitle += "  (outlined: ops kept in the genotype)"
    fig.suptitle(suptitle, fontsize=14, y=1 - 0.12 / height, va="top")
    return fig


def alpha_heatmap_image(alphas_normal, alphas_reduce, primitives, title=None):
    """The alpha heatmaps as a (1, H, W, 4) uint8 RGBA array, ready for `tf.summary.image`.

    Args:
      alphas_normal, alphas_reduce: (edges, ops) softmaxed weights (rows sum to 1).
      primitives: op names, one per column.
    """
    fig = _heatmap_figure(alphas_normal, alphas_reduce, primitives, title)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba(), dtype=np.uint8).copy()[None]


def _epoch_axis(ax):
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _marker(n):
    return "o" if n <= 30 else None


def plot_trajectories(history, cell, path, fmt="png"):
    """Small multiples: one panel per edge (row = target node), one line per op over epochs."""
    from matplotlib.lines import Line2D

    primitives = list(history[0]["primitives"])
    steps = history[0]["steps"]
    epochs = [r["epoch"] for r in history]
    w = np.stack([r[f"alphas_{cell}"] for r in history])  # (epochs, edges, ops)
    # Row i (node i) has i + 2 inputs, so row 0 always leaves a free top-right panel for the legend.
    cols = max(steps + 1, 3)
    width, height = 2.6 * cols, 1.9 * steps + 1.0
    # A regular grid needs no constrained layout, which would double the drawing time here.
    fig = _figure((width, height), layout=None)
    fig.subplots_adjust(left=0.85 / width, right=1 - 0.15 / width, bottom=0.65 / height,
                        top=1 - 0.6 / height, wspace=0.08, hspace=0.32)
    axes = fig.subplots(steps, cols, sharex=True, sharey=True, squeeze=False)
    names = _edge_names(steps)
    for r, (j, i) in enumerate(edge_labels(steps)):
        ax = axes[i - 2, j]
        for c, op in enumerate(primitives):
            ax.plot(epochs, w[:, r, c], color=op_color(op, primitives), linewidth=1.6,
                    marker=_marker(len(epochs)), markersize=3,
                    linestyle="--" if op == "none" else "-")
        ax.set_title(names[r], fontsize=10)
        _epoch_axis(ax)
    for i in range(steps):
        for j in range(i + 2, cols):
            axes[i, j].set_axis_off()
    axes[0, 0].set_ylim(0, min(1.0, float(w.max()) * 1.08 + 0.02))
    handles = [Line2D([], [], color=op_color(op, primitives), linewidth=2,
                      linestyle="--" if op == "none" else "-") for op in primitives]
    free = cols - 2  # empty panels in row 0
    axes[0, -1].legend(handles, primitives, loc="upper right", ncol=2 if free >= 2 else 1,
                       fontsize=10 if free >= 2 else 8, title="op", title_fontsize=10,
                       frameon=False, borderaxespad=0)
    fig.supxlabel("epoch", y=0.15 / height)
    fig.supylabel("softmax weight", x=0.2 / width)
    fig.suptitle(f"{'normal' if cell == 'normal' else 'reduction'} cell: op weights per edge "
                 "over search", fontsize=13)
    return _save(fig, path, fmt)


def plot_collapse(history, path, fmt="png"):
    """Skip-connect and parameter-free op counts in the derived normal cell per epoch."""
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    counts = collapse_signal([r["genotype"] for r in history])
    n_edges = 2 * history[0]["steps"]
    fig = _figure((7.5, 4.2))
    ax = fig.subplots()
    m = _marker(len(epochs))
    # Counts change in whole steps, so draw steps; the wide pale line stays visible under skip's.
    ax.plot(epochs, counts["parameter_free"], color="#6fa8dc", marker=m, linewidth=4.5,
            drawstyle="steps-mid", label="parameter-free ops (pools + skip)")
    ax.plot(epochs, counts["skip_connect"], color=OP_COLORS["skip_connect"], marker=m, markersize=4,
            linewidth=1.8, drawstyle="steps-mid", label="skip_connect")
    ax.axhline(2, color="gray", linestyle=":", linewidth=1.2, label="2 skips: DARTS+ stops search")
    ax.set_ylim(-0.3, n_edges + 0.3)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _epoch_axis(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"ops in normal cell (of {n_edges})")
    ax.set_title("collapse signal: parameter-free ops in the derived normal cell")
    ax.legend(loc="upper left", fontsize=9)
    return _save(fig, path, fmt)


def plot_curves(history, path, fmt="png"):
    """Search-train and search-val loss and accuracy per epoch."""
    epochs = [r["epoch"] for r in history]
    m = _marker(len(epochs))
    fig = _figure((11, 4.2))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split, color in (("train", "#1f77b4"), ("val", "#e67e00")):
        label = f"search-{split}"
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], color=color, marker=m,
                     linewidth=2, label=label)
        ax_acc.plot(epochs, [100 * r[f"{split}_accuracy"] for r in history], color=color, marker=m,
                    linewidth=2, label=label)
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy (%)")):
        _epoch_axis(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.legend(fontsize=9)
    fig.suptitle("search: weights train on search-train, alphas on search-val", fontsize=12)
    return _save(fig, path, fmt)
