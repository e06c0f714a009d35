"""A dict that keeps its most recently used entries, up to a limit: caches bounded by
configuration, never by uptime (a monitor runs for months under process churn)."""

from __future__ import annotations

from collections import OrderedDict
from itertools import islice
from typing import TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
_MISSING = object()
_ordered_get = OrderedDict.get  # dict's own: no move


class LruDict(OrderedDict[K, V]):
    """get() and assignment make an entry the newest; past `limit` the oldest goes. Only for
    caches whose misses are answered again from the source of truth."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        if limit < 1:
            raise ValueError(f"an LRU cache needs room for one entry, got {limit}")
        self.limit = limit
        self.evicted = 0

    @overload  # type: ignore[override]
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: V) -> V: ...
    def get(self, key: K, default: V | None = None) -> V | None:
        # A miss raises nothing: the name cache is asked for most connections made and holds
        # none for them, and an exception raised and caught per miss cost more than a lookup.
        value = _ordered_get(self, key, _MISSING)
        if value is _MISSING:
            return default
        self.move_to_end(key)
        return value  # type: ignore[return-value]

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)
            self.evicted += 1


class FifoDict(dict[K, V]):
    """A dict of at most `limit` entries: past it, the oldest inserted eighth goes (amortised).
    Assignment makes an entry the newest; get() is dict's own, with no move. For read paths that
    ask per connection per interval, where an LRU's move on every hit costs more than the rare
    second fetch of an entry that aged out. Only for caches whose misses are answered again
    from the source of truth."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        if limit < 1:
            raise ValueError(f"a bounded cache needs room for one entry, got {limit}")
        self.limit = limit
        self.evicted = 0

    def __setitem__(self, key: K, value: V) -> None:
        self.pop(key, None)  # re-inserted: the newest
        super().__setitem__(key, value)
        if len(self) > self.limit:
            victims = list(islice(self, max(1, self.limit // 8)))
            for old in victims:
                del self[old]
            self.evicted += len(victims)
