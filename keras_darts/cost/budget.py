"""Budgeted derivation (--max_params / --max_macs): the genotype with the highest summed op
weight that fits, among those reachable by replacing the ops a derivation kept with their
next-strongest choices. Pure numpy.

The derivation's edges (which inputs each node reads) stay; each kept edge may carry any non-`none`
op, ranked by its softmax weight on that edge. The network's cost is additive over edges
(`derived.edge_cost_tables`), so this is a multiple-choice knapsack: maximise the sum of the
chosen ops' weights subject to fixed + sum of their costs <= budget, for one or two budgets. Exact
branch and bound: options that are no better and no cheaper than another option of the same edge
are dropped, and a branch is cut when even its LP relaxation (per budget, the greedy over each
edge's convex hull of (cost, weight)) cannot beat the best genotype found. Without a binding
budget the result is the derivation's own genotype.
"""

import numpy as np

from keras_darts.errors import UserError
from keras_darts.genotype import GENOTYPE_OPS, PRIMITIVES, Genotype

_METRIC_COLUMN = {"params": 0, "macs": 1}


def _options(weights_row, table_row, metrics):
    """[(weight, costs, op)] of one edge, best weight first, without dominated options."""
    return pareto_options([(float(weights_row[PRIMITIVES.index(op)]),
                            tuple(int(table_row[k, _METRIC_COLUMN[m]]) for m in metrics), op)
                           for k, op in enumerate(GENOTYPE_OPS)])


def pareto_options(opts):
    """Sorts [(weight, costs, name)] best first and drops the options that another option beats
    or equals in weight while costing no more in every metric."""
    opts = sorted(opts, key=lambda o: (-o[0], o[1]))  # ties: the cheaper first, then given order
    kept = []
    for o in opts:
        if not any(all(c <= oc for c, oc in zip(k[1], o[1])) for k in kept):
            kept.append(o)  # strictly cheaper in some metric than every stronger option kept
    return kept


def _hull_increments(opts, m):
    """Increments (dcost, dweight) along the upper convex hull of one edge's options in metric m,
    starting from its cheapest option."""
    pts = sorted({(o[1][m], o[0]) for o in opts}, key=lambda p: (p[0], -p[1]))
    frontier = []
    for c, w in pts:  # keep only points with a higher weight than any cheaper point
        if not frontier or w > frontier[-1][1]:
            frontier.append((c, w))
    hull = []
    for p in frontier:
        while len(hull) >= 2:
            (c1, w1), (c2, w2) = hull[-2], hull[-1]
            if (w2 - w1) * (p[0] - c1) <= (p[1] - w1) * (c2 - c1):
                hull.pop()
            else:
                break
        hull.append(p)
    return hull[0], [(c2 - c1, w2 - w1) for (c1, w1), (c2, w2) in zip(hull, hull[1:])]


def _lp_bound(items, start, room, m):
    """Upper bound on the weight items[start:] can add within `room` of metric m (LP relaxation)."""
    base_w, base_c, incs = 0.0, 0, []
    for opts in items[start:]:
        (c0, w0), steps = _hull_increments(opts, m)
        base_w, base_c = base_w + w0, base_c + c0
        incs.extend(steps)
    room -= base_c
    if room < 0:
        return -np.inf
    bound = base_w
    for dc, dw in sorted(incs, key=lambda s: -s[1] / s[0]):  # costs strictly increase: dc > 0
        if dc <= room:
            bound, room = bound + dw, room - dc
        else:
            return bound + dw * room / dc
    return bound


def best_within_budget(items, budgets):
    """Exact multiple-choice knapsack by branch and bound.

    Args:
      items: per edge, its options [(weight, costs, op)] (costs: one int per budget).
      budgets: the room left for the edges, one per metric.

    Returns:
      the chosen op per item, or None when no choice fits.
    """
    n, nm = len(items), len(budgets)
    min_rest = np.zeros((n + 1, nm), dtype=np.int64)
    max_rest = np.zeros(n + 1)
    for i in range(n - 1, -1, -1):
        min_rest[i] = min_rest[i + 1] + np.min([o[1] for o in items[i]], axis=0)
        max_rest[i] = max_rest[i + 1] + max(o[0] for o in items[i])
    best = {"weight": -np.inf, "choice": None}
    choice = [None] * n

    def visit(i, weight, used):
        if i == n:
            if weight > best["weight"]:
                best["weight"], best["choice"] = weight, list(choice)
            return
        if weight + max_rest[i] <= best["weight"]:
            return
        if any(used[m] + min_rest[i][m] > budgets[m] for m in range(nm)):
            return
        if any(weight + _lp_bound(items, i, budgets[m] - used[m], m) <= best["weight"] + 1e-12
               for m in range(nm)):
            return
        for w, costs, op in items[i]:
            new_used = [u + c for u, c in zip(used, costs)]
            if all(u + r <= b for u, r, b in zip(new_used, min_rest[i + 1], budgets)):
                choice[i] = op
                visit(i + 1, weight + w, new_used)

    visit(0, 0.0, [0] * nm)
    return best["choice"]


def _edge_rows(steps):
    """Alpha row of edge (node i + 2, input j): the rows of node i start after sum(2 + i')."""
    starts = np.cumsum([0] + [2 + i for i in range(steps)])
    return lambda node, j: int(starts[node - 2] + j)


def derive_within_budget(genotype, weights_normal, weights_reduce, fixed, tables, budgets):
    """Replaces ops of `genotype` so the derived network fits `budgets`.

    Args:
      genotype: the derivation's genotype (its edges are kept).
      weights_normal, weights_reduce: (edges, len(PRIMITIVES)) op weights (softmaxed alphas).
      fixed: Cost of everything but the edges; tables: {"normal", "reduce"} (steps + 1,
        len(GENOTYPE_OPS), 2) arrays (`derived.edge_cost_tables`).
      budgets: {"params": int, "macs": int}, one or both; the flag names for errors are
        --max_params / --max_macs.

    Returns:
      (Genotype, {"params": total, "macs": total}) of the chosen network.

    Raises:
      UserError: even the cheapest reachable genotype exceeds a budget.
    """
    metrics = [m for m in ("params", "macs") if budgets.get(m) is not None]
    if not metrics:
        return genotype, None
    row = _edge_rows(genotype.steps)
    items, slots = [], []
    for cell, weights in (("normal", weights_normal), ("reduce", weights_reduce)):
        for k, (_, j) in enumerate(getattr(genotype, cell)):
            items.append(_options(weights[row(k // 2 + 2, j)], tables[cell][j], metrics))
            slots.append((cell, k))
    room = [budgets[m] - fixed.get(m) for m in metrics]
    choice = best_within_budget(items, room)
    if choice is None:
        cheapest = [fixed.get(m) + sum(min(o[1][i] for o in opts) for opts in items)
                    for i, m in enumerate(metrics)]
        over = [(m, c) for m, c in zip(metrics, cheapest) if c > budgets[m]]
        if not over:  # each budget alone can be met, not both at once
            raise UserError(" and ".join(f"--max_{m}={budgets[m]}" for m in metrics)
                            + ": no reachable genotype meets both")
        m, c = over[0]
        raise UserError(f"--max_{m}={budgets[m]}: no reachable genotype fits; the cheapest one "
                        f"needs {c:,} {m} at this network size")
    cells = {"normal": list(genotype.normal), "reduce": list(genotype.reduce)}
    for (cell, k), op in zip(slots, choice):
        cells[cell][k] = (op, cells[cell][k][1])
    chosen = Genotype(normal=cells["normal"], normal_concat=genotype.normal_concat,
                      reduce=cells["reduce"], reduce_concat=genotype.reduce_concat)
    totals = {m: int(fixed.get(m) + sum(tables[cell][j, GENOTYPE_OPS.index(op), _METRIC_COLUMN[m]]
                                        for cell in ("normal", "reduce")
                                        for op, j in getattr(chosen, cell)))
              for m in ("params", "macs")}
    return chosen, totals
