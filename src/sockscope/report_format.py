"""Pure parts of `sockscope report`: time arguments, the row model, and JSON / CSV / table output."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sockscope.collector.rates import human_bytes
from sockscope.output.safe import printable

GROUP_FIELDS: dict[str, tuple[str, ...]] = {
    "process": ("pid", "comm", "exe", "cmdline", "user"),
    "exe": ("exe",),
    "user": ("uid", "user"),
    "unit": ("unit",),
    "remote": ("raddr",),
    "host": ("host",),
    "port": ("proto", "port"),
    "connection": ("pid", "comm", "proto", "laddr", "lport", "raddr", "rport", "name", "start", "end", "duration"),
}

BYTE_COLUMNS: tuple[str, ...] = ("tx_bytes", "rx_bytes", "total_bytes")

_TIME_FIELDS = frozenset({"start", "end"})

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_RELATIVE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhdw])")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")

_ACCEPTED = (
    "a duration before now (90s, 10m, 1.5h, 3d, 1w), 'now', an ISO date or date-time "
    "(2026-11-24, 2026-11-24T13:05, 2026-11-24 13:05:10, optionally with Z or +01:00; "
    "without an offset it is local time) or Unix seconds (1795000000)"
)


@dataclass(frozen=True)
class ReportRow:
    key: dict[str, object]
    tx_bytes: int
    rx_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.tx_bytes + self.rx_bytes


def parse_when(text: str, now: float) -> float:
    """Turn a --since/--until argument into Unix seconds; relative forms count back from `now`."""
    s = text.strip()
    value = _parse_when(s, now) if s else None
    # A 400-digit number parses to inf rather than failing; a time that is not finite is no time.
    if value is None or not math.isfinite(value):
        raise ValueError(f"cannot read time {text!r}: use {_ACCEPTED}")
    return value


def _parse_when(s: str, now: float) -> float | None:
    if s.lower() == "now":
        return now
    m = _RELATIVE.fullmatch(s)
    if m:
        return now - float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if _NUMBER.fullmatch(s):
        return float(s)
    try:
        dt = datetime.fromisoformat(s)
        # A naive datetime's timestamp() takes it as local time, which is what a user typing a date means.
        return dt.timestamp()
    except (ValueError, OverflowError, OSError):
        # Years near 1 or 9999 can fall outside what the platform's local-time conversion handles.
        return None


def _fields(by: str) -> tuple[str, ...]:
    try:
        return GROUP_FIELDS[by]
    except KeyError:
        raise ValueError(f"unknown grouping {by!r}: use one of {', '.join(GROUP_FIELDS)}") from None


def _iso_utc(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=UTC).isoformat(timespec="milliseconds")
        except (ValueError, OverflowError, OSError):
            return None
    return value


def _data_value(field: str, value: object) -> object:
    """One cell for machine-readable output: JSON-native types kept, times as ISO UTC, the rest as text."""
    if field in _TIME_FIELDS:
        value = _iso_utc(value)
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN/Infinity; json.dumps would write them anyway and break strict parsers.
        return None
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)


def _records(rows: Iterable[ReportRow], by: str) -> tuple[tuple[str, ...], list[list[object]]]:
    fields = _fields(by)
    columns = fields + BYTE_COLUMNS
    records = [
        [_data_value(f, row.key.get(f)) for f in fields] + [row.tx_bytes, row.rx_bytes, row.total_bytes] for row in rows
    ]
    return columns, records


def to_json(rows: Iterable[ReportRow], by: str) -> str:
    """A JSON list of objects: the grouping fields, then tx_bytes, rx_bytes, total_bytes. ASCII only."""
    columns, records = _records(rows, by)
    return json.dumps([dict(zip(columns, rec, strict=True)) for rec in records], ensure_ascii=True, indent=2)


# Spreadsheets evaluate a cell starting with one of these as a formula (=HYPERLINK(...), +cmd|..., -2+3, @SUM),
# and a process name or command line is chosen by whoever ran the process; a leading ' makes the cell plain text.
# Tab and CR are on OWASP's list too: some spreadsheets strip them and then see the formula behind them.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object, inert: bool = False) -> object:
    if isinstance(value, str):
        if inert:
            value = printable(value)
        if value.startswith(_FORMULA_START):
            return "'" + value
    return value


def to_csv(rows: Iterable[ReportRow], by: str, *, inert: bool = False) -> str:
    """Header line, then one line per row, each ending in \\n; same columns as to_json.

    Text is verbatim, so undecodable bytes that arrived as surrogate escapes are still here:
    write the result with errors="surrogateescape" to give back the original bytes. inert (for a
    terminal): control characters and undecodable bytes escaped as in the table (\\x1b), so a
    name cannot retitle or clear the terminal.
    """
    columns, records = _records(rows, by)
    buf = io.StringIO()
    # QUOTE_NONNUMERIC quotes every text cell: Python 3.11's QUOTE_MINIMAL with a "\n" terminator leaves
    # a bare "\r" unquoted, which readers take as the end of the record. Numbers stay bare, so stay numbers.
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow(columns)
    for rec in records:
        writer.writerow([_csv_cell(v, inert) for v in rec])
    return buf.getvalue()


_HEADINGS = {
    "pid": "PID",
    "comm": "PROGRAM",
    "exe": "EXECUTABLE",
    "cmdline": "COMMAND LINE",
    "user": "USER",
    "uid": "UID",
    "unit": "UNIT",
    "raddr": "REMOTE",
    "host": "HOST",
    "name": "NAME",
    "proto": "PROTO",
    "port": "PORT",
    "laddr": "LOCAL",
    "lport": "LPORT",
    "rport": "RPORT",
    "start": "START",
    "end": "END",
    "duration": "DURATION",
    "tx_bytes": "SENT",
    "rx_bytes": "RECEIVED",
    "total_bytes": "TOTAL",
}
_RIGHT_ALIGNED = frozenset({"pid", "uid", "port", "lport", "rport", "duration", *BYTE_COLUMNS})
# Never cut: numbers and times have a fixed form, and a cut address reads as a different, wrong address.
# A connection table with IPv6 addresses may therefore run wider than asked; the terminal wraps it.
_UNCUT = frozenset(
    {"pid", "uid", "proto", "port", "lport", "rport", "laddr", "raddr", "start", "end", "duration", *BYTE_COLUMNS}
)
_MIN_CUT_WIDTH = 8
_GAP = "  "


def local_time(ts: float | None) -> str:
    """Unix seconds as local 'YYYY-MM-DD HH:MM:SS'; '-' for none."""
    if ts is None:
        return "-"
    try:
        return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):
        return "?"


def human_duration(seconds: float | None) -> str:
    """4.2 -> '4.2s', 754 -> '12m34s', 3723 -> '1h02m03s'; '-' for none."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if round(seconds, 1) < 60:
        return f"{sign}{seconds:.1f}s"
    total = round(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{sign}{h}h{m:02d}m{s:02d}s"
    return f"{sign}{m}m{s:02d}s"


def _cell_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _width(text: str) -> int:
    return sum(_cell_width(ch) for ch in text)


def _fit(text: str, width: int) -> str:
    """Cut text to at most `width` terminal cells, marking the cut with '…'."""
    if _width(text) <= width:
        return text
    out: list[str] = []
    used = 0
    for ch in text:
        w = _cell_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * max(width - _width(text), 0)
    return fill + text if right else text + fill


def _table_cell(field: str, value: object) -> str:
    if field in _TIME_FIELDS:
        return local_time(value) if isinstance(value, int | float) or value is None else printable(str(value))
    if field == "duration":
        return human_duration(value) if isinstance(value, int | float) or value is None else printable(str(value))
    if value is None:
        return "-"
    return printable(value if isinstance(value, str) else str(value))


def _column_widths(columns: Sequence[str], grid: Sequence[Sequence[str]], width: int) -> list[int]:
    widths = [max(_width(line[i]) for line in grid) for i in range(len(columns))]
    # Headings stay whole; past that the table may run over `width` rather than show nothing useful.
    floor = [min(w, max(_MIN_CUT_WIDTH, _width(grid[0][i]))) for i, w in enumerate(widths)]
    excess = sum(widths) + len(_GAP) * (len(columns) - 1) - width
    # The command line is the longest cell and the one least needed to tell rows apart, so it gives way first.
    first = [i for i, c in enumerate(columns) if c == "cmdline"]
    rest = [i for i, c in enumerate(columns) if c not in _UNCUT and c != "cmdline"]
    for group in (first, rest):
        if excess > 0:
            excess = _shrink(widths, floor, group, excess)
    return widths


def _shrink(widths: list[int], floor: Sequence[int], group: Sequence[int], excess: int) -> int:
    """Lower one cap over the group's columns, so the widest give up most, until `excess` cells are gone
    or all are at their floor; return the excess still left."""

    def capped(i: int, cap: int) -> int:
        return max(min(widths[i], cap), floor[i])

    def cut(cap: int) -> int:
        return sum(widths[i] - capped(i, cap) for i in group)

    # The highest cap that cuts enough; cut() only grows as the cap falls.
    lo, hi = 0, max((widths[i] for i in group), default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cut(mid) >= excess:
            lo = mid
        else:
            hi = mid - 1
    cap = lo
    over = cut(cap) - excess
    for i in group:
        new = capped(i, cap)
        # The cap moves in whole cells across several columns; give back what was cut beyond the need.
        if over > 0 and new < widths[i] and new == cap:
            new += 1
            over -= 1
        widths[i] = new
    return max(-over, 0)


def to_table(
    rows: Sequence[ReportRow],
    by: str,
    *,
    width: int = 120,
    since: float | None = None,
    until: float | None = None,
) -> str:
    """A fixed-width table for a terminal, with a TOTAL line; every text cell made inert with printable().

    since/until only name the range in the message for an empty report.
    """
    fields = _fields(by)
    if not rows:
        if since is not None and until is not None:
            return f"no traffic recorded between {local_time(since)} and {local_time(until)}"
        if since is not None:
            return f"no traffic recorded since {local_time(since)}"
        if until is not None:
            return f"no traffic recorded before {local_time(until)}"
        return "no traffic recorded"
    columns = fields + BYTE_COLUMNS
    header = [_HEADINGS.get(c, c.upper()) for c in columns]
    body = [
        [_table_cell(f, row.key.get(f)) for f in fields]
        + [human_bytes(row.tx_bytes), human_bytes(row.rx_bytes), human_bytes(row.total_bytes)]
        for row in rows
    ]
    tx = sum(r.tx_bytes for r in rows)
    rx = sum(r.rx_bytes for r in rows)
    total = ["TOTAL"] + [""] * (len(fields) - 1) + [human_bytes(tx), human_bytes(rx), human_bytes(tx + rx)]
    grid = [header, *body, total]
    widths = _column_widths(columns, grid, width)
    lines = []
    for line in grid:
        cells = [
            # The TOTAL label sits in the first column, which may be a right-aligned number column.
            _pad(_fit(cell, w), w, c in _RIGHT_ALIGNED and not (line is total and i == 0))
            for i, (c, cell, w) in enumerate(zip(columns, line, widths, strict=True))
        ]
        lines.append(_GAP.join(cells).rstrip())
    return "\n".join(lines)
