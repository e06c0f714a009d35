"""The daemon's logic with a fake source and a fake writer: no root, no kernel."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from sockscope import config
from sockscope.collector.model import ConnectionSample, Interval, ProcessSample
from sockscope.collector.source import FakeSource
from sockscope.daemon import Daemon, apply_ignores
from sockscope.store.base import HistoryWriter, Retention, StoreUnavailable


class FakeWriter(HistoryWriter):
    def __init__(self) -> None:
        self.written: list[Interval] = []
        self.refuse = False
        self.maintained = 0
        self.closed = False

    def write(self, intervals: Sequence[Interval]) -> None:
        if self.refuse:
            raise StoreUnavailable("writing x.db: database or disk is full")
        self.written += intervals

    def maintain(self, now: float, retention: Retention) -> None:
        self.maintained += 1

    def close(self) -> None:
        self.closed = True


def conn(rport: int, raddr: str, tx: int) -> ConnectionSample:
    return ConnectionSample("udp", 4, "0.0.0.0", 5000, raddr, rport, "UNCONN", tx, 0, cookie=rport)


def iv(ts: float, *procs: ProcessSample) -> Interval:
    return Interval(ts=ts, interval=1.0, processes=list(procs))


def proc(pid: int, comm: str, *conns: ConnectionSample) -> ProcessSample:
    return ProcessSample(pid, comm, f"/usr/bin/{comm}", None, 0, "root", connections=list(conns),
                         tx_bytes=sum(c.tx_bytes for c in conns))  # fmt: skip


def cfg(*overrides: str) -> config.Config:
    return config.load(None, list(overrides), default_path="/nonexistent/sockscope.toml")


def test_ignores_drop_connections_and_emptied_processes() -> None:
    c = cfg("ignore.ports=[53]", 'ignore.processes=["chronyd"]', 'ignore.addresses=["10.0.0.0/8"]')
    out = apply_ignores(
        iv(1.0, proc(1, "dig", conn(53, "198.18.0.53", 40), conn(443, "198.18.0.9", 7)),
           proc(2, "chronyd", conn(123, "198.18.0.1", 48)), proc(3, "curl", conn(80, "10.1.2.3", 9))),
        c,
    )  # fmt: skip
    assert [(p.pid, p.tx_bytes, [x.rport for x in p.connections]) for p in out.processes] == [(1, 7, [443])]


def test_refused_writes_are_kept_said_once_and_written_later() -> None:
    intervals = [iv(float(t), proc(1, "curl", conn(443, "198.18.0.9", t))) for t in range(1, 6)]
    source, writer = FakeSource(intervals), FakeWriter()
    log: list[str] = []
    now = [1000.0]
    d = Daemon(cfg(), source, lambda: writer, log=log.append, clock=lambda: now[0])
    source.start()
    writer.refuse = True
    for _ in range(3):
        d.step()
        now[0] += 10  # past any back-off
    assert writer.written == [] and len(d.backlog) == 3
    assert sum("cannot write the database" in m for m in log) == 1
    writer.refuse = False
    d.step()
    assert [i.ts for i in writer.written] == [1.0, 2.0, 3.0, 4.0]
    assert len(d.backlog) == 0 and any("writable again" in m for m in log)


def test_run_for_a_duration_writes_everything_and_closes() -> None:
    intervals = [iv(float(t), proc(1, "curl", conn(443, "198.18.0.9", 10))) for t in range(50)]
    source, writer = FakeSource(intervals), FakeWriter()
    d = Daemon(cfg("daemon.interval=0.01"), source, lambda: writer, log=lambda m: None)
    assert d.run(threading.Event(), duration=0.2) == 0
    assert source.closed and writer.closed and writer.maintained >= 2
    assert len(writer.written) == source.reads
    assert sum(i.tx_bytes for i in writer.written) == 10 * min(source.reads, 50)


def test_stop_event_ends_the_run_after_one_last_read() -> None:
    source, writer = FakeSource([iv(1.0, proc(1, "curl", conn(443, "198.18.0.9", 5)))]), FakeWriter()
    stop = threading.Event()
    stop.set()
    d = Daemon(cfg("daemon.interval=5"), source, lambda: writer, log=lambda m: None)
    assert d.run(stop) == 0
    assert source.reads == 1 and writer.written[0].tx_bytes == 5


def test_intervals_not_written_at_exit_mean_exit_1_with_the_amount(monkeypatch) -> None:
    # Issue 11: the daemon exited 0 after losing data.
    monkeypatch.setattr("sockscope.daemon.time.sleep", lambda s: None)  # the last tries, without waiting
    intervals = [iv(float(t), proc(1, "curl", conn(443, "198.18.0.9", 100))) for t in range(3)]
    source, writer = FakeSource(intervals), FakeWriter()
    writer.refuse = True
    log: list[str] = []
    stop = threading.Event()
    d = Daemon(cfg("daemon.interval=5"), source, lambda: writer, log=log.append)
    source.start()
    d.step()
    d.step()
    stop.set()
    assert d.run(stop) == 1  # one more read: three intervals, 300 bytes, none written
    assert writer.written == []
    assert log[-1] == (
        "data lost: 3 intervals (300 bytes of traffic) were not written to the database: "
        "writing x.db: database or disk is full"
    )


class GoneWriter(FakeWriter):
    def __init__(self) -> None:
        super().__init__()
        self.deleted = False

    def gone(self) -> str | None:
        return "x.db was deleted" if self.deleted else None


def test_a_database_deleted_while_running_is_noticed_and_a_new_one_opened() -> None:
    # Issue 11: everything after the deletion was lost, silently.
    intervals = [iv(float(t), proc(1, "curl", conn(443, "198.18.0.9", t))) for t in range(1, 4)]
    writers: list[GoneWriter] = []

    def open_writer() -> GoneWriter:
        writers.append(GoneWriter())
        return writers[-1]

    source = FakeSource(intervals)
    log: list[str] = []
    d = Daemon(cfg(), source, open_writer, log=log.append, clock=lambda: 1000.0)
    source.start()
    d.step()
    writers[0].deleted = True
    d.step()
    d.step()
    assert [[i.ts for i in w.written] for w in writers] == [[1.0], [2.0, 3.0]]
    assert writers[0].closed and not writers[1].closed
    assert log == ["x.db was deleted while the daemon ran: the history written to it is gone; opening the path anew"]


class CountingWriter(FakeWriter):
    def __init__(self) -> None:
        super().__init__()
        self.tries = 0
        self.chunks: list[int] = []

    def write(self, intervals: Sequence[Interval]) -> None:
        self.tries += 1
        super().write(intervals)
        self.chunks.append(len(intervals))


def test_a_refusing_database_is_retried_with_back_off_then_written_in_chunks_oldest_first() -> None:
    # Issue 11: a full disk was retried as one transaction every interval, burning a core.
    intervals = [iv(float(t), proc(1, "curl", conn(443, "198.18.0.9", 1))) for t in range(200)]
    source, writer = FakeSource(intervals), CountingWriter()
    now = [0.0]
    d = Daemon(cfg(), source, lambda: writer, log=lambda m: None, clock=lambda: now[0])
    source.start()
    writer.refuse = True
    for _ in range(130):  # 130 one-second intervals of a full disk
        d.step()
        now[0] += 1.0
    # Tries at 0, 1, 3, 7, 15, 31, 63 and 123 s (the wait doubles, up to 60 s), not 130.
    assert writer.tries == 8 and len(d.backlog) == 130
    writer.refuse = False
    now[0] = 1000.0
    d.step()
    assert writer.chunks == [60, 60, 11]  # bounded transactions
    assert [i.ts for i in writer.written] == [float(t) for t in range(131)]  # oldest first, nothing lost


def test_a_long_refusal_merges_the_backlog_into_coarser_intervals_and_loses_nothing() -> None:
    # Issue 11: the backlog was bounded by dropping; now old intervals become minutes first.
    intervals = [iv(600.0 + t, proc(1, "curl", conn(443 + t % 7, "198.18.0.9", t))) for t in range(1, 1201)]
    source, writer = FakeSource(intervals), CountingWriter()
    now = [0.0]
    log: list[str] = []
    d = Daemon(cfg("daemon.backlog=100"), source, lambda: writer, log=log.append, clock=lambda: now[0])
    source.start()
    writer.refuse = True
    for _ in range(1199):  # twenty minutes of a full disk
        d.step()
        now[0] += 1.0
        assert d.backlog.rows <= 100
    writer.refuse = False
    now[0] = 10_000.0
    d.step()
    assert "the backlog passed 100 rows: its oldest intervals are merged into coarser ones" in log
    assert d.lost_intervals == 0 and 20 < len(writer.written) < 200
    assert sum(i.tx_bytes for i in writer.written) == sum(range(1, 1201))
    assert [i.ts for i in writer.written] == sorted(i.ts for i in writer.written)


def test_a_backlog_past_its_bound_even_by_the_hour_drops_the_oldest_and_exits_1(monkeypatch) -> None:
    monkeypatch.setattr("sockscope.daemon.time.sleep", lambda s: None)
    # 150 connections an interval, an hour apart: each is more than the bound, and none merge.
    many = [conn(1000 + k, "198.18.0.9", 1) for k in range(150)]
    intervals = [iv(3600.0 * t + 1, proc(1, "curl", *many)) for t in range(1, 5)]
    source, writer = FakeSource(intervals), FakeWriter()
    writer.refuse = True
    log: list[str] = []
    stop = threading.Event()
    d = Daemon(cfg("daemon.backlog=100", "daemon.interval=5"), source, lambda: writer, log=log.append)
    source.start()
    for _ in range(3):
        d.step()
    assert d.lost_intervals == 2 and d.lost_bytes == 300
    assert "the backlog passed 100 rows even by the hour: its oldest dropped (1 intervals, 150 bytes" in "\n".join(log)
    stop.set()
    assert d.run(stop) == 1
    assert log[-1].startswith("data lost: 4 intervals (600 bytes of traffic) were not written")
