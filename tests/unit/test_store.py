"""History storage: which resolution answers which part of a range, roll-ups, late writes, retention,
lifecycle columns, damaged or newer files, and a reader next to a busy writer. SQLite files under tmp_path."""

from __future__ import annotations

import glob
import itertools
import math
import os
import random
import sqlite3
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from sockscope.collector.lifecycle import LifeEvent
from sockscope.collector.model import ConnectionSample, Interval, ProcessSample
from sockscope.report_format import ReportRow
from sockscope.store.base import (
    GROUPINGS,
    Retention,
    SchemaTooNew,
    Segment,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
    plan_segments,
    split_days,
)
from sockscope.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteReader, SqliteWriter, open_writer
from tests.store_samples import Conn, Proc, interval_of, life_of

H0 = 1_699_999_200  # a whole hour (and so a whole minute), Unix seconds
BOOT = "boot-a"

# ---------------------------------------------------------------------------------------------------------------
# plan_segments


@pytest.mark.parametrize(
    ("since", "until", "minutes_to", "hours_to", "raw_from", "expected"),
    [
        # whole hours, all rolled up: hours alone
        (H0, H0 + 7200, H0 + 7200, H0 + 7200, 0, [("hour", H0, H0 + 7200)]),
        # ragged edges: raw, minutes up to the hour, hours, raw
        (
            H0 + 30,
            H0 + 7230,
            H0 + 9000,
            H0 + 7200,
            0,
            [
                ("raw", H0 + 30, H0 + 60),
                ("minute", H0 + 60, H0 + 3600),
                ("hour", H0 + 3600, H0 + 7200),
                ("raw", H0 + 7200, H0 + 7230),
            ],
        ),
        # minutes on both sides of the hours
        (
            H0 + 3000,
            H0 + 7500,
            H0 + 9000,
            H0 + 7200,
            0,
            [("minute", H0 + 3000, H0 + 3600), ("hour", H0 + 3600, H0 + 7200), ("minute", H0 + 7200, H0 + 7500)],
        ),
        # minutes rolled up only part of the way: raw after minutes_to
        (H0, H0 + 7200, H0 + 1800, 0, 0, [("minute", H0, H0 + 1800), ("raw", H0 + 1800, H0 + 7200)]),
        # hours rolled up only part of the way: minutes after hours_to
        (H0, H0 + 7200, H0 + 7200, H0 + 3600, 0, [("hour", H0, H0 + 3600), ("minute", H0 + 3600, H0 + 7200)]),
        # an hour's worth that is not a whole hour: minutes
        (H0 + 1800, H0 + 5400, H0 + 9000, H0 + 7200, 0, [("minute", H0 + 1800, H0 + 5400)]),
        # inside one minute: raw only
        (H0 + 10, H0 + 50, H0 + 9000, H0 + 7200, 0, [("raw", H0 + 10, H0 + 50)]),
        # nothing rolled up yet
        (H0 + 10, H0 + 7300, 0, 0, 0, [("raw", H0 + 10, H0 + 7300)]),
        # since older than the raw rows: widened to its minute, then hours
        (H0 + 30, H0 + 7200, H0 + 7200, H0 + 7200, H0 + 100, [("hour", H0, H0 + 7200)]),
        (
            H0 + 90.5,
            H0 + 200,
            H0 + 9000,
            H0 + 7200,
            H0 + 1000,
            [("minute", H0 + 60, H0 + 180), ("raw", H0 + 180, H0 + 200)],
        ),
        # since older than the raw rows, inside one minute: widened, still raw
        (H0 + 30, H0 + 50, H0 + 9000, H0 + 7200, H0 + 1000, [("raw", H0, H0 + 50)]),
        # since newer than raw_from: not widened
        (H0 + 30, H0 + 90, H0 + 9000, H0 + 7200, H0 + 10, [("raw", H0 + 30, H0 + 90)]),
        # empty ranges
        (H0 + 10, H0 + 10, H0 + 9000, H0 + 7200, 0, []),
        (H0 + 10, H0, H0 + 9000, H0 + 7200, 0, []),
    ],
)
def test_plan_segments_table(
    since: float, until: float, minutes_to: float, hours_to: float, raw_from: float, expected: list[Segment]
) -> None:
    segs = plan_segments(since, until, minutes_to, hours_to, raw_from)
    assert segs == expected
    _check_plan(segs, since, until, minutes_to, hours_to, raw_from)


def _check_plan(
    segs: list[Segment], since: float, until: float, minutes_to: float, hours_to: float, raw_from: float
) -> None:
    if until <= since:
        assert segs == []
        return
    start = math.floor(since / 60) * 60 if since < raw_from else since
    assert segs, (since, until)
    assert segs[0][1] == start
    assert segs[-1][2] == until
    for (_, _, hi), (_, lo, _) in itertools.pairwise(segs):
        assert hi == lo  # contiguous, so no gap and no overlap
    for a, b in itertools.pairwise(segs):
        assert a[0] != b[0]  # no two pieces that could have been one
    for res, lo, hi in segs:
        assert lo < hi
        assert res in ("raw", "minute", "hour")
        if res == "minute":
            assert lo % 60 == 0 and hi % 60 == 0 and hi <= minutes_to
        if res == "hour":
            assert lo % 3600 == 0 and hi % 3600 == 0 and hi <= hours_to
    if hours_to <= minutes_to:  # as the writer keeps them: the coarsest rows that exist are used
        for h in range(math.ceil(start / 3600) * 3600, min(math.floor(until / 3600) * 3600, int(hours_to)), 3600):
            assert any(res == "hour" and lo <= h < hi for res, lo, hi in segs), (h, segs)
        for m in range(math.ceil(start / 60) * 60, min(math.floor(until / 60) * 60, int(minutes_to)), 60):
            assert any(res in ("minute", "hour") and lo <= m < hi for res, lo, hi in segs), (m, segs)


def test_plan_segments_properties_over_many_ranges() -> None:
    rng = random.Random(20240607)
    span = 6 * 3600

    def moment() -> float:
        kind = rng.randrange(4)
        if kind == 0:
            return H0 + rng.randrange(0, span // 3600 + 1) * 3600
        if kind == 1:
            return H0 + rng.randrange(0, span // 60 + 1) * 60
        if kind == 2:
            return H0 + rng.randrange(0, span + 1)
        return H0 + rng.uniform(0, span)

    def length() -> float:
        return rng.choice([rng.randrange(1, 4) * 3600, rng.randrange(1, 200) * 60, rng.uniform(0.001, span)])

    checked = 0
    used: dict[str, int] = {"raw": 0, "minute": 0, "hour": 0}
    for _ in range(3000):
        since = moment()
        until = since + length() if rng.random() < 0.9 else since - rng.choice([0, 1, 3600])
        minutes_to = rng.choice([0, H0 + rng.randrange(0, span // 60 + 1) * 60, H0 + 2 * span])
        hours_to = rng.choice([0, minutes_to // 3600 * 3600, H0 + rng.randrange(0, span // 3600 + 1) * 3600])
        hours_to = min(hours_to, minutes_to // 3600 * 3600) if rng.random() < 0.8 else hours_to
        raw_from = rng.choice([0.0, moment(), float(minutes_to)])
        segs = plan_segments(since, until, minutes_to, hours_to, raw_from)
        _check_plan(segs, since, until, minutes_to, hours_to, raw_from)
        checked += bool(segs)
        for res, _, _ in segs:
            used[res] += 1
    assert checked > 2500
    assert min(used.values()) > 300, used


# ---------------------------------------------------------------------------------------------------------------
# hand-built intervals


CURL = Proc(101, "curl", "/usr/bin/curl", "curl -s https://x", 1000, "alice", "user@1000.service")
DNSMASQ = Proc(202, "dnsmasq", None, "dnsmasq -k", 0, "root", "dnsmasq.service")
CONNS = {
    # a TCP connection the peer opened, so its port is the local one
    "tcp": Conn(CURL, "tcp", "10.0.0.1", 8443, "203.0.113.5", 51000, 11, "remote", name="api.example.com"),
    # an unconnected UDP socket talking to two peers (same address, two ports)
    "udp_a": Conn(DNSMASQ, "udp", "0.0.0.0", 53, "10.0.0.7", 5353, 22, None),
    "udp_b": Conn(DNSMASQ, "udp", "0.0.0.0", 53, "10.0.0.7", 5354, 22, None),
    # another TCP connection of curl's, for lifecycle tests
    "tcp2": Conn(CURL, "tcp", "10.0.0.1", 40002, "198.51.100.9", 443, 33, "local"),
}

Flow = tuple[int, str, int, int]  # (ts, connection name, tx, rx)


def _interval(
    ts: float, flows: dict[str, tuple[int, int]], length: float = 60.0, life: Iterable[LifeEvent] = ()
) -> Interval:
    return interval_of(CONNS, ts, flows, length, life)


def _ledger() -> list[Flow]:
    """2.5 hours of one-minute intervals; each ends on a whole minute, the edge case of minute membership."""
    out: list[Flow] = []
    for k in range(150):
        ts = H0 + 60 * (k + 1)
        out.append((ts, "tcp", 1000 + k, 5000 + 3 * k))
        out.append((ts, "udp_a", 100 + k, 200))
        out.append((ts, "udp_b", 7, 11 + k) if k % 3 == 0 else (ts, "udp_b", 0, 0))
    return out


def _intervals(flows: list[Flow]) -> list[Interval]:
    by_ts: dict[int, dict[str, tuple[int, int]]] = {}
    for ts, name, tx, rx in flows:
        by_ts.setdefault(ts, {})[name] = (tx, rx)
    return [_interval(ts, f) for ts, f in sorted(by_ts.items())]


def _expected(flows: list[Flow], lo: float, hi: float) -> dict[str, tuple[int, int]]:
    """What a range (lo, hi] of interval ends holds per connection, worked out from what was written."""
    out: dict[str, tuple[int, int]] = {}
    for ts, name, tx, rx in flows:
        if lo < ts <= hi and (tx or rx):
            t, r = out.get(name, (0, 0))
            out[name] = (t + tx, r + rx)
    return out


def _write(writer: SqliteWriter, flows: list[Flow], batch: int = 50) -> None:
    ivs = _intervals(flows)
    for i in range(0, len(ivs), batch):
        writer.write(ivs[i : i + batch])


def _conn_names(db: sqlite3.Connection) -> dict[int, str]:
    names = {(c.proto, c.raddr, c.rport): name for name, c in CONNS.items()}
    return {
        cid: names[(proto, raddr, rport)]
        for cid, proto, raddr, rport in db.execute("SELECT id, proto, raddr, rport FROM connections")
    }


def _totals(reader: SqliteReader, segs: list[Segment]) -> dict[str, tuple[int, int]]:
    """Per connection over explicit segments, as report() sums them."""
    names = _conn_names(reader.db)
    sql = f"SELECT conn_id, sum(tx), sum(rx) FROM ({reader._per_connection(segs)}) GROUP BY conn_id"
    return {names[cid]: (tx, rx) for cid, tx, rx in reader.db.execute(sql)}


def _by_conn(rows: list[ReportRow]) -> dict[str, tuple[int, int]]:
    names = {(c.proto, c.raddr, c.rport): name for name, c in CONNS.items()}
    return {names[(r.key["proto"], r.key["raddr"], r.key["rport"])]: (r.tx_bytes, r.rx_bytes) for r in rows}  # type: ignore[index]


def _count(db: sqlite3.Connection, table: str) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _meta(db: sqlite3.Connection, key: str) -> str:
    return str(db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "history.db")


@pytest.fixture
def filled(db_path: str) -> Iterator[tuple[SqliteWriter, list[Flow]]]:
    """The 2.5-hour ledger written and maintained an hour after its last interval."""
    writer = SqliteWriter(db_path, boot=BOOT)
    flows = _ledger()
    _write(writer, flows)
    writer.maintain(H0 + 9000 + 3600, Retention())
    yield writer, flows
    writer.close()


# ---------------------------------------------------------------------------------------------------------------
# a new file


def test_new_database_mode_schema_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "state" / "history.db"
    old = os.umask(0o022)
    try:
        writer = SqliteWriter(str(path), boot=BOOT)
        writer.write([_interval(H0 + 60, {"tcp": (1, 2)})])
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
        wal = Path(str(path) + "-wal")
        assert wal.exists()
        assert stat.S_IMODE(wal.stat().st_mode) == 0o640  # the WAL holds the same command lines
        assert _meta(writer.db, "schema_version") == "3" == str(SCHEMA_VERSION)
        assert writer.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with sqlite3.connect(path) as other:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent, not per connection
            tables = {r[0] for r in other.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"meta", "exes", "processes", "connections", "samples", "minutes", "hours", "intervals"} <= tables
    finally:
        writer.close()


def test_reopening_keeps_data_and_schema(db_path: str) -> None:
    w = SqliteWriter(db_path, boot=BOOT)
    w.write([_interval(H0 + 60, {"tcp": (5, 6)})])
    w.close()
    w = SqliteWriter(db_path, boot=BOOT)
    w.write([_interval(H0 + 120, {"tcp": (7, 8)})])
    w.close()
    r = SqliteReader(db_path)
    try:
        assert _meta(r.db, "schema_version") == str(SCHEMA_VERSION)
        assert _count(r.db, "connections") == 1  # the same connection, found again after reopening
        assert _by_conn(r.report(H0, H0 + 120, "connection")) == {"tcp": (12, 14)}
    finally:
        r.close()


# ---------------------------------------------------------------------------------------------------------------
# roll-ups and reports


def test_rollups_counts_and_meta(filled: tuple[SqliteWriter, list[Flow]]) -> None:
    writer, _ = filled
    db = writer.db
    assert _meta(db, "minutes_to") == str(H0 + 12540)  # floor((now - 5) / 60) * 60
    assert _meta(db, "hours_to") == str(H0 + 10800)
    assert _count(db, "samples") == 150 + 150 + 50  # zero flows are not stored
    assert _count(db, "minutes") == 350  # one sample per minute per connection
    assert _count(db, "hours") == 9
    assert _count(db, "intervals") == 150
    # the sample ending at H0 + 60 (covering (H0, H0 + 60]) belongs to minute H0, not H0 + 60
    assert db.execute("SELECT min(ts), max(ts) FROM minutes").fetchone() == (H0, H0 + 8940)
    assert sorted(r[0] for r in db.execute("SELECT DISTINCT ts FROM hours")) == [H0, H0 + 3600, H0 + 7200]
    # the last hour holds the 30 minutes H0 + 7200 .. H0 + 8940 of tcp: k = 120 .. 149
    tcp_id = {v: k for k, v in _conn_names(db).items()}["tcp"]
    row = db.execute("SELECT tx, rx FROM hours WHERE ts = ? AND conn_id = ?", (H0 + 7200, tcp_id)).fetchone()
    assert row == (sum(1000 + k for k in range(120, 150)), sum(5000 + 3 * k for k in range(120, 150)))


@pytest.mark.parametrize(("lo", "hi"), [(H0, H0 + 3600), (H0, H0 + 7200), (H0 + 3600, H0 + 10800), (H0, H0 + 10800)])
def test_every_resolution_gives_the_same_totals(
    filled: tuple[SqliteWriter, list[Flow]], db_path: str, lo: int, hi: int
) -> None:
    _, flows = filled
    reader = SqliteReader(db_path)
    try:
        raw = _totals(reader, [("raw", lo, hi)])
        minute = _totals(reader, [("minute", lo, hi)])
        hour = _totals(reader, [("hour", lo, hi)])
        expected = _expected(flows, lo, hi)
        assert raw == minute == hour == expected
        assert _by_conn(reader.report(lo, hi, "connection")) == expected
    finally:
        reader.close()


def test_first_hour_exact_numbers(filled: tuple[SqliteWriter, list[Flow]], db_path: str) -> None:
    reader = SqliteReader(db_path)
    try:
        hour = _totals(reader, [("hour", H0, H0 + 3600)])
        # k = 0 .. 59: tx 1000 + k, rx 5000 + 3k; udp_a tx 100 + k, rx 200; udp_b on k % 3 == 0: tx 7, rx 11 + k
        assert hour == {"tcp": (61770, 305310), "udp_a": (7770, 12000), "udp_b": (140, 790)}
    finally:
        reader.close()


def test_ragged_range_mixes_resolutions_exactly(filled: tuple[SqliteWriter, list[Flow]], db_path: str) -> None:
    _, flows = filled
    lo, hi = H0 + 90, H0 + 7290
    reader = SqliteReader(db_path)
    try:
        segs = plan_segments(lo, hi, H0 + 12540, H0 + 10800, 0)
        assert [s[0] for s in segs] == ["raw", "minute", "hour", "minute", "raw"]
        expected = _expected(flows, lo, hi)
        assert expected["tcp"] == (sum(1000 + k for k in range(1, 121)), sum(5000 + 3 * k for k in range(1, 121)))
        assert _by_conn(reader.report(lo, hi, "connection")) == expected
        assert _totals(reader, [("raw", lo, hi)]) == expected
    finally:
        reader.close()


def _sum(flows: list[Flow], lo: float, hi: float, names: Iterable[str]) -> tuple[int, int]:
    e = _expected(flows, lo, hi)
    picked = [e[n] for n in names if n in e]
    return sum(t for t, _ in picked), sum(r for _, r in picked)


def test_report_every_grouping(filled: tuple[SqliteWriter, list[Flow]], db_path: str) -> None:
    _, flows = filled
    lo, hi = H0, H0 + 7200
    tcp = _sum(flows, lo, hi, ["tcp"])
    udp_a = _sum(flows, lo, hi, ["udp_a"])
    udp_b = _sum(flows, lo, hi, ["udp_b"])
    dns = _sum(flows, lo, hi, ["udp_a", "udp_b"])
    curl_key = {"pid": 101, "comm": "curl", "exe": "/usr/bin/curl", "cmdline": "curl -s https://x", "user": "alice"}
    dns_key = {"pid": 202, "comm": "dnsmasq", "exe": None, "cmdline": "dnsmasq -k", "user": "root"}
    expected: dict[str, list[tuple[dict[str, object], tuple[int, int]]]] = {
        "process": [(curl_key, tcp), (dns_key, dns)],
        "exe": [({"exe": "/usr/bin/curl"}, tcp), ({"exe": "dnsmasq"}, dns)],  # no exe: the comm stands in
        "user": [({"uid": 1000, "user": "alice"}, tcp), ({"uid": 0, "user": "root"}, dns)],
        "unit": [({"unit": "user@1000.service"}, tcp), ({"unit": "dnsmasq.service"}, dns)],
        "remote": [({"raddr": "203.0.113.5"}, tcp), ({"raddr": "10.0.0.7"}, dns)],  # both UDP peers share it
        # the name the program resolved, else the address
        "host": [({"host": "api.example.com"}, tcp), ({"host": "10.0.0.7"}, dns)],
        # the peer opened the TCP connection: its port is ours; the UDP peers' ports are theirs
        "port": [
            ({"proto": "tcp", "port": 8443}, tcp),
            ({"proto": "udp", "port": 5353}, udp_a),
            ({"proto": "udp", "port": 5354}, udp_b),
        ],
        "connection": [
            (
                {
                    "pid": 101,
                    "comm": "curl",
                    "proto": "tcp",
                    "laddr": "10.0.0.1",
                    "lport": 8443,
                    "raddr": "203.0.113.5",
                    "rport": 51000,
                    "name": "api.example.com",
                    "start": H0 + 60,
                    "end": H0 + 9000,
                    "duration": 8940.0,
                },
                tcp,
            ),
            (
                {
                    "pid": 202,
                    "comm": "dnsmasq",
                    "proto": "udp",
                    "laddr": "0.0.0.0",
                    "lport": 53,
                    "raddr": "10.0.0.7",
                    "rport": 5353,
                    "name": None,
                    "start": H0 + 60,
                    "end": H0 + 9000,
                    "duration": 8940.0,
                },
                udp_a,
            ),
            (
                # last moved bytes at k = 147: intervals without bytes do not count as seen
                {
                    "pid": 202,
                    "comm": "dnsmasq",
                    "proto": "udp",
                    "laddr": "0.0.0.0",
                    "lport": 53,
                    "raddr": "10.0.0.7",
                    "rport": 5354,
                    "name": None,
                    "start": H0 + 60,
                    "end": H0 + 8880,
                    "duration": 8820.0,
                },
                udp_b,
            ),
        ],
    }
    assert set(expected) == set(GROUPINGS)
    assert tcp[0] + tcp[1] > udp_a[0] + udp_a[1] > udp_b[0] + udp_b[1]  # so the order is fixed
    reader = SqliteReader(db_path)
    try:
        for by, want in expected.items():
            rows = reader.report(lo, hi, by)
            assert [(r.key, (r.tx_bytes, r.rx_bytes)) for r in rows] == want, by
            totals = [r.total_bytes for r in rows]
            assert totals == sorted(totals, reverse=True)
            assert sum(totals) == sum(tcp) + sum(dns)
            assert reader.report(lo, hi, by, top=1) == rows[:1]
            assert reader.report(lo, hi, by, top=2) == rows[:2]
            assert reader.report(lo, hi, by, top=0) == []
        with pytest.raises(ValueError, match="unknown grouping 'pid'"):
            reader.report(lo, hi, "pid")
        assert reader.report(hi, lo, "process") == []
        assert reader.report(H0 - 86400, H0, "process") == []
    finally:
        reader.close()


def test_report_before_any_maintain_answers_from_raw(db_path: str) -> None:
    flows = _ledger()[:30]
    writer = SqliteWriter(db_path, boot=BOOT)
    _write(writer, flows)
    reader = SqliteReader(db_path)
    try:
        assert _count(reader.db, "minutes") == 0
        assert _by_conn(reader.report(H0, H0 + 600, "connection")) == _expected(flows, H0, H0 + 600)
    finally:
        reader.close()
        writer.close()


# ---------------------------------------------------------------------------------------------------------------
# late writes


def test_late_writes_reach_minutes_and_hours(filled: tuple[SqliteWriter, list[Flow]], db_path: str) -> None:
    writer, flows = filled
    late: list[Flow] = [
        (H0 + 1830, "tcp", 77777, 88888),  # in a rolled-up minute of a rolled-up hour, a new ts
        (H0 + 1860, "udp_a", 5, 6),  # the same ts as a stored sample: added to it
        (H0 + 11000, "udp_b", 300, 400),  # minute H0 + 10980 rolled up, its hour not yet
        (H0 + 12540, "tcp", 9, 10),  # exactly at minutes_to: belongs to the rolled-up minute H0 + 12480
    ]
    writer.write([_interval(ts, {name: (tx, rx)}, length=30.0) for ts, name, tx, rx in late])
    flows = flows + late
    reader = SqliteReader(db_path)
    try:
        for lo, hi in ((H0, H0 + 3600), (H0, H0 + 10800)):
            expected = _expected(flows, lo, hi)
            assert expected["tcp"][0] == _expected(_ledger(), lo, hi)["tcp"][0] + 77777
            for res in ("raw", "minute", "hour"):
                assert _totals(reader, [(res, lo, hi)]) == expected, (res, lo, hi)
            assert _by_conn(reader.report(lo, hi, "connection")) == expected
        assert _totals(reader, [("minute", H0 + 10800, H0 + 12600)]) == {"udp_b": (300, 400), "tcp": (9, 10)}
        assert _totals(reader, [("minute", H0 + 12480, H0 + 12540)]) == {"tcp": (9, 10)}
        assert _totals(reader, [("hour", H0 + 10800, H0 + 14400)]) == {}  # that hour is not rolled up yet
        # the next roll-up takes the hour from the minutes, counting the late rows once
        writer.maintain(H0 + 16200, Retention())
        assert _meta(writer.db, "hours_to") == str(H0 + 14400)
        want = {"udp_b": (300, 400), "tcp": (9, 10)}
        for res in ("raw", "minute", "hour"):
            assert _totals(reader, [(res, H0 + 10800, H0 + 14400)]) == want, res
        assert _by_conn(reader.report(H0, H0 + 14400, "connection")) == _expected(flows, H0, H0 + 14400)
    finally:
        reader.close()


# ---------------------------------------------------------------------------------------------------------------
# retention


def test_retention_drops_old_rows_and_coarser_tables_answer(db_path: str) -> None:
    flows = _ledger()
    writer = SqliteWriter(db_path, boot=BOOT)
    _write(writer, flows)
    short = Retention(raw=120, minute=7200, hour=86400)
    writer.maintain(H0 + 12600, short)
    db = writer.db
    assert float(_meta(db, "raw_from")) == H0 + 12480
    assert _count(db, "samples") == 0  # all older than now - 120 and all rolled up
    # now - 7200 = H0 + 5400, cut on the whole hour below so old edges can widen to hours
    assert db.execute("SELECT min(ts) FROM minutes").fetchone()[0] == H0 + 3600
    assert float(_meta(db, "minutes_from")) == H0 + 3600
    assert _count(db, "minutes") == 90 + 90 + 30  # k = 60 .. 149
    assert _count(db, "hours") == 9
    reader = SqliteReader(db_path)
    try:
        assert _by_conn(reader.report(H0, H0 + 3600, "connection")) == _expected(flows, H0, H0 + 3600)  # hours
        assert _by_conn(reader.report(H0 + 5400, H0 + 7200, "connection")) == _expected(flows, H0 + 5400, H0 + 7200)
        assert _by_conn(reader.report(H0, H0 + 10800, "connection")) == _expected(flows, H0, H0 + 10800)
        # since is older than the raw rows: widened to its minute, answered from minutes
        assert _by_conn(reader.report(H0 + 5430, H0 + 6000, "connection")) == _expected(flows, H0 + 5400, H0 + 6000)

        # a day later: hours older than now - 86400 go, every minute goes (all rolled into hours)
        writer.maintain(H0 + 7200 + 86400, short)
        assert sorted(r[0] for r in db.execute("SELECT DISTINCT ts FROM hours")) == [H0 + 7200]
        assert _count(db, "hours") == 3
        assert _count(db, "minutes") == 0
        assert _count(db, "connections") == 3  # all seen after the cut
        assert _count(db, "intervals") == 0  # kept as long as raw rows
        assert reader.report(H0, H0 + 3600, "process") == []
        assert _by_conn(reader.report(H0 + 7200, H0 + 10800, "connection")) == _expected(flows, H0 + 7200, H0 + 10800)
        # later still: connections not seen since the cut, their processes and executables go too
        writer.maintain(H0 + 9000 + 86400 + 3600, short)
        assert (_count(db, "hours"), _count(db, "connections"), _count(db, "processes"), _count(db, "exes")) == (
            0,
            0,
            0,
            0,
        )
    finally:
        reader.close()
        writer.close()


def test_retention_never_drops_rows_not_rolled_up(db_path: str) -> None:
    flows = [*_ledger(), (H0 + 9030, "tcp", 13, 17)]
    writer = SqliteWriter(db_path, boot=BOOT)
    _write(writer, flows)
    tiny = Retention(raw=1, minute=60, hour=86400)
    writer.maintain(H0 + 9030, tiny)
    db = writer.db
    assert _meta(db, "minutes_to") == str(H0 + 9000)
    assert _meta(db, "hours_to") == str(H0 + 7200)
    # samples: now - 1 would take everything, but minute H0 + 9000 is not rolled up; ts == minutes_to stays too
    assert sorted(db.execute("SELECT ts, tx FROM samples")) == [
        ((H0 + 9000) * 1000, 249),
        ((H0 + 9000) * 1000, 1149),
        ((H0 + 9030) * 1000, 13),
    ]
    # minutes: now - 60 would take nearly all, but the hour from H0 + 7200 is not rolled up
    assert db.execute("SELECT min(ts), count(*) FROM minutes").fetchone() == (H0 + 7200, 30 + 30 + 10)
    assert _count(db, "hours") == 6
    reader = SqliteReader(db_path)
    try:
        everything = _expected(flows, H0, H0 + 9060)
        assert everything["tcp"][0] == sum(1000 + k for k in range(150)) + 13
        assert _by_conn(reader.report(H0, H0 + 9060, "connection")) == everything
        writer.maintain(H0 + 9100, tiny)
        assert _count(db, "samples") == 0
        assert _by_conn(reader.report(H0, H0 + 9060, "connection")) == everything
    finally:
        reader.close()
        writer.close()


# ---------------------------------------------------------------------------------------------------------------
# lifecycle


def _life(event: str, name: str, start: float | None, end: float | None, initiator: str | None) -> LifeEvent:
    return life_of(CONNS[name], event, start, end, initiator)


def test_lifecycle_events_set_opened_and_closed(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write(
        [
            _interval(
                H0 + 60,
                {"tcp": (10, 20), "udp_a": (1, 2)},
                life=[_life("tcp_open", "tcp", H0 + 12.5, None, "remote")],
            ),
            _interval(
                H0 + 120,
                {"tcp": (30, 40), "tcp2": (50, 60), "udp_a": (3, 4)},
                life=[
                    _life("tcp_close", "tcp", H0 + 12.5, H0 + 100.25, None),
                    # opened before we saw it: the close event brings the start and who opened it
                    _life("tcp_close", "tcp2", H0 + 50, H0 + 110, "local"),
                    _life("udp_end", "udp_a", H0 + 60, H0 + 120, None),  # UDP flows keep first/last seen
                ],
            ),
        ]
    )
    rows = list(
        writer.db.execute(
            "SELECT cookie, raddr, opened / 1e3, closed / 1e3, initiator FROM connections ORDER BY cookie"
        )
    )
    assert rows == [
        (11, "203.0.113.5", H0 + 12.5, H0 + 100.25, "remote"),
        (22, "10.0.0.7", None, None, None),
        (33, "198.51.100.9", H0 + 50, H0 + 110, "local"),
    ]
    reader = SqliteReader(db_path)
    try:
        got = {
            (r.key["proto"], r.key["rport"]): (r.key["start"], r.key["end"], r.key["duration"], r.tx_bytes, r.rx_bytes)
            for r in reader.report(H0, H0 + 180, "connection")
        }
        assert got == {
            ("tcp", 51000): (H0 + 12.5, H0 + 100.25, 87.75, 40, 60),
            ("tcp", 443): (H0 + 50, H0 + 110, 60.0, 50, 60),
            ("udp", 5353): (H0 + 60, H0 + 120, 60.0, 4, 6),
        }
    finally:
        reader.close()
        writer.close()


def test_lifecycle_of_another_boot_is_left_alone(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_interval(H0 + 60, {"tcp": (10, 20)})])
    writer.close()
    other = SqliteWriter(db_path, boot="boot-b")  # cookies are only unique within one boot
    other.write([_interval(H0 + 120, {"tcp2": (1, 1)}, life=[_life("tcp_close", "tcp", H0, H0 + 100, None)])])
    try:
        assert other.db.execute("SELECT opened, closed FROM connections WHERE cookie = 11").fetchall() == [(None, None)]
    finally:
        other.close()


# ---------------------------------------------------------------------------------------------------------------
# damaged, newer and missing files; read-only reader


def test_corrupt_file_is_moved_aside_and_replaced(db_path: str) -> None:
    garbage = bytes(range(256)) * 64
    Path(db_path).write_bytes(garbage)
    messages: list[str] = []
    writer = open_writer(db_path, boot=BOOT, log=messages.append)
    try:
        aside = glob.glob(db_path + ".corrupt-*")
        assert len(aside) == 1
        assert Path(aside[0]).read_bytes() == garbage
        assert len(messages) == 1 and aside[0] in messages[0] and "started a new database" in messages[0]
        writer.write([_interval(H0 + 60, {"tcp": (3, 4)})])
        assert _meta(writer.db, "schema_version") == str(SCHEMA_VERSION)
        reader = SqliteReader(db_path)
        try:
            assert _by_conn(reader.report(H0, H0 + 60, "connection")) == {"tcp": (3, 4)}
        finally:
            reader.close()
    finally:
        writer.close()


def test_damaged_page_in_a_valid_file_is_moved_aside(db_path: str) -> None:
    """The header is fine, a table page is not: the integrity check at opening finds it."""
    writer = SqliteWriter(db_path, boot=BOOT)
    _write(writer, _ledger())
    writer.close()  # the last connection checkpoints the WAL into the file
    assert not os.path.exists(db_path + "-wal")
    with open(db_path, "r+b") as f:
        f.seek(4096 * 3)
        f.write(b"\xa5" * 4096)
    messages: list[str] = []
    writer = open_writer(db_path, boot=BOOT, log=messages.append)
    try:
        assert len(glob.glob(db_path + ".corrupt-*[0-9]")) == 1
        assert len(messages) == 1 and "malformed" in messages[0]
        assert _count(writer.db, "samples") == 0
        writer.write([_interval(H0 + 60, {"tcp": (3, 4)})])
        assert _count(writer.db, "samples") == 1
    finally:
        writer.close()


def _bump_schema(path: str, version: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    db.close()


def test_newer_schema_is_refused(db_path: str) -> None:
    SqliteWriter(db_path, boot=BOOT).close()
    _bump_schema(db_path, SCHEMA_VERSION + 1)
    with pytest.raises(SchemaTooNew, match="schema 4; this sockscope knows up to 3"):
        SqliteWriter(db_path, boot=BOOT)
    with pytest.raises(SchemaTooNew):
        open_writer(db_path, boot=BOOT, log=lambda _m: None)
    with pytest.raises(SchemaTooNew, match="schema 4"):
        SqliteReader(db_path)
    assert glob.glob(db_path + ".corrupt-*") == []  # refused, not moved aside
    assert os.path.exists(db_path)


@pytest.mark.parametrize("use_days", [True, False])
def test_by_exe_one_binary_is_one_row_whether_alive_or_exited(db_path: str, use_days: bool) -> None:
    # Issue 11: the kernel's basename (the process had exited) and the full path were two rows.
    alive = Proc(301, "curl", "/usr/bin/curl", "curl a", 0, "root", "-")
    gone = Proc(302, "curl", "curl", "curl b", 0, "root", "-")
    other = Proc(303, "tool", "tool", "tool", 0, "root", "-")
    tools = [Proc(304 + i, "tool", f"/opt/{d}/tool", "tool", 0, "root", "-") for i, d in enumerate("ab")]
    conns = {f"c{p.pid}": Conn(p, "tcp", "10.0.0.1", 5000 + p.pid, "10.0.0.2", 443, p.pid, "local")
             for p in (alive, gone, other, *tools)}  # fmt: skip
    writer = SqliteWriter(db_path, boot=BOOT)
    flows = {"c301": (10, 1), "c302": (20, 2), "c303": (5, 0), "c304": (1, 0), "c305": (1, 0)}
    writer.write([interval_of(conns, H0 + 60, flows)])
    writer.close()
    reader = SqliteReader(db_path)
    try:
        rows = reader.report(H0, H0 + 120, "exe", use_days=use_days)
        top = reader.report(H0, H0 + 120, "exe", 1, use_days=use_days)
    finally:
        reader.close()
    got = {r.key["exe"]: (r.tx_bytes, r.rx_bytes) for r in rows}
    # "tool" stays apart: two known paths end in it, and guessing would be wrong half the time.
    assert got == {"/usr/bin/curl": (30, 3), "tool": (5, 0), "/opt/a/tool": (1, 0), "/opt/b/tool": (1, 0)}
    assert [(r.key["exe"], r.tx_bytes) for r in top] == [("/usr/bin/curl", 30)]


def test_the_writers_id_caches_stay_bounded_and_a_miss_finds_the_same_rows(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 11: the writer's id maps grew by every process and connection ever seen.
    monkeypatch.setattr("sockscope.store.sqlite.WRITER_CACHE", 8)
    procs = [Proc(1000 + i, f"p{i}", f"/bin/p{i}", "x", 0, "root", "-") for i in range(40)]
    conns = {f"c{i}": Conn(p, "udp", "10.0.0.1", 5000 + i, "10.0.0.2", 53, 7000 + i, None) for i, p in enumerate(procs)}
    writer = SqliteWriter(db_path, boot=BOOT)
    try:
        for k in range(3):  # every connection again, long after the caches forgot it
            writer.write([interval_of(conns, H0 + 60 * (k + 1), {name: (1, 2) for name in conns})])
            assert max(len(writer._procs), len(writer._conns), len(writer._last_seen)) <= 8
        assert _count(writer.db, "connections") == 40 and _count(writer.db, "processes") == 40
    finally:
        writer.close()
    reader = SqliteReader(db_path)
    try:
        rows = reader.report(H0, H0 + 240, "connection")
    finally:
        reader.close()
    assert len(rows) == 40 and {(r.tx_bytes, r.rx_bytes) for r in rows} == {(3, 6)}


def test_reading_a_copy_leaves_no_files_beside_it(db_path: str, tmp_path: Path) -> None:
    # Issue 11: report on a copy of a database created -wal and -shm files beside it.
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_interval(H0 + 60, {"tcp": (3, 4)})])
    writer.close()
    copy = tmp_path / "copy" / "h.db"
    copy.parent.mkdir()
    copy.write_bytes(Path(db_path).read_bytes())
    reader = SqliteReader(str(copy))
    try:
        assert _by_conn(reader.report(H0, H0 + 120, "connection")) == {"tcp": (3, 4)}
    finally:
        reader.close()
    assert sorted(p.name for p in copy.parent.iterdir()) == ["h.db"]


def test_a_reader_beside_a_live_writer_sees_its_new_rows(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    try:
        writer.write([_interval(H0 + 60, {"tcp": (3, 4)})])
        reader = SqliteReader(db_path)  # the writer holds its lock: not read as an unchanging file
        try:
            writer.write([_interval(H0 + 120, {"tcp": (5, 6)})])
            assert _by_conn(reader.report(H0, H0 + 180, "connection")) == {"tcp": (8, 10)}
        finally:
            reader.close()
    finally:
        writer.close()


def test_a_schema_version_that_is_not_a_number_is_a_damaged_file(db_path: str) -> None:
    # Issue 11: a ValueError traceback in the daemon and in report.
    SqliteWriter(db_path, boot=BOOT).close()
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("UPDATE meta SET value = 'two' WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(StoreCorrupt) as exc:
        SqliteReader(db_path)
    assert str(exc.value) == f"{db_path}: meta.schema_version is 'two', not a number: a damaged database"
    messages: list[str] = []
    open_writer(db_path, boot=BOOT, log=messages.append).close()
    assert len(glob.glob(db_path + ".corrupt-*[0-9]")) == 1
    assert "not a number" in messages[0] and "started a new database" in messages[0]


def _v1_database(path: str) -> None:
    """A database as schema 1 left it: REAL times, copied process ids, a UNIQUE connection index."""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(MIGRATIONS[0])
    db.executescript(
        f"""
        INSERT INTO meta VALUES ('schema_version', '1'), ('minutes_to', '{H0 + 7200}.0'), ('hours_to', '{H0 + 3600}.0'),
            ('raw_from', '{H0 + 3600}.0'), ('days_to', '0.0');
        INSERT INTO boots VALUES (1, '{BOOT}');
        INSERT INTO exes VALUES (1, '/usr/bin/curl');
        INSERT INTO processes (id, boot, pid, start_ns, comm, exe_id, netns, first_seen)
            VALUES (1, 1, 100, 5, 'curl', 1, 4026531840, {H0}.5);
        INSERT INTO connections VALUES
            (1, 1, 1, 11, 'tcp', 4, '10.0.0.1', 40000, '203.0.113.5', 443, 4026531840, 'payload', 'local',
             {H0}.5, {H0 + 4000}.25, {H0}.125, {H0 + 3999}.75),
            (2, 1, 1, 22, 'icmp', 4, '10.0.0.1', NULL, '203.0.113.6', NULL, 4026532000, 'icmp-message', NULL,
             {H0 + 10}.0, {H0 + 20}.0, NULL, NULL);
        INSERT INTO hours VALUES ({H0}, 1, 1, 1000, 2000), ({H0}, 2, 1, 3, 4);
        INSERT INTO minutes VALUES ({H0 + 3600}, 1, 1, 10, 20), ({H0 + 3660}, 1, 1, 30, 40);
        INSERT INTO samples VALUES ({(H0 + 7201) * 1000}, 1, 5, 6);
        """
    )
    db.close()


def test_schema_1_is_migrated_keeping_every_byte(db_path: str) -> None:
    _v1_database(db_path)
    SqliteWriter(db_path, boot=BOOT).close()
    reader = SqliteReader(db_path)
    try:
        assert _meta(reader.db, "schema_version") == str(SCHEMA_VERSION)
        by_conn = {r.key["proto"]: r for r in reader.report(H0, H0 + 7260, "connection")}
        tcp, icmp = by_conn["tcp"], by_conn["icmp"]
        assert (tcp.tx_bytes, tcp.rx_bytes, icmp.tx_bytes, icmp.rx_bytes) == (1045, 2066, 3, 4)
        assert (tcp.key["start"], tcp.key["end"], tcp.key["duration"]) == (H0 + 0.125, H0 + 3999.75, 3999.625)
        assert (icmp.key["start"], icmp.key["end"]) == (H0 + 10, H0 + 20)  # first and last seen, whole seconds
        [proc] = reader.report(H0, H0 + 7260, "process")
        assert (proc.tx_bytes, proc.rx_bytes, proc.key["comm"]) == (1048, 2070, "curl")
        # the common values are NULL now; what differs from them is kept
        rows = list(reader.db.execute("SELECT cookie, netns, counts, first_seen, last_seen FROM connections"))
        assert sorted(rows) == [(11, None, None, H0, H0 + 4001), (22, 4026532000, "icmp-message", H0 + 10, H0 + 20)]
        indexes = {r[0] for r in reader.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "sqlite_autoindex_connections_1" not in indexes and "connections_cookie" in indexes
    finally:
        reader.close()
    # the writer finds the migrated connection again rather than adding a second row
    writer = SqliteWriter(db_path, boot=BOOT)
    try:
        curl = ProcessSample(pid=100, comm="curl", exe="/usr/bin/curl", cmdline=None, uid=None, user=None, start_ns=5)
        conn = ConnectionSample(proto="tcp", family=4, laddr="10.0.0.1", lport=40000, raddr="203.0.113.5", rport=443,
                                state=None, tx_bytes=1, rx_bytes=1, cookie=11, netns=4026531840)  # fmt: skip
        curl.connections.append(conn)
        writer.write([Interval(ts=H0 + 7230, interval=1.0, processes=[curl])])
        assert _count(writer.db, "connections") == 2
    finally:
        writer.close()


def test_reader_on_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.db")
    with pytest.raises(
        StoreError, match=r"nope\.db: no such database \(is the daemon running\? see `sockscope daemon`\)"
    ):
        SqliteReader(path)
    assert not os.path.exists(path)  # the reader never creates it


def test_reader_on_unmigrated_file(db_path: str) -> None:
    sqlite3.connect(db_path).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StoreError, match="schema 0 is older than 3; start the daemon to migrate"):
        SqliteReader(db_path)


def test_reader_is_read_only(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_interval(H0 + 60, {"tcp": (3, 4)})])
    reader = SqliteReader(db_path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.db.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.db.execute("DELETE FROM samples")
        assert _count(writer.db, "samples") == 1
    finally:
        reader.close()
        writer.close()


# ---------------------------------------------------------------------------------------------------------------
# a reader next to a busy writer


def test_reader_reports_while_writer_holds_a_transaction(db_path: str) -> None:
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_interval(H0 + 60, {"tcp": (3, 4)})])
    cid = writer.db.execute("SELECT id FROM connections").fetchone()[0]
    writer.db.execute("BEGIN IMMEDIATE")
    writer.db.execute(
        "INSERT INTO samples (ts, conn_id, tx, rx) VALUES (?, ?, ?, ?)", ((H0 + 120) * 1000, cid, 10**9, 1)
    )
    reader = SqliteReader(db_path)  # opened while the write transaction is open
    try:
        assert _by_conn(reader.report(H0, H0 + 180, "connection")) == {"tcp": (3, 4)}
        writer.db.execute("COMMIT")
        assert _by_conn(reader.report(H0, H0 + 180, "connection")) == {"tcp": (10**9 + 3, 5)}
    finally:
        reader.close()
        writer.close()


# ---------------------------------------------------------------------------------------------------------------
# the writer's id caches


def test_failed_write_leaves_no_stale_ids(db_path: str) -> None:
    """A write the database refuses mid-way is rolled back; the retry must not reuse ids of rows that never were."""
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.db.execute(
        "CREATE TEMP TRIGGER full BEFORE INSERT ON main.samples"
        " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    with pytest.raises(StoreUnavailable):
        writer.write([_interval(H0 + 60, {"tcp": (3, 4)})])
    writer.db.execute("DROP TRIGGER temp.full")
    assert _count(writer.db, "connections") == 0
    writer.write([_interval(H0 + 60, {"udp_a": (100, 200)})])  # a new connection takes the lowest free id
    writer.write([_interval(H0 + 120, {"tcp": (3, 4)})])  # the retry
    reader = SqliteReader(db_path)
    try:
        assert _by_conn(reader.report(H0, H0 + 120, "connection")) == {"tcp": (3, 4), "udp_a": (100, 200)}
        assert [(r.key["comm"], r.tx_bytes) for r in reader.report(H0, H0 + 120, "process")] == [
            ("dnsmasq", 100),
            ("curl", 3),
        ]
    finally:
        reader.close()
        writer.close()


def test_purged_connection_seen_again_is_stored_again(db_path: str) -> None:
    """Retention drops connections idle for longer than it keeps hours; one that moves bytes again is new."""
    writer = SqliteWriter(db_path, boot=BOOT)
    writer.write([_interval(H0 + 60, {"tcp": (3, 4)})])
    short = Retention(raw=60, minute=600, hour=3600)
    writer.maintain(H0 + 3 * 3600, short)
    assert (_count(writer.db, "connections"), _count(writer.db, "processes"), _count(writer.db, "exes")) == (0, 0, 0)
    t = H0 + 3 * 3600 + 60
    writer.write([_interval(t, {"udp_a": (100, 200)})])
    writer.write([_interval(t + 60, {"tcp": (5, 6)})])
    reader = SqliteReader(db_path)
    try:
        assert _by_conn(reader.report(t - 60, t + 60, "connection")) == {"tcp": (5, 6), "udp_a": (100, 200)}
        assert [r.key for r in reader.report(t - 60, t + 60, "exe")] == [{"exe": "dnsmasq"}, {"exe": "/usr/bin/curl"}]
    finally:
        reader.close()
        writer.close()


def test_connection_with_no_peer_is_one_row_across_writer_restarts(db_path: str) -> None:
    proc = ProcessSample(pid=9, comm="dig", exe=None, cmdline=None, uid=0, user="root", start_ns=5)
    conn = ConnectionSample("udp", 4, "0.0.0.0", 5353, None, None, "UNCONN", 0, 10, cookie=77)
    proc.connections = [conn]
    for ts in (H0 + 60, H0 + 120):
        w = SqliteWriter(db_path, boot=BOOT)
        w.write([Interval(ts=ts, interval=60.0, processes=[proc])])
        w.close()
    db = sqlite3.connect(db_path)
    assert db.execute("SELECT count(*) FROM connections").fetchone()[0] == 1
    assert db.execute("SELECT sum(rx) FROM samples").fetchone()[0] == 20


def test_edges_older_than_the_minute_rows_widen_to_hours() -> None:
    assert plan_segments(H0 + 1800, H0 + 7200, H0 + 7200, H0 + 7200, H0 + 7200, minutes_from=H0 + 3600) == [
        ("hour", H0, H0 + 7200)
    ]


def test_daily_rows_per_process_answer_long_reports_with_the_same_totals(db_path: str) -> None:
    day0 = 1_700_006_400  # a UTC midnight
    w = SqliteWriter(db_path, boot=BOOT)
    procs = [
        ProcessSample(
            pid=p,
            comm=f"app{p}",
            exe=f"/usr/bin/app{p % 2}",
            cmdline=None,
            uid=p % 3,
            user=f"u{p % 3}",
            start_ns=p,
            unit=f"app{p % 2}.service",
        )
        for p in range(1, 5)
    ]
    step = 600
    for k in range(3 * 86400 // step):
        ts = day0 + 3600 + step * (k + 1)  # from 01:00 on day 0 to 01:00 on day 3
        batch = []
        for p in procs:
            c = ConnectionSample("tcp", 4, "198.18.0.1", 1000 + p.pid, "198.18.0.2", 443, "ESTABLISHED",
                                 p.pid * 10 + k % 7, k % 5, cookie=p.pid)  # fmt: skip
            batch.append(replace_conns(p, [c]))
        w.write([Interval(ts=float(ts), interval=float(step), processes=batch)])
    end = day0 + 3600 + 3 * 86400
    w.maintain(end + 3600, Retention())
    db = w.db
    assert float(_meta(db, "days_to")) == day0 + 3 * 86400
    days = db.execute("SELECT sum(tx), sum(rx) FROM process_days").fetchone()
    hours = db.execute(
        "SELECT sum(tx), sum(rx) FROM hours WHERE ts >= ? AND ts < ?", (day0, day0 + 3 * 86400)
    ).fetchone()
    assert days == hours and days[0] > 0
    reader = SqliteReader(db_path)
    try:
        for by in ("process", "exe", "user", "unit"):
            for since, until in ((day0, end), (day0 + 5000, end - 7000), (day0 + 86400, day0 + 2 * 86400)):
                with_days = reader.report(since, until, by)
                without = reader.report(since, until, by, use_days=False)
                assert with_days == without, (by, since, until)
                assert with_days
    finally:
        reader.close()
    w.close()


def replace_conns(p: ProcessSample, conns: list[ConnectionSample]) -> ProcessSample:
    from dataclasses import replace

    return replace(p, connections=conns, tx_bytes=sum(c.tx_bytes for c in conns))


def test_split_days_only_splits_hourly_segments() -> None:
    d = 86400
    assert split_days([("raw", 10, 60), ("minute", 60, 3600), ("hour", 3600, 3 * d)], 2 * d) == [
        ("raw", 10, 60), ("minute", 60, 3600), ("hour", 3600, d), ("day", d, 2 * d), ("hour", 2 * d, 3 * d)
    ]  # fmt: skip
    assert split_days([("hour", 3600, 3 * d)], 0) == [("hour", 3600, 3 * d)]


def test_a_name_learned_later_is_written_to_the_connection(db_path: str) -> None:
    # The first interval of a connection may come before its name (a template trusted a few seconds).
    unnamed = {"tcp": Conn(CURL, "tcp", "10.0.0.1", 8443, "203.0.113.5", 51000, 11, "remote")}
    named = {"tcp": unnamed["tcp"]._replace(name="api.example.com")}
    writer = SqliteWriter(db_path, boot=BOOT)
    try:
        writer.write([interval_of(unnamed, H0 + 60, {"tcp": (1, 2)})])
        writer.write([interval_of(named, H0 + 61, {"tcp": (3, 4)})])
        writer.write([interval_of(named, H0 + 62, {"tcp": (5, 6)})])  # cached: no second update
        rows = writer.db.execute(
            "SELECT n.name, c.cname, c.name_source FROM connections c JOIN names n ON n.id = c.name_id"
        ).fetchall()
        assert rows == [("api.example.com", "edge.example.net", "process")]
    finally:
        writer.close()
    reader = SqliteReader(db_path)
    try:
        [row] = reader.report(H0, H0 + 120, "host")
        assert (row.key, row.tx_bytes, row.rx_bytes) == ({"host": "api.example.com"}, 9, 12)
    finally:
        reader.close()
