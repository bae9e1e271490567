"""Whole runs: `render_search_outputs`, the end-of-search summary, and `bin/visualize`'s command."""

import json
import os
import shlex
import sys

from keras_darts.errors import UserError
from keras_darts.genotype import genotype_from_json, load_genotype
from keras_darts.visualize.cells import INSTALL_HINT, draw_cells, install_hint
from keras_darts.visualize.common import FORMATS, OUTPUT_NODE, _make_output_dir, node_name
from keras_darts.visualize.history import collapse_signal, load_history
from keras_darts.visualize.plots import (_heatmap_figure, _save, plot_collapse, plot_curves,
                                         plot_trajectories)


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
        lines.append(f"{title}:")
        for i, node in enumerate(genotype.nodes(cell)):
            ops = " + ".join(f"{op}({node_name(j)})" for op, j in node)
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


def format_cost(genotype, run_dir=None, latency_ms=None, measure=None):
    """["Cost:", one line per setting]: the run's derived network (--derived_*) if its config says,
    else the paper's CIFAR-10 and ImageNet mobile settings. `latency_ms` (already measured, for
    the run's network) or `measure` ((genotype, settings) -> ms, injected by bin/visualize so
    that visualize itself builds no model)."""
    from keras_darts.cost import report

    run = report.run_settings(run_dir) if run_dir else None
    if run is not None and latency_ms is not None:
        label, settings = run
        return ["Cost:", f"  {label}: " + report.format_cost(
            report.network_cost(genotype, **settings), latency_ms)]
    settings = [run] if run is not None else report.STANDARD
    return ["Cost:"] + ["  " + line for line in report.cost_lines(genotype, settings, measure)]


def format_summary(genotype, paths, run_dir, latency_ms=None, measure=None):
    """Multi-line end-of-search summary: the genotype, its cost, where the pictures are, how to
    retrain."""
    counts = collapse_signal([genotype])
    lines = ["Final genotype:"]
    lines += ["  " + line for line in format_genotype(genotype)]
    lines.append(f"  normal cell has {counts['skip_connect'][0]} skip_connect and "
                 f"{counts['parameter_free'][0]} parameter-free ops of {len(genotype.normal)}")
    lines += format_cost(genotype, run_dir, latency_ms, measure)
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


def run_command(genotype_spec=None, run_dir=None, fmt="png", output_dir=None, measure=None):
    """What `bin/visualize` does: draw a genotype's cells, or everything of a search run, and
    print the cost (with `measure`, a latency callable, also the latency).

    Prints the outputs on stdout and, if `dot` is missing, the install hint on stderr.
    """
    if (genotype_spec is None) == (run_dir is None):
        raise UserError("give either a GENOTYPE (published name or genotype.json path) or --run="
                        "SEARCH_OUTPUT_DIR, not both or neither")
    if fmt not in FORMATS:
        raise UserError(f"--format={fmt}: expected one of {', '.join(FORMATS)}")
    if run_dir is not None:
        genotype, paths = _render_run(run_dir, fmt, output_dir)
        summary = format_summary(genotype, paths, run_dir, measure=measure)
        print("\n".join(line for line in summary.splitlines() if line.strip() != INSTALL_HINT))
    else:
        genotype = load_genotype(genotype_spec, flag="GENOTYPE")
        paths = draw_cells(genotype, output_dir or ".", fmt)
        print("\n".join(format_genotype(genotype) + format_cost(genotype, measure=measure)))
        for cell, path in paths.items():
            print(f"wrote {path}")
    hint = install_hint(paths)
    if hint:
        print(f"warning: {hint}", file=sys.stderr)
    return paths
