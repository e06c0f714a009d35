"""The kernel's events as they happen: a thread reads the ring buffers as they fill and turns
each record into a schema event (sockscope.events.model) for the hub.

The interval path (BpfSource.read) still gets the TCP open/close events it folds into
lifecycles, from this thread's queue instead of the ring buffer (one consumer per ring).
DNS answers are read here too, before the events they may name: a program's connect() follows
the answer it read, so by the time its event is in the ring, the answer is in the other one.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from sockscope.bpf import abi
from sockscope.bpf.reads import Reads
from sockscope.collector.addresses import addr_text, is_unspecified, wire_family
from sockscope.collector.aggregate import INIT_REMOTE, INITIATORS
from sockscope.collector.identity import ProcessIdentity, ProcessResolver
from sockscope.collector.lifecycle import LifeEvent, boot_ns_to_wall
from sockscope.collector.model import ConnEvent
from sockscope.events.model import Endpoints, Event, connection_event, lost_event
from sockscope.lru import FifoDict
from sockscope.names.cache import NameCache

POLL_MS = 100  # the longest the thread sleeps in epoll; a record wakes it at once
STATS_EVERY = 0.1  # seconds between looks at the kernel's count of events it could not hand over
MAX_OPEN = 65536  # open connections whose endpoints are kept for their close event
MAX_PROCS = 4096  # processes whose identity is kept, with the kernel record it was made from
MAX_QUEUED = 262144  # open/close events waiting for the interval path (counted when over)

Named = tuple[str, tuple[str, ...], str | None]


class LiveEvents:
    """Kernel records to schema events: endpoints, the process (kernel facts plus /proc, as
    everywhere in sockscope) and the peer's DNS name. Called from the pump's thread and, for
    UDP flow ends, from the interval path's: one lock around its caches."""

    def __init__(
        self,
        collector: Reads,
        names: NameCache,
        resolver: ProcessResolver,
        to_wall: Callable[[int], float] = boot_ns_to_wall,
    ) -> None:
        self._collector = collector
        self._names = names
        self._resolver = resolver
        self._to_wall = to_wall
        self._open: FifoDict[int, ConnEvent] = FifoDict(MAX_OPEN)
        self._procs: FifoDict[int, tuple[bytes, ProcessIdentity]] = FifoDict(MAX_PROCS)
        self._lock = threading.Lock()

    def _process(self, tgid: int) -> ProcessIdentity | None:
        if not tgid:
            return None
        # The kernel's record as stored: the same bytes are the same process (start time and
        # comm are in it), so its identity is not decoded and resolved again.
        raw = self._collector.proc_record(tgid)
        if raw is None:
            return self._resolver.resolve(None, tgid)
        known = self._procs.get(tgid)
        if known is not None and known[0] == raw:
            return known[1]
        identity = self._resolver.resolve(self._collector.proc_facts(tgid, raw), tgid)
        self._procs[tgid] = (raw, identity)
        return identity

    def _parent(self, tgid: int) -> int | None:
        p = self._process(tgid)
        return p.ppid if p is not None else None

    def _named(self, netns: int, tgid: int, raddr: bytes, accepted: bool) -> Named | None:
        if is_unspecified(raddr):
            return None
        n = self._names.lookup(netns, tgid, raddr, self._parent, namespace=not accepted)
        return None if n is None else (n.name, n.chain, n.source)

    @staticmethod
    def _ends(e: ConnEvent, *, remote: bool = True) -> Endpoints:
        family, _ = wire_family(e.family, e.laddr, e.raddr)
        raddr = addr_text(e.raddr) if remote and not is_unspecified(e.raddr) else None
        return Endpoints(family, addr_text(e.laddr), e.lport, raddr, e.rport if remote else None)

    def convert(self, e: ConnEvent) -> Event | None:
        with self._lock:
            return self._convert(e)

    def _convert(self, e: ConnEvent) -> Event | None:
        when = self._to_wall(e.ts_ns)
        if e.kind == "listen":
            return connection_event(
                "tcp_listen", when=when, ktime_ns=e.ts_ns, proto="tcp", ends=self._ends(e, remote=False),
                netns=e.netns, cookie=e.cookie, process=self._process(e.tgid),
            )  # fmt: skip
        if e.kind == "open":
            self._open[e.cookie] = e
            accepted = e.initiator == INIT_REMOTE
            return connection_event(
                "tcp_accept" if accepted else "tcp_connect", when=when, ktime_ns=e.ts_ns, proto="tcp",
                ends=self._ends(e), netns=e.netns, cookie=e.cookie, process=self._process(e.tgid),
                named=self._named(e.netns, e.tgid, e.raddr, accepted), initiator=INITIATORS.get(e.initiator),
            )  # fmt: skip
        if e.kind == "end":
            return self._end(e, when)
        if e.kind == "udp_start":
            size = e.tx_bytes
            return connection_event(
                "udp_start", when=when, ktime_ns=e.ts_ns, proto="udp", ends=self._ends(e), netns=e.netns,
                cookie=e.cookie, process=self._process(e.tgid), named=self._named(e.netns, e.tgid, e.raddr, False),
                direction="rx" if e.received else "tx", tx_bytes=0 if e.received else size,
                rx_bytes=size if e.received else 0,
            )  # fmt: skip
        return None  # "close" (TCP's CLOSE state): the end, when the socket is freed, carries the totals

    def _end(self, e: ConnEvent, when: float) -> Event:
        opened = self._open.pop(e.cookie, None)
        # The kernel's endpoints as the connection opened (after CLOSE they may read 0).
        source = opened if opened is not None else e
        ends = self._ends(source)
        facts = None
        if opened is None:
            facts = self._collector.sock_facts(e.cookie)
            if facts is not None:
                family, _ = wire_family(facts.family, facts.laddr, facts.raddr)
                raddr = None if is_unspecified(facts.raddr) else addr_text(facts.raddr)
                ends = Endpoints(family, addr_text(facts.laddr), facts.lport, raddr, facts.rport)
        netns = source.netns or (facts.netns if facts is not None else 0)
        start_ns = opened.ts_ns if opened is not None else (facts.open_ns if facts is not None else 0)
        raw_raddr = source.raddr if opened is not None or facts is None else facts.raddr
        return connection_event(
            "tcp_close", when=when, ktime_ns=e.ts_ns, proto="tcp", ends=ends, netns=netns, cookie=e.cookie,
            process=self._process(e.tgid),
            named=self._named(netns, e.tgid, raw_raddr, e.initiator == INIT_REMOTE),
            initiator=INITIATORS.get(e.initiator), tx_bytes=e.tx_bytes if e.totals else None,
            rx_bytes=e.rx_bytes if e.totals else None,
            duration=(e.ts_ns - start_ns) / 1e9 if start_ns else None, complete=e.totals,
        )  # fmt: skip

    def from_life(self, e: LifeEvent, process: ProcessIdentity | None) -> Event | None:
        """A UDP flow's end, from the interval path's lifecycle tracker (it ends by going quiet);
        `process` from that path's own resolver (this one's lock is the event thread's)."""
        if e.event != "udp_end":
            return None
        named = (e.name, e.cname, e.name_source) if e.name else None
        return connection_event(
            "udp_end", when=e.end if e.end is not None else 0.0, ktime_ns=None, proto="udp",
            ends=Endpoints(e.family, e.laddr, e.lport, e.raddr, e.rport), netns=e.netns, cookie=e.cookie,
            process=process, named=named, tx_bytes=e.tx_bytes, rx_bytes=e.rx_bytes, duration=e.duration,
            complete=e.complete,
        )  # fmt: skip


class EventPump:
    """The thread that reads the kernel's event rings as they fill. `publish` gets each schema
    event (and a `lost` event when the kernel's ring buffer overflowed) in that thread."""

    def __init__(
        self,
        collector: Reads,
        live: LiveEvents,
        publish: Callable[[Event], None],
        *,
        names: NameCache | None = None,
        report: Callable[[str], None] = lambda msg: None,
    ) -> None:
        self._collector = collector
        self._live = live
        self._publish = publish
        self._names = names
        self._report = report
        self._queue: deque[ConnEvent] = deque()
        self._qlock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost_seen = 0
        self._stats_due = 0.0
        self.dropped = 0  # open/close events the interval path never took (its queue was full)
        self.published = 0
        self.failed: BaseException | None = None

    def start(self) -> None:
        self._lost_seen = self._collector.stat_total(abi.Stat.EVENTS_LOST)
        self._thread = threading.Thread(target=self._run, name="sockscope-events", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * POLL_MS / 1000 + 1)
            self._thread = None

    def take(self) -> list[ConnEvent]:
        """The open/close events since the last call, for the interval path."""
        with self._qlock:
            out = list(self._queue)
            self._queue.clear()
        if self.failed is not None:
            raise RuntimeError(f"the live event thread stopped: {self.failed}") from self.failed
        return out

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.step(POLL_MS)
        except BaseException as exc:  # surfaced by take(): the interval path must not go on blind
            self.failed = exc
            self._report(f"sockscope: the live event thread stopped: {exc}")

    def step(self, timeout_ms: int) -> None:
        events = self._collector.poll_events(timeout_ms)
        if self._names is not None:
            self._names.learn(self._collector.read_dns())  # before the connections they may name
        if events:
            keep = [e for e in events if e.kind in ("open", "close")]
            with self._qlock:
                room = MAX_QUEUED - len(self._queue)
                self._queue.extend(keep[: max(room, 0)])
            self.dropped += max(len(keep) - max(room, 0), 0)
        now = time.monotonic()
        if now >= self._stats_due:  # a map read: not on every wake-up of a busy ring
            self._stats_due = now + STATS_EVERY
            lost = self._collector.stat_total(abi.Stat.EVENTS_LOST)
            if lost > self._lost_seen:
                self._publish(lost_event("ring_buffer", lost - self._lost_seen))
                self._lost_seen = lost
        for e in events:
            out = self._live.convert(e)
            if out is not None:
                self.published += 1
                self._publish(out)
