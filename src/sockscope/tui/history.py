"""Past ranges for the UI, from the daemon's database (read-only, opened when first asked)."""

from __future__ import annotations

from sockscope.collector.model import Interval
from sockscope.store import follow
from sockscope.store.sqlite import SqliteReader


class DatabaseHistory:
    """The UI's HistoryAccess over SqliteReader; used from the UI thread only."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._reader: SqliteReader | None = None

    def _open(self) -> SqliteReader:
        if self._reader is None:
            self._reader = SqliteReader(self.path)
        return self._reader

    def range_interval(self, since: float, until: float) -> Interval:
        return follow.range_interval(self._open(), since, until)

    def process_series(
        self, since: float, until: float, step: float, *, pid: int, start_ns: int, comm: str
    ) -> list[tuple[float, int, int]]:
        return follow.process_series(self._open(), since, until, step, pid=pid, start_ns=start_ns, comm=comm)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
