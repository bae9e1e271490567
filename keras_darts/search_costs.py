"""What a search needs of the cost model, in one object: the cost penalty (an `arch_regularizers`
callable for BilevelStep), the expected cost logged per epoch, the budgeted derivation and the
derived network's cost report. Built from the SearchConfig and the data's shape.

Budgets are checked before training: every edge may carry a pool (no parameters, no MACs), so the
cheapest reachable network costs exactly the fixed part (stems, preprocessing, classifier); a
budget below that can never be met, whatever the alphas become.
"""

import os

import numpy as np

from keras_darts.cost import budget as budget_lib
from keras_darts.cost import derived, supernet_cost
from keras_darts.cost.latency_table import LatencyTable, required_entries
from keras_darts.errors import UserError
from keras_darts.genotype import softmax

LATENCY_TABLE_FILE = "latency_table.json"


class SearchCosts:
    """Args:
      config: a SearchConfig.
      image_shape: (H, W, C) of the search data; num_classes: its classes.
      log: where progress lines go (latency measurement).
    """

    def __init__(self, config, image_shape, num_classes, log=print):
        self.config = config
        h, w, c_in = image_shape
        steps = config.nodes
        self.tables = {m: supernet_cost.cost_tables(config.layers, config.init_channels, (h, w),
                                                    steps, m) for m in ("params", "macs")}
        self.latency = None  # a LatencyTable, when --cost=latency needs one
        self.latency_measured = False  # measured now (to be saved in the output dir)
        if config.cost == "latency" and (config.cost_penalty > 0 or config.latency_table):
            self.latency, self.latency_measured = self._latency_table(config, (h, w), log)
            self.tables["latency"] = supernet_cost.cost_tables(
                config.layers, config.init_channels, (h, w), steps, "latency", self.latency)
        size = config.derived_image_size
        self.derived_shape = (size, size, c_in) if size else (h, w, c_in)
        self.derived_args = dict(layers=config.derived_layers, init_channels=config.derived_channels,
                                 image_shape=self.derived_shape, num_classes=num_classes,
                                 variant=config.derived_variant)
        self.fixed, self.edge_tables = derived.edge_cost_tables(
            **self.derived_args, steps=steps, multiplier=config.nodes)
        self.budgets = {"params": config.max_params, "macs": config.max_macs}
        for metric, limit in self.budgets.items():
            if limit is not None and limit < self.fixed.get(metric):
                raise UserError(
                    f"--max_{metric}={limit}: no genotype fits; even with parameter-free ops on "
                    f"every edge the derived network ({self.describe()}) needs "
                    f"{self.fixed.get(metric):,} {metric}")

    @staticmethod
    def _latency_table(config, size, log):
        from keras_darts import latency

        if config.latency_table:
            return LatencyTable.load(config.latency_table), False
        # A resumed run reuses the table it measured (same penalty, reproducible resumes).
        saved = os.path.join(config.output_dir, LATENCY_TABLE_FILE) if config.output_dir else None
        if saved and os.path.isfile(saved):
            flag = f"{LATENCY_TABLE_FILE} of --output_dir"
            return LatencyTable.load(saved, flag=flag), False
        entries = required_entries(config.layers, config.init_channels, size, config.nodes)
        log(f"measuring the latency of {len(entries)} candidate ops on this CPU (--cost=latency "
            "without --latency_table)")
        return latency.measure_table(entries), True

    def describe(self):
        a = self.derived_args
        h, w, _ = a["image_shape"]
        return f"{a['variant']}, {a['layers']} cells, {a['init_channels']} channels, {h}x{w}"

    def regularizers(self):
        """[CostPenalty] with --cost_penalty > 0, else []: the BilevelStep `arch_regularizers`."""
        if not self.config.cost_penalty > 0:
            return []
        from keras_darts.cost_penalty import CostPenalty

        normal, reduce = self.tables[self.config.cost]
        return [CostPenalty(self.config.cost_penalty, normal, reduce, self.config.cost)]

    def expected(self, alphas_normal, alphas_reduce):
        """The history record's `expected_cost`: per metric, E[cost] of the supernet's cells under
        softmax(alpha), and that relative to all-sep_conv_5x5 (what the penalty multiplies)."""
        out = {}
        for metric, (normal, reduce) in self.tables.items():
            value = supernet_cost.expected_cost(alphas_normal, alphas_reduce, normal, reduce)
            out[metric] = value
            out[f"relative_{metric}"] = value / supernet_cost.normaliser(normal, reduce)
        return out

    def derive(self, genotype, alphas_normal, alphas_reduce):
        """The derivation's genotype, or the best one within --max_params/--max_macs."""
        if all(v is None for v in self.budgets.values()):
            return genotype
        chosen, _ = budget_lib.derive_within_budget(
            genotype, softmax(np.asarray(alphas_normal)), softmax(np.asarray(alphas_reduce)),
            self.fixed, self.edge_tables, self.budgets)
        return chosen

    def genotype_cost(self, genotype):
        return derived.network_cost(genotype, **self.derived_args)

    def measure_latency(self, genotype):
        """Single-image ms of the derived network (built, untrained: latency needs no weights)."""
        from keras_darts.latency import network_latency

        return network_latency(genotype, self.derived_args)
