"""Addresses whose name changed, for the interval path's templates.

A connection's fields, its peer's name among them, are made once and trusted for a while
(collector.aggregate.Templates): a name learned later would show only when that runs out. The
name sources note here each address whose name changed; the interval path takes them and has
the templates of those peers made again."""

from __future__ import annotations

FRESH_LIMIT = 4096  # addresses noted between two reads; past it: "all of them"


class FreshAddresses:
    """Bounded: past `limit` addresses between two takes it answers None, which means any
    address may have changed (the caller remakes everything). Not locked: its owner's lock
    covers it."""

    def __init__(self, limit: int = FRESH_LIMIT) -> None:
        self.limit = limit
        self._addrs: set[bytes] = set()
        self._overflow = False

    def add(self, addr: bytes) -> None:
        if self._overflow:
            return
        if len(self._addrs) >= self.limit and addr not in self._addrs:
            self._overflow = True
            self._addrs.clear()
            return
        self._addrs.add(addr)

    def take(self) -> set[bytes] | None:
        """The addresses noted since the last take (None: too many to say which)."""
        if self._overflow:
            self._overflow = False
            return None
        out, self._addrs = self._addrs, set()
        return out
