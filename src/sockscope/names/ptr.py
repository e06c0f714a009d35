"""Reverse DNS (PTR), only when asked for (`--ptr`, `collector.ptr`): it sends queries of
sockscope's own, through the system's resolver configuration. For peers no program resolved;
the name it gives is the address owner's (often a CDN's), said as `name_source: ptr`.

One thread looks names up, off the read path: a peer's name shows from the interval after its
answer came. The cache and the queue are bounded; lookups that did not fit are counted."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import dns.resolver
import dns.reversename

from sockscope.collector.addresses import addr_text
from sockscope.lru import LruDict
from sockscope.names.fresh import FreshAddresses

CACHE = 4096  # addresses, with their name or None (no answer)
QUEUE = 256  # lookups waiting
TIMEOUT = 2.0  # seconds per lookup


def lookup(addr: bytes, timeout: float = TIMEOUT) -> str | None:
    """The PTR name of a 16-byte address (v4-mapped for IPv4), or None."""
    try:
        answer = dns.resolver.resolve(dns.reversename.from_address(addr_text(addr)), "PTR", lifetime=timeout)
        return str(answer[0].target.to_text(omit_final_dot=True))
    except Exception:  # no name, no answer, a broken one: all the same here
        return None


class PtrNames:
    def __init__(self, resolve: Callable[[bytes], str | None] = lookup, limit: int = CACHE) -> None:
        self._resolve = resolve
        self._cache: LruDict[bytes, str | None] = LruDict(limit)
        self._pending: set[bytes] = set()
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.dropped = 0  # lookups not made: the queue was full
        self._fresh = FreshAddresses()

    def name(self, addr: bytes) -> str | None:
        """The name if known by now; else None, and a lookup is queued (once)."""
        with self._lock:
            if addr in self._cache:
                return self._cache.get(addr)
            if addr in self._pending:
                return None
            try:
                self._queue.put_nowait(addr)
            except queue.Full:
                self.dropped += 1
                return None
            self._pending.add(addr)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sockscope-ptr", daemon=True)
                self._thread.start()
        return None

    def _run(self) -> None:
        while (addr := self._queue.get()) is not None:
            found = self._resolve(addr)
            with self._lock:
                self._cache[addr] = found
                self._pending.discard(addr)
                if found is not None:
                    self._fresh.add(addr)

    def take_fresh(self) -> set[bytes] | None:
        """Addresses that got a name since the last call (None: any of them)."""
        with self._lock:
            return self._fresh.take()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=TIMEOUT + 1)
            self._thread = None
