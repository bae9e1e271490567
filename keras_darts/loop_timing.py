"""Where a training loop's time goes: waiting for the next batch versus running the step.

bin/search and bin/retrain record it per epoch (`timing` in history.jsonl / metrics.json), so any
run tells whether the input pipeline makes the step wait, without a profiler: `input_wait_s` is
the time spent blocked on the dataset iterator, `step_median_s` the median loop body (the step
call, the sync that reads its results, the progress bar) — the figure that
`benchmarks/search_step.py` measures for the step alone.
"""

import statistics
import time


class LoopTimer:
    """Wraps an epoch's batches; times each wait for a batch and each loop body."""

    def __init__(self):
        self.waits, self.bodies = [], []

    def batches(self, iterable):
        iterator = iter(iterable)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            got = time.perf_counter()
            self.waits.append(got - start)
            yield batch  # the loop body runs here, until the next batch is asked for
            self.bodies.append(time.perf_counter() - got)

    def record(self):
        """The epoch's figures (this launch's steps only: a resumed epoch counts from the resume)."""
        if not self.bodies:
            return {"steps": 0}
        return {"steps": len(self.bodies),
                "step_median_s": statistics.median(self.bodies),
                "step_total_s": sum(self.bodies),
                "input_wait_s": sum(self.waits),
                "input_wait_max_s": max(self.waits)}


def timing_scalars(record):
    """TensorBoard scalars of an epoch's timing record (none for an epoch with no step timed)."""
    return {f"timing/{k}": record[k] for k in ("step_median_s", "input_wait_s") if k in record}


def waited(record):
    """The epoch line's ' (input wait 0.3s)'; '' for an epoch with no step timed."""
    return f" (input wait {record['input_wait_s']:.1f}s)" if record.get("steps") else ""
