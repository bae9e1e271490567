"""Pictures of a search: cell diagrams (graphviz) and alpha/loss plots (matplotlib).

Everything here reads plain data (a Genotype, alpha arrays, `history.jsonl`), so a finished run
can be redrawn without building a model. Plots use matplotlib's object API on an Agg canvas, never
pyplot: no global state, no display, safe inside a training process (the TensorBoard images).
"""

import io
import json
import os
import shlex
import sys
import tempfile

import graphviz
import numpy as np

from keras_darts.errors import UserError
from keras_darts.genotype import (PARAMETER_FREE_OPS, PRIMITIVES, count_ops, edge_labels,
                                  genotype_from_dict, genotype_from_json, load_genotype, num_edges)

FORMATS = ("png", "svg", "pdf")
INPUT_NODES = ("c_{k-2}", "c_{k-1}")
OUTPUT_NODE = "c_{k}"
INSTALL_HINT = ("graphviz's `dot` was not found, so only the .gv source was written; install "
                "graphviz (`apt-get install graphviz` / `brew install graphviz`) and rerun, or "
                "render it with `dot -Tpng FILE.gv -o FILE.png`")

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

_HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                 "alphas_normal", "alphas_reduce", "genotype")


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


# === Cell diagrams ===

def _html_name(name):
    # c_{k-2} -> c with a k-2 subscript; graphviz HTML labels render it without LaTeX.
    return f"<c<SUB>{name[3:-1]}</SUB>>" if name.startswith("c_{") else name


def cell_graph(genotype, cell="normal"):
    """The graphviz Digraph of one cell; edges are labelled with their op, concat edges are not."""
    edges = getattr(genotype, cell)
    concat = getattr(genotype, cell + "_concat")
    g = graphviz.Digraph(
        name=f"{cell}_cell",
        graph_attr=dict(rankdir="LR", label=f"{'normal' if cell == 'normal' else 'reduction'} cell",
                        labelloc="t", fontsize="22", fontname="Helvetica", nodesep="0.35"),
        node_attr=dict(style="filled", shape="rect", fontname="Helvetica", fontsize="18",
                       penwidth="1.5", height="0.5", width="0.5"),
        edge_attr=dict(fontname="Helvetica", fontsize="14", penwidth="1.6", arrowsize="0.8"),
    )
    for name in INPUT_NODES:
        g.node(name, label=_html_name(name), fillcolor="darkseagreen2")
    for i in range(len(edges) // 2):
        g.node(str(i), fillcolor="lightblue")
    g.node(OUTPUT_NODE, label=_html_name(OUTPUT_NODE), fillcolor="palegoldenrod")
    for k, (op, j) in enumerate(edges):
        color = op_color(op)
        g.edge(node_name(j), str(k // 2), label=op, color=color, fontcolor=color)
    for i in concat:
        g.edge(node_name(i), OUTPUT_NODE, color="gray55")
    return g


def _make_output_dir(path):
    """Creates `path` (like `mkdir -p`), or says in one line why it cannot be the output dir."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--output_dir={path}: exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output_dir={path}: cannot create it ({e.strerror})") from None


def draw_cells(genotype, output_dir=".", fmt="png"):
    """Renders `normal.<fmt>` and `reduce.<fmt>`; returns {"normal": path, "reduce": path}.

    Without `dot` on the PATH it writes `normal.gv`/`reduce.gv` instead and returns those paths
    (`install_hint` then gives the line to show); the caller still succeeds.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format={fmt}: expected one of {', '.join(FORMATS)}")
    _make_output_dir(output_dir)
    paths = {}
    for cell in ("normal", "reduce"):
        g = cell_graph(genotype, cell)
        if fmt == "png":
            g.graph_attr["dpi"] = "144"  # graphviz's 72-96 dpi default blurs the labels
        try:
            data = g.pipe(format=fmt)
        except graphviz.ExecutableNotFound:
            paths[cell] = os.path.join(output_dir, f"{cell}.gv")
            _write_bytes(paths[cell], g.source.encode())
            continue
        except graphviz.CalledProcessError as e:
            stderr = (e.stderr or b"").decode(errors="replace").strip().splitlines()
            raise UserError(f"graphviz failed to draw the {cell} cell: "
                            f"{stderr[-1] if stderr else e}") from None
        paths[cell] = os.path.join(output_dir, f"{cell}.{fmt}")
        _write_bytes(paths[cell], data)
    return paths


def install_hint(paths):
    """The one-line install hint if `draw_cells` fell back to .gv sources, else None."""
    return INSTALL_HINT if any(str(p).endswith(".gv") for p in paths.values()) else None


# === History ===

def _number(record, key):
    v = record[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{key} must be a number, got {v!r:.40}")
    return float(v)


def _check_alpha_shape(name, a, n_ops):
    """Returns the number of intermediate nodes an (edges, ops) alpha matrix implies."""
    steps = 1
    while a.ndim == 2 and num_edges(steps) < a.shape[0]:
        steps += 1
    if a.ndim != 2 or a.shape != (num_edges(steps), n_ops):
        raise ValueError(f"{name} has shape {a.shape}; expected (edges, {n_ops}) with edges = 2, "
                         f"5, 9, 14, ... (14 for 4 nodes)")
    return steps


def _alphas(record, key, n_ops):
    """(edges, ops) softmaxed weights and the number of intermediate nodes they imply."""
    try:
        a = np.asarray(record[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{key} is not a rectangular list of numbers") from None
    steps = _check_alpha_shape(key, a, n_ops)
    if not np.all(np.isfinite(a)) or a.min() < 0 or not np.allclose(a.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(f"{key} rows are not softmax weights (non-negative, summing to 1)")
    return a, steps


def _check_record(record):
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    missing = [k for k in _HISTORY_KEYS if k not in record]
    if missing:
        raise ValueError(f"missing key(s): {', '.join(missing)}")
    epoch = record["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise ValueError(f"epoch must be an integer, got {epoch!r:.40}")
    primitives = tuple(record.get("primitives", PRIMITIVES))
    if not primitives or not all(isinstance(p, str) for p in primitives):
        raise ValueError("primitives must be a list of op names")
    normal, steps = _alphas(record, "alphas_normal", len(primitives))
    reduce, steps_reduce = _alphas(record, "alphas_reduce", len(primitives))
    if steps != steps_reduce:
        raise ValueError(f"alphas_normal has {normal.shape[0]} edges but alphas_reduce has "
                         f"{reduce.shape[0]}")
    try:
        genotype = genotype_from_dict(record["genotype"])
    except ValueError as e:
        raise ValueError(f"genotype: {e}") from None
    if genotype.steps != steps:
        raise ValueError(f"genotype has {genotype.steps} nodes but the alphas have {steps}")
    out = {k: _number(record, k)
           for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")}
    out.update(epoch=epoch, primitives=primitives, alphas_normal=normal, alphas_reduce=reduce,
               genotype=genotype, steps=steps)
    return out


def load_history(path):
    """Reads and checks a search `history.jsonl`; returns one dict per epoch with numpy alphas.

    Raises:
      UserError: one line naming the file (and line) and what is wrong.
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: not found (bin/search writes it after each completed epoch)")
    records = []
    try:
        with open(path) as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = _check_record(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {lineno}: not valid JSON ({e.msg} at column {e.colno})"
                            ) from None
        except ValueError as e:
            raise UserError(f"{path}: line {lineno}: {e}") from None
        if records and (record["steps"], record["primitives"]) != (records[0]["steps"],
                                                                   records[0]["primitives"]):
            raise UserError(f"{path}: line {lineno}: alpha shape or primitives differ from line 1")
        records.append(record)
    if not records:
        raise UserError(f"{path}: empty, no completed epoch recorded yet")
    return records


def collapse_signal(genotypes):
    """Per genotype, the counts in its normal cell of skip_connect and of parameter-free ops.

    DARTS "collapses" when skip connections crowd out convolutions as search goes on; a rising count
    in the derived normal cell is the early sign (DARTS+ stops the search at 2 skips).
    """
    return {
        "skip_connect": [count_ops(g.normal, ("skip_connect",)) for g in genotypes],
        "parameter_free": [count_ops(g.normal, PARAMETER_FREE_OPS) for g in genotypes],
    }


def per_op_mean_weights(alphas, primitives=PRIMITIVES):
    """{op: mean softmaxed weight of that op over all edges} for (edges, ops) weights."""
    a = np.asarray(alphas, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != len(primitives):
        raise ValueError(f"alphas has shape {a.shape}, expected (edges, {len(primitives)})")
    return {op: float(w) for op, w in zip(primitives, a.mean(axis=0))}


# === Plots ===

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
    for k, (op, j) in enumerate(chosen):
        if op in primitives and (j, k // 2 + 2) in rows:
            ax.add_patch(Rectangle((primitives.index(op) - 0.5, rows[(j, k // 2 + 2)] - 0.5), 1, 1,
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
                  genotype.normal if genotype else ())
    im = _heatmap_axes(axes[1], reduce, steps, primitives, "reduction cell",
                       genotype.reduce if genotype else ())
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


# === Whole run ===

def run_genotype(run_dir, history):
    """The run's final genotype: `genotype.json` if the search wrote it, else the last epoch's."""
    path = os.path.join(run_dir, "genotype.json")
    if not os.path.isfile(path):
        return history[-1]["genotype"]
    try:
        with open(path) as f:
            return genotype_from_json(f.read())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: malformed genotype: {e}") from None


def render_search_outputs(run_dir, fmt="png", output_dir=None):
    """Draws every picture of a search run into `run_dir/figures/` (or `output_dir`).

    Returns:
      {"normal", "reduce", "alphas_heatmap", "trajectories_normal", "trajectories_reduce",
       "collapse", "curves"} -> file path. The cell diagrams are `.gv` sources if `dot` is missing.
    """
    return _render_run(run_dir, fmt, output_dir)[1]


def _render_run(run_dir, fmt, output_dir):
    if not os.path.isdir(run_dir):
        raise UserError(f"{run_dir}: no such run directory")
    history = load_history(os.path.join(run_dir, "history.jsonl"))
    genotype = run_genotype(run_dir, history)
    out = output_dir or os.path.join(run_dir, "figures")
    _make_output_dir(out)
    paths = draw_cells(genotype, out, fmt)
    last = history[-1]
    fig = _heatmap_figure(last["alphas_normal"], last["alphas_reduce"], last["primitives"],
                          f"architecture weights after epoch {last['epoch']}",
                          genotype if genotype.steps == last["steps"] else None)
    paths["alphas_heatmap"] = _save(fig, os.path.join(out, f"alphas_heatmap.{fmt}"), fmt)
    for cell in ("normal", "reduce"):
        paths[f"trajectories_{cell}"] = plot_trajectories(
            history, cell, os.path.join(out, f"trajectories_{cell}.{fmt}"), fmt)
    paths["collapse"] = plot_collapse(history, os.path.join(out, f"collapse.{fmt}"), fmt)
    paths["curves"] = plot_curves(history, os.path.join(out, f"curves.{fmt}"), fmt)
    return genotype, paths


def format_genotype(genotype):
    """Readable cells, one line per node: `node 0 <- sep_conv_3x3(c_{k-1}) + skip_connect(0)`."""
    lines = []
    for cell, title in (("normal", "normal cell"), ("reduce", "reduction cell")):
        edges = getattr(genotype, cell)
        lines.append(f"{title}:")
        for i in range(len(edges) // 2):
            ops = " + ".join(f"{op}({node_name(j)})" for op, j in edges[2 * i : 2 * i + 2])
            lines.append(f"  node {i} <- {ops}")
        concat = ", ".join(node_name(i) for i in getattr(genotype, cell + "_concat"))
        lines.append(f"  {OUTPUT_NODE} = concat({concat})")
    return lines


def _dataset(run_dir):
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            record = json.load(f)
        # bin/search nests its flags under "config"; accept a flat file too.
        dataset = record.get("config", record).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None
    return dataset if isinstance(dataset, str) and dataset else None


def format_summary(genotype, paths, run_dir):
    """Multi-line end-of-search summary: the genotype, where the pictures are, how to retrain."""
    counts = collapse_signal([genotype])
    lines = ["Final genotype:"]
    lines += ["  " + line for line in format_genotype(genotype)]
    lines.append(f"  normal cell has {counts['skip_connect'][0]} skip_connect and "
                 f"{counts['parameter_free'][0]} parameter-free ops of {len(genotype.normal)}")
    if paths:
        lines.append("Figures:")
        width = max(len(k) for k in paths)
        lines += [f"  {k:<{width}}  {p}" for k, p in paths.items()]
        hint = install_hint(paths)
        if hint:
            lines.append("  " + hint)
    command = f"bin/retrain --genotype={shlex.quote(os.path.join(run_dir, 'genotype.json'))}"
    dataset = _dataset(run_dir)
    if dataset:
        command += f" --dataset={shlex.quote(dataset)}"
    lines += ["Retrain it with:", "  " + command]
    return "\n".join(lines)


def run_command(genotype_spec=None, run_dir=None, fmt="png", output_dir=None):
    """What `bin/visualize` does: draw a genotype's cells, or everything of a search run.

    Prints the outputs on stdout and, if `dot` is missing, the install hint on stderr.
    """
    if (genotype_spec is None) == (run_dir is None):
        raise UserError("give either a GENOTYPE (published name or genotype.json path) or --run="
                        "SEARCH_OUTPUT_DIR, not both or neither")
    if fmt not in FORMATS:
        raise UserError(f"--format={fmt}: expected one of {', '.join(FORMATS)}")
    if run_dir is not None:
        genotype, paths = _render_run(run_dir, fmt, output_dir)
        summary = format_summary(genotype, paths, run_dir)
        print("\n".join(line for line in summary.splitlines() if line.strip() != INSTALL_HINT))
    else:
        genotype = load_genotype(genotype_spec, flag="GENOTYPE")
        paths = draw_cells(genotype, output_dir or ".", fmt)
        print("\n".join(format_genotype(genotype)))
        for cell, path in paths.items():
            print(f"wrote {path}")
    hint = install_hint(paths)
    if hint:
        print(f"warning: {hint}", file=sys.stderr)
    return paths
