"""One clock for everything that reads once per interval (`top`, the daemon)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator


def ticks(interval: float, stop: threading.Event, duration: float | None = None) -> Iterator[bool]:
    """Wait until each interval is up, then yield; True means this is the last one
    (stop was set, or `duration` seconds have passed). A caller that falls behind
    (suspend, a slow write) starts afresh rather than catching up in a burst."""
    started = time.monotonic()
    end = None if duration is None else started + duration
    deadline = started + interval
    while True:
        wait = deadline - time.monotonic()
        if end is not None:
            wait = min(wait, end - time.monotonic())
        stopped = stop.wait(max(0.0, wait))
        last = stopped or (end is not None and time.monotonic() >= end)
        yield last
        if last:
            return
        deadline += interval
        if deadline < time.monotonic():
            deadline = time.monotonic() + interval
