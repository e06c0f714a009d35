"""History in SQLite: WAL mode, one writer (the daemon), any number of readers.

Tables: processes and executables interned; connections per (process, socket,
peer); traffic rows per interval holding only what moved (`samples`), rolled up
in SQL into `minutes` and `hours` once each is complete. Roll-ups are sums of
the finer rows, so a range gives the same totals whichever resolution answers.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import math
import os
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

from sockscope.collector.model import Interval
from sockscope.lru import LruDict
from sockscope.report_format import GROUP_FIELDS, ReportRow
from sockscope.store.base import (
    GROUPINGS,
    HistoryReader,
    HistoryWriter,
    Retention,
    SchemaTooNew,
    Segment,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
    WriterLocked,
    plan_segments,
    split_days,
)

SCHEMA_VERSION = 3
LAST_SEEN_STEP = 60.0  # seconds: connections.last_seen is kept to this precision

# Migrations: MIGRATIONS[n] takes a database from version n to n + 1.
MIGRATIONS: dict[int, str] = {
    0: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE exes (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE);
    -- /proc/sys/kernel/random/boot_id, interned: pids and cookies are unique only within a boot
    CREATE TABLE boots (id INTEGER PRIMARY KEY, boot_id TEXT NOT NULL UNIQUE);
    CREATE TABLE processes (
        id INTEGER PRIMARY KEY,
        boot INTEGER NOT NULL REFERENCES boots(id), pid INTEGER NOT NULL, start_ns INTEGER NOT NULL,
        comm TEXT NOT NULL,
        exe_id INTEGER REFERENCES exes(id), cmdline TEXT, uid INTEGER, user TEXT, ppid INTEGER,
        parent_comm TEXT, cgroup TEXT, unit TEXT, container TEXT, netns INTEGER,
        first_seen REAL NOT NULL,
        UNIQUE (boot, pid, start_ns, comm)
    );
    CREATE TABLE connections (
        id INTEGER PRIMARY KEY,
        process_id INTEGER NOT NULL REFERENCES processes(id),
        boot INTEGER NOT NULL REFERENCES boots(id), cookie INTEGER NOT NULL,
        proto TEXT NOT NULL, family INTEGER, laddr TEXT, lport INTEGER, raddr TEXT, rport INTEGER,
        netns INTEGER, counts TEXT, initiator TEXT,
        first_seen REAL NOT NULL, last_seen REAL NOT NULL, opened REAL, closed REAL,
        UNIQUE (process_id, cookie, raddr, rport)
    );
    CREATE INDEX connections_cookie ON connections (boot, cookie);
    -- ts: interval end, Unix milliseconds
    CREATE TABLE samples (
        ts INTEGER NOT NULL, conn_id INTEGER NOT NULL, tx INTEGER NOT NULL, rx INTEGER NOT NULL,
        PRIMARY KEY (ts, conn_id)
    ) WITHOUT ROWID;
    -- ts: start of the minute / hour, Unix seconds; process_id copied to spare a join
    CREATE TABLE minutes (
        ts INTEGER NOT NULL, conn_id INTEGER NOT NULL, process_id INTEGER NOT NULL,
        tx INTEGER NOT NULL, rx INTEGER NOT NULL,
        PRIMARY KEY (ts, conn_id)
    ) WITHOUT ROWID;
    CREATE TABLE hours (
        ts INTEGER NOT NULL, conn_id INTEGER NOT NULL, process_id INTEGER NOT NULL,
        tx INTEGER NOT NULL, rx INTEGER NOT NULL,
        PRIMARY KEY (ts, conn_id)
    ) WITHOUT ROWID;
    -- per process and UTC day, from hours: what long reports by process, exe, user or unit read
    CREATE TABLE process_days (
        ts INTEGER NOT NULL, process_id INTEGER NOT NULL, tx INTEGER NOT NULL, rx INTEGER NOT NULL,
        PRIMARY KEY (ts, process_id)
    ) WITHOUT ROWID;
    CREATE TABLE intervals (
        ts INTEGER PRIMARY KEY, length REAL NOT NULL,
        unattributed_tx INTEGER NOT NULL, unattributed_rx INTEGER NOT NULL,
        dropped_events INTEGER NOT NULL, dropped_bytes INTEGER NOT NULL
    );
    """,
    # v2, smaller rows (the 30-day benchmark 293 -> see README): no UNIQUE index on connections (the
    # writer looks a connection up through connections_cookie); whole seconds for first/last seen,
    # milliseconds for opened/closed; NULL for the common netns (the process's) and counts
    # ('payload'); no process_id copied into minutes and hours (a join answers it).
    1: """
    CREATE TABLE connections_v2 (
        id INTEGER PRIMARY KEY,
        process_id INTEGER NOT NULL REFERENCES processes(id),
        boot INTEGER NOT NULL REFERENCES boots(id), cookie INTEGER NOT NULL,
        proto TEXT NOT NULL, family INTEGER, laddr TEXT, lport INTEGER, raddr TEXT, rport INTEGER,
        netns INTEGER,  -- NULL: the process's
        counts TEXT,  -- NULL: payload
        initiator TEXT,
        first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,  -- Unix seconds, rounded outwards
        opened INTEGER, closed INTEGER  -- Unix milliseconds
    );
    INSERT INTO connections_v2
        SELECT c.id, c.process_id, c.boot, c.cookie, c.proto, c.family, c.laddr, c.lport, c.raddr, c.rport,
               nullif(c.netns, p.netns), nullif(c.counts, 'payload'), c.initiator,
               CAST(c.first_seen AS INTEGER),
               CAST(c.last_seen AS INTEGER) + (c.last_seen > CAST(c.last_seen AS INTEGER)),
               CAST(round(c.opened * 1000) AS INTEGER), CAST(round(c.closed * 1000) AS INTEGER)
        FROM connections c LEFT JOIN processes p ON p.id = c.process_id;
    DROP TABLE connections;
    ALTER TABLE connections_v2 RENAME TO connections;
    CREATE INDEX connections_cookie ON connections (boot, cookie);
    CREATE TABLE minutes_v2 (
        ts INTEGER NOT NULL, conn_id INTEGER NOT NULL, tx INTEGER NOT NULL, rx INTEGER NOT NULL,
        PRIMARY KEY (ts, conn_id)
    ) WITHOUT ROWID;
    INSERT INTO minutes_v2 SELECT ts, conn_id, tx, rx FROM minutes;
    DROP TABLE minutes;
    ALTER TABLE minutes_v2 RENAME TO minutes;
    CREATE TABLE hours_v2 (
        ts INTEGER NOT NULL, conn_id INTEGER NOT NULL, tx INTEGER NOT NULL, rx INTEGER NOT NULL,
        PRIMARY KEY (ts, conn_id)
    ) WITHOUT ROWID;
    INSERT INTO hours_v2 SELECT ts, conn_id, tx, rx FROM hours;
    DROP TABLE hours;
    ALTER TABLE hours_v2 RENAME TO hours;
    """,
    # v3: the peer's name, as the program resolved it (issue 13), interned; its CNAME chain as
    # text (names joined by spaces: a name's own spaces arrive escaped, \ ).
    2: """
    CREATE TABLE names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
    ALTER TABLE connections ADD COLUMN name_id INTEGER REFERENCES names(id);
    ALTER TABLE connections ADD COLUMN cname TEXT;
    ALTER TABLE connections ADD COLUMN name_source TEXT;
    """,
}

_FULL_OR_RO = ("database or disk is full", "readonly database", "disk i/o error", "database is locked")


def boot_id(path: str = "/proc/sys/kernel/random/boot_id") -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """sqlite3's errors as storage errors: retryable ones apart from the rest."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        text = str(exc).lower()
        if any(k in text for k in _FULL_OR_RO):
            raise StoreUnavailable(f"{what}: {exc}") from exc
        if "not a database" in text or "malformed" in text:
            raise StoreCorrupt(f"{what}: {exc}") from exc
        raise StoreError(f"{what}: {exc}") from exc
    except OSError as exc:
        raise StoreUnavailable(f"{what}: {exc}") from exc


def _schema_version(db: sqlite3.Connection, path: str) -> int:
    has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(_meta_number(row, f"{path}: meta.schema_version", int)) if row else 0


def _not_newer(version: int, path: str) -> int:
    """The version, unless a newer sockscope wrote the file (writer and readers refuse it alike)."""
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(f"{path} has schema {version}; this sockscope knows up to {SCHEMA_VERSION}")
    return version


def _meta_number(row: tuple[object, ...], key: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(str(row[0]))
    except ValueError:
        raise StoreCorrupt(f"{key} is {str(row[0])[:40]!r}, not a number: a damaged database") from None


def _meta_float(db: sqlite3.Connection, key: str, default: float) -> float:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return float(_meta_number(row, f"meta.{key}", float)) if row else default


def _set_meta(db: sqlite3.Connection, key: str, value: object) -> None:
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
               (key, str(value)))  # fmt: skip


FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long): the file's chattr flags
FS_IMMUTABLE_FL = 0x10


def frozen_shm(path: str) -> str | None:
    """Why `<db>-shm` cannot be written, when it is immutable (chattr +i); else None.

    SQLite maps that file into memory and every connection writes to the map, readers too; once the
    file is immutable the kernel answers such a write with SIGBUS, which kills the process with no
    message. So it is looked at before each transaction, and the connection is not touched while
    it stays so."""
    shm = path + "-shm"
    try:
        fd = os.open(shm, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None  # none yet (SQLite makes it) or unreadable: SQLite's own error says more
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
    except OSError:
        return None  # a file system without such flags
    finally:
        os.close(fd)
    if int.from_bytes(buf[:4], sys.byteorder) & FS_IMMUTABLE_FL:
        return f"{shm} is immutable (chattr +i), and SQLite must write to it: run `chattr -i {shm}`"
    return None


def check_shm(path: str, what: str) -> None:
    reason = frozen_shm(path)
    if reason is not None:
        raise StoreUnavailable(f"{what}: {reason}")


def close_db(db: sqlite3.Connection, path: str) -> None:
    """Close a connection, unless its -shm is immutable: closing writes to the map (SIGBUS). Then
    the connection is kept alive for good (never freed, so never closed); the kernel drops its
    locks when the process ends, and the next opening recovers the write-ahead log."""
    if frozen_shm(path) is not None:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(db))
        return
    db.close()


WRITER_CACHE = 16384  # ids per kind kept in memory: more than the active connections of a busy host


class SqliteWriter(HistoryWriter):
    """The daemon's connection. Creates the file (mode 0640) and migrates the schema."""

    def __init__(self, path: str, *, boot: str | None = None) -> None:
        self.path = path
        self.boot = boot or boot_id()
        # Row ids of what was written lately; a miss looks the row up again (indexed), so these
        # stay bounded whatever the churn (they grew by every process and connection ever seen).
        self._procs: LruDict[tuple[int, int, str], int] = LruDict(WRITER_CACHE)
        # connection -> (its row, the name written there)
        self._conns: LruDict[tuple[int, int, str | None, int | None], tuple[int, str | None]] = LruDict(WRITER_CACHE)
        self._names: LruDict[str, int] = LruDict(WRITER_CACHE // 4)
        self._exes: LruDict[str, int] = LruDict(WRITER_CACHE // 4)
        self._last_seen: LruDict[int, float] = LruDict(WRITER_CACHE)
        self._lock = WriterLock(path)  # before anything is written: two writers double every byte
        try:
            self._open(path)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, path: str) -> None:
        with _errors(f"opening {path}"):
            if not os.path.exists(path):
                os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o750, exist_ok=True)
                # The file holds command lines and addresses: not for every user.
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o640))
            check_shm(path, f"opening {path}")
            self.db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
            st = os.stat(path)
            self._identity = (st.st_dev, st.st_ino)  # to notice the file deleted or replaced
            self._refuse_newer()  # before WAL mode is set: a newer sockscope's file is left as it was
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a commit survives a crash of ours
            self._check()
            self._migrate()
            self.db.execute("INSERT INTO boots (boot_id) VALUES (?) ON CONFLICT (boot_id) DO NOTHING", (self.boot,))
            self.boot_row: int = self.db.execute("SELECT id FROM boots WHERE boot_id = ?", (self.boot,)).fetchone()[0]

    def gone(self) -> str | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"{self.path} was deleted"
        except OSError:
            return None  # cannot tell now (a permission, a blip): writing will say more
        if (st.st_dev, st.st_ino) != self._identity:
            return f"{self.path} was replaced by another file"
        return None

    def _check(self) -> None:
        row = self.db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise StoreCorrupt(f"{self.path}: integrity check failed: {row[0] if row else 'no answer'}")

    def _refuse_newer(self) -> int:
        return _not_newer(_schema_version(self.db, self.path), self.path)

    def _migrate(self) -> None:
        version = self._refuse_newer()
        while version < SCHEMA_VERSION:
            # One script, one transaction: a failed migration leaves the previous version intact.
            script = (
                "BEGIN IMMEDIATE;"
                + MIGRATIONS[version]
                + f"INSERT INTO meta (key, value) VALUES ('schema_version', '{version + 1}')"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value; COMMIT;"
            )
            try:
                self.db.executescript(script)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                raise
            version += 1

    # ---- writing ----

    def _exe_id(self, path: str | None) -> int | None:
        if not path:
            return None
        found = self._exes.get(path)
        if found is None:
            self.db.execute("INSERT INTO exes (path) VALUES (?) ON CONFLICT (path) DO NOTHING", (path,))
            found = self.db.execute("SELECT id FROM exes WHERE path = ?", (path,)).fetchone()[0]
            self._exes[path] = found
        return found

    def _process_id(self, p: Any, now: float) -> int:
        key = (p.pid, p.start_ns, p.comm)
        found = self._procs.get(key)
        if found is None:
            self.db.execute(
                "INSERT INTO processes (boot, pid, start_ns, comm, exe_id, cmdline, uid, user, ppid, parent_comm,"
                " cgroup, unit, container, netns, first_seen) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (boot, pid, start_ns, comm) DO NOTHING",
                (self.boot_row, p.pid, p.start_ns, p.comm, self._exe_id(p.exe), p.cmdline, p.uid, p.user, p.ppid,
                 p.parent_comm, p.cgroup, p.unit, p.container, p.netns, now),
            )  # fmt: skip
            found = self.db.execute(
                "SELECT id FROM processes WHERE boot = ? AND pid = ? AND start_ns = ? AND comm = ?",
                (self.boot_row, p.pid, p.start_ns, p.comm),
            ).fetchone()[0]
            self._procs[key] = found
        return found

    def _name_id(self, name: str | None) -> int | None:
        if name is None:
            return None
        found = self._names.get(name)
        if found is None:
            self.db.execute("INSERT INTO names (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (name,))
            found = self.db.execute("SELECT id FROM names WHERE name = ?", (name,)).fetchone()[0]
            self._names[name] = found
        return found

    def _connection_id(self, process_id: int, netns: int | None, c: Any, now: float) -> int:
        key = (process_id, c.cookie, c.raddr, c.rport)
        found = self._conns.get(key)
        if found is not None:
            if c.name is not None and c.name != found[1]:  # named since (or renamed): keep the newest
                self._set_name(found[0], c)
                self._conns[key] = (found[0], c.name)
            return found[0]
        # No UNIQUE index (it was a tenth of the file): the cookie index narrows to a row or two.
        # Only this writer inserts, inside its transaction, so look-then-insert cannot race.
        row = self.db.execute(
            "SELECT c.id, n.name FROM connections c LEFT JOIN names n ON n.id = c.name_id"
            " WHERE c.boot = ? AND c.cookie = ? AND c.process_id = ? AND c.raddr IS ? AND c.rport IS ?",
            (self.boot_row, c.cookie, process_id, c.raddr, c.rport),
        ).fetchone()
        if row is not None:
            self._conns[key] = (int(row[0]), row[1])
            return self._connection_id(process_id, netns, c, now)
        cur = self.db.execute(
            "INSERT INTO connections (process_id, boot, cookie, proto, family, laddr, lport, raddr, rport, netns,"
            " counts, initiator, first_seen, last_seen, name_id, cname, name_source)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (process_id, self.boot_row, c.cookie, c.proto, c.family, c.laddr, c.lport, c.raddr, c.rport,
             None if c.netns == netns else c.netns, None if c.counts == "payload" else c.counts, c.initiator,
             math.floor(now), math.ceil(now), self._name_id(c.name), " ".join(c.cname) or None, c.name_source),
        )  # fmt: skip
        made = int(cur.lastrowid or 0)
        self._conns[key] = (made, c.name)
        return made

    def _set_name(self, conn_id: int, c: Any) -> None:
        self.db.execute(
            "UPDATE connections SET name_id = ?, cname = ?, name_source = ? WHERE id = ?",
            (self._name_id(c.name), " ".join(c.cname) or None, c.name_source, conn_id),
        )

    def write(self, intervals: Sequence[Interval]) -> None:
        if not intervals:
            return
        check_shm(self.path, f"writing {self.path}")
        try:
            with _errors(f"writing {self.path}"):
                minutes_to = _meta_float(self.db, "minutes_to", -1.0)
                self.db.execute("BEGIN IMMEDIATE")
                late: list[tuple[int, int, int, int]] = []
                for iv in intervals:
                    ts_ms = round(iv.ts * 1000)
                    rows = []
                    seen: list[int] = []
                    for p in iv.processes:
                        pid = self._process_id(p, iv.ts)
                        for c in p.connections:
                            if c.tx_bytes == 0 and c.rx_bytes == 0:
                                continue
                            cid = self._connection_id(pid, p.netns, c, iv.ts)
                            rows.append((ts_ms, cid, c.tx_bytes, c.rx_bytes))
                            seen.append(cid)
                    self.db.executemany(
                        "INSERT INTO samples (ts, conn_id, tx, rx) VALUES (?,?,?,?) ON CONFLICT (ts, conn_id)"
                        " DO UPDATE SET tx = tx + excluded.tx, rx = rx + excluded.rx",
                        rows,
                    )
                    # last_seen to the minute: an update per connection per interval was a third of the write
                    stale = [cid for cid in seen if iv.ts - self._last_seen.get(cid, 0.0) >= LAST_SEEN_STEP]
                    self.db.executemany(
                        "UPDATE connections SET last_seen = max(last_seen, ?) WHERE id = ?",
                        [(math.ceil(iv.ts), cid) for cid in stale],
                    )
                    for cid in stale:
                        self._last_seen[cid] = iv.ts
                    self.db.execute(
                        "INSERT OR REPLACE INTO intervals VALUES (?,?,?,?,?,?)",
                        (ts_ms, iv.interval, iv.unattributed_tx, iv.unattributed_rx, iv.counters.dropped_events,
                         iv.counters.dropped_bytes),
                    )  # fmt: skip
                    if ts_ms <= minutes_to * 1000:  # written late (after an outage): roll it up now
                        late += rows
                    self._lifecycle(iv)
                if late:
                    self._add_late(late)
                self.db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            # Ids handed out inside the rolled-back transaction no longer exist.
            self._procs.clear()
            self._conns.clear()
            self._exes.clear()
            self._names.clear()
            self._last_seen.clear()
            raise

    def _lifecycle(self, iv: Interval) -> None:
        for e in iv.lifecycle:
            if e.proto != "tcp":
                continue
            if e.event == "tcp_open":
                self.db.execute(
                    "UPDATE connections SET opened = ?, initiator = ? WHERE boot = ? AND cookie = ?",
                    (_ms(e.start), e.initiator, self.boot_row, e.cookie),
                )
            elif e.event == "tcp_close":
                self.db.execute(
                    "UPDATE connections SET opened = coalesce(opened, ?), closed = ?,"
                    " initiator = coalesce(?, initiator) WHERE boot = ? AND cookie = ?",
                    (_ms(e.start), _ms(e.end), e.initiator, self.boot_row, e.cookie),
                )

    def _add_late(self, rows: list[tuple[int, int, int, int]]) -> None:
        hours_to = _meta_float(self.db, "hours_to", 0.0)
        days_to = _meta_float(self.db, "days_to", 0.0)
        for ts_ms, cid, tx, rx in rows:
            for table, step, limit in (("minutes", 60, float("inf")), ("hours", 3600, hours_to)):
                bucket = (ts_ms - 1) // (step * 1000) * step
                if bucket >= limit:
                    continue
                self.db.execute(
                    f"INSERT INTO {table} (ts, conn_id, tx, rx) VALUES (?,?,?,?)"
                    " ON CONFLICT (ts, conn_id) DO UPDATE SET tx = tx + excluded.tx, rx = rx + excluded.rx",
                    (bucket, cid, tx, rx),
                )
            day = (ts_ms - 1) // (DAY * 1000) * DAY
            if day < days_to:
                pid = self.db.execute("SELECT process_id FROM connections WHERE id = ?", (cid,)).fetchone()[0]
                self.db.execute(
                    "INSERT INTO process_days (ts, process_id, tx, rx) VALUES (?,?,?,?) ON CONFLICT (ts, process_id)"
                    " DO UPDATE SET tx = tx + excluded.tx, rx = rx + excluded.rx",
                    (day, pid, tx, rx),
                )

    # ---- roll-ups and retention ----

    def maintain(self, now: float, retention: Retention) -> None:
        check_shm(self.path, f"maintaining {self.path}")
        with _errors(f"maintaining {self.path}"):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self._roll_up(now)
                self._purge(now, retention)
                self.db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                raise

    def _roll_up(self, now: float) -> None:
        # A sample (ts = interval end, ms) covers (ts - length, ts]: it belongs to the minute
        # holding ts - 1 ms. A minute is rolled up once complete, with a margin for the last write.
        target = (now - 5) // 60 * 60
        minutes_to = _meta_float(self.db, "minutes_to", -1.0)
        if minutes_to < 0:
            first = self.db.execute("SELECT min(ts) FROM samples").fetchone()[0]
            minutes_to = target if first is None else (first - 1) // 60000 * 60
            _set_meta(self.db, "minutes_to", minutes_to)
            _set_meta(self.db, "hours_to", minutes_to // 3600 * 3600)
        if target > minutes_to:
            self.db.execute(
                "INSERT INTO minutes (ts, conn_id, tx, rx)"
                " SELECT (ts - 1) / 60000 * 60, conn_id, sum(tx), sum(rx) FROM samples WHERE ts > ? AND ts <= ?"
                " GROUP BY 1, 2 ORDER BY 1, 2"
                " ON CONFLICT (ts, conn_id) DO UPDATE SET tx = tx + excluded.tx, rx = rx + excluded.rx",
                (int(minutes_to * 1000), int(target * 1000)),
            )
            _set_meta(self.db, "minutes_to", target)
            minutes_to = target
        hours_to = _meta_float(self.db, "hours_to", minutes_to // 3600 * 3600)
        h_target = minutes_to // 3600 * 3600
        if h_target > hours_to:
            self.db.execute(
                "INSERT INTO hours (ts, conn_id, tx, rx)"
                " SELECT ts / 3600 * 3600, conn_id, sum(tx), sum(rx)"
                " FROM minutes WHERE ts >= ? AND ts < ? GROUP BY 1, 2 ORDER BY 1, 2"
                " ON CONFLICT (ts, conn_id) DO UPDATE SET tx = tx + excluded.tx, rx = rx + excluded.rx",
                (int(hours_to), int(h_target)),
            )
            _set_meta(self.db, "hours_to", h_target)
            hours_to = h_target
        roll_days(self.db, hours_to)

    def _purge(self, now: float, r: Retention) -> None:
        minutes_to = _meta_float(self.db, "minutes_to", 0.0)
        hours_to = _meta_float(self.db, "hours_to", 0.0)
        # Never drop rows that are not rolled up yet.
        raw_cut = min(now - r.raw, minutes_to)
        self.db.execute("DELETE FROM samples WHERE ts < ?", (int(raw_cut * 1000),))
        self.db.execute("DELETE FROM intervals WHERE ts < ?", (int(raw_cut * 1000),))
        # Whole hours only, so an old range's edges can be answered by hours (see plan_segments).
        minute_cut = min((now - r.minute) // 3600 * 3600, hours_to)
        self.db.execute("DELETE FROM minutes WHERE ts < ?", (int(minute_cut),))
        _set_meta(self.db, "minutes_from", max(minute_cut, _meta_float(self.db, "minutes_from", 0.0)))
        self.db.execute("DELETE FROM hours WHERE ts < ?", (int(now - r.hour),))
        self.db.execute("DELETE FROM process_days WHERE ts < ?", (int(now - r.hour),))
        _set_meta(self.db, "raw_from", max(raw_cut, _meta_float(self.db, "raw_from", 0.0)))
        # Connections, processes and executables: scans of whole tables, so once an hour.
        if now - _meta_float(self.db, "purged_at", 0.0) < 3600:
            return
        _set_meta(self.db, "purged_at", now)
        cut = now - r.hour
        self.db.execute("DELETE FROM connections WHERE last_seen < ?", (cut,))
        self.db.execute(
            "DELETE FROM processes WHERE first_seen < ? AND id NOT IN (SELECT process_id FROM connections)", (cut,)
        )
        self.db.execute("DELETE FROM exes WHERE id NOT IN (SELECT exe_id FROM processes WHERE exe_id IS NOT NULL)")
        self.db.execute("DELETE FROM names WHERE id NOT IN (SELECT name_id FROM connections WHERE name_id IS NOT NULL)")
        # Cached ids may name rows just deleted (and soon reused by new rows): look them up afresh.
        self._procs.clear()
        self._conns.clear()
        self._names.clear()
        self._exes.clear()
        self._last_seen.clear()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error, AttributeError):  # AttributeError: never opened
            close_db(self.db, self.path)
        self._lock.release()


DAY = 86400


def _ms(t: float | None) -> int | None:
    return None if t is None else round(t * 1000)


def roll_days(db: sqlite3.Connection, hours_to: float) -> None:
    """Sum whole UTC days of hourly rows per process into process_days (up to hours_to)."""
    days_to = _meta_float(db, "days_to", -1.0)
    if days_to < 0:
        first = db.execute("SELECT min(ts) FROM hours").fetchone()[0]
        days_to = (first if first is not None else hours_to) // DAY * DAY
        _set_meta(db, "days_to", days_to)
    target = hours_to // DAY * DAY
    if target > days_to:
        db.execute(
            "INSERT INTO process_days (ts, process_id, tx, rx)"
            " SELECT h.ts / 86400 * 86400, c.process_id, sum(h.tx), sum(h.rx) FROM hours h"
            " JOIN connections c ON c.id = h.conn_id WHERE h.ts >= ? AND h.ts < ? GROUP BY 1, 2 ORDER BY 1, 2"
            " ON CONFLICT (ts, process_id) DO UPDATE SET tx = tx + excluded.tx, rx = rx + excluded.rx",
            (int(days_to), int(target)),
        )
        _set_meta(db, "days_to", target)


class WriterLock:
    """One writer per database: an exclusive flock on `<db>.lock`, which holds the writer's pid.
    The kernel drops the lock when the process ends, however it ends."""

    def __init__(self, path: str) -> None:
        self.path = path + ".lock"
        with _errors(f"locking {path}"):
            os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o750, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(self.fd)
            raise WriterLocked(
                f"another sockscope daemon (pid {holder}) is writing {path}: only one may; "
                "stop it first, or give this one another --db"
            ) from None
        try:
            with _errors(f"locking {path}"):  # a full disk refuses even these few bytes
                os.ftruncate(self.fd, 0)
                os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        except StoreError:
            self.release()
            raise

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # drops the lock
            self.fd = -1


def open_writer(path: str, *, boot: str | None = None, log: Any = None) -> SqliteWriter:
    """Open the daemon's database; a corrupt file is moved aside and a new one started."""
    try:
        return SqliteWriter(path, boot=boot)
    except StoreCorrupt as exc:
        aside = f"{path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.replace(path + suffix, aside + suffix)
        if log is not None:
            log(f"{exc}; moved it aside to {aside} and started a new database")
        return SqliteWriter(path, boot=boot)


def writer_active(path: str) -> bool:
    """Whether a daemon holds the database's writer lock (WriterLock) now."""
    try:
        fd = os.open(path + ".lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: read the way that is safe beside a writer
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True
    finally:
        os.close(fd)  # drops the probe's own shared lock at once
    return False


def _quiet_file(path: str) -> bool:
    """No writer, and no write-ahead log holding rows not yet in the file (after a SIGKILL)."""
    try:
        wal = os.path.getsize(path + "-wal")
    except OSError:
        wal = 0
    return wal == 0 and not writer_active(path)


class SqliteReader(HistoryReader):
    """Read-only: works for any user who can read the file; never blocks the writer."""

    def __init__(self, path: str) -> None:
        try:
            os.stat(path)
            readable = os.access(path, os.R_OK)
        except FileNotFoundError:
            raise StoreError(f"{path}: no such database (is the daemon running? see `sockscope daemon`)") from None
        except PermissionError:
            readable = False  # a directory on the way is not searchable for this user
        if not readable:
            raise StoreError(
                f"{path}: permission denied: this user may not read the history (it holds command lines and "
                "addresses). Run as root, or give a group read access: `chgrp GROUP` on the database files "
                "with mode 0640 and a searchable directory, then add the user to GROUP (README: History)."
            )
        self.path = path
        self._immutable = _quiet_file(path)
        try:
            if self._immutable:
                # No writer and no WAL to read: open it as an unchanging file, which creates no
                # -wal/-shm beside it (a copy, a backup, a directory the user may write to).
                self.db = sqlite3.connect(f"file:{quote(path)}?mode=ro&immutable=1", uri=True, timeout=5.0)
            else:
                self.guard()
                self.db = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=5.0)
            version = _schema_version(self.db, path)
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc) and "unable to open" not in str(exc):
                raise StoreError(f"opening {path}: {exc}") from exc
            # No daemon has it open (no -wal/-shm files) and this user cannot create them:
            # read it as an unchanging file.
            with _errors(f"opening {path}"):
                self._immutable = True
                self.db = sqlite3.connect(f"file:{quote(path)}?mode=ro&immutable=1", uri=True, timeout=5.0)
                version = _schema_version(self.db, path)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"opening {path}: {exc}") from exc
        if _not_newer(version, path) < SCHEMA_VERSION:
            raise StoreError(f"{path}: schema {version} is older than {SCHEMA_VERSION}; start the daemon to migrate")

    def report(
        self, since: float, until: float, by: str, top: int | None = None, *, use_days: bool = True
    ) -> list[ReportRow]:
        if by not in GROUPINGS:
            raise ValueError(f"unknown grouping {by!r}; one of {', '.join(GROUPINGS)}")
        self.guard()
        with _errors("reading history"):
            bounds = resolution_bounds(self.db)
            segs = _plan(bounds, since, until)
            if by in _BY_PROCESS and use_days:
                segs = split_days(segs, bounds.get("days_to", 0.0))
                return _group_processes(self.db, self._per_process(segs), by, top)
            per_conn = self._per_connection(segs)
            return _group(self.db, per_conn, by, top)

    def connection_segments(self, since: float, until: float) -> list[Segment]:
        """Which resolution answers which part of [since, until) for a per-connection sum."""
        return _plan(resolution_bounds(self.db), since, until)

    def _per_connection(self, segs: list[tuple[str, float, float]]) -> str:
        """SQL for (conn_id, tx, rx) over the segments: a sub-select to aggregate further."""
        parts = []
        for res, lo, hi in segs:
            if res == "raw":
                parts.append(
                    f"SELECT conn_id, tx, rx FROM samples WHERE ts > {int(lo * 1000)} AND ts <= {int(hi * 1000)}"
                )
            else:
                table = "minutes" if res == "minute" else "hours"
                parts.append(f"SELECT conn_id, tx, rx FROM {table} WHERE ts >= {int(lo)} AND ts < {int(hi)}")
        if not parts:
            return "SELECT 0 AS conn_id, 0 AS tx, 0 AS rx WHERE 0"
        return " UNION ALL ".join(parts)

    def _per_process(self, segs: list[tuple[str, float, float]]) -> str:
        """SQL for (process_id, tx, rx) over the segments, days from process_days."""
        parts = []
        for res, lo, hi in segs:
            if res == "raw":
                lo_ms, hi_ms = int(lo * 1000), int(hi * 1000)
                parts.append(
                    "SELECT c.process_id AS process_id, s.tx AS tx, s.rx AS rx FROM samples s"
                    f" JOIN connections c ON c.id = s.conn_id WHERE s.ts > {lo_ms} AND s.ts <= {hi_ms}"
                )
            elif res == "day":
                parts.append(f"SELECT process_id, tx, rx FROM process_days WHERE ts >= {int(lo)} AND ts < {int(hi)}")
            else:
                table = "minutes" if res == "minute" else "hours"
                parts.append(
                    f"SELECT c.process_id AS process_id, r.tx AS tx, r.rx AS rx FROM {table} r"
                    f" JOIN connections c ON c.id = r.conn_id WHERE r.ts >= {int(lo)} AND r.ts < {int(hi)}"
                )
        if not parts:
            return "SELECT 0 AS process_id, 0 AS tx, 0 AS rx WHERE 0"
        return " UNION ALL ".join(parts)

    def guard(self) -> None:
        """Before each read: see frozen_shm (an immutable -shm would kill the process)."""
        if not self._immutable:
            check_shm(self.path, f"reading {self.path}")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self._immutable:
                self.db.close()
            else:
                close_db(self.db, self.path)


_BY_PROCESS = ("process", "exe", "user", "unit")
_BOUNDS = ("minutes_to", "hours_to", "raw_from", "minutes_from", "days_to")


def resolution_bounds(db: sqlite3.Connection) -> dict[str, float]:
    """Where each resolution's rows begin and end (see plan_segments); a key not yet written is absent."""
    sql = f"SELECT key, value FROM meta WHERE key IN ({','.join('?' * len(_BOUNDS))})"
    return {str(k): float(v) for k, v in db.execute(sql, _BOUNDS)}


def _plan(bounds: dict[str, float], since: float, until: float) -> list[Segment]:
    return plan_segments(
        since, until, bounds.get("minutes_to", 0.0), bounds.get("hours_to", 0.0), bounds.get("raw_from", 0.0),
        bounds.get("minutes_from", 0.0),
    )  # fmt: skip


def _group_processes(db: sqlite3.Connection, per_proc: str, by: str, top: int | None) -> list[ReportRow]:
    """Sum per process first (a few thousand rows at most), then by the grouping's columns."""
    cols, group = _GROUP_SQL[by]
    sql = (
        f"SELECT {cols}, sum(t.tx), sum(t.rx) FROM"
        f" (SELECT process_id, sum(tx) AS tx, sum(rx) AS rx FROM ({per_proc}) GROUP BY process_id) t"
        " JOIN processes p ON p.id = t.process_id LEFT JOIN exes e ON e.id = p.exe_id"
        f" GROUP BY {group} ORDER BY sum(t.tx) + sum(t.rx) DESC"
    )
    if top is not None and by != "exe":  # by exe: merged below, then cut
        sql += f" LIMIT {int(top)}"
    keys = _GROUP_KEYS[by]
    rows = [
        ReportRow(key=dict(zip(keys, row[: len(keys)], strict=True)), tx_bytes=int(row[-2]), rx_bytes=int(row[-1]))
        for row in db.execute(sql)
    ]
    return _merge_basenames(db, rows, top) if by == "exe" else rows


def _merge_basenames(db: sqlite3.Connection, rows: list[ReportRow], top: int | None) -> list[ReportRow]:
    """By exe: a process that had exited when it was seen carries only the kernel's basename of its
    executable ("curl"), a live one the full path ("/usr/bin/curl"). One binary is one row: a
    basename goes to the full path that ends in it, when exactly one known path does."""
    paths: dict[str, set[str]] = {}
    for (path,) in db.execute("SELECT path FROM exes WHERE instr(path, '/') > 0"):
        paths.setdefault(path.rsplit("/", 1)[1], set()).add(path)
    merged: dict[object, list[int]] = {}
    for r in rows:
        exe = r.key["exe"]
        if isinstance(exe, str) and "/" not in exe and len(paths.get(exe, ())) == 1:
            exe = next(iter(paths[exe]))
        tx_rx = merged.setdefault(exe, [0, 0])
        tx_rx[0] += r.tx_bytes
        tx_rx[1] += r.rx_bytes
    out = [ReportRow(key={"exe": exe}, tx_bytes=tx, rx_bytes=rx) for exe, (tx, rx) in merged.items()]
    out.sort(key=lambda r: r.tx_bytes + r.rx_bytes, reverse=True)
    return out if top is None else out[:top]


_GROUP_SQL: dict[str, tuple[str, str]] = {
    # by: (columns selected and grouped, the same as key names)
    "process": ("p.pid, p.comm, e.path, p.cmdline, p.user", "p.id"),
    "exe": ("coalesce(e.path, p.comm)", "coalesce(e.path, p.comm)"),
    "user": ("p.uid, p.user", "p.uid"),
    "unit": ("p.unit", "p.unit"),
    "remote": ("c.raddr", "c.raddr"),
    # the name the program resolved, else the address
    "host": ("coalesce(n.name, c.raddr)", "coalesce(n.name, c.raddr)"),
    "port": ("c.proto, CASE WHEN c.initiator = 'remote' THEN c.lport ELSE c.rport END",
             "c.proto, CASE WHEN c.initiator = 'remote' THEN c.lport ELSE c.rport END"),
    "connection": ("p.pid, p.comm, c.proto, c.laddr, c.lport, c.raddr, c.rport, n.name,"
                   " coalesce(c.opened / 1000.0, c.first_seen * 1.0), coalesce(c.closed / 1000.0, c.last_seen * 1.0)",
                   "c.id"),
}  # fmt: skip
# The report's fields, less what is computed here rather than selected.
_GROUP_KEYS = {by: tuple(f for f in fields if f != "duration") for by, fields in GROUP_FIELDS.items()}


def _group(db: sqlite3.Connection, per_conn: str, by: str, top: int | None) -> list[ReportRow]:
    cols, group = _GROUP_SQL[by]
    sql = (
        f"SELECT {cols}, sum(t.tx), sum(t.rx) FROM ({per_conn}) t"
        " JOIN connections c ON c.id = t.conn_id JOIN processes p ON p.id = c.process_id"
        " LEFT JOIN exes e ON e.id = p.exe_id LEFT JOIN names n ON n.id = c.name_id"
        f" GROUP BY {group} ORDER BY sum(t.tx) + sum(t.rx) DESC"
    )
    if top is not None and by != "exe":
        sql += f" LIMIT {int(top)}"
    out = []
    keys = _GROUP_KEYS[by]
    for row in db.execute(sql):
        key = dict(zip(keys, row[: len(keys)], strict=True))
        if by == "connection":
            start, end = key["start"], key["end"]
            key["duration"] = None if start is None or end is None else max(0.0, float(end) - float(start))
        out.append(ReportRow(key=key, tx_bytes=int(row[-2]), rx_bytes=int(row[-1])))
    return _merge_basenames(db, out, top) if by == "exe" else out


__all__ = ["SCHEMA_VERSION", "SqliteReader", "SqliteWriter", "StoreError", "open_writer"]
