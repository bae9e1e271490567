"""LoopTimer: the time a loop waits for each batch and the time of each loop body, measured
against known sleeps (pure Python: no TensorFlow)."""

import time

import pytest

from keras_darts.loop_timing import LoopTimer, timing_scalars, waited

WAIT, BODY, N = 0.05, 0.1, 3


def _slow_batches():
    for i in range(N):
        time.sleep(WAIT)  # the input pipeline producing batch i
        yield i


def test_waits_and_bodies_are_told_apart():
    timer = LoopTimer()
    seen = []
    for batch in timer.batches(_slow_batches()):
        seen.append(batch)
        time.sleep(BODY)  # the step
    assert seen == list(range(N))
    record = timer.record()
    assert record["steps"] == N
    # sleep() never returns early; the slack bounds a busy machine's scheduling delay.
    assert WAIT * N <= record["input_wait_s"] < WAIT * N + 0.3
    assert WAIT <= record["input_wait_max_s"] < WAIT + 0.1
    assert BODY <= record["step_median_s"] < BODY + 0.1
    assert BODY * N <= record["step_total_s"] < BODY * N + 0.3
    assert timing_scalars(record) == {"timing/step_median_s": record["step_median_s"],
                                      "timing/input_wait_s": record["input_wait_s"]}
    assert waited(record) == f" (input wait {record['input_wait_s']:.1f}s)"
    assert waited({**record, "input_wait_s": 0.149}) == " (input wait 0.1s)"


def test_an_epoch_without_steps_records_none():
    timer = LoopTimer()
    assert list(timer.batches([])) == []
    assert timer.record() == {"steps": 0}
    assert timing_scalars(timer.record()) == {}
    assert waited(timer.record()) == ""


def test_a_loop_left_early_counts_only_finished_bodies():
    timer = LoopTimer()
    with pytest.raises(RuntimeError, match="diverged"):
        for _ in timer.batches(range(5)):
            raise RuntimeError("diverged")  # e.g. check_finite stopping the run
    assert timer.record() == {"steps": 0}  # one batch fetched, no body finished
    assert len(timer.waits) == 1
