from __future__ import annotations

import pytest

from sockscope.collector.lifecycle import LifecycleTracker
from sockscope.collector.model import ConnectionSample, ConnEvent, Interval, ProcessSample
from tests.samples import v4

S = 1_000_000_000  # ns


def wall(ts_ns: int) -> float:
    return 1000.0 + ts_ns / S  # boot time 0 was Unix 1000.0


def tcp_conn(cookie: int, tx: int, rx: int) -> ConnectionSample:
    return ConnectionSample("tcp", 4, "198.18.0.1", 5000, "198.18.0.2", 80, "ESTABLISHED", tx, rx, cookie=cookie)


def udp_conn(cookie: int, raddr: str, tx: int, rx: int = 0) -> ConnectionSample:
    return ConnectionSample("udp", 4, "0.0.0.0", 5353, raddr, 53, "UNCONN", tx, rx, cookie=cookie)


def proc(pid: int, comm: str, *conns: ConnectionSample) -> ProcessSample:
    return ProcessSample(pid, comm, None, None, 0, "root", connections=list(conns))


def iv(ts: float, *procs: ProcessSample) -> Interval:
    return Interval(ts=ts, interval=1.0, processes=list(procs))


def event(kind: str, ts_s: float, cookie: int = 7, open_s: float = 0.0, owner: int = 0) -> ConnEvent:
    return ConnEvent(kind, int(ts_s * S), cookie, 2, v4("198.18.0.1"), 5000, v4("198.18.0.2"), 80,
                     netns=9, owner_tgid=owner, initiator=1, open_ns=int(open_s * S))  # fmt: skip


def test_tcp_open_then_close_with_late_bytes() -> None:
    t = LifecycleTracker(to_wall=wall)
    opened = t.update(iv(1001.0, proc(10, "curl", tcp_conn(7, 100, 5))), [event("open", 0.5, open_s=0.4)])
    assert [(e.event, e.pid, e.comm, e.start, e.initiator) for e in opened] == [
        ("tcp_open", 10, "curl", 1000.4, "local")
    ]
    assert t.update(iv(1002.0, proc(10, "curl", tcp_conn(7, 50, 0))), [event("close", 1.9, open_s=0.4)]) == []
    # Bytes read after the kernel's CLOSE (queued data) still belong to it.
    [closed] = t.update(iv(1003.0, proc(10, "curl", tcp_conn(7, 0, 7))), [])
    assert (closed.event, closed.tx_bytes, closed.rx_bytes, closed.complete) == ("tcp_close", 150, 12, True)
    assert (closed.start, closed.end) == (1000.4, 1001.9)
    assert closed.duration == pytest.approx(1.5)
    assert (closed.laddr, closed.lport, closed.raddr, closed.rport, closed.netns) == (
        "198.18.0.1",
        5000,
        "198.18.0.2",
        80,
        9,
    )
    assert len(t) == 0


def test_tcp_opened_and_closed_between_two_reads() -> None:
    t = LifecycleTracker(to_wall=wall)
    out = t.update(iv(1001.0, proc(3, "wget", tcp_conn(7, 10, 999))), [event("open", 0.2), event("close", 0.3)])
    assert [e.event for e in out] == ["tcp_open"]
    [closed] = t.update(iv(1002.0), [])
    assert (closed.pid, closed.comm, closed.tx_bytes, closed.rx_bytes) == (3, "wget", 10, 999)
    assert closed.duration == pytest.approx(0.1)


def test_tcp_with_no_bytes_names_the_process_that_connected() -> None:
    t = LifecycleTracker(to_wall=wall)
    t.update(iv(1001.0), [event("open", 0.2, owner=55), event("close", 0.3, owner=55)])
    [closed] = t.update(iv(1002.0), [])
    assert (closed.pid, closed.tx_bytes, closed.rx_bytes) == (55, 0, 0)


def test_owner_is_the_process_that_moved_most() -> None:
    t = LifecycleTracker(to_wall=wall)
    t.update(iv(1001.0, proc(1, "parent", tcp_conn(7, 5, 0)), proc(2, "child", tcp_conn(7, 500, 0))), [])
    t.update(iv(1002.0), [event("close", 1.5)])
    [closed] = t.update(iv(1003.0), [])
    assert (closed.pid, closed.comm, closed.tx_bytes, closed.complete) == (2, "child", 505, False)


def test_udp_flows_per_peer_end_after_idle_timeout() -> None:
    t = LifecycleTracker(udp_idle=60.0, to_wall=wall)
    t.update(iv(1001.0, proc(4, "dig", udp_conn(9, "198.18.0.53", 40, 90), udp_conn(9, "198.18.0.54", 41))), [])
    t.update(iv(1031.0, proc(4, "dig", udp_conn(9, "198.18.0.53", 40, 90))), [])
    ended = t.update(iv(1061.0), [])
    assert [(e.event, e.raddr, e.tx_bytes, e.start, e.end) for e in ended] == [
        ("udp_end", "198.18.0.54", 41, 1000.0, 1001.0)
    ]
    [last] = t.update(iv(1091.0), [])
    assert (last.raddr, last.tx_bytes, last.rx_bytes, last.duration) == ("198.18.0.53", 80, 180, 31.0)
    assert len(t) == 0


@pytest.mark.parametrize("idle", [0.0, -1.0])
def test_udp_idle_must_be_positive(idle: float) -> None:
    with pytest.raises(ValueError):
        LifecycleTracker(udp_idle=idle)


def test_records_are_bounded_and_what_is_let_go_is_counted(monkeypatch) -> None:
    # Issue 11: records of connections whose close event was lost piled up under churn.
    from sockscope.collector import lifecycle as mod
    from sockscope.collector.model import ConnectionSample, Interval, ProcessSample

    monkeypatch.setattr(mod, "MAX_TRACKED", 100)
    tracker = mod.LifecycleTracker(udp_idle=1e6, to_wall=lambda ns: ns / 1e9)  # no UDP flow ends by itself
    for k in range(250):
        conns = [
            ConnectionSample("tcp", 2, "10.0.0.1", 40000, "198.18.0.1", 443, "ESTABLISHED", 1, 0, cookie=k + 1),
            ConnectionSample("udp", 2, "10.0.0.1", 5353, "198.18.0.2", 1000 + k, "UNCONN", 1, 0, cookie=1),
        ]
        p = ProcessSample(7, "churn", None, None, 0, "root", connections=conns)
        tracker.update(Interval(ts=1000.0 + k, interval=1.0, processes=[p]), [])
        assert len(tracker) <= 200
    assert tracker.forgotten == 2 * 150


def test_idle_records_go_in_order_and_active_ones_stay() -> None:
    from sockscope.collector import lifecycle as mod

    t = LifecycleTracker(udp_idle=60.0, to_wall=wall)
    # Four TCP records without a close event; two stay active.
    t.update(iv(2000.0, proc(4, "a", *(tcp_conn(c, 1, 1) for c in (1, 2, 3, 4)))), [])
    for k in range(1, 4):
        t.update(iv(2000.0 + k * 1000, proc(4, "a", tcp_conn(2, 1, 0), tcp_conn(4, 1, 0))), [])
    assert len(t) == 4  # records 1 and 3 idle for 3000 s: less than TCP_FORGET_IDLE
    t.update(iv(2000.0 + mod.TCP_FORGET_IDLE + 1, proc(4, "a", tcp_conn(2, 1, 0), tcp_conn(4, 1, 0))), [])
    assert sorted(t._tcp) == [2, 4]


def test_a_close_reported_once_even_if_the_event_came_twice() -> None:
    t = LifecycleTracker(udp_idle=60.0, to_wall=wall)
    t.update(iv(1001.0), [event("open", 1.0)])
    t.update(iv(1002.0, proc(5, "curl", tcp_conn(7, 10, 20))), [event("close", 1.5), event("close", 1.6)])
    closes = t.update(iv(1003.0), [])
    assert [(e.event, e.tx_bytes, e.rx_bytes) for e in closes] == [("tcp_close", 10, 20)]
    assert t.update(iv(1004.0), []) == [] and len(t) == 0


def test_a_connections_name_goes_into_its_lifecycle_events() -> None:
    t = LifecycleTracker(udp_idle=60.0, to_wall=wall)
    c = tcp_conn(7, 10, 20)
    c.name, c.cname, c.name_source = "api.example.com", ("edge.example.net",), "process"
    [opened] = t.update(iv(1001.0, proc(5, "curl", c)), [event("open", 1.0)])
    t.update(iv(1002.0), [event("close", 1.5)])
    [closed] = t.update(iv(1003.0), [])
    for e in (opened, closed):
        assert (e.name, e.cname, e.name_source) == ("api.example.com", ("edge.example.net",), "process")
    u = udp_conn(9, "198.18.0.53", 40)
    [ended] = [e for e in (t.update(iv(1004.0, proc(4, "dig", u)), []) + t.update(iv(1100.0), []))]
    assert ended.event == "udp_end" and ended.name is None
