"""Costs of DARTS networks: parameters, multiply-adds (MACs), latency tables; budgets.

Pure numpy, no TensorFlow and no model (a base-layer unit: bin/visualize and config-time checks
use it). The TF pieces sit above the models: `keras_darts.cost_penalty` (the regulariser),
`keras_darts.latency` (measurement), `keras_darts.search_costs` (a search's use of all this).
Convention: BUILD_NOTES.md, "Costs".
"""

from keras_darts.cost.budget import derive_within_budget
from keras_darts.cost.derived import (cost_record, edge_cost_tables, format_cost,
                                           network_cost)
from keras_darts.cost.ops_cost import Cost, op_cost
from keras_darts.cost.supernet_cost import (METRICS, cost_tables, expected_cost, normaliser,
                                            supernet_op_costs)

__all__ = ["METRICS", "Cost", "cost_record", "cost_tables", "derive_within_budget",
           "edge_cost_tables", "expected_cost", "format_cost", "network_cost", "normaliser",
           "op_cost", "supernet_op_costs"]
