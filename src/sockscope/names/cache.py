"""Which name each process got for each address, from the DNS answers it read.

A connection takes the name its own process received for its peer, else its parent's (a
lookup done before fork()), else the newest any process in its network namespace received.
Bounded: the least lately learned go first, counted in `evicted`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sockscope.collector.aggregate import IPPROTO_TCP
from sockscope.collector.model import DnsCapture
from sockscope.lru import LruDict
from sockscope.names.dns import Resolved, TcpStreams, parse_answer
from sockscope.names.fresh import FreshAddresses

MAX_NAMES = 8192  # per kind of record (per process, per namespace)
PARENT_HOPS = 3  # how far up the parents a lookup done before fork() is looked for


@dataclass(frozen=True, slots=True)
class Name:
    name: str  # as the program asked for it
    chain: tuple[str, ...]  # CNAME chain from it to the address
    ttl: int
    tgid: int  # the process that received the answer
    source: str  # "process" (its own or a parent's lookup), "namespace" or "resolved" (systemd-resolved)


@dataclass(slots=True)
class NameStats:
    answers: int = 0
    malformed: int = 0  # answers that did not parse: counted, never a name
    evicted: int = 0  # names let go at the bound


class NameCache:
    def __init__(self, limit: int = MAX_NAMES) -> None:
        self._proc: LruDict[tuple[int, bytes, int], Resolved] = LruDict(limit)
        self._ns: LruDict[tuple[int, bytes], tuple[Resolved, int, str]] = LruDict(limit)
        self._tcp = TcpStreams()
        self.stats = NameStats()
        self._fresh = FreshAddresses()  # addresses whose name changed: see take_fresh
        # With live events on, answers are learned in their thread while intervals look names up.
        self._lock = threading.Lock()

    @property
    def tcp_broken(self) -> int:
        return self._tcp.broken

    def learn(self, captures: Iterable[DnsCapture]) -> None:
        with self._lock:
            self._learn(captures)

    def _learn(self, captures: Iterable[DnsCapture]) -> None:
        for cap in captures:
            if cap.protocol == IPPROTO_TCP:
                for wire in self._tcp.feed(cap.cookie, cap.data, len(cap.data) == cap.length):
                    self._learn_one(cap, wire)
            else:
                self._learn_one(cap, cap.data)  # longer than the kernel copies: it fails to parse, counted

    def _learn_one(self, cap: DnsCapture, wire: bytes) -> None:
        self.stats.answers += 1
        resolved = parse_answer(wire)
        if resolved is None:
            self.stats.malformed += 1
            return
        before = self._proc.evicted + self._ns.evicted
        for r in resolved:
            key, ns_key = (cap.netns, r.addr, cap.tgid), (cap.netns, r.addr)
            old, old_ns = self._proc.get(key), self._ns.get(ns_key)
            if (
                old is None
                or (old.name, old.chain) != (r.name, r.chain)
                or old_ns is None
                or (old_ns[0].name, old_ns[0].chain, old_ns[2]) != (r.name, r.chain, "namespace")
            ):
                self._fresh.add(r.addr)  # the same answer again (most of them) changes no name
            self._proc[key] = r
            self._ns[ns_key] = (r, cap.tgid, "namespace")
        self.stats.evicted += self._proc.evicted + self._ns.evicted - before

    def lookup(
        self, netns: int, tgid: int, addr: bytes, parent: Callable[[int], int | None], *, namespace: bool = True
    ) -> Name | None:
        """The name for a connection of `tgid` to `addr` (16 bytes, v4-mapped for IPv4); with
        `namespace` false, only one its own process (or a parent) received. The lock is held
        for each map access only: parent() may read /proc, and the other thread must not wait."""
        with self._lock:
            found = self._ns.get((netns, addr))
        if found is None:
            # No process in the namespace received that address (any per-process record of it is
            # older than the namespace's, so gone first): the common case, answered at once.
            return None
        pid: int | None = tgid
        for _ in range(1 + PARENT_HOPS):
            if pid is None or pid <= 1:
                break
            with self._lock:
                r = self._proc.get((netns, addr, pid))
            if r is not None:
                return Name(r.name, r.chain, r.ttl, pid, "process")
            pid = parent(pid)
        if not namespace:
            return None
        r, who, source = found
        return Name(r.name, r.chain, r.ttl, who, source)

    def learn_resolved(self, netns: int, resolved: Iterable[Resolved]) -> None:
        """Names from systemd-resolved's monitor: which process asked is not known, so they are
        the namespace's (resolved serves the namespace it runs in)."""
        with self._lock:
            before = self._ns.evicted
            for r in resolved:
                old = self._ns.get((netns, r.addr))
                if old is None or (old[0].name, old[0].chain, old[2]) != (r.name, r.chain, "resolved"):
                    self._fresh.add(r.addr)
                self._ns[(netns, r.addr)] = (r, 0, "resolved")
            self.stats.evicted += self._ns.evicted - before

    def take_fresh(self) -> set[bytes] | None:
        """Addresses whose name may have changed since the last call (None: any of them)."""
        with self._lock:
            return self._fresh.take()
