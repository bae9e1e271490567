"""Costs in a search: the penalty moves the alphas to cheaper ops, history logs the expected cost,
a budget shapes the derived genotype, bad input is one line; latency tables."""

import json
import os

import numpy as np
import pytest

from helpers import SEARCH_TINY, run_cli, write_cifar_slice
from keras_darts import search_loop
from keras_darts.config import SearchConfig
from keras_darts.cost import derived, supernet_cost
from keras_darts.cost.latency_table import LatencyTable, required_entries
from keras_darts.latency import measure_op_latency
from keras_darts.search_costs import SearchCosts
from keras_darts.errors import UserError
from keras_darts.genotype import PRIMITIVES, load_genotype

TINY = dict(layers=3, init_channels=4, nodes=1, batch_size=16, epochs=1, steps_per_epoch=2,
            derived_layers=3, derived_channels=4)


@pytest.fixture(scope="module")
def data(cifar_dir, tmp_path_factory):
    return write_cifar_slice(cifar_dir, str(tmp_path_factory.mktemp("cost") / "data"), 64, 32)


def test_penalised_budgeted_search(data, tmp_path):
    fixed, _ = derived.edge_cost_tables(3, 4, (32, 32, 3), 10, steps=1, multiplier=1)
    out = str(tmp_path / "run")
    # A strong penalty and a fast Adam, so two arch steps visibly move the alphas; the tightest
    # possible budget: every edge must carry a parameter-free op.
    config = SearchConfig(dataset=data, output_dir=out, arch_learning_rate=0.1, cost_penalty=50.0,
                          cost="params", max_params=fixed.params, **TINY)
    genotype = search_loop.run(config, quiet=True)
    (record,) = [json.loads(line) for line in open(os.path.join(out, "history.jsonl"))]

    normal, reduce = supernet_cost.cost_tables(3, 4, (32, 32), steps=1, metric="params")
    norm = supernet_cost.normaliser(normal, reduce)
    pn, pr = np.array(record["alphas_normal"]), np.array(record["alphas_reduce"])  # softmaxed
    expected = float((pn * normal).sum() + (pr * reduce).sum())
    assert record["expected_cost"]["params"] == pytest.approx(expected, rel=1e-5)
    assert record["expected_cost"]["relative_params"] == pytest.approx(expected / norm, rel=1e-5)
    uniform = float(normal.sum() + reduce.sum()) / len(PRIMITIVES) / norm  # ~ the initial alphas
    assert record["expected_cost"]["relative_params"] < uniform - 0.05
    assert set(record["expected_cost"]) == {"params", "relative_params", "macs", "relative_macs"}

    # the budget: only parameter-free ops, and no stride-2 skip (a FactorizedReduce has weights)
    assert genotype == load_genotype(os.path.join(out, "genotype.json"))
    assert record["genotype"] == genotype.to_dict()
    free = {"max_pool_3x3", "avg_pool_3x3", "skip_connect"}
    assert {op for op, _ in genotype.normal} <= free
    assert {op for op, _ in genotype.reduce} <= {"max_pool_3x3", "avg_pool_3x3"}
    cost = derived.network_cost(genotype, 3, 4, (32, 32, 3), 10)
    assert cost.params == fixed.params
    assert record["genotype_cost"] == {"parameters": cost.params, "macs": cost.macs}


def test_impossible_budget_is_one_line_before_anything_is_written(data, tmp_path):
    fixed, _ = derived.edge_cost_tables(3, 4, (32, 32, 3), 10, steps=1, multiplier=1)
    out = str(tmp_path / "run")
    config = SearchConfig(dataset=data, output_dir=out, max_macs=fixed.macs - 1, **TINY)
    with pytest.raises(UserError) as e:
        search_loop.run(config)
    assert str(e.value) == (
        f"--max_macs={fixed.macs - 1}: no genotype fits; even with parameter-free ops on every "
        f"edge the derived network (cifar, 3 cells, 4 channels, 32x32) needs {fixed.macs:,} macs")
    assert not os.path.exists(out)


def test_unknown_cost_is_one_line(tmp_path):
    result = run_cli("search", "--dataset=unused", f"--output_dir={tmp_path / 'run'}", *SEARCH_TINY,
                     "--cost=flops", "--cost_penalty=0.1")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --cost=flops: must be one of params, macs, latency"
    assert not os.path.exists(tmp_path / "run")


def test_latency_table_round_trip_lookup_and_missing_entry(tmp_path):
    entries = required_entries(3, 4, (8, 8), steps=1)
    # cells: normal C=4 at 8x8; reduce C=8 8x8 -> 4x4; reduce C=16 4x4 -> 2x2; 7 ops on 2 edges
    # at stride 1 (cell 0) or 2 (the reductions, both edges leave the inputs)
    assert len(entries) == 3 * 7
    assert ("sep_conv_3x3", 8, 8, 8, 2) in entries and ("max_pool_3x3", 16, 4, 4, 2) in entries
    table = LatencyTable({key: 1.0 + i for i, key in enumerate(entries)}, device="test")
    path = str(tmp_path / "latency.json")
    table.save(path)
    loaded = LatencyTable.load(path)
    assert loaded.ms == table.ms and loaded.device == "test"
    # the search's latency tables sum the cells that share an alpha matrix; `none` costs 0
    config = SearchConfig(cost="latency", cost_penalty=1.0, latency_table=path, **TINY)
    costs = SearchCosts(config, (8, 8, 3), 10)
    normal, reduce = costs.tables["latency"]
    k = PRIMITIVES.index("sep_conv_3x3")
    assert normal[0, k] == table.ms[("sep_conv_3x3", 4, 8, 8, 1)]
    assert reduce[1, k] == table.ms[("sep_conv_3x3", 8, 8, 8, 2)] + table.ms[("sep_conv_3x3", 16, 4, 4, 2)]
    assert normal[:, PRIMITIVES.index("none")].tolist() == [0.0, 0.0]
    assert costs.regularizers()[0].metric == "latency"
    # a table measured at another size is a one-line error naming the file and the entry
    with pytest.raises(UserError, match=r"^--latency_table=.*latency.json: no entry for op "
                                        r"max_pool_3x3 at 4 channels, 16x16, stride 1 \("):
        SearchCosts(config, (16, 16, 3), 10)
    with open(path, "w") as f:
        f.write('{"entries": [{"op": "sep_conv_3x3"}]}')
    with pytest.raises(UserError, match=r"^--latency_table=.*: not a latency table"):
        LatencyTable.load(path)


def test_measured_op_latency_is_a_positive_time():
    ms = measure_op_latency("sep_conv_3x3", 4, 8, 8, 1, runs=3, warmup=1)
    assert 0 < ms < 1000


def test_visualize_cost_lines(tmp_path):
    from keras_darts.genotype import DARTS_V2
    from keras_darts.visualize.cli import format_cost

    # a bare genotype: the paper's two settings
    lines = format_cost(DARTS_V2)
    assert lines == ["Cost:",
                     "  CIFAR-10 (20 cells, 36 channels, 32x32): 3.349M parameters (auxiliary head "
                     "excluded), 528.4M MACs",
                     "  ImageNet mobile (14 cells, 48 channels, 224x224): 4.719M parameters "
                     "(auxiliary head excluded), 529.9M MACs"]
    # a search run: its --derived_* network at the data's size, with a measured latency
    run = tmp_path / "run"
    run.mkdir()
    config = SearchConfig(derived_layers=5, derived_channels=8, derived_image_size=16).to_dict()
    (run / "config.json").write_text(json.dumps(
        {"config": config, "dataset_info": {"image_shape": [32, 32, 1], "num_classes": 7}}))
    cost = derived.network_cost(DARTS_V2, 5, 8, (16, 16, 1), 7)
    assert format_cost(DARTS_V2, str(run), latency_ms=1.234) == [
        "Cost:", f"  cifar, 5 cells, 8 channels, 16x16: {cost.params / 1e6:.3f}M parameters "
                 f"(auxiliary head excluded), {cost.macs / 1e6:.1f}M MACs, 1.23 ms/image"]


@pytest.mark.parametrize("options,message", [
    (dict(cost="latency", cost_penalty=1.0, strategy="multi_worker"),
     "--latency_table=None: is required with --cost=latency under --strategy=multi_worker"),
    (dict(max_params=0), "--max_params=0: must be > 0"),
    (dict(cost_penalty=-1.0), "--cost_penalty=-1.0: must be a finite number >= 0"),
    (dict(derived_variant="mobile"), "--derived_variant=mobile: must be one of cifar, imagenet"),
    (dict(latency_table="/no/such.json"), "--latency_table=/no/such.json: is not a file"),
])
def test_cost_flags_are_validated_in_one_line(options, message):
    with pytest.raises(UserError) as e:
        SearchConfig(**options).validate()
    assert str(e.value) == message
