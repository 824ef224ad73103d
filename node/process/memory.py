"""Giving memory back after bursts.

A burst of requests (many uploads, slow readers) leaves glibc's heap full of freed 1 MiB
buffers: glibc raises its mmap threshold as large blocks are freed, so later buffers of
that size come from the heap, and freed heap pages stay with the process (``bench/memory.py``:
64 slow readers took a peer from 130 MiB to 2.3 GiB, all of it still resident after they
left, though Python held only 4 MiB more than before them). ``release_memory`` asks glibc
to hand free pages back (``malloc_trim(3)``: the top of the heap, and free pages inside
every arena since glibc 2.8). ``Trimmer`` calls it every ``INTERVAL`` seconds while the
resident set is more than ``GROWTH`` above the lowest seen, so a peer is back near its idle
size within seconds of a burst. ``GROWTH`` is 4 MiB, not the 32 it was: 200 uploads of
1 MiB, then 200 chunked uploads that trickle (``bench/memory.py --clients 200 --scenarios
puts,trickle --after 60``, one cluster, 2026-12-04) left a peer at 76.4 MiB a minute later,
1.25 times its 61.3 at rest (issue 13 asks for 20%), and no trim ran; with 4 MiB, 68.3 MiB
(1.13 times). A trim that finds nothing to give back costs ~0.4 ms in its thread on a heap
holding 10,000 free blocks (0.07 ms beside a million small Python objects), so repeating it
every ``INTERVAL`` while a peer's resident set has grown for good (its index of names) is cheap.

``limit_arenas`` caps glibc's malloc arenas (``mallopt(M_ARENA_MAX)``): by default a
process may have 8 per core, and each new thread that allocates gets one of its own until
then, so each worker thread that codes and hashes stripes keeps its own heap of freed
blocks. One 1 GiB PUT's coordinator (7 peers on 2 cores, ``bench/throughput.py``, 3 runs
each, alternated): peak RSS 112-120 MiB with the default, 103-105 with 2 arenas, 100-101
with 1; PUT 81-122 MB/s across all three, GET 315-462 (the machine's spread, no order
between them). Elsewhere (musl, macOS) there is nothing to call and all of these do
nothing.

``collect_less`` and ``settle_collector`` tune CPython's cyclic garbage collector for a
long-running server (the ``gc`` module; the idea of Instagram's ``gc.freeze`` after start):
a young collection every ``YOUNG_COLLECTION`` allocations instead of 700 (a request
allocates hundreds of short-lived objects, nearly all freed by reference counting), and the
objects made while starting (modules, the app, its routes: tens of thousands) kept out of
every later collection. ``bench/small.py --sizes 4K --rounds 2``, 7 peers, 16 clients,
variants alternated in one run: 4 KiB GETs 1,091 -> 1,318/s at 1.31 -> 1.10 ms of server
CPU each, PUTs 552 -> 582/s at 2.42 -> 2.29 ms; freezing alone gave 1,260/s at 1.14 ms;
1 MiB files moved within noise.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

GROWTH = 4 << 20  # resident bytes above the lowest seen that call for a trim
INTERVAL = 10.0  # seconds between looks at the resident set

YOUNG_COLLECTION = 10_000  # allocations (less frees) between young collections; CPython: 700
OLDER_COLLECTIONS = 20  # collections of a generation between those of the next; CPython: 10

ARENAS = 2  # malloc arenas a peer process may have (limit_arenas)
M_ARENA_MAX = -8  # mallopt(3)'s parameter for it (glibc's malloc.h)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
_malloc_trim = getattr(_libc, "malloc_trim", None)
_mallopt = getattr(_libc, "mallopt", None)


def resident_bytes() -> int:
    """This process's resident set size in bytes (``/proc/self/statm``; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def limit_arenas(count: int = ARENAS) -> bool:
    """Let glibc's malloc make at most ``count`` arenas in this process from now on (call
    it before threads start); False where it did not: not glibc, or the operator chose a
    limit (``MALLOC_ARENA_MAX``, or ``glibc.malloc.arena_max`` in ``GLIBC_TUNABLES``).
    Raises ValueError for a ``count`` under 1 (glibc would ignore it and say it took it)."""
    if count < 1:
        raise ValueError(f"a process needs at least one malloc arena, not {count}")
    chosen = "MALLOC_ARENA_MAX" in os.environ or "arena_max" in os.environ.get("GLIBC_TUNABLES", "")
    if _mallopt is None or chosen:
        return False
    return bool(_mallopt(M_ARENA_MAX, count))


def collect_less() -> None:
    """Collect cyclic garbage less often (``YOUNG_COLLECTION``, ``OLDER_COLLECTIONS``): for
    a peer process, before it starts."""
    gc.set_threshold(YOUNG_COLLECTION, OLDER_COLLECTIONS, OLDER_COLLECTIONS)


def settle_collector() -> None:
    """Keep every object alive now out of later collections (``gc.freeze``): call once the
    peer has started, so that its modules and app are never scanned again."""
    gc.collect()  # what starting left as garbage is not kept forever
    gc.freeze()


def release_memory() -> bool:
    """Hand the heap's free pages back to the system; False where glibc is not in use.
    Blocking (it walks the heap): call it in a thread."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


class Trimmer:
    """Trims the heap (``release_memory``) every ``interval`` seconds while the resident
    set is more than ``growth`` bytes above the lowest it has been."""

    def __init__(self, growth: int = GROWTH, interval: float = INTERVAL) -> None:
        self._growth = growth
        self._interval = interval
        self.trims = 0

    def __repr__(self) -> str:
        return f"Trimmer(trims={self.trims})"

    async def run(self) -> None:
        if _malloc_trim is None:
            return  # nothing to call here
        floor = resident_bytes()
        while True:
            await asyncio.sleep(self._interval)  # a period, not a wait for a condition
            before = resident_bytes()
            floor = min(floor, before)
            if before - floor < self._growth:
                continue
            await asyncio.to_thread(release_memory)
            self.trims += 1
            after = resident_bytes()
            floor = min(floor, after)
            if before - after >= self._growth:
                log.info("gave %d MiB of freed memory back", (before - after) >> 20)
