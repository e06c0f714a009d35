"""Traffic from the daemon's database in the collector's shapes, for the terminal UI.

`DatabaseSource` follows the database the way the kernel collector is read: each read()
returns one Interval holding what the daemon wrote since the last read. `range_interval`
and `process_series` answer past ranges from the same rows as reports, so their totals
agree with `sockscope report`. `daemon_database_active` tells `sockscope top` whether a
daemon is writing, so it can follow the database rather than load the collector.

Processes are the store's: one per (boot, pid, start_ns, comm), so a process that renamed
itself shows twice, as in reports. Names come back exactly as stored; bytes that are not
UTF-8 come back as surrogate escapes (encode with errors="surrogateescape" for the bytes).
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence

from sockscope.collector.lifecycle import TCP_FORGET_IDLE, LifeEvent
from sockscope.collector.model import ConnectionSample, Counters, Interval, ProcessSample
from sockscope.collector.source import Source
from sockscope.store.base import StoreError, StoreUnavailable
from sockscope.store.sqlite import SqliteReader, _errors, resolution_bounds

BUSY_TIMEOUT_MS = 250  # at most this long on the rare lock a WAL reader meets (recovery, a last close)
_CHUNK = 500  # ids per IN (...) list: well under SQLite's bound on parameters

# Each connection with its process, for the live and the past views alike. {per_conn} is a
# sub-select of (conn_id, tx, rx), one row per connection.
_ROWS_SQL = """
SELECT c.id, t.tx, t.rx, c.proto, coalesce(c.family, 0), c.laddr, c.lport, c.raddr, c.rport, c.cookie,
       coalesce(c.netns, p.netns, 0), coalesce(c.counts, 'payload'), c.initiator,
       p.id, p.pid, p.comm, e.path, p.cmdline, p.uid, p.user, p.ppid, p.start_ns, p.cgroup, p.unit, p.container,
       p.netns, p.parent_comm, n.name, c.cname, c.name_source
FROM ({per_conn}) t
JOIN connections c ON c.id = t.conn_id
JOIN processes p ON p.id = c.process_id
LEFT JOIN exes e ON e.id = p.exe_id
LEFT JOIN names n ON n.id = c.name_id
WHERE t.tx + t.rx > 0
"""

# Samples' ts is the interval's end in ms; the primary key (ts, conn_id) makes this a range scan.
_NEW_SAMPLES = "SELECT conn_id, sum(tx) AS tx, sum(rx) AS rx FROM samples WHERE ts > ? AND ts <= ? GROUP BY conn_id"

_INTERVAL_SUMS = (
    "SELECT count(*), total(length), coalesce(sum(unattributed_tx), 0), coalesce(sum(unattributed_rx), 0),"
    " coalesce(sum(dropped_events), 0), coalesce(sum(dropped_bytes), 0) FROM intervals WHERE ts > ? AND ts <= ?"
)

_CLOSED_SQL = """
SELECT c.id, c.opened, c.closed, coalesce(c.family, 0), c.laddr, c.lport, c.raddr, c.rport, c.initiator, c.cookie,
       coalesce(c.netns, p.netns, 0), p.pid, p.comm
FROM connections c JOIN processes p ON p.id = c.process_id
WHERE c.closed IS NOT NULL AND c.id IN ({ids})
"""


def _text(raw: bytes) -> str:
    # A name that is not UTF-8 must not make every read fail: keep its bytes as surrogate escapes.
    return raw.decode("utf-8", "surrogateescape")


@contextlib.contextmanager
def _surrogate_text(db: sqlite3.Connection) -> Iterator[None]:
    """Decode TEXT with surrogate escapes for one call on a connection that is the caller's."""
    before = db.text_factory
    db.text_factory = _text
    try:
        yield
    finally:
        db.text_factory = before


@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    """Every sqlite3 failure as a StoreError (the UI shows it): none escapes as sqlite3's own."""
    try:
        with _errors(what):
            yield
    except sqlite3.Error as exc:  # the few that are not DatabaseError (InterfaceError)
        raise StoreError(f"{what}: {exc}") from exc


def _busy(exc: StoreError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _build(
    db: sqlite3.Connection, per_conn: str, params: Sequence[object]
) -> tuple[list[ProcessSample], dict[int, ConnectionSample]]:
    """Processes busiest first (as the collector orders them), and their connections by store id."""
    procs: dict[int, ProcessSample] = {}
    conns: dict[int, ConnectionSample] = {}
    for row in db.execute(_ROWS_SQL.format(per_conn=per_conn), params):
        (cid, tx, rx, proto, family, laddr, lport, raddr, rport, cookie, netns, counts, initiator,
         proc_id, pid, comm, exe, cmdline, uid, user, ppid, start_ns, cgroup, unit, container,
         proc_netns, parent_comm, name, cname, name_source) = row  # fmt: skip
        p = procs.get(proc_id)
        if p is None:
            p = procs[proc_id] = ProcessSample(
                pid=pid,
                comm=comm,
                exe=exe,
                cmdline=cmdline,
                uid=uid,
                user=user,
                ppid=ppid,
                start_ns=start_ns,
                cgroup=cgroup,
                unit=unit,
                container=container,
                netns=proc_netns,
                parent_comm=parent_comm,
            )
        c = conns[cid] = ConnectionSample(
            proto=proto,
            family=family,
            laddr=laddr,
            lport=lport,
            raddr=raddr,
            rport=rport,
            state=None,  # not stored: a state belongs to a moment, not to a sum of intervals
            tx_bytes=int(tx),
            rx_bytes=int(rx),
            cookie=cookie,
            netns=netns,
            initiator=initiator,
            counts=counts,
            name=name,
            cname=tuple(cname.split(" ")) if cname else (),
            name_source=name_source,
        )
        p.connections.append(c)
        p.tx_bytes += c.tx_bytes
        p.rx_bytes += c.rx_bytes
    for p in procs.values():
        p.connections.sort(key=lambda c: (-(c.tx_bytes + c.rx_bytes), c.cookie))
    return sorted(procs.values(), key=lambda p: (-(p.tx_bytes + p.rx_bytes), p.pid)), conns


def _newest_ms(db: sqlite3.Connection) -> int:
    """The newest interval end written, in ms (0: none): samples too, in case intervals rows are missing.
    Both are look-ups at the end of a primary key."""
    found = [db.execute(f"SELECT max(ts) FROM {table}").fetchone()[0] for table in ("intervals", "samples")]
    return max((int(v) for v in found if v is not None), default=0)


# A TCP connection the follower watches for its close: (ms of the last read that saw its bytes,
# tx, rx seen since start()).
_Tcp = tuple[int, int, int]


class DatabaseSource(Source):
    """Follows the daemon's database like a live collector; read() never waits for the writer.

    The daemon commits whole intervals (a batch of them per transaction) and each read() is one
    read transaction, so a read sees whole intervals. Lifecycle: a tcp_close for each TCP connection
    the follower has seen move bytes (or that moved bytes in the hour before start()) once the daemon
    records its close; its tx/rx are the bytes seen since start(), as the collector's tracker counts
    them. Rows written with a ts at or before the newest already read (a clock set back) are not seen.

    read() raises StoreError, never sqlite3's errors: the file gone or unreadable, a damaged file. A
    new file at the path (a daemon that moved a damaged one aside) is followed from where the old one
    was; the UI may keep calling read() after an error. start() and read() must run in one thread
    (sqlite3's rule for a connection); close() from another does not fail, the connection then
    closes when it is collected.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._reader: SqliteReader | None = None
        self._inode: tuple[int, int] | None = None
        self._last_ms = 0
        self._tcp: dict[int, _Tcp] = {}

    def start(self) -> None:
        if self._reader is None:
            self._open(None)

    def _open(self, since_ms: int | None) -> None:
        """Open the file at path; follow it from since_ms, or from its newest interval when None."""
        reader = SqliteReader(self.path)  # raises StoreError: missing, not a database, wrong schema
        try:
            db = reader.db
            db.text_factory = _text
            with _reading(f"reading {self.path}"):
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                st = os.stat(self.path)
                db.execute("BEGIN")
                try:
                    newest = _newest_ms(db)
                    tcp = _open_tcp(db, newest)
                finally:
                    db.rollback()
        except BaseException:
            reader.close()
            raise
        if self._reader is not None:
            self._reader.close()
        self._reader, self._inode = reader, (st.st_dev, st.st_ino)
        self._last_ms = newest if since_ms is None else since_ms
        self._tcp = {cid: (newest, 0, 0) for cid in tcp}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _check_file(self) -> None:
        # SQLite reads on through its open descriptor when the file is removed or replaced: look by name.
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StoreError(
                f"{self.path}: the database is gone (removed or moved away); is the daemon running?"
            ) from None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read the database: {exc.strerror}") from exc
        if not os.access(self.path, os.R_OK):
            raise StoreError(f"{self.path}: the database is no longer readable by this user")
        if (st.st_dev, st.st_ino) != self._inode:
            # A new file (a daemon that moved a damaged one aside, say): follow it from where this one
            # was. Its connection ids are its own, so the watched TCP connections start afresh.
            self._open(self._last_ms)

    def _nothing(self) -> Interval:
        # Nothing ever written: no interval end to give, so now.
        return Interval(ts=self._last_ms / 1000 if self._last_ms else time.time(), interval=0.0, processes=[])

    def read(self) -> Interval:
        if self._reader is None:
            raise RuntimeError("DatabaseSource read before start() or after close()")
        self._check_file()
        self._reader.guard()
        db = self._reader.db
        try:
            with _reading(f"reading {self.path}"):
                db.execute("BEGIN")  # one snapshot for every query below
                try:
                    return self._read(db)
                finally:
                    with contextlib.suppress(sqlite3.Error):
                        db.rollback()
        except StoreUnavailable as exc:
            if _busy(exc):  # a moment's lock: nothing new now, all of it at the next read
                return self._nothing()
            raise

    def _read(self, db: sqlite3.Connection) -> Interval:
        last = self._last_ms
        new = _newest_ms(db)
        if new <= last:
            return self._nothing()
        count, length, utx, urx, dropped_events, dropped_bytes = db.execute(_INTERVAL_SUMS, (last, new)).fetchone()
        if not count:  # intervals rows missing: the time between the two newest ends instead
            length = (new - last) / 1000 if last else 0.0
        processes, conns = _build(db, _NEW_SAMPLES, (last, new))
        tcp = dict(self._tcp)
        for cid, c in conns.items():
            if c.proto == "tcp":
                _, tx, rx = tcp.get(cid, (new, 0, 0))
                tcp[cid] = (new, tx + c.tx_bytes, rx + c.rx_bytes)
        closed = _closes(db, tcp)
        # Every query done: only now change what this follower remembers, so a failed read changes nothing.
        for cid, _ in closed:
            del tcp[cid]
        forget = new - int(TCP_FORGET_IDLE * 1000)  # as the collector's tracker lets idle ones go
        self._tcp = {cid: t for cid, t in tcp.items() if t[0] >= forget}
        self._last_ms = new
        return Interval(
            ts=new / 1000,
            interval=float(length),
            processes=processes,
            counters=Counters(dropped_events=int(dropped_events), dropped_bytes=int(dropped_bytes)),
            lifecycle=[e for _, e in closed],
            unattributed_tx=int(utx),
            unattributed_rx=int(urx),
        )


def _open_tcp(db: sqlite3.Connection, last_ms: int) -> list[int]:
    """TCP connections not closed that moved bytes in the hour before start(), so their closes are
    reported too. Minute rows and the raw rows after them, not an hour of raw rows, keep it cheap."""
    lo = last_ms // 1000 - int(TCP_FORGET_IDLE)
    raw_lo = max(resolution_bounds(db).get("minutes_to", 0.0), float(lo))
    return [
        int(r[0])
        for r in db.execute(
            "SELECT c.id FROM connections c WHERE c.proto = 'tcp' AND c.closed IS NULL AND c.id IN"
            " (SELECT conn_id FROM minutes WHERE ts >= ? UNION SELECT conn_id FROM samples WHERE ts > ?)",
            (lo, int(raw_lo * 1000)),
        )
    ]


def _closes(db: sqlite3.Connection, tcp: dict[int, _Tcp]) -> list[tuple[int, LifeEvent]]:
    """A tcp_close for each watched connection the daemon has recorded as closed, oldest close first.

    Looked up by id among the watched ones: `closed` has no index, and it is the kernel's time of the
    close, which the daemon writes an interval or more later (so not within the window just read)."""
    out: list[tuple[int, LifeEvent]] = []
    ids = list(tcp)
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        sql = _CLOSED_SQL.format(ids=",".join("?" * len(chunk)))
        for cid, opened, closed, family, laddr, lport, raddr, rport, initiator, cookie, netns, pid, comm in db.execute(
            sql, chunk
        ):
            _, tx, rx = tcp[cid]
            event = LifeEvent(
                event="tcp_close",
                proto="tcp",
                family=family,
                laddr=laddr,
                lport=lport,
                raddr=raddr,
                rport=rport,
                pid=pid,
                comm=comm,
                start=None if opened is None else opened / 1000,
                end=closed / 1000,
                tx_bytes=tx,
                rx_bytes=rx,
                complete=opened is not None,
                initiator=initiator,
                netns=netns,
                cookie=cookie,
            )
            out.append((int(cid), event))
    out.sort(key=lambda ce: (ce[1].end or 0.0, ce[0]))
    return out


def daemon_database_active(path: str, *, within: float = 10.0, now: float | None = None) -> bool:
    """True when `path` is a database of this schema readable by this user whose newest interval
    ended within `within` seconds of now (a daemon is writing it). Never raises."""
    try:
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            return False
        reader = SqliteReader(path)
    except Exception:  # anything at all: the answer is only "no daemon to follow"
        return False
    try:
        newest = reader.db.execute("SELECT max(ts) FROM intervals").fetchone()[0]
        if newest is None:
            return False
        return (time.time() if now is None else now) - int(newest) / 1000 <= within
    except Exception:
        return False
    finally:
        reader.close()


def range_interval(reader: SqliteReader, since: float, until: float) -> Interval:
    """The traffic of [since, until) as one Interval: each process's and connection's bytes are its
    totals over the range, from the rows report() would read, so they equal report()'s totals.

    Like report(), an edge older than the raw rows is widened to its minute (or hour). interval is
    until - since and ts is until. Unattributed and dropped counts come from the intervals rows, which
    are kept only as long as raw rows: for older parts of a range they are missing (a lower bound).
    No lifecycle events."""
    reader.guard()
    with _reading("reading history"), _surrogate_text(reader.db):
        per_conn = (
            "SELECT conn_id, sum(tx) AS tx, sum(rx) AS rx"
            f" FROM ({reader._per_connection(reader.connection_segments(since, until))}) GROUP BY conn_id"
        )
        processes, _ = _build(reader.db, per_conn, ())
        lo, hi = int(since * 1000), int(until * 1000)
        _, _, utx, urx, dropped_events, dropped_bytes = reader.db.execute(_INTERVAL_SUMS, (lo, hi)).fetchone()
    return Interval(
        ts=until,
        interval=max(0.0, until - since),
        processes=processes,
        counters=Counters(dropped_events=int(dropped_events), dropped_bytes=int(dropped_bytes)),
        unattributed_tx=int(utx),
        unattributed_rx=int(urx),
    )


def process_series(
    reader: SqliteReader, since: float, until: float, step: float, *, pid: int, start_ns: int, comm: str
) -> list[tuple[float, int, int]]:
    """(bucket start, tx, rx) of one process (all its connections) per `step` seconds from since to
    until; every bucket is there, 0 when nothing moved. The last bucket may end past until.

    Each part of the range is read from the finest rows kept there: raw samples from the first whole
    minute after raw_from, minute rows from minutes_from (a whole hour) up to that, hourly rows before.
    A raw sample counts in the bucket holding its interval's last millisecond (as roll-ups place it);
    a minute or hour row counts whole in the bucket holding its start, so buckets finer than the rows
    show the row's bytes in one bucket and zeros around it. Rows are taken when they start in
    [since, until): aligned to the rows there, the buckets sum to the process's total over the range.

    The process is (pid, start_ns, comm) in the newest boot that has one: start_ns counts from boot,
    so a match in an older boot is another process."""
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"step must be a positive number of seconds, not {step!r}")
    if not until > since:
        return []
    n = math.ceil((until - since) / step)
    tx = [0] * n
    rx = [0] * n
    db = reader.db
    reader.guard()
    with _reading("reading history"):
        # Bound as bytes and cast: a name holding surrogate escapes matches the bytes stored.
        row = db.execute(
            "SELECT p.id FROM boots b JOIN processes p ON p.boot = b.id"
            " WHERE p.pid = ? AND p.start_ns = ? AND p.comm = CAST(? AS TEXT) ORDER BY b.id DESC LIMIT 1",
            (pid, start_ns, comm.encode("utf-8", "surrogateescape")),
        ).fetchone()
        if row is not None:
            m = resolution_bounds(db)
            hours_below = m.get("minutes_from", 0.0)  # minute rows are purged in whole hours below it
            raw_from = max(hours_below, math.ceil(m.get("raw_from", 0.0) / 60) * 60)
            conns = "conn_id IN (SELECT id FROM connections WHERE process_id = ?)"
            queries: list[tuple[str, tuple[object, ...]]] = []
            for table, lo, hi in (("hours", since, min(until, hours_below)),
                                  ("minutes", max(since, hours_below), min(until, raw_from))):  # fmt: skip
                if lo < hi:
                    queries.append((
                        f"SELECT CAST((ts - ?) / ? AS INTEGER), sum(tx), sum(rx) FROM {table}"
                        f" WHERE ts >= ? AND ts < ? AND {conns} GROUP BY 1",
                        (float(since), float(step), lo, hi, row[0]),
                    ))  # fmt: skip
            lo = max(since, raw_from)
            if lo < until:
                queries.append((
                    "SELECT CAST(((ts - 1) / 1000.0 - ?) / ? AS INTEGER), sum(tx), sum(rx) FROM samples"
                    f" WHERE ts > ? AND ts <= ? AND {conns} GROUP BY 1",
                    (float(since), float(step), int(lo * 1000), int(until * 1000), row[0]),
                ))  # fmt: skip
            for sql, params in queries:
                for b, t, r in db.execute(sql, params):
                    i = min(max(int(b), 0), n - 1)  # float rounding at the edges
                    tx[i] += int(t)
                    rx[i] += int(r)
    return [(since + i * step, tx[i], rx[i]) for i in range(n)]


__all__ = ["DatabaseSource", "daemon_database_active", "process_series", "range_interval"]
