"""glibc's malloc arenas and a node that runs for hours.

glibc gives a thread that finds the heap locked an arena of its own (up to 8 per core), and
what is freed stays in the process, in pieces the next allocations of other sizes and threads
do not reuse. In the node the ingest thread allocates every keyframe's arrays while the
question thread runs the model, and the process grew: `bench/soak.py --source synthetic` (420 s
at 15 Hz, a question every 5 s, each reaching the LM) took the node's RSS from 923 to 1090 MiB
after its 30 s window had filled, still rising at the end. The same load on `Engine` alone, one
thread, stayed flat. Two arenas alone (`limit_arenas`) left 738 -> 790 MiB; with the heap also
trimmed after each question (`trim_heap`, ~0.1 ms) it stayed at 691-716 MiB (one run each).
"""

from __future__ import annotations

import ctypes
import functools
import os

_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def limit_arenas(n: int = 2) -> bool:
    """Cap this process's glibc malloc arenas at `n`; call it before the threads start. Returns
    whether it did: not where `MALLOC_ARENA_MAX` already says how many (the user's choice), nor
    where the C library is not glibc."""
    libc = _libc()
    if "MALLOC_ARENA_MAX" in os.environ or libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, int(n)))


def trim_heap() -> bool:
    """Hand the heap's free pages back to the system (glibc `malloc_trim`, every arena); what
    a question's model run freed otherwise stays in the process. Returns whether any was."""
    libc = _libc()
    return bool(libc is not None and hasattr(libc, "malloc_trim") and libc.malloc_trim(0))
