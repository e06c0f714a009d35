"""Python's cyclic garbage collector on the interval's schedule, for the loops that read once per
interval (`top --json`/`--plain`, the daemon).

Left to itself, the collector runs by allocation counts: tens of thousands of connection records
an interval set it off a dozen times, each pass scanning that interval's records again (about a
tenth of the collector's CPU at 10,000 connections). Nothing the read path makes is in a cycle,
so reference counting frees it; the cyclic collector runs in full once a minute instead, for
whatever else might be, so cyclic garbage lives a minute at most. What start-up made is frozen
out of those passes (gc.freeze)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

FULL_EVERY = 60.0  # seconds between full collections


class GcPacer:
    def __init__(self, every: float = FULL_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._last = clock()
        self._was_enabled = gc.isenabled()
        self.collections = 0

    def after_interval(self) -> None:
        """Call once an interval's work is done: a full collection when one is due."""
        now = self._clock()
        if now - self._last >= self.every:
            gc.collect()
            self._last = now
            self.collections += 1


@contextmanager
def paced(every: float = FULL_EVERY, clock: Callable[[], float] = time.monotonic) -> Iterator[GcPacer]:
    """Automatic collection off (and start-up's objects frozen) inside; as it was, after."""
    pacer = GcPacer(every, clock)
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield pacer
    finally:
        gc.unfreeze()
        if pacer._was_enabled:
            gc.enable()
