"""The real source: the kernel collector plus /proc identity."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sockscope.bpf.loader import Collector, CollectorOptions, HookStatus, cgroup2_root
from sockscope.collector.aggregate import (
    TEMPLATE_TTL_TCP,
    Named,
    Templates,
    build_processes,
    due,
    is_tcp,
)
from sockscope.collector.cgroups import CgroupPaths
from sockscope.collector.identity import ProcessIdentity, ProcessResolver
from sockscope.collector.lifecycle import LifecycleTracker
from sockscope.collector.model import Interval, SockFacts
from sockscope.collector.source import Source
from sockscope.events.live import EventPump, LiveEvents
from sockscope.lru import FifoDict
from sockscope.names.cache import NameCache
from sockscope.names.ptr import PtrNames
from sockscope.names.resolved import ResolvedMonitor

# Facts of sockets, as last read from the kernel's map: the newest this many. They are read again
# every FACTS_REFRESH seconds on average (a UDP socket that connect()s changes state); a TCP
# socket's at once after its open or close event, else every TCP_FACTS_REFRESH (its state between
# those shows that late). A socket the kernel's LRU map evicted keeps its last facts.
# (One map lookup per connection per interval was a third of the collector's time.)
SOCK_FALLBACK = 32768  # above the active sockets of a busy host: a miss is a map lookup
FACTS_REFRESH = 10.0
TCP_FACTS_REFRESH = 60.0


def _own_netns() -> int:
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return 0


OWN_NETNS = _own_netns()  # where systemd-resolved's answers belong: the namespace sockscope runs in


class BpfSource(Source):
    def __init__(
        self,
        options: CollectorOptions | None = None,
        resolver: ProcessResolver | None = None,
        publish: Callable[[dict[str, Any]], None] | None = None,
        report: Callable[[str], None] = lambda msg: None,
    ) -> None:
        """`publish`: live events (sockscope.events) as they happen, from a thread of their own;
        it turns `options.live` on."""
        if publish is not None:
            options = replace(options or CollectorOptions(), live=True)
        self.collector = Collector(options)
        self._publish = publish
        self._report = report
        self.pump: EventPump | None = None
        self.live: LiveEvents | None = None
        self.lifecycle = LifecycleTracker(udp_idle=self.collector.options.udp_idle)
        self.resolver = resolver or ProcessResolver(cgroups=CgroupPaths(cgroup2_root()))
        # Last facts seen per socket: a socket evicted from the kernel's LRU map keeps its endpoints.
        self._socks: FifoDict[int, tuple[float, SockFacts | None]] = FifoDict(SOCK_FALLBACK)
        self._now = 0.0
        self.names = NameCache()
        self.resolved = ResolvedMonitor() if self.collector.options.dns else None
        self.ptr = PtrNames() if self.collector.options.ptr else None
        self._templates = Templates(SOCK_FALLBACK, namer=self._name, tcp_ttl=TEMPLATE_TTL_TCP)
        self._totals: dict[str, int] = {}  # user-space counters as last reported (see _delta)

    @property
    def hooks(self) -> list[HookStatus]:
        return self.collector.hooks

    def start(self) -> None:
        self.collector.start()
        if self._publish is not None:
            # A resolver of its own: the pump's thread must not share the interval path's caches.
            self.live = LiveEvents(self.collector, self.names, ProcessResolver(cgroups=CgroupPaths(cgroup2_root())))
            self.pump = EventPump(self.collector, self.live, self._publish, names=self.names, report=self._report)
            self.pump.start()
        if self.resolved is not None:
            self.resolved.start()  # absent where systemd-resolved does not run: normal

    def close(self) -> None:
        if self.pump is not None:
            self.pump.close()
            self.pump = None
        if self.resolved is not None:
            self.resolved.close()
        if self.ptr is not None:
            self.ptr.close()
        self.collector.close()

    def _sock(self, cookie: int) -> SockFacts | None:
        known = self._socks.get(cookie)
        if known is not None and self._now < known[0]:
            return known[1]
        facts = self.collector.sock_facts(cookie)
        if known is not None and (facts is None or facts == known[1]):
            facts = known[1]  # unchanged (the same object keeps its templates), or evicted: its last facts
        period = TCP_FACTS_REFRESH if is_tcp(facts) else FACTS_REFRESH
        self._socks[cookie] = (due(self._now, period, cookie), facts)
        return facts

    def _name(self, netns: int, tgid: int, addr: bytes, accepted: bool) -> Named | None:
        # The peer of an accepted connection is whoever connected: only a name its own process
        # resolved for it stands, not one another program in the namespace asked for.
        n = self.names.lookup(netns, tgid, addr, self._parent, namespace=not accepted)
        if n is not None:
            return (n.name, n.chain, n.source)
        if self.ptr is not None:
            name = self.ptr.name(addr)
            return None if name is None else (name, (), "ptr")
        return None

    def _parent(self, tgid: int) -> int | None:
        return self._identity(tgid).ppid

    def _identity(self, tgid: int) -> ProcessIdentity:
        return self.resolver.resolve(self.collector.proc_facts(tgid), tgid)

    def read(self) -> Interval:
        # Tens of thousands of objects are made here per interval, none of them in a cycle: the
        # cyclic collector, run by allocation counts in the middle of it, cost a third of the read
        # (it scans the long-lived caches too). It runs when the read is done.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._read()
        finally:
            if was_enabled:
                gc.enable()

    def _delta(self, name: str, total: int) -> int:
        """What a user-space counter (a running total) added since the last interval."""
        before, self._totals[name] = self._totals.get(name, 0), total
        return total - before

    def _read(self) -> Interval:
        # First: a close read now has all its bytes in this drain. With live events on, their thread
        # reads the rings (events and DNS answers) and hands the open/close events on here.
        if self.pump is not None:
            events = self.pump.take()
            self.collector.note_opens(events)
        else:
            events = self.collector.read_events()
            self.names.learn(self.collector.read_dns())  # before the connections they name
        if self.resolved is not None:
            self.names.learn_resolved(OWN_NETNS, self.resolved.drain())
        self._now = time.monotonic()
        fresh = self.names.take_fresh()  # peers whose name changed: their connections show it now
        if self.ptr is not None:
            more = self.ptr.take_fresh()
            fresh = None if fresh is None or more is None else fresh | more
        self._templates.rename(fresh, self._now)
        for e in events:  # its state changed: read its facts afresh
            known = self._socks.get(e.cookie)
            if known is not None:
                self._socks[e.cookie] = (0.0, known[1])
            self._templates.forget(e.cookie)
        elapsed, flows, counters = self.collector.read_flows()
        ts = time.time()
        # pid 0: bytes moved in no process's context (kernel threads' own sockets show as those threads).
        orphans = [f for f in flows if not f[1]]  # (cookie, tgid, raddr, rport, tx, rx, tx calls, rx calls)
        if orphans:
            flows = [f for f in flows if f[1]]
        processes = build_processes(flows, self._sock, self._identity, self._templates, self._now)
        if self.collector.splice is not None:
            for p in processes:
                self.collector.splice.note(p.netns, p.pid)
        iv = Interval(
            ts=ts,
            interval=elapsed,
            processes=processes,
            counters=counters,
            unattributed_tx=sum(f[4] for f in orphans),
            unattributed_rx=sum(f[5] for f in orphans),
        )
        iv.lifecycle = self.lifecycle.update(iv, events)
        if self.live is not None and self._publish is not None:
            for life in iv.lifecycle:  # UDP flows end by going quiet: known here, once per interval
                ev = self.live.from_life(life, self._identity(life.pid) if life.pid else None)
                if ev is not None:
                    # Its next datagram is a new udp_start (the kernel announces a flow once).
                    self.collector.forget_udp_flow(life.cookie, life.pid or 0, life.raddr, life.rport)
                    self._publish(ev)
        st, mon = self.names.stats, self.resolved
        forgotten = self._delta("forgotten", self.lifecycle.forgotten)
        # DNS-over-TCP streams given up and the monitor's malformed replies count as malformed
        # answers; the monitor's replies that did not fit its queue as names let go.
        malformed = self._delta("malformed", st.malformed + self.names.tcp_broken + (mon.malformed if mon else 0))
        evicted = self._delta("evicted", st.evicted + (mon.dropped if mon else 0))
        ptr_dropped = self._delta("ptr", self.ptr.dropped if self.ptr else 0)
        # Open/close events the live thread could not queue for this path: lost lifecycle events too.
        queue_lost = self._delta("pump", self.pump.dropped if self.pump else 0)
        if forgotten or malformed or evicted or ptr_dropped or queue_lost:
            iv.counters = replace(
                iv.counters, lifecycle_forgotten=forgotten, dns_malformed=malformed, names_evicted=evicted,
                ptr_dropped=ptr_dropped, events_lost=iv.counters.events_lost + queue_lost,
            )  # fmt: skip
        return iv
