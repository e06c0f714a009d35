"""The daemon's in-memory backlog: bounded in rows, merged to minutes then hours, then dropped, counted."""

from __future__ import annotations

import random
from pathlib import Path

from sockscope.collector.lifecycle import LifeEvent
from sockscope.collector.model import ConnectionSample, Counters, Interval, ProcessSample
from sockscope.store.backlog import Backlog, buckets, merge, rows
from sockscope.store.base import Retention
from sockscope.store.sqlite import SqliteReader, SqliteWriter

T0 = 1_700_000_000.0 // 3600 * 3600  # a whole hour


def _iv(ts: float, flows: dict[tuple[int, int], tuple[int, int]], **kw: object) -> Interval:
    """flows: (pid, port) -> (tx, rx); one connection per port, one process per pid."""
    procs: dict[int, ProcessSample] = {}
    for (pid, port), (tx, rx) in flows.items():
        p = procs.setdefault(pid, ProcessSample(pid, f"p{pid}", f"/bin/p{pid}", None, 0, "root", start_ns=pid))
        c = ConnectionSample("tcp", 2, "10.0.0.1", 40000 + pid, "198.18.0.1", port, "ESTABLISHED", tx, rx, 1, 1)
        c.cookie = pid * 100_000 + port
        p.connections.append(c)
        p.tx_bytes += tx
        p.rx_bytes += rx
        p.tx_calls += 1
        p.rx_calls += 1
    return Interval(ts=ts, interval=1.0, processes=list(procs.values()), **kw)  # type: ignore[arg-type]


def _totals(ivs: list[Interval]) -> dict[tuple[int, int | None], tuple[int, int]]:
    out: dict[tuple[int, int | None], tuple[int, int]] = {}
    for iv in ivs:
        for p in iv.processes:
            assert p.tx_bytes == sum(c.tx_bytes for c in p.connections)
            assert p.rx_bytes == sum(c.rx_bytes for c in p.connections)
            for c in p.connections:
                tx, rx = out.get((p.pid, c.rport), (0, 0))
                out[(p.pid, c.rport)] = (tx + c.tx_bytes, rx + c.rx_bytes)
    return out


def _traffic(n: int, seed: int = 1) -> list[Interval]:
    """n one-second intervals from T0 on; a few long connections and many short ones."""
    rnd = random.Random(seed)
    out = []
    for k in range(n):
        flows = {(1, 443): (rnd.randrange(1, 10**6), rnd.randrange(1, 10**6))}
        for _ in range(rnd.randrange(0, 4)):
            flows[(rnd.randrange(2, 6), rnd.randrange(1000, 1100))] = (rnd.randrange(0, 5000), rnd.randrange(0, 5000))
        out.append(_iv(T0 + k + 1, flows, unattributed_tx=k, counters=Counters(dropped_events=1, dropped_bytes=2)))
    return out


def test_merge_sums_every_connection_process_and_counter_and_ends_with_the_last() -> None:
    life = LifeEvent("tcp_close", "tcp", 2, "10.0.0.1", 1, "198.18.0.1", 443, 1, "p1", T0, T0 + 2, 5, 6, True)
    a = _iv(T0 + 1, {(1, 443): (10, 20), (2, 80): (1, 2)}, unattributed_rx=3)
    b = _iv(T0 + 2, {(1, 443): (5, 6), (1, 53): (7, 8)}, lifecycle=[life], counters=Counters(dropped_events=4))
    m = merge([a, b])
    assert (m.ts, m.interval, m.unattributed_rx, m.counters.dropped_events, m.lifecycle) == (T0 + 2, 2.0, 3, 4, [life])
    assert _totals([m]) == {(1, 443): (15, 26), (2, 80): (1, 2), (1, 53): (7, 8)}
    p1 = next(p for p in m.processes if p.pid == 1)
    assert (p1.tx_calls, p1.rx_calls, len(p1.connections)) == (3, 3, 2)
    assert a.processes[0].tx_bytes == 10  # the merged-from intervals are left as they were


def test_buckets_follow_the_databases_minutes() -> None:
    # An interval ending on a whole minute belongs to the minute before it (it covers (ts - 1, ts]).
    ivs = [_iv(T0 + s, {}) for s in (59, 60, 60.5, 119, 120, 121)]
    assert [list(r) for r in buckets(ivs, 60)] == [[0, 1], [2, 3, 4], [5]]


def test_within_the_bound_nothing_changes() -> None:
    b = Backlog(limit=10_000)
    ivs = _traffic(300)
    assert all(b.append(iv) is None for iv in ivs)
    assert b.intervals == ivs and b.rows == sum(rows(iv) for iv in ivs) and b.counts == [1] * len(ivs)


def test_past_the_bound_old_intervals_become_minutes_with_every_byte() -> None:
    ivs = _traffic(600)  # ten minutes
    b = Backlog(limit=1_000)
    said = [m for iv in ivs if (m := b.append(iv)) is not None]
    assert said == ["the backlog passed 1,000 rows: its oldest intervals are merged into coarser ones"]  # once
    assert b.rows <= 1_000 and b.rows == sum(rows(iv) for iv in b.intervals)
    assert len(b) < 600 and sum(b.counts) == 600 and b.lost_intervals == 0
    assert _totals(b.intervals) == _totals(ivs)
    assert sum(iv.interval for iv in b.intervals) == 600.0
    assert sum(iv.unattributed_tx for iv in b.intervals) == sum(range(600))
    assert sum(iv.counters.dropped_events for iv in b.intervals) == 600


def test_then_hours_then_the_oldest_are_dropped_and_counted() -> None:
    ivs = _traffic(3 * 3600 + 5)
    b = Backlog(limit=100)
    said = [m for iv in ivs if (m := b.append(iv)) is not None]
    assert b.rows <= 100
    assert b.lost_intervals > 0 and b.lost_intervals + sum(b.counts) == len(ivs)
    kept = ivs[b.lost_intervals :]
    assert _totals(b.intervals) == _totals(kept)  # what is kept is exact
    lost = sum(iv.tx_bytes + iv.rx_bytes + iv.unattributed_tx for iv in ivs[: b.lost_intervals])
    assert b.lost_bytes == lost
    drops = [m for m in said if m.startswith("the backlog passed 100 rows even by the hour: its oldest dropped (")]
    assert drops and all(m.endswith(" bytes of traffic lost in all)") for m in drops)


def test_written_and_lost_keep_the_row_count() -> None:
    b = Backlog(limit=10_000)
    for iv in _traffic(50):
        b.append(iv)
    b.written(10)
    b.lose(5)
    assert len(b) == 35 and b.rows == sum(rows(iv) for iv in b.intervals) and b.lost_intervals == 5


def test_merged_intervals_give_the_database_the_same_totals(tmp_path: Path) -> None:
    ivs = _traffic(2 * 3600)
    b = Backlog(limit=1_000)  # two hours squeezed into an hour and minutes
    for iv in ivs:
        b.append(iv)
    assert b.lost_intervals == 0 and len(b) < 200
    path = str(tmp_path / "h.db")
    w = SqliteWriter(path)
    w.write(b.intervals)
    w.maintain(T0 + 3 * 3600, Retention(raw=30 * 86400, minute=30 * 86400, hour=365 * 86400))
    w.close()
    r = SqliteReader(path)
    for since, until in ((T0, T0 + 7200), (T0 + 1800, T0 + 7200)):  # whole, and from inside the first hour
        rows_ = r.report(since, until, "process")
        got = {row.key["pid"]: (row.tx_bytes, row.rx_bytes) for row in rows_}
        want: dict[int, tuple[int, int]] = {}
        for iv in b.intervals:
            if since < iv.ts <= until:
                for p in iv.processes:
                    tx, rx = want.get(p.pid, (0, 0))
                    want[p.pid] = (tx + p.tx_bytes, rx + p.rx_bytes)
        assert got == want
    whole: dict[int, tuple[int, int]] = {}
    for (pid, _), (tx, rx) in _totals(ivs).items():
        t, x = whole.get(pid, (0, 0))
        whole[pid] = (t + tx, x + rx)
    assert {row.key["pid"]: (row.tx_bytes, row.rx_bytes) for row in r.report(T0, T0 + 7200, "process")} == whole
    r.close()
