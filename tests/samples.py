"""Hand-made intervals and facts for tests that run without root."""

from __future__ import annotations

import ipaddress

from sockscope.collector.identity import ProcessIdentity
from sockscope.collector.model import ConnectionSample, Counters, Interval, ProcessSample, SockFacts


def v4(text: str) -> bytes:
    return ipaddress.IPv6Address("::ffff:" + text).packed


def v6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def tcp_facts(cookie: int, lport: int = 40000, rport: int = 443, state: int = 1) -> SockFacts:
    return SockFacts(cookie, 2, 6, 1, v4("198.18.0.1"), lport, v4("198.18.0.2"), rport, state, netns=4026531840)


def udp_unconnected(cookie: int, family: int = 2, lport: int = 5353) -> SockFacts:
    return SockFacts(cookie, family, 17, 2, v4("0.0.0.0") if family == 2 else bytes(16), lport, bytes(16), 0, 7)


def ident(pid: int, comm: str = "curl") -> ProcessIdentity:
    return ProcessIdentity(pid, 1000, comm, f"/usr/bin/{comm}", f"{comm} -s x", 1000, "alice", 1, True)


def interval(processes: list[ProcessSample], ts: float = 1_700_000_000.0, length: float = 1.0) -> Interval:
    return Interval(ts=ts, interval=length, processes=processes, counters=Counters(dropped_events=2, dropped_bytes=64))


def process(pid: int, comm: str, tx: int, rx: int, raddr: str = "198.18.0.2") -> ProcessSample:
    conn = ConnectionSample("tcp", 4, "198.18.0.1", 40000 + pid % 1000, raddr, 443, "ESTABLISHED", tx, rx, 1, 1)
    return ProcessSample(
        pid,
        comm,
        f"/usr/bin/{comm}",
        f"{comm} --x",
        1000,
        "alice",
        tx_bytes=tx,
        rx_bytes=rx,
        tx_calls=1,
        rx_calls=1,
        connections=[conn],
    )
