"""The storage interface: a writer (the daemon's) and readers (reports, the UI).

SQLite stands behind it today; a server database can stand behind the same
interface later without touching the collector or the UI. Storage raises; it
never prints or decides what the user sees.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from sockscope.collector.model import Interval
from sockscope.report_format import ReportRow


class StoreError(Exception):
    """Base of storage failures."""


class StoreUnavailable(StoreError):
    """Cannot write now (disk full, read-only, locked): keep the data and try again later."""


class StoreCorrupt(StoreError):
    """The file is not a usable database."""


class SchemaTooNew(StoreError):
    """Written by a newer sockscope: refuse rather than misread it."""


@dataclass(frozen=True)
class Retention:
    raw: float = 2 * 86400.0
    minute: float = 14 * 86400.0
    hour: float = 730 * 86400.0


GROUPINGS = ("process", "exe", "user", "unit", "remote", "host", "port", "connection")


class WriterLocked(StoreError):
    """Another writer holds the database: only one may write it."""


class HistoryWriter(ABC):
    @abstractmethod
    def write(self, intervals: Sequence[Interval]) -> None:
        """Store intervals, all or nothing; raises StoreUnavailable when it cannot now."""

    def gone(self) -> str | None:
        """Why the storage written so far is no longer where readers look (deleted, replaced), or None."""
        return None

    @abstractmethod
    def maintain(self, now: float, retention: Retention) -> None:
        """Roll finished minutes and hours up, and drop what retention no longer keeps."""

    @abstractmethod
    def close(self) -> None: ...


class HistoryReader(ABC):
    @abstractmethod
    def report(self, since: float, until: float, by: str, top: int | None = None) -> list[ReportRow]:
        """Totals per group over [since, until), busiest first."""

    @abstractmethod
    def close(self) -> None: ...


# ---- which resolution answers which part of a range ----

Segment = tuple[str, float, float]  # (resolution: "raw" | "minute" | "hour" | "day", from, to)


def _ceil(t: float, step: int) -> float:
    return math.ceil(t / step) * step


def _floor(t: float, step: int) -> float:
    return math.floor(t / step) * step


def plan_segments(
    since: float, until: float, minutes_to: float, hours_to: float, raw_from: float, minutes_from: float = 0.0
) -> list[Segment]:
    """Split [since, until) so whole hours come from hourly rows, whole minutes from
    minute rows and the edges from raw rows. Roll-ups exist only up to minutes_to /
    hours_to; raw rows only from raw_from (older edges are widened to whole minutes), minute
    rows only from minutes_from (older edges widened to whole hours).
    Every second of the range is covered exactly once."""
    if until <= since:
        return []
    if since < minutes_from:  # minute rows purged there too: whole hours
        since = _floor(since, 3600)
    elif since < raw_from:
        since = _floor(since, 60)
    segs: list[Segment] = []
    m_lo, m_hi = _ceil(since, 60), min(_floor(until, 60), minutes_to)
    if m_lo >= m_hi:
        return [("raw", since, until)]
    h_lo, h_hi = _ceil(since, 3600), min(_floor(until, 3600), hours_to)
    if since < m_lo:
        segs.append(("raw", since, m_lo))
    if h_lo < h_hi and m_lo <= h_lo and h_hi <= m_hi:
        if m_lo < h_lo:
            segs.append(("minute", m_lo, h_lo))
        segs.append(("hour", h_lo, h_hi))
        if h_hi < m_hi:
            segs.append(("minute", h_hi, m_hi))
    else:
        segs.append(("minute", m_lo, m_hi))
    if m_hi < until:
        segs.append(("raw", m_hi, until))
    return segs


def split_days(segs: list[Segment], days_to: float) -> list[Segment]:
    """Answer whole UTC days inside the hourly part from daily rows (which exist up to days_to)."""
    out: list[Segment] = []
    for res, lo, hi in segs:
        d_lo, d_hi = _ceil(lo, 86400), min(_floor(hi, 86400), days_to)
        if res != "hour" or d_lo >= d_hi:
            out.append((res, lo, hi))
            continue
        if lo < d_lo:
            out.append(("hour", lo, d_lo))
        out.append(("day", d_lo, d_hi))
        if d_hi < hi:
            out.append(("hour", d_hi, hi))
    return out
