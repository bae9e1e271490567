"""One-line checks of the cost and budget flags of a search (used by `config.SearchConfig`)."""

import math
import os

COST_CHOICES = ("params", "macs", "latency")


def cost_checks(c, variants):
    """(ok, flag, value, what) of the cost and budget flags of SearchConfig `c`."""
    return [
        (c.cost in COST_CHOICES, "--cost", c.cost, f"must be one of {', '.join(COST_CHOICES)}"),
        (c.cost_penalty >= 0 and math.isfinite(c.cost_penalty), "--cost_penalty", c.cost_penalty,
         "must be a finite number >= 0"),
        (c.latency_table is None or os.path.isfile(c.latency_table), "--latency_table",
         c.latency_table, "is not a file"),
        # Each worker would measure its own table: replicas would disagree on the penalty.
        (c.latency_table or c.strategy != "multi_worker" or c.cost != "latency"
         or not c.cost_penalty > 0, "--latency_table", c.latency_table,
         "is required with --cost=latency under --strategy=multi_worker"),
        (c.max_params is None or c.max_params > 0, "--max_params", c.max_params, "must be > 0"),
        (c.max_macs is None or c.max_macs > 0, "--max_macs", c.max_macs, "must be > 0"),
        (c.derived_layers >= 3, "--derived_layers", c.derived_layers,
         "must be >= 3 (two reduction cells)"),
        (c.derived_channels >= 2 and c.derived_channels % 2 == 0, "--derived_channels",
         c.derived_channels, "must be an even number >= 2"),
        (c.derived_variant in variants, "--derived_variant", c.derived_variant,
         f"must be one of {', '.join(variants)}"),
        (c.derived_image_size is None or c.derived_image_size > 0, "--derived_image_size",
         c.derived_image_size, "must be > 0"),
    ]
