"""Where intervals come from: the kernel (BpfSource) or a recording (FakeSource).

Outputs (JSON lines, the table, later the UI and the store) take a Source,
so they are tested without root against FakeSource.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from types import TracebackType

from sockscope.collector.model import Interval


class Source(ABC):
    """Start once, read() once per interval (it returns what happened since the last read), close."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def read(self) -> Interval: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Source:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class FakeSource(Source):
    """Replays recorded intervals in order; after the last one, empty intervals."""

    def __init__(self, intervals: Iterable[Interval], *, interval: float = 1.0) -> None:
        self._queue: list[Interval] = list(intervals)
        self._interval = interval
        self.started = False
        self.closed = False
        self.reads = 0

    def start(self) -> None:
        self.started = True

    def read(self) -> Interval:
        if not self.started or self.closed:
            raise RuntimeError("FakeSource read before start() or after close()")
        self.reads += 1
        if self._queue:
            return self._queue.pop(0)
        return Interval(ts=time.time(), interval=self._interval, processes=[])

    def close(self) -> None:
        self.closed = True

    @property
    def remaining(self) -> Sequence[Interval]:
        return tuple(self._queue)
