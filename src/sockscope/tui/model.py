"""What the terminal UI shows, kept apart from Textual: intervals in, rows out.

Pure and typed, tested alone (tests/unit/test_tui_model.py): accumulation of intervals into
per-process rows (rates of the last interval, totals since start, a rate history for the graph),
per-connection rows that stay visible, marked closed, for a while after they end, sorting and
filtering.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sockscope.collector.model import ConnectionSample, Interval, ProcessSample
from sockscope.collector.rates import rate

ProcKey = tuple[int, int, str]  # (pid, start_ns, comm): a pid alone is reused
ConnKey = tuple[int, str, str | None, int | None]  # (cookie, proto, peer address, peer port)

HISTORY_POINTS = 300  # graph points kept per process: 5 minutes at 1 s
CLOSED_LINGER = 30.0  # seconds a closed connection stays on screen, dimmed
FORGET_AFTER = 300.0  # seconds without traffic before a process leaves the table


@dataclass(slots=True)
class ConnRow:
    key: ConnKey
    proto: str
    laddr: str | None
    lport: int | None
    raddr: str | None
    rport: int | None
    state: str | None
    counts: str
    first_seen: float
    last_seen: float
    tx_total: int = 0
    rx_total: int = 0
    tx_rate: float = 0.0
    rx_rate: float = 0.0
    closed_at: float | None = None  # when it ended (a TCP close, a UDP flow's idle end)
    name: str | None = None  # the peer's name, from the DNS answers its process read

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    def age(self, now: float) -> float:
        return max(0.0, (self.closed_at if self.closed_at is not None else now) - self.first_seen)


@dataclass(slots=True)
class ProcRow:
    key: ProcKey
    pid: int
    comm: str
    exe: str | None
    cmdline: str | None
    user: str | None
    uid: int | None
    unit: str | None
    container: str | None
    first_seen: float
    last_seen: float
    tx_rate: float = 0.0
    rx_rate: float = 0.0
    tx_total: int = 0
    rx_total: int = 0
    connections: dict[ConnKey, ConnRow] = field(default_factory=dict)
    history: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))

    @property
    def open_connections(self) -> int:
        return sum(1 for c in self.connections.values() if not c.closed)

    @property
    def owner(self) -> str:
        if self.user is not None:
            return self.user
        return str(self.uid) if self.uid is not None else "-"

    @property
    def group(self) -> str | None:
        """The systemd unit or the container the process runs in."""
        return self.unit or self.container


@dataclass(slots=True)
class Totals:
    interval: float = 0.0
    tx_rate: float = 0.0
    rx_rate: float = 0.0
    tx_total: int = 0
    rx_total: int = 0
    unattributed_rate: float = 0.0
    unattributed_total: int = 0
    dropped_events: int = 0  # since start
    dropped_bytes: int = 0
    lifecycle_dropped: int = 0
    intervals: int = 0


def proc_key(p: ProcessSample) -> ProcKey:
    return (p.pid, p.start_ns, p.comm)


def conn_key(c: ConnectionSample) -> ConnKey:
    return (c.cookie, c.proto, c.raddr, c.rport)


class TopState:
    """Every interval since start, folded into what the screen shows."""

    def __init__(
        self, *, linger: float = CLOSED_LINGER, forget: float = FORGET_AFTER, history: int = HISTORY_POINTS
    ) -> None:
        self.linger = linger
        self.forget = forget
        self.history_len = history
        self.procs: dict[ProcKey, ProcRow] = {}
        self.totals = Totals()
        self.now = 0.0

    def update(self, iv: Interval) -> None:
        self.now = iv.ts
        t = self.totals
        t.intervals += 1
        t.interval = iv.interval
        t.tx_rate, t.rx_rate = rate(iv.tx_bytes, iv.interval), rate(iv.rx_bytes, iv.interval)
        t.tx_total += iv.tx_bytes
        t.rx_total += iv.rx_bytes
        unattributed = iv.unattributed_tx + iv.unattributed_rx
        t.unattributed_rate = rate(unattributed, iv.interval)
        t.unattributed_total += unattributed
        t.dropped_events += iv.counters.dropped_events
        t.dropped_bytes += iv.counters.dropped_bytes
        t.lifecycle_dropped += iv.counters.events_lost + iv.counters.lifecycle_forgotten
        moved: set[ProcKey] = set()
        for p in iv.processes:
            row = self._proc(p, iv.ts)
            moved.add(row.key)
            row.tx_rate, row.rx_rate = rate(p.tx_bytes, iv.interval), rate(p.rx_bytes, iv.interval)
            row.tx_total += p.tx_bytes
            row.rx_total += p.rx_bytes
            if p.tx_bytes or p.rx_bytes:
                row.last_seen = iv.ts
            seen: set[ConnKey] = set()
            for c in p.connections:
                conn = self._conn(row, c, iv.ts)
                seen.add(conn.key)
                conn.tx_rate, conn.rx_rate = rate(c.tx_bytes, iv.interval), rate(c.rx_bytes, iv.interval)
                conn.tx_total += c.tx_bytes
                conn.rx_total += c.rx_bytes
                if c.tx_bytes or c.rx_bytes:
                    conn.last_seen = iv.ts
                if c.state is not None:
                    conn.state = c.state
            for conn in row.connections.values():
                if conn.key not in seen:
                    conn.tx_rate = conn.rx_rate = 0.0
        for key, row in self.procs.items():
            if key not in moved:
                row.tx_rate = row.rx_rate = 0.0
                for conn in row.connections.values():
                    conn.tx_rate = conn.rx_rate = 0.0
            row.history.append((iv.ts, row.tx_rate, row.rx_rate))
        self._ended(iv)
        self._expire(iv.ts)

    def _proc(self, p: ProcessSample, now: float) -> ProcRow:
        key = proc_key(p)
        row = self.procs.get(key)
        if row is None:
            row = ProcRow(
                key=key, pid=p.pid, comm=p.comm, exe=p.exe, cmdline=p.cmdline, user=p.user, uid=p.uid, unit=p.unit,
                container=p.container, first_seen=now, last_seen=now,
                history=deque(maxlen=self.history_len),
            )  # fmt: skip
            self.procs[key] = row
        else:  # facts found late (a short-lived process read from /proc on a later pass)
            row.exe = row.exe or p.exe
            row.cmdline = row.cmdline or p.cmdline
            row.user = row.user or p.user
            row.unit = row.unit or p.unit
            row.container = row.container or p.container
        return row

    @staticmethod
    def _conn(row: ProcRow, c: ConnectionSample, now: float) -> ConnRow:
        key = conn_key(c)
        conn = row.connections.get(key)
        if conn is None:
            conn = ConnRow(
                key=key, proto=c.proto, laddr=c.laddr, lport=c.lport, raddr=c.raddr, rport=c.rport, state=c.state,
                counts=c.counts, first_seen=now, last_seen=now,
            )  # fmt: skip
            row.connections[key] = conn
        elif conn.closed and (c.tx_bytes or c.rx_bytes):
            conn.closed_at = None  # a UDP flow that came back
        if c.name is not None:
            conn.name = c.name
        return conn

    def _ended(self, iv: Interval) -> None:
        """Mark connections the lifecycle events say ended; they stay listed for `linger` seconds."""
        for e in iv.lifecycle:
            if e.event not in ("tcp_close", "udp_end") or e.pid is None:
                continue
            for row in self.procs.values():
                if row.pid != e.pid:
                    continue
                for conn in row.connections.values():
                    if (conn.proto, conn.raddr, conn.rport, conn.lport) == (e.proto, e.raddr, e.rport, e.lport) or (
                        e.proto == "udp" and conn.proto == "udp" and conn.raddr == e.raddr and conn.rport == e.rport
                    ):
                        conn.closed_at = e.end if e.end is not None else iv.ts
                        conn.state = "CLOSED" if e.proto == "tcp" else "ENDED"
                        if e.start is not None:
                            conn.first_seen = min(conn.first_seen, e.start)

    def _expire(self, now: float) -> None:
        for key in [k for k, r in self.procs.items() if now - r.last_seen > self.forget]:
            del self.procs[key]
        for row in self.procs.values():
            ended = {k: c.closed_at for k, c in row.connections.items() if c.closed_at is not None}
            for ck in [k for k, at in ended.items() if now - at > self.linger]:
                del row.connections[ck]


# ---- sorting and filtering ----

PROC_SORTS: dict[str, Callable[[ProcRow], object]] = {
    "pid": lambda r: r.pid,
    "user": lambda r: r.owner,
    "program": lambda r: r.comm.lower(),
    "unit": lambda r: (r.group or "").lower(),
    "send": lambda r: r.tx_rate,
    "receive": lambda r: r.rx_rate,
    "rate": lambda r: r.tx_rate + r.rx_rate,
    "sent": lambda r: r.tx_total,
    "received": lambda r: r.rx_total,
    "total": lambda r: r.tx_total + r.rx_total,
    "conns": lambda r: r.open_connections,
}
# Numbers sort busiest first; names alphabetically.
DESCENDING_FIRST = frozenset({"send", "receive", "rate", "sent", "received", "total", "conns"})


def matches(row: ProcRow, query: str) -> bool:
    """Case-insensitive substring of the program, command line, executable, user, unit or
    container, or of a connection's peer name, address or port ("github", "443", "10.0.0.7", ":53")."""
    q = query.strip().lower()
    if not q:
        return True
    fields: list[str | None] = [row.comm, row.cmdline, row.exe, row.owner, row.unit, row.container, str(row.pid)]
    if any(f is not None and q in f.lower() for f in fields):
        return True
    for c in row.connections.values():
        if c.name is not None and q in c.name.lower():
            return True
        for addr, port in ((c.raddr, c.rport), (c.laddr, c.lport)):
            endpoint = f"{addr or ''}:{port if port is not None else ''}".lower()
            if q in endpoint or (port is not None and q == str(port)):
                return True
    return False


def visible_rows(state: TopState, *, sort: str = "rate", descending: bool = True, query: str = "") -> list[ProcRow]:
    """The process table: filtered, then sorted (ties by total, then pid, so the order is stable)."""
    key = PROC_SORTS[sort]
    rows = [r for r in state.procs.values() if matches(r, query)]
    rows.sort(key=lambda r: r.pid)
    rows.sort(key=lambda r: r.tx_total + r.rx_total, reverse=True)
    rows.sort(key=key, reverse=descending)  # type: ignore[arg-type]
    return rows


def connection_rows(row: ProcRow) -> list[ConnRow]:
    """Open connections busiest first, then the closed ones, most recently closed first."""
    open_ = sorted((c for c in row.connections.values() if not c.closed), key=lambda c: -(c.tx_total + c.rx_total))
    closed = sorted((c for c in row.connections.values() if c.closed), key=lambda c: -(c.closed_at or 0.0))
    return open_ + closed


def series(row: ProcRow) -> tuple[list[float], list[float]]:
    """The graph's send and receive rates, oldest first."""
    return [tx for _, tx, _ in row.history], [rx for _, _, rx in row.history]
