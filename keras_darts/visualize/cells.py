"""Cell diagrams with graphviz: `cell_graph`, `draw_cells`."""

import os

import graphviz

from keras_darts.errors import UserError
from keras_darts.visualize.common import (FORMATS, INPUT_NODES, OUTPUT_NODE, _make_output_dir,
                                          _write_bytes, node_name, op_color)


INSTALL_HINT = ("graphviz's `dot` was not found, so only the .gv source was written; install "
                "graphviz (`apt-get install graphviz` / `brew install graphviz`) and rerun, or "
                "render it with `dot -Tpng FILE.gv -o FILE.png`")


def _html_name(name):
    # c_{k-2} -> c with a k-2 subscript; graphviz HTML labels render it without LaTeX.
    return f"<c<SUB>{name[3:-1]}</SUB>>" if name.startswith("c_{") else name


def cell_graph(genotype, cell="normal"):
    """The graphviz Digraph of one cell; edges are labelled with their op, concat edges are not."""
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
    nodes = genotype.nodes(cell)
    for i in range(len(nodes)):
        g.node(str(i), fillcolor="lightblue")
    g.node(OUTPUT_NODE, label=_html_name(OUTPUT_NODE), fillcolor="palegoldenrod")
    for i, node in enumerate(nodes):
        for op, j in node:
            color = op_color(op)
            g.edge(node_name(j), str(i), label=op, color=color, fontcolor=color)
    for i in concat:
        g.edge(node_name(i), OUTPUT_NODE, color="gray55")
    return g


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
