"""heap.py: freed heap pages go back to the OS, and the background trimming stops with its block."""

import ctypes
import threading
import time

import pytest

from keras_darts import heap

glibc = pytest.mark.skipif(heap._TRIM is None, reason="needs glibc's malloc_trim")


def _rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@glibc
def test_release_free_memory_returns_freed_heap_pages():
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, n = 64 * 1024, 3000  # below glibc's mmap threshold: from the heap, 187 MiB in all
    blocks = [libc.malloc(size) for _ in range(n)]
    for b in blocks:
        ctypes.memset(b, 1, size)  # resident
    # Free all but every 100th block: the heap cannot shrink from its top, the holes stay mapped.
    for i, b in enumerate(blocks):
        if i % 100:
            libc.free(b)
    before = _rss_mib()
    assert heap.release_free_memory() is True
    after = _rss_mib()
    for b in blocks[::100]:
        libc.free(b)
    # ~185 MiB are free inside the heap; at least most of them must leave the process.
    assert before - after > 120, (before, after)


def test_releasing_free_memory_trims_while_the_block_runs_and_stops_after(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "_TRIM", lambda pad: calls.append((pad, threading.current_thread().name)))
    with heap.releasing_free_memory(period_s=0.01):
        time.sleep(0.2)
        during = len(calls)
    after = len(calls)
    time.sleep(0.1)
    assert during >= 5, during  # ~20 periods in 0.2 s; slow machines still manage five
    assert after == during + 1  # the final trim when the block ends
    assert len(calls) == after  # and the thread is gone
    assert {name for _, name in calls[:during]} == {"malloc_trim"}
    assert all(pad == 0 for pad, _ in calls)
    assert not any(t.name == "malloc_trim" for t in threading.enumerate())


def test_releasing_free_memory_stops_when_the_block_raises(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "_TRIM", lambda pad: calls.append(pad))
    with pytest.raises(ValueError, match="boom"):
        with heap.releasing_free_memory(period_s=0.01):
            raise ValueError("boom")
    n = len(calls)
    time.sleep(0.05)
    assert len(calls) == n >= 1
    assert not any(t.name == "malloc_trim" for t in threading.enumerate())


def test_without_malloc_trim_both_do_nothing(monkeypatch):
    monkeypatch.setattr(heap, "_TRIM", None)
    assert heap.release_free_memory() is False
    with heap.releasing_free_memory(period_s=0.01):
        time.sleep(0.03)
    assert not any(t.name == "malloc_trim" for t in threading.enumerate())
