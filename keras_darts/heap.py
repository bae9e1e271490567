"""Handing the heap memory this process freed back to the OS (glibc's `malloc_trim`).

Tracing a step builds a Python graph of the whole supernet, and graph optimisation on the first call
makes further transient copies; both are freed before the step's tensors are allocated, but glibc
keeps freed memory inside its arenas (fragmented, so it rarely shrinks them on its own) while the
tensors come from fresh `mmap`s. The process then peaks at the trace's and the optimiser's memory
plus the step's. `malloc_trim(0)` releases the free pages inside the arenas. At 5 cells / 8
channels / batch 32 this took the search step's peak RSS from 2,235 to 1,953 MiB (BUILD_NOTES.md);
the time per step is unchanged, since trimming runs only while a step is traced and first run.

Elsewhere than glibc (macOS, musl) both functions do nothing.
"""

import contextlib
import ctypes
import ctypes.util
import threading


def _load_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _load_trim()


def release_free_memory():
    """Returns the free pages of every malloc arena to the OS; whether this libc can."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


@contextlib.contextmanager
def releasing_free_memory(period_s=0.2):
    """Calls `release_free_memory` every `period_s` seconds from a background thread while the
    block runs, and once at its end.

    For a call that frees memory and then allocates more in one go, such as the first run of a
    traced step (graph optimisation, then the tensors): the pages are returned between the two.
    """
    if _TRIM is None:
        yield
        return
    done = threading.Event()

    def trim_until_done():
        while not done.wait(period_s):
            release_free_memory()

    thread = threading.Thread(target=trim_until_done, name="malloc_trim", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        release_free_memory()
