"""Connection lifecycles, like tcplife: TCP from the kernel's open/close events,
UDP as flows per (process, socket, peer) that end after an idle timeout.

Pure: fed one interval and the events read just before it; returns what
opened and what ended. A TCP close is reported one interval after its event, so
bytes read after the kernel's CLOSE (queued data) still fold into its totals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sockscope.collector.addresses import addr_text, wire_family
from sockscope.collector.aggregate import INITIATORS
from sockscope.collector.model import ConnEvent, Interval
from sockscope.lru import LruDict

TCP_FORGET_IDLE = 3600.0  # a TCP record with no close event and no bytes for this long is let go
# Records kept of each kind, the least lately active let go first (counted in `forgotten`): a
# connection whose close event was lost (a full ring buffer) stays until TCP_FORGET_IDLE, and
# under churn thousands of them built up (~0.85 KiB each) however long the daemon ran.
MAX_TRACKED = 32768


def boot_ns_to_wall(ts_ns: int) -> float:
    """CLOCK_BOOTTIME nanoseconds (the kernel's timestamps) to Unix time."""
    return time.time() - (time.clock_gettime_ns(time.CLOCK_BOOTTIME) - ts_ns) / 1e9


@dataclass(slots=True)
class LifeEvent:
    event: str  # "tcp_open" | "tcp_close" | "udp_end"
    proto: str
    family: int
    laddr: str | None
    lport: int | None
    raddr: str | None
    rport: int | None
    pid: int | None
    comm: str | None
    start: float | None  # Unix time; for UDP the interval in which the first datagram moved
    end: float | None
    tx_bytes: int
    rx_bytes: int
    complete: bool  # the start was seen (not a connection older than sockscope)
    initiator: str | None = None
    netns: int = 0
    cookie: int = 0
    name: str | None = None  # the peer's name, as its connection showed it (DNS answers)
    cname: tuple[str, ...] = ()
    name_source: str | None = None

    @property
    def duration(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return max(0.0, self.end - self.start)


@dataclass(slots=True)
class _Conn:
    proto: str
    family: int
    laddr: str | None
    lport: int | None
    raddr: str | None
    rport: int | None
    netns: int
    cookie: int
    start: float | None = None
    last: float = 0.0
    complete: bool = False
    initiator: str | None = None
    tx: int = 0
    rx: int = 0
    closed: float | None = None
    owner: int | None = None
    bytes_by_pid: dict[int, int] = field(default_factory=dict)
    comms: dict[int, str] = field(default_factory=dict)
    named: tuple[str, tuple[str, ...], str | None] | None = None  # (name, CNAME chain, source), once known

    def pid(self) -> int | None:
        if self.bytes_by_pid:
            return max(self.bytes_by_pid.items(), key=lambda kv: (kv[1], -kv[0]))[0]
        return self.owner

    def life(self, event: str, end: float | None) -> LifeEvent:
        pid = self.pid()
        return LifeEvent(
            event=event,
            proto=self.proto,
            family=self.family,
            laddr=self.laddr,
            lport=self.lport,
            raddr=self.raddr,
            rport=self.rport,
            pid=pid,
            comm=self.comms.get(pid) if pid is not None else None,
            start=self.start,
            end=end,
            tx_bytes=self.tx,
            rx_bytes=self.rx,
            complete=self.complete,
            initiator=self.initiator,
            netns=self.netns,
            cookie=self.cookie,
            name=self.named[0] if self.named else None,
            cname=self.named[1] if self.named else (),
            name_source=self.named[2] if self.named else None,
        )


UdpKey = tuple[int, int, str | None, int | None]


class LifecycleTracker:
    def __init__(self, udp_idle: float = 60.0, to_wall: Callable[[int], float] = boot_ns_to_wall) -> None:
        if udp_idle <= 0:
            raise ValueError("udp_idle must be > 0 seconds")
        self.udp_idle = udp_idle
        self._to_wall = to_wall
        self._tcp: LruDict[int, _Conn] = LruDict(MAX_TRACKED)
        self._udp: LruDict[UdpKey, _Conn] = LruDict(MAX_TRACKED)
        self._closing: list[int] = []  # TCP records closed by this interval's events

    @property
    def forgotten(self) -> int:
        """Records let go at the bound: connections whose end will not be reported."""
        return self._tcp.evicted + self._udp.evicted

    def __len__(self) -> int:
        return len(self._tcp) + len(self._udp)

    def update(self, iv: Interval, events: list[ConnEvent]) -> list[LifeEvent]:
        out: list[LifeEvent] = []
        begin = iv.ts - iv.interval
        self._add_bytes(iv, begin)
        # Closes seen last time, now with every byte of theirs.
        closing, self._closing = self._closing, []
        for cookie in closing:
            t = self._tcp.pop(cookie, None)  # None: closed twice, or let go at the bound
            if t is not None and t.closed is not None:
                out.append(t.life("tcp_close", t.closed))
        for e in events:
            out += self._apply(e)
        # Least lately active first (each interval's bytes make a record the newest), so the
        # scans stop at the first record still active: not one pass over every connection.
        idle = []
        for key, u in self._udp.items():
            if iv.ts - u.last < self.udp_idle:
                break
            idle.append(key)
        for key in idle:
            u = self._udp.pop(key)
            out.append(u.life("udp_end", u.last))
        forget = []
        for cookie, t in self._tcp.items():
            if t.closed is None:
                if iv.ts - t.last < TCP_FORGET_IDLE:
                    break
                forget.append(cookie)
        for cookie in forget:
            del self._tcp[cookie]
        return out

    def _add_bytes(self, iv: Interval, begin: float) -> None:
        # Per connection per interval: the records' LRU moves and their dicts' methods looked up
        # once, not per connection (LruDict.get is a Python call).
        tcp, udp, ts = self._tcp, self._udp, iv.ts
        tcp_move, udp_move = tcp.move_to_end, udp.move_to_end
        for p in iv.processes:
            pid, comm = p.pid, p.comm
            for c in p.connections:
                if c.proto == "tcp":
                    try:
                        tcp_move(c.cookie)
                        t = tcp[c.cookie]
                    except KeyError:
                        t = tcp[c.cookie] = _Conn(
                            "tcp", c.family, c.laddr, c.lport, c.raddr, c.rport, c.netns, c.cookie, last=ts
                        )
                elif c.proto == "udp":
                    key = (pid, c.cookie, c.raddr, c.rport)
                    try:
                        udp_move(key)
                        t = udp[key]
                    except KeyError:
                        t = udp[key] = _Conn(
                            "udp", c.family, c.laddr, c.lport, c.raddr, c.rport, c.netns, c.cookie, start=begin,
                            complete=True,
                        )  # fmt: skip
                else:
                    continue
                t.tx += c.tx_bytes
                t.rx += c.rx_bytes
                t.last = ts
                if c.name is not None:
                    t.named = (c.name, c.cname, c.name_source)
                by_pid = t.bytes_by_pid
                by_pid[pid] = by_pid.get(pid, 0) + c.tx_bytes + c.rx_bytes
                t.comms[pid] = comm

    def _apply(self, e: ConnEvent) -> list[LifeEvent]:
        t = self._tcp.get(e.cookie)
        family, _ = wire_family(e.family, e.laddr, e.raddr)
        if t is None:
            t = self._tcp[e.cookie] = _Conn(
                "tcp", family, None, None, None, None, e.netns, e.cookie, last=self._to_wall(e.ts_ns)
            )
        # The kernel's endpoints, captured when the connection opened, are the reference.
        t.family, t.laddr, t.lport = family, addr_text(e.laddr), e.lport
        t.raddr, t.rport, t.netns = addr_text(e.raddr), e.rport, e.netns
        t.initiator = INITIATORS.get(e.initiator, t.initiator)
        if e.owner_tgid:
            t.owner = e.owner_tgid
        if e.kind == "open":
            t.start = self._to_wall(e.open_ns or e.ts_ns)
            t.complete = True
            return [t.life("tcp_open", None)]
        if e.open_ns and t.start is None:
            t.start = self._to_wall(e.open_ns)
            t.complete = True
        t.closed = self._to_wall(e.ts_ns)
        self._closing.append(e.cookie)
        return []
