"""Following the daemon's database: live reads of what was written since the last read, closes,
a vanished file, a busy writer; whether a daemon is writing; past ranges and one process's series
agreeing with reports. Written with SqliteWriter as the daemon writes; SQLite files under tmp_path."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from sockscope.collector.lifecycle import LifeEvent
from sockscope.collector.model import Counters, Interval
from sockscope.store.base import Retention, StoreError, plan_segments
from sockscope.store.follow import DatabaseSource, daemon_database_active, process_series, range_interval
from sockscope.store.sqlite import SCHEMA_VERSION, SqliteReader, SqliteWriter
from tests.store_samples import Conn, Proc, interval_of, life_of

H0 = 1_699_999_200  # a whole hour (and so a whole minute), Unix seconds
BOOT = "boot-a"
NETNS = 4026531840


CURL = Proc(101, "curl", "/usr/bin/curl", "curl -s https://x", 1000, "alice", "user@1000.service", NETNS)
DNSMASQ = Proc(202, "dnsmasq", None, "dnsmasq -k", 0, "root", "dnsmasq.service", None)
CONNS = {
    "tcp": Conn(CURL, "tcp", "10.0.0.1", 8443, "203.0.113.5", 51000, 11, "remote", NETNS),
    "tcp2": Conn(CURL, "tcp", "10.0.0.1", 40002, "198.51.100.9", 443, 33, "local", NETNS),
    "tcp3": Conn(CURL, "tcp", "10.0.0.1", 40003, "198.51.100.10", 443, 55, "local", NETNS),
    "udp_a": Conn(DNSMASQ, "udp", "0.0.0.0", 53, "10.0.0.7", 5353, 22, None, netns=0),
    # in a netns of its own and counting ICMP headers: both stored, unlike the common values
    "ping": Conn(DNSMASQ, "icmp", "10.0.0.1", None, "203.0.113.6", None, 44, None, 4026532000, "icmp-message"),
}


def _interval(
    ts: float,
    flows: dict[str, tuple[int, int]],
    length: float = 60.0,
    life: Iterable[LifeEvent] = (),
    unattributed: tuple[int, int] = (0, 0),
    dropped: tuple[int, int] = (0, 0),
    procs_by_name: dict[str, Proc] | None = None,
) -> Interval:
    return interval_of(CONNS, ts, flows, length, life, unattributed, dropped, procs_by_name)


def _life(event: str, name: str, start: float | None, end: float | None) -> LifeEvent:
    return life_of(CONNS[name], event, start, end, CONNS[name].initiator)


def _by_proc(iv: Interval) -> dict[tuple[int, str], tuple[int, int]]:
    return {(p.pid, p.comm): (p.tx_bytes, p.rx_bytes) for p in iv.processes}


def _by_conn(iv: Interval) -> dict[int, tuple[int, int]]:
    out = {c.cookie: (c.tx_bytes, c.rx_bytes) for p in iv.processes for c in p.connections}
    assert len(out) == sum(len(p.connections) for p in iv.processes)  # one row per connection
    return out


def _flows(ts: float, **flows: tuple[int, int]) -> Interval:
    return _interval(ts, dict(flows))


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "history.db")


# ---------------------------------------------------------------------------------------------------------------
# DatabaseSource


def test_first_read_after_start_returns_nothing_old(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_flows(H0 + 60, tcp=(10, 20)), _interval(H0 + 120, {"udp_a": (1, 2)}, unattributed=(5, 6))])
    src = DatabaseSource(db_path)
    src.start()
    try:
        assert src.path == db_path
        iv = src.read()
        assert (iv.processes, iv.lifecycle, iv.interval, iv.ts) == ([], [], 0.0, H0 + 120)
        assert (iv.unattributed_tx, iv.unattributed_rx, iv.counters) == (0, 0, Counters())
    finally:
        src.close()
        writer.close()


def test_new_writes_come_back_per_process_and_connection_with_their_facts(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_flows(H0 + 60, tcp=(10, 20), udp_a=(1, 2))])
    with DatabaseSource(db_path) as src:
        writer.write([_flows(H0 + 120, tcp=(100, 200), tcp2=(7, 0), udp_a=(3, 4), ping=(64, 64))])
        iv = src.read()
        assert (iv.ts, iv.interval) == (H0 + 120, 60.0)
        assert _by_proc(iv) == {(101, "curl"): (107, 200), (202, "dnsmasq"): (67, 68)}
        assert _by_conn(iv) == {11: (100, 200), 33: (7, 0), 22: (3, 4), 44: (64, 64)}
        curl, dnsmasq = iv.processes  # busiest first, as the collector orders them
        assert (curl.exe, curl.cmdline, curl.uid, curl.user, curl.ppid, curl.start_ns) == (
            "/usr/bin/curl", "curl -s https://x", 1000, "alice", 1, 101_000
        )  # fmt: skip
        assert (curl.cgroup, curl.unit, curl.container, curl.netns, curl.parent_comm) == (
            "/system.slice/user@1000.service", "user@1000.service", None, NETNS, "systemd"
        )  # fmt: skip
        assert (dnsmasq.exe, dnsmasq.netns) == (None, None)
        assert [c.cookie for c in curl.connections] == [11, 33]  # busiest first
        tcp = curl.connections[0]
        assert (tcp.proto, tcp.family, tcp.laddr, tcp.lport, tcp.raddr, tcp.rport, tcp.state) == (
            "tcp", 4, "10.0.0.1", 8443, "203.0.113.5", 51000, None
        )  # fmt: skip
        # netns NULL in the file: the process's; counts NULL: payload
        assert (tcp.netns, tcp.counts, tcp.initiator) == (NETNS, "payload", "remote")
        by_cookie = {c.cookie: c for c in dnsmasq.connections}
        assert (by_cookie[44].netns, by_cookie[44].counts, by_cookie[44].lport, by_cookie[44].rport) == (
            4026532000, "icmp-message", None, None
        )  # fmt: skip
        assert (by_cookie[22].netns, by_cookie[22].counts) == (0, "payload")
        # read again: nothing new, the same end
        again = src.read()
        assert (again.processes, again.interval, again.ts) == ([], 0.0, H0 + 120)
    writer.close()


def test_two_writes_between_reads_are_merged_and_interval_rows_summed(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_flows(H0 + 60, tcp=(1, 1))])
    with DatabaseSource(db_path) as src:
        writer.write(
            [_interval(H0 + 90, {"tcp": (10, 20), "udp_a": (1, 2)}, 30.0, unattributed=(5, 6), dropped=(1, 100))]
        )
        writer.write([_interval(H0 + 100, {"tcp": (30, 40)}, 10.0, unattributed=(7, 8), dropped=(2, 200))])
        writer.write(
            [_interval(H0 + 110, {}, 10.0, unattributed=(0, 1))]
        )  # nothing attributed: an interval all the same
        iv = src.read()
        assert (iv.ts, iv.interval) == (H0 + 110, 50.0)
        assert _by_proc(iv) == {(101, "curl"): (40, 60), (202, "dnsmasq"): (1, 2)}
        assert _by_conn(iv) == {11: (40, 60), 22: (1, 2)}
        assert (iv.unattributed_tx, iv.unattributed_rx) == (12, 15)
        assert iv.counters == Counters(dropped_events=3, dropped_bytes=300)
        writer.write([_interval(H0 + 120, {"udp_a": (9, 9)}, 10.0, unattributed=(1, 1))])
        iv = src.read()
        assert (iv.ts, iv.interval, _by_conn(iv), iv.unattributed_tx) == (H0 + 120, 10.0, {22: (9, 9)}, 1)
    writer.close()


def test_following_an_empty_database_from_its_first_interval(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    with DatabaseSource(db_path) as src:
        before = time.time()
        iv = src.read()
        assert iv.processes == [] and iv.interval == 0.0
        assert before <= iv.ts <= time.time()  # nothing written yet: no interval end to give
        writer.write([_flows(H0 + 60, tcp=(3, 4))])
        iv = src.read()
        assert (iv.ts, iv.interval, _by_conn(iv)) == (H0 + 60, 60.0, {11: (3, 4)})
    writer.close()


def test_samples_without_interval_rows_take_the_time_between_ends(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_flows(H0 + 60, tcp=(1, 1))])
    with DatabaseSource(db_path) as src:
        writer.write([_flows(H0 + 75, tcp=(5, 6))])
        writer.db.execute("DELETE FROM intervals WHERE ts = ?", ((H0 + 75) * 1000,))
        iv = src.read()
        assert (iv.ts, iv.interval, _by_conn(iv)) == (H0 + 75, 15.0, {11: (5, 6)})
    writer.close()


def test_closed_tcp_connections_give_tcp_close_events(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write(
        [
            _flows(H0 + 60, tcp=(10, 20), tcp2=(1, 1)),
            # tcp2 closed before the follower started: not reported
            _interval(H0 + 120, {"udp_a": (1, 1)}, life=[_life("tcp_close", "tcp2", H0 + 10, H0 + 100)]),
        ]
    )
    with DatabaseSource(db_path) as src:
        assert src.read().lifecycle == []
        # tcp moved bytes before start and none since: its close is reported, with no bytes seen
        writer.write([_interval(H0 + 180, {"udp_a": (1, 1)}, life=[_life("tcp_close", "tcp", None, H0 + 170.5)])])
        iv = src.read()
        [early] = iv.lifecycle
        assert (early.event, early.proto, early.cookie, early.pid, early.comm) == ("tcp_close", "tcp", 11, 101, "curl")
        assert (early.start, early.end, early.complete, early.tx_bytes, early.rx_bytes) == (
            None,
            H0 + 170.5,
            False,
            0,
            0,
        )
        assert (early.laddr, early.lport, early.raddr, early.rport, early.initiator, early.netns) == (
            "10.0.0.1", 8443, "203.0.113.5", 51000, "remote", NETNS
        )  # fmt: skip

        # a connection opened and closed while followed: its bytes since start, its start and end
        writer.write([_interval(H0 + 240, {"tcp3": (5, 6)}, life=[_life("tcp_open", "tcp3", H0 + 200.5, None)])])
        assert src.read().lifecycle == []  # opens are not reported
        writer.write([_flows(H0 + 300, tcp3=(7, 8))])
        # the close comes an interval after the kernel's event: before the window of the read that sees it
        writer.write([_interval(H0 + 360, {}, life=[_life("tcp_close", "tcp3", H0 + 200.5, H0 + 299.25)])])
        iv = src.read()
        [close] = iv.lifecycle
        assert (close.cookie, close.start, close.end, close.duration, close.complete) == (
            55, H0 + 200.5, H0 + 299.25, 98.75, True
        )  # fmt: skip
        assert (close.tx_bytes, close.rx_bytes, close.pid, close.comm, close.initiator) == (
            12,
            14,
            101,
            "curl",
            "local",
        )
        # reported once
        writer.write([_flows(H0 + 420, udp_a=(1, 1))])
        assert src.read().lifecycle == []
    writer.close()


def _move_aside(path: str, aside: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, aside + suffix)


def test_database_removed_raises_store_error_and_a_new_file_is_followed(db_path: str, tmp_path: Path) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_flows(H0 + 60, tcp=(1, 1))])
    src = DatabaseSource(db_path)
    with pytest.raises(RuntimeError, match="before start"):
        src.read()
    src.start()
    try:
        writer.write([_flows(H0 + 120, tcp=(2, 2))])
        writer.close()
        os.remove(db_path)
        for _ in range(2):  # and again: the UI keeps asking
            with pytest.raises(StoreError, match=r"history\.db: the database is gone"):
                src.read()
        # a daemon starts a new file there: followed from where the old one was read up to (H0 + 60)
        writer = SqliteWriter(db_path, boot=BOOT)
        writer.write([_flows(H0 + 60, udp_a=(5, 5)), _flows(H0 + 180, tcp2=(3, 4))])
        iv = src.read()
        assert (iv.ts, iv.interval, _by_conn(iv)) == (H0 + 180, 60.0, {33: (3, 4)})
        # moved aside with its -wal and -shm and a new one started, as open_writer does with a damaged file
        writer.close()
        _move_aside(db_path, str(tmp_path / "aside.db"))
        writer = SqliteWriter(db_path, boot=BOOT)
        writer.write([_flows(H0 + 240, tcp=(6, 7))])
        iv = src.read()
        assert (iv.ts, _by_conn(iv)) == (H0 + 240, {11: (6, 7)})
        writer.close()
        _move_aside(db_path, str(tmp_path / "aside2.db"))
        Path(db_path).write_bytes(bytes(range(256)) * 64)  # not a database
        with pytest.raises(StoreError, match=r"history\.db.*not a database"):
            src.read()
    finally:
        src.close()
        writer.close()
    with pytest.raises(StoreError, match="no such database"):
        DatabaseSource(str(tmp_path / "missing.db")).start()


def test_sqlite_failures_surface_as_store_errors(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_flows(H0 + 60, tcp=(1, 1))])
    src = DatabaseSource(db_path)
    src.start()
    try:
        assert src._reader is not None
        src._reader.db.close()  # what sqlite3 raises then is no StoreError of its own
        with pytest.raises(StoreError, match="closed database"):
            src.read()
    finally:
        src.close()
        writer.close()


@pytest.mark.wallclock  # a bound in wall-clock time
def test_reads_do_not_wait_for_a_writer_transaction(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_flows(H0 + 60, tcp=(1, 1))])
    cid = writer.db.execute("SELECT id FROM connections").fetchone()[0]
    with DatabaseSource(db_path) as src:
        writer.db.execute("BEGIN IMMEDIATE")
        writer.db.execute("INSERT INTO samples VALUES (?, ?, ?, ?)", ((H0 + 120) * 1000, cid, 10**9, 1))
        writer.db.execute("INSERT INTO intervals VALUES (?, 60.0, 0, 0, 0, 0)", ((H0 + 120) * 1000,))
        t0 = time.monotonic()
        iv = src.read()
        assert time.monotonic() - t0 < 0.2
        assert (iv.processes, iv.ts) == ([], H0 + 60)  # the half-written interval is not seen
        writer.db.execute("COMMIT")
        iv = src.read()
        assert (iv.ts, _by_conn(iv)) == (H0 + 120, {11: (10**9, 1)})
    writer.close()


def test_a_locked_database_reads_as_nothing_new_until_it_is_free(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_flows(H0 + 60, tcp=(1, 1))])
    writer.close()
    # WAL readers are refused only in rare moments (recovery, say); a rollback journal and an exclusive
    # lock refuse them every time, so the refusal can be tested.
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("PRAGMA journal_mode = DELETE")
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.db.execute("PRAGMA journal_mode = DELETE")
    with DatabaseSource(db_path) as src:
        writer.write([_flows(H0 + 120, tcp=(2, 3))])
        other.execute("BEGIN EXCLUSIVE")
        t0 = time.monotonic()
        iv = src.read()
        assert time.monotonic() - t0 < 2.0
        assert (iv.processes, iv.interval, iv.ts) == ([], 0.0, H0 + 60)
        other.execute("COMMIT")
        iv = src.read()
        assert (iv.ts, _by_conn(iv)) == (H0 + 120, {11: (2, 3)})
    other.close()
    writer.close()


# ---------------------------------------------------------------------------------------------------------------
# daemon_database_active


def test_daemon_database_active_when_fresh_not_when_stale(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    assert not daemon_database_active(db_path, now=H0)  # no interval written yet
    writer.write([_flows(H0 + 60, tcp=(1, 1))])
    assert daemon_database_active(db_path, now=H0 + 65)
    assert daemon_database_active(db_path, now=H0 + 70)
    assert not daemon_database_active(db_path, now=H0 + 70.5)
    assert not daemon_database_active(db_path, now=H0 + 600)
    assert daemon_database_active(db_path, within=600.0, now=H0 + 600)
    writer.write([_interval(time.time(), {})])  # an interval with nothing attributed still says "writing"
    assert daemon_database_active(db_path)
    writer.close()


def test_daemon_database_active_false_for_what_cannot_be_followed(db_path: str, tmp_path: Path) -> None:
    assert not daemon_database_active(str(tmp_path / "missing.db"))
    assert not os.path.exists(tmp_path / "missing.db")
    assert not daemon_database_active(str(tmp_path))  # a directory
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(bytes(range(256)) * 64)
    assert not daemon_database_active(str(garbage))
    old = tmp_path / "old.db"
    sqlite3.connect(old).execute("CREATE TABLE t (x)").connection.close()
    assert not daemon_database_active(str(old))

    writer = SqliteWriter(db_path, boot=BOOT)
    now = time.time()
    writer.write([_interval(now, {})])
    writer.close()
    assert daemon_database_active(db_path, now=now)
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.close()
    assert not daemon_database_active(db_path, now=now)  # written by a newer sockscope
    if os.geteuid() != 0:  # root reads whatever the mode bits say
        os.chmod(db_path, 0)
        assert not daemon_database_active(db_path, now=now)


# ---------------------------------------------------------------------------------------------------------------
# past ranges


def _ledger(writer: SqliteWriter) -> list[tuple[int, str, int, int]]:
    """2.5 hours of one-minute intervals from H0, written in batches as a daemon catching up would."""
    flows: list[tuple[int, str, int, int]] = []
    for k in range(150):
        ts = H0 + 60 * (k + 1)
        flows += [(ts, "tcp", 1000 + k, 5000 + 3 * k), (ts, "udp_a", 100 + k, 200)]
        if k % 10 == 0:
            flows += [(ts, "tcp2", 1, 2), (ts, "ping", 64, 64)]
    by_ts: dict[int, dict[str, tuple[int, int]]] = {}
    for ts, name, tx, rx in flows:
        by_ts.setdefault(ts, {})[name] = (tx, rx)
    ivs = [_interval(ts, f) for ts, f in sorted(by_ts.items())]
    for i in range(0, len(ivs), 50):
        writer.write(ivs[i : i + 50])
    return flows


def _expected(flows: list[tuple[int, str, int, int]], lo: float, hi: float) -> dict[int, tuple[int, int]]:
    """Per connection cookie: what the intervals ending in (lo, hi] carried."""
    out: dict[int, tuple[int, int]] = {}
    for ts, name, tx, rx in flows:
        if lo < ts <= hi:
            t, r = out.get(CONNS[name].cookie, (0, 0))
            out[CONNS[name].cookie] = (t + tx, r + rx)
    return out


def test_range_interval_totals_equal_report_totals_across_resolutions(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    flows = _ledger(writer)
    writer.maintain(H0 + 9020, Retention())
    tail = [(H0 + 9000 + 20 * j, "tcp", 7 * j, 11 * j) for j in range(1, 5)]
    for ts, _, tx, rx in tail:
        writer.write([_interval(ts, {"tcp": (tx, rx)}, 20.0, unattributed=(3, 4), dropped=(1, 10))])
    flows += tail
    reader = SqliteReader(db_path)
    try:
        meta = dict(reader.db.execute("SELECT key, value FROM meta").fetchall())
        plan = plan_segments(
            H0 + 30, H0 + 9070, float(meta["minutes_to"]), float(meta["hours_to"]), float(meta["raw_from"])
        )
        assert [res for res, _, _ in plan] == ["raw", "minute", "hour", "minute", "raw"]

        iv = range_interval(reader, H0 + 30, H0 + 9070)
        assert (iv.ts, iv.interval, iv.lifecycle) == (H0 + 9070, 9040.0, [])
        assert _by_conn(iv) == _expected(flows, H0 + 30, H0 + 9070)  # worked out from what was written
        assert (iv.unattributed_tx, iv.unattributed_rx, iv.counters) == (9, 12, Counters(3, 30))  # three tail rows

        for since, until in ((H0 + 30, H0 + 9070), (H0, H0 + 9080), (H0 + 3600, H0 + 7200), (H0 + 90.5, H0 + 9050)):
            iv = range_interval(reader, since, until)
            report = {
                (r.key["pid"], r.key["comm"]): (r.tx_bytes, r.rx_bytes) for r in reader.report(since, until, "process")
            }
            assert report and _by_proc(iv) == report, (since, until)
            by_conn = {(r.key["pid"], r.key["proto"], r.key["rport"]): (r.tx_bytes, r.rx_bytes)
                       for r in reader.report(since, until, "connection")}  # fmt: skip
            assert {
                (p.pid, c.proto, c.rport): (c.tx_bytes, c.rx_bytes) for p in iv.processes for c in p.connections
            } == by_conn
            for p in iv.processes:
                assert (p.tx_bytes, p.rx_bytes) == (
                    sum(c.tx_bytes for c in p.connections),
                    sum(c.rx_bytes for c in p.connections),
                )
        curl = next(p for p in range_interval(reader, H0, H0 + 3600).processes if p.comm == "curl")
        assert (curl.exe, curl.user, curl.start_ns, {c.cookie for c in curl.connections}) == (
            "/usr/bin/curl", "alice", 101_000, {11, 33}
        )  # fmt: skip
        assert range_interval(reader, H0 + 20000, H0 + 30000).processes == []
    finally:
        reader.close()
        writer.close()


def _series_db(db_path: str) -> tuple[SqliteWriter, list[tuple[int, str, int, int]]]:
    """Hourly rows alone before H0 + 3600, minute rows up to H0 + 7260, raw rows after."""
    writer = SqliteWriter(db_path, boot=BOOT)
    flows = _ledger(writer)
    writer.maintain(H0 + 9020, Retention(raw=1800, minute=5400))
    meta = dict(writer.db.execute("SELECT key, value FROM meta").fetchall())
    assert (float(meta["minutes_from"]), float(meta["raw_from"]), float(meta["hours_to"])) == (
        H0 + 3600, H0 + 7220, H0 + 7200
    )  # fmt: skip
    assert writer.db.execute("SELECT min(ts) FROM minutes").fetchone()[0] == H0 + 3600
    assert writer.db.execute("SELECT min(ts) FROM samples").fetchone()[0] == (H0 + 7260) * 1000
    return writer, flows


def _curl_minute(flows: list[tuple[int, str, int, int]], k: int) -> tuple[int, int]:
    """curl's bytes in the interval ending at H0 + 60 (k + 1), i.e. in minute H0 + 60 k."""
    got = [(tx, rx) for ts, name, tx, rx in flows if ts == H0 + 60 * (k + 1) and CONNS[name].proc is CURL]
    return sum(t for t, _ in got), sum(r for _, r in got)


def test_process_series_finest_rows_and_sums(db_path: str) -> None:
    writer, flows = _series_db(db_path)
    reader = SqliteReader(db_path)
    try:
        series = process_series(reader, H0, H0 + 9000, 60, pid=101, start_ns=101_000, comm="curl")
        hour0 = [_curl_minute(flows, k) for k in range(60)]
        expected = [(float(H0), sum(t for t, _ in hour0), sum(r for _, r in hour0))]
        expected += [(float(H0 + 60 * k), 0, 0) for k in range(1, 60)]  # the hour's row sits in its first bucket
        expected += [(float(H0 + 60 * k), *_curl_minute(flows, k)) for k in range(60, 150)]  # minutes, then raw
        assert series == expected
        [curl] = [r for r in reader.report(H0, H0 + 9000, "process") if r.key["comm"] == "curl"]
        assert (sum(t for _, t, _ in series), sum(r for _, _, r in series)) == (curl.tx_bytes, curl.rx_bytes)

        # aligned to the rows there: sums agree with reports, hour by hour and across resolutions
        for since, until, step in ((H0, H0 + 7200, 3600), (H0 + 3600, H0 + 9000, 600), (H0 + 7200, H0 + 9000, 20)):
            s = process_series(reader, since, until, step, pid=101, start_ns=101_000, comm="curl")
            assert len(s) == (until - since) // step and s[0][0] == since and s[-1][0] == until - step
            [r] = [r for r in reader.report(since, until, "process") if r.key["comm"] == "curl"]
            assert (sum(t for _, t, _ in s), sum(x for _, _, x in s)) == (r.tx_bytes, r.rx_bytes), (since, step)
    finally:
        reader.close()
        writer.close()


def test_process_series_places_coarse_rows_in_the_bucket_of_their_start(db_path: str) -> None:
    writer, flows = _series_db(db_path)
    reader = SqliteReader(db_path)
    try:
        # ten-second buckets across minute H0 + 7200 (a minute row) and the raw sample ending at H0 + 7320
        s = process_series(reader, H0 + 7200, H0 + 7320, 10, pid=101, start_ns=101_000, comm="curl")
        zeros = [(float(H0 + 7200 + 10 * i), 0, 0) for i in range(12)]
        expected = list(zeros)
        expected[0] = (float(H0 + 7200), *_curl_minute(flows, 120))  # the minute's start
        expected[11] = (float(H0 + 7310), *_curl_minute(flows, 121))  # the sample's last millisecond
        assert s == expected
        # ten-minute buckets over an hour kept only as an hourly row: all of it in the first
        s = process_series(reader, H0, H0 + 3600, 600, pid=101, start_ns=101_000, comm="curl")
        assert [b for b, _, _ in s] == [H0 + 600 * i for i in range(6)]
        assert s[0][1] == sum(_curl_minute(flows, k)[0] for k in range(60)) and s[1:] == [
            (float(H0 + 600 * i), 0, 0) for i in range(1, 6)
        ]
        # a ragged last bucket, an unknown process, bad arguments
        s = process_series(reader, H0 + 8940, H0 + 9000, 25, pid=101, start_ns=101_000, comm="curl")
        # the sample ending at H0 + 8940 is the minute before's; the one ending at H0 + 9000 goes in the last
        assert s == [(float(H0 + 8940), 0, 0), (float(H0 + 8965), 0, 0), (float(H0 + 8990), *_curl_minute(flows, 149))]
        assert process_series(reader, H0, H0 + 180, 60, pid=101, start_ns=101_001, comm="curl") == [
            (float(H0 + 60 * i), 0, 0) for i in range(3)
        ]
        assert process_series(reader, H0, H0, 60, pid=101, start_ns=101_000, comm="curl") == []
        with pytest.raises(ValueError, match="step"):
            process_series(reader, H0, H0 + 60, 0, pid=101, start_ns=101_000, comm="curl")
    finally:
        reader.close()
        writer.close()


def test_process_series_takes_the_newest_boot(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_flows(H0 + 60, tcp=(10, 20))])
    writer.close()
    writer = SqliteWriter(db_path, boot="boot-b")  # the same pid, start_ns and comm after a reboot
    writer.write([_flows(H0 + 120, tcp=(3, 4))])
    writer.close()
    reader = SqliteReader(db_path)
    try:
        assert process_series(reader, H0, H0 + 180, 60, pid=101, start_ns=101_000, comm="curl") == [
            (float(H0), 0, 0),
            (float(H0 + 60), 3, 4),
            (float(H0 + 120), 0, 0),
        ]
    finally:
        reader.close()


# ---------------------------------------------------------------------------------------------------------------
# names are data


NASTY = {
    "tcp": Proc(101, "\x1b[31mx", "/tmp/[b]x[/b]", "a\x1b]0;pwn\x07 b", 1000, "[i]alice", "u.service", None),
    "udp_a": Proc(202, "[red]x[/red]", None, "x \\xff\\xfe", 0, "root", "[link]", None),
    "tcp2": Proc(303, "bad\\xff", None, "", 0, "root", "x.service", None),  # the collector's escape for a bad byte
}


def test_names_with_markup_and_escapes_come_back_unchanged(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_interval(H0 + 60, {"tcp": (1, 1), "udp_a": (1, 1), "tcp2": (1, 1)}, procs_by_name=NASTY)])
    with DatabaseSource(db_path) as src:
        writer.write([_interval(H0 + 120, {"tcp": (5, 1), "udp_a": (4, 1), "tcp2": (3, 1)}, procs_by_name=NASTY)])
        # a name that is not UTF-8 at all, as another writer could leave it
        raw = sqlite3.connect(db_path, isolation_level=None)
        raw.execute("UPDATE processes SET comm = CAST(X'62ff0a' AS TEXT) WHERE pid = 303")
        raw.close()
        iv = src.read()
    writer.close()
    got = {p.pid: (p.comm, p.exe, p.cmdline, p.user, p.unit) for p in iv.processes}
    assert got[101] == ("\x1b[31mx", "/tmp/[b]x[/b]", "a\x1b]0;pwn\x07 b", "[i]alice", "u.service")
    assert got[202] == ("[red]x[/red]", None, "x \\xff\\xfe", "root", "[link]")
    bad = got[303][0]
    assert bad == "b\udcff\n" and bad.encode("utf-8", "surrogateescape") == b"b\xff\n"
    assert _by_proc(iv) == {(101, "\x1b[31mx"): (5, 1), (202, "[red]x[/red]"): (4, 1), (303, bad): (3, 1)}

    reader = SqliteReader(db_path)
    try:
        assert {p.comm for p in range_interval(reader, H0, H0 + 120).processes} == {"\x1b[31mx", "[red]x[/red]", bad}
        assert reader.db.text_factory is str  # the caller's connection is left as it was
        for pid, comm, tx in ((101, "\x1b[31mx", 5), (202, "[red]x[/red]", 4), (303, bad, 3)):
            s = process_series(reader, H0, H0 + 120, 60, pid=pid, start_ns=pid * 1000, comm=comm)
            assert s == [(float(H0), 1, 1), (float(H0 + 60), tx, 1)], comm
    finally:
        reader.close()
