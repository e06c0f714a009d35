"""Plain data that flows from a source to the outputs.

Raw* records are what the kernel side hands over, decoded but not yet joined;
Interval / ProcessSample / ConnectionSample are what every output consumes.
No ctypes here: fakes and tests build these directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from sockscope.collector.lifecycle import LifeEvent

NO_ADDR = bytes(16)


# A flow as the collector hands it over: RawFlow's fields, in its order, as a plain tuple (made by
# zip() in C, with no Python call per flow). RawFlow is one too.
FlowRow = tuple[int, int, bytes, int, int, int, int, int]


class RawFlow(NamedTuple):
    """Counters of one (socket, process[, peer]) for one interval. A tuple: tens of thousands
    are made each second on a busy host, and a frozen dataclass costs several times as much."""

    cookie: int
    tgid: int
    raddr: bytes = NO_ADDR  # peer of an unconnected socket (16 bytes, v4-mapped for IPv4)
    rport: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0
    tx_calls: int = 0
    rx_calls: int = 0


class SockFacts(NamedTuple):
    """What the kernel recorded about a socket (a tuple, like RawFlow: one is read per new socket)."""

    cookie: int
    family: int  # AF_INET (2) / AF_INET6 (10) / AF_PACKET (17)
    protocol: int  # IPPROTO_*
    sock_type: int  # SOCK_*
    laddr: bytes
    lport: int
    raddr: bytes
    rport: int
    state: int
    netns: int = 0
    open_ns: int = 0
    initiator: int = 0
    owner_tgid: int = 0
    ifindex: int = 0


@dataclass(frozen=True, slots=True)
class ProcFacts:
    """What the kernel captured about a process when it first moved bytes."""

    tgid: int
    start_ns: int
    comm: str
    exe_name: str
    args: tuple[str, ...]
    uid: int
    gid: int
    ppid: int
    cgroup_id: int = 0
    parent_comm: str = ""
    netns: int = 0


@dataclass(frozen=True, slots=True)
class Counters:
    """Kernel-side counters for one interval (deltas, not totals)."""

    dropped_events: int = 0
    dropped_bytes: int = 0
    sock_info_full: int = 0
    proc_info_full: int = 0
    peek_skipped: int = 0
    events_lost: int = 0
    # kprobe group: calls whose return a kretprobe missed (bytes unknown); in dropped_events too
    calls_missed: int = 0
    # user space: connections the lifecycle tracker let go at its bound (their end goes unreported)
    lifecycle_forgotten: int = 0
    dns_malformed: int = 0  # user space: captured answers that did not parse (never a name)
    names_evicted: int = 0  # user space: names let go at the name cache's bound
    ptr_dropped: int = 0  # user space, --ptr: reverse lookups not made (their queue was full)
    dns_lost: int = 0  # DNS answers the kernel could not hand over (its ring buffer was full)
    dns_unread: int = 0  # DNS answers read by a call whose buffer is not known (recvmmsg, io_uring)


@dataclass(frozen=True, slots=True)
class DnsCapture:
    """What a process read from a socket whose peer is port 53 (a DNS answer, or over TCP a piece
    of the stream), as the kernel copied it from the process's buffer."""

    ts_ns: int  # CLOCK_BOOTTIME
    cookie: int
    tgid: int
    netns: int
    protocol: int  # 17 UDP, 6 TCP
    length: int  # what the call returned; data holds at most SS_DNS_MAX of it
    data: bytes


@dataclass(frozen=True, slots=True)
class ConnEvent:
    """An event from the kernel's ring buffer: a TCP connection opened or closed; with live
    events on (sockscope.events), also a listener, a TCP socket's end with its totals, and the
    start of a UDP flow."""

    kind: str  # "open" | "close" | "listen" | "end" | "udp_start"
    ts_ns: int  # CLOCK_BOOTTIME
    cookie: int
    family: int
    laddr: bytes
    lport: int
    raddr: bytes
    rport: int
    netns: int = 0
    owner_tgid: int = 0
    initiator: int = 0
    open_ns: int = 0
    tgid: int = 0  # the process the event is about (see struct ss_event), 0 unknown
    protocol: int = 6
    tx_bytes: int = 0  # end: the connection's totals (when `totals`); udp_start: the datagram
    rx_bytes: int = 0
    totals: bool = False
    received: bool = False  # udp_start: the first datagram was received, not sent


@dataclass(slots=True)
class ConnectionSample:
    proto: str
    family: int
    laddr: str | None
    lport: int | None
    raddr: str | None
    rport: int | None
    state: str | None
    tx_bytes: int = 0
    rx_bytes: int = 0
    tx_calls: int = 0
    rx_calls: int = 0
    cookie: int = 0
    netns: int = 0
    v4mapped: bool = False
    initiator: str | None = None
    counts: str = "payload"  # what one byte is: see COUNTS in aggregate.py
    ifindex: int | None = None
    name: str | None = None  # the peer's name, as the program asked for it (DNS answers it read)
    cname: tuple[str, ...] = ()  # the CNAME chain from that name to the peer's address
    name_source: str | None = None  # "process" (its own or a parent's lookup) or "namespace"


@dataclass(slots=True)
class ProcessSample:
    pid: int
    comm: str
    exe: str | None
    cmdline: str | None
    uid: int | None
    user: str | None
    ppid: int | None = None
    start_ns: int = 0
    alive: bool = True  # False: gone from /proc when read; facts are the kernel's
    cgroup: str | None = None
    unit: str | None = None
    container: str | None = None
    netns: int | None = None
    parent_comm: str | None = None
    parent_exe: str | None = None
    tx_bytes: int = 0
    rx_bytes: int = 0
    tx_calls: int = 0
    rx_calls: int = 0
    connections: list[ConnectionSample] = field(default_factory=list)


@dataclass(slots=True)
class Interval:
    ts: float  # wall-clock end of the interval (Unix seconds)
    interval: float  # its length in seconds
    processes: list[ProcessSample]
    counters: Counters = field(default_factory=Counters)
    lifecycle: list[LifeEvent] = field(default_factory=list)  # connections opened / ended
    unattributed_tx: int = 0  # bytes counted in no process's context (pid 0)
    unattributed_rx: int = 0

    @property
    def tx_bytes(self) -> int:
        return sum(p.tx_bytes for p in self.processes)

    @property
    def rx_bytes(self) -> int:
        return sum(p.rx_bytes for p in self.processes)
