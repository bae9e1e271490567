"""Cell diagrams, alpha plots and the `bin/visualize` CLI."""

import collections
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from keras_darts import visualize
from keras_darts.errors import UserError
from keras_darts.genotype import DARTS_V1, DARTS_V2, PRIMITIVES, Genotype, edge_labels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` not installed")

# Normal cell with pools and skips: 2 skip_connect, 5 parameter-free ops.
POOLY = Genotype(
    normal=[("max_pool_3x3", 0), ("skip_connect", 1), ("avg_pool_3x3", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 2), ("sep_conv_5x5", 0), ("dil_conv_5x5", 3), ("max_pool_3x3", 1)],
    normal_concat=(2, 3, 4, 5),
    reduce=DARTS_V2.reduce,
    reduce_concat=(2, 3, 4, 5),
)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _alphas(cell_edges, progress, noise):
    """Softmaxed (14, 8) weights in which the genotype's ops grow as search progresses (0..1)."""
    rows = {pair: r for r, pair in enumerate(edge_labels(4))}
    logits = noise.copy()
    for k, (op, j) in enumerate(cell_edges):
        logits[rows[(j, k // 2 + 2)], PRIMITIVES.index(op)] += 1.5 * progress
    logits[:, PRIMITIVES.index("none")] += 0.8 * progress
    return _softmax(logits)


def make_history(genotypes, seed=0):
    """History lines as `bin/search` writes them, one per genotype (epoch)."""
    rng = np.random.default_rng(seed)
    base = 0.15 * rng.normal(size=(2, 14, len(PRIMITIVES)))
    lines = []
    for epoch, g in enumerate(genotypes, 1):
        progress = epoch / len(genotypes)
        noise = base + 0.03 * rng.normal(size=base.shape)
        lines.append({
            "epoch": epoch, "global_step": 100 * epoch, "learning_rate": 0.025,
            "train_loss": 2.0 - progress, "train_accuracy": 0.3 + 0.5 * progress,
            "val_loss": 2.1 - 0.8 * progress, "val_accuracy": 0.28 + 0.4 * progress,
            "alphas_normal": _alphas(g.normal, progress, noise[0]).tolist(),
            "alphas_reduce": _alphas(g.reduce, progress, noise[1]).tolist(),
            "genotype": g.to_dict(), "primitives": list(PRIMITIVES), "epoch_time_s": 1.5,
        })
    return lines


def write_history(run_dir, lines):
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "history.jsonl")
    with open(path, "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    return path


def graph_edges(source):
    """(tail, head, label or None) of every edge line of a dot source, quotes removed."""
    edges = []
    for line in source.splitlines():
        m = re.match(r'\s*("[^"]*"|\S+) -> ("[^"]*"|\S+)(?: \[(.*)\])?$', line)
        if m:
            label = re.search(r"\blabel=(\S+)", m.group(3) or "")
            edges.append((m.group(1).strip('"'), m.group(2).strip('"'),
                          label.group(1) if label else None))
    return edges


def check_png(path, min_bytes=10_000):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > min_bytes, (path, len(data))
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 300 and height > 200, (path, width, height)


# === Cell diagrams ===

def test_darts_v2_normal_graph_has_exactly_the_genotype_edges():
    source = visualize.cell_graph(DARTS_V2, "normal").source
    edges = graph_edges(source)
    labelled = collections.Counter(e for e in edges if e[2] is not None)
    assert labelled == collections.Counter([
        ("c_{k-2}", "0", "sep_conv_3x3"), ("c_{k-1}", "0", "sep_conv_3x3"),
        ("c_{k-2}", "1", "sep_conv_3x3"), ("c_{k-1}", "1", "sep_conv_3x3"),
        ("c_{k-1}", "2", "sep_conv_3x3"), ("c_{k-2}", "2", "skip_connect"),
        ("c_{k-2}", "3", "skip_connect"), ("0", "3", "dil_conv_3x3"),
    ])
    assert sorted(e for e in edges if e[2] is None) == [(str(i), "c_{k}", None) for i in range(4)]
    assert '"c_{k-2}" -> 0 [label=sep_conv_3x3' in source
    nodes = set(re.findall(r'^\s*("[^"]*"|\w+) \[', source, re.M)) - {"graph", "node", "edge"}
    assert {n.strip('"') for n in nodes} == {"c_{k-2}", "c_{k-1}", "0", "1", "2", "3", "c_{k}"}


def test_darts_v2_reduce_graph_edges():
    edges = graph_edges(visualize.cell_graph(DARTS_V2, "reduce").source)
    assert sorted(e for e in edges if e[2]) == sorted([
        ("c_{k-2}", "0", "max_pool_3x3"), ("c_{k-1}", "0", "max_pool_3x3"),
        ("0", "1", "skip_connect"), ("c_{k-1}", "1", "max_pool_3x3"),
        ("c_{k-2}", "2", "max_pool_3x3"), ("0", "2", "skip_connect"),
        ("0", "3", "skip_connect"), ("c_{k-1}", "3", "max_pool_3x3"),
    ])


def test_concat_edges_follow_the_genotype():
    g = Genotype(normal=DARTS_V2.normal, normal_concat=(4, 5), reduce=DARTS_V2.reduce,
                 reduce_concat=(2, 3, 4, 5))
    edges = graph_edges(visualize.cell_graph(g, "normal").source)
    assert sorted(e[:2] for e in edges if e[2] is None) == [("2", "c_{k}"), ("3", "c_{k}")]


@needs_dot
@pytest.mark.parametrize("fmt,magic", [("png", PNG_MAGIC), ("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_draw_cells_renders_each_format(tmp_path, fmt, magic):
    paths = visualize.draw_cells(DARTS_V2, str(tmp_path), fmt)
    assert paths == {c: str(tmp_path / f"{c}.{fmt}") for c in ("normal", "reduce")}
    for path in paths.values():
        with open(path, "rb") as f:
            assert f.read().startswith(magic)
    if fmt == "png":
        check_png(paths["normal"])
    assert visualize.install_hint(paths) is None
    assert not list(tmp_path.glob("*.gv"))


def test_missing_dot_writes_source_and_one_line_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    paths = visualize.run_command("DARTS_V2", output_dir=str(tmp_path / "out"))
    assert paths == {c: str(tmp_path / "out" / f"{c}.gv") for c in ("normal", "reduce")}
    for cell, path in paths.items():
        with open(path) as f:
            source = f.read()
        assert source.startswith(f"digraph {cell}_cell {{")
        assert graph_edges(source) == graph_edges(visualize.cell_graph(DARTS_V2, cell).source)
    assert not list((tmp_path / "out").glob("*.png"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "apt-get install graphviz" in err[0] and "brew install graphviz" in err[0]


# === History and plots ===

def test_collapse_signal_matches_hand_counts():
    counts = visualize.collapse_signal([DARTS_V2, DARTS_V1, POOLY])
    # DARTS_V2 normal: 5 sep + 2 skip + 1 dil; V1: 5 sep + 3 skip; POOLY: 2 max + 1 avg + 2 skip.
    assert counts == {"skip_connect": [2, 3, 2], "parameter_free": [2, 3, 5]}


def test_per_op_mean_weights():
    a = np.zeros((2, len(PRIMITIVES)))
    a[0, PRIMITIVES.index("skip_connect")] = 1.0
    a[1, PRIMITIVES.index("skip_connect")] = 0.5
    a[1, PRIMITIVES.index("none")] = 0.5
    means = visualize.per_op_mean_weights(a)
    assert list(means) == list(PRIMITIVES)
    assert means["skip_connect"] == pytest.approx(0.75)
    assert means["none"] == pytest.approx(0.25)
    assert means["sep_conv_3x3"] == 0.0


def test_alpha_heatmap_image_is_rgba_uint8():
    line = make_history([DARTS_V2])[0]
    image = visualize.alpha_heatmap_image(line["alphas_normal"], line["alphas_reduce"], PRIMITIVES,
                                          title="epoch 1")
    assert image.dtype == np.uint8 and image.ndim == 4 and image.shape[0] == 1
    assert image.shape[3] == 4 and image.shape[1] > 300 and image.shape[2] > 600
    assert image[..., :3].std() > 20  # drawn, not blank


def test_run_command_renders_search_outputs_and_prints_summary(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    write_history(run_dir, make_history([DARTS_V2, DARTS_V1, POOLY]))
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({"dataset": "cifar10", "epochs": 3}, f)
    # `bin/visualize --run`: render_search_outputs plus the printed summary.
    paths = visualize.run_command(run_dir=run_dir)
    figures = os.path.join(run_dir, "figures")
    assert set(paths) == {"normal", "reduce", "alphas_heatmap", "trajectories_normal",
                          "trajectories_reduce", "collapse", "curves"}
    for key, path in paths.items():
        assert os.path.dirname(path) == figures
        if key in ("normal", "reduce") and shutil.which("dot") is None:
            assert path.endswith(".gv")
        else:
            check_png(path)

    # No genotype.json: the final genotype is the last epoch's.
    summary = visualize.format_summary(POOLY, paths, run_dir)
    assert capsys.readouterr().out.strip() == summary.strip()
    assert "  node 0 <- max_pool_3x3(c_{k-2}) + skip_connect(c_{k-1})" in summary
    assert "  node 3 <- dil_conv_5x5(1) + max_pool_3x3(c_{k-1})" in summary
    assert "c_{k} = concat(0, 1, 2, 3)" in summary
    assert "normal cell has 2 skip_connect and 5 parameter-free ops of 8" in summary
    assert paths["collapse"] in summary and paths["alphas_heatmap"] in summary
    assert summary.splitlines()[-1].strip() == (
        f"bin/retrain --genotype={run_dir}/genotype.json --dataset=cifar10")


def test_genotype_json_wins_and_unknown_dataset_is_omitted(tmp_path):
    run_dir = str(tmp_path)
    write_history(run_dir, make_history([DARTS_V1]))
    history = visualize.load_history(os.path.join(run_dir, "history.jsonl"))
    assert visualize.run_genotype(run_dir, history) == DARTS_V1
    with open(os.path.join(run_dir, "genotype.json"), "w") as f:
        f.write(DARTS_V2.to_json())
    assert visualize.run_genotype(run_dir, history) == DARTS_V2
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write("{broken")
    assert visualize.format_summary(DARTS_V2, {}, run_dir).splitlines()[-1].strip() == (
        f"bin/retrain --genotype={run_dir}/genotype.json")


def test_alpha_heatmap_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="alphas_normal has shape"):
        visualize.alpha_heatmap_image(np.full((13, 8), 0.125), np.full((14, 8), 0.125), PRIMITIVES)
    with pytest.raises(ValueError, match="differ"):
        visualize.alpha_heatmap_image(np.full((14, 8), 0.125), np.full((9, 8), 0.125), PRIMITIVES)


@pytest.mark.parametrize("content,problem", [
    ("", "empty"),
    ("\n\n", "empty"),
    ("{not json\n", "line 1: not valid JSON"),
    ("GOOD\n{\"epoch\": 2}\n", "line 2: missing key(s): train_loss"),
    ("SHAPE\n", "line 1: alphas_normal has shape (13, 8)"),
    ("RAW\n", "line 1: alphas_reduce rows are not softmax weights"),
    ("GENOTYPE\n", "line 1: genotype: normal[0]: unknown op 'conv_7x7'"),
])
def test_malformed_history_is_a_one_line_user_error(tmp_path, content, problem):
    good = make_history([DARTS_V2])[0]
    shape = dict(good, alphas_normal=good["alphas_normal"][:13])
    raw = dict(good, alphas_reduce=(np.asarray(good["alphas_reduce"]) * 3 - 1).tolist())
    bad_genotype = dict(good, genotype=dict(good["genotype"], normal=[["conv_7x7", 0]] * 8))
    for tag, line in (("GOOD", good), ("SHAPE", shape), ("RAW", raw), ("GENOTYPE", bad_genotype)):
        content = content.replace(tag, json.dumps(line))
    run_dir = str(tmp_path)
    path = os.path.join(run_dir, "history.jsonl")
    with open(path, "w") as f:
        f.write(content)
    with pytest.raises(UserError) as e:
        visualize.render_search_outputs(run_dir)
    message = str(e.value)
    assert "\n" not in message and message.startswith(path) and problem in message, message


def test_missing_history_and_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="history.jsonl: not found"):
        visualize.render_search_outputs(str(tmp_path))
    with pytest.raises(UserError, match="no such run directory"):
        visualize.render_search_outputs(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="not both or neither"):
        visualize.run_command()
    with pytest.raises(UserError, match="--format=gif"):
        visualize.run_command("DARTS_V2", fmt="gif")


# === bin/visualize ===

def test_bin_visualize_exit_codes(tmp_path):
    env = dict(os.environ, PYTHONPATH="")
    script = os.path.join(ROOT, "bin", "visualize")
    # Both start TensorFlow (~10 s); run them side by side.
    good = subprocess.Popen([sys.executable, script, "DARTS_V2", f"--output_dir={tmp_path}"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    bad = subprocess.Popen([sys.executable, script, "DARTS_V9"], env=env, cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    good_out, good_err = good.communicate(timeout=120)
    bad_out, bad_err = bad.communicate(timeout=120)

    assert good.returncode == 0, good_err
    assert good_err == ""
    assert "node 0 <- sep_conv_3x3(c_{k-2}) + sep_conv_3x3(c_{k-1})" in good_out
    if shutil.which("dot"):
        check_png(str(tmp_path / "normal.png"))
        check_png(str(tmp_path / "reduce.png"))

    assert bad.returncode == 2
    assert len(bad_err.strip().splitlines()) == 1, bad_err
    assert bad_err.startswith("error: GENOTYPE=DARTS_V9: neither a published genotype")
    assert "Traceback" not in bad_err
