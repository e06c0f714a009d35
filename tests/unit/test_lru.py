"""LruDict and FifoDict: bounded caches, up to the limit."""

from __future__ import annotations

import pytest

from sockscope.lru import FifoDict, LruDict


def test_oldest_goes_past_the_limit_and_use_makes_an_entry_new() -> None:
    d: LruDict[str, int] = LruDict(2)
    d["a"] = 1
    d["b"] = 2
    assert d.get("a") == 1  # now the newest
    d["c"] = 3
    assert list(d) == ["a", "c"] and d.evicted == 1
    assert d.get("b") is None and d.get("b", 0) == 0
    d["a"] = 9  # an update is a use too
    d["d"] = 4
    assert dict(d) == {"a": 9, "d": 4}


def test_no_room_is_refused() -> None:
    with pytest.raises(ValueError):
        LruDict(0)


def test_fifo_dict_drops_the_oldest_inserted_eighth_and_assignment_renews() -> None:
    d: FifoDict[int, int] = FifoDict(16)
    for i in range(16):
        d[i] = i
    d[0] = 100  # re-assigned: now the newest
    assert d.get(1) == 1 and list(d)[-1] == 0  # get() does not move
    d[16] = 16  # over the limit: the two oldest inserted (1, 2) go
    assert len(d) == 15 and 1 not in d and 2 not in d and d[0] == 100
    assert d.evicted == 2
    with pytest.raises(ValueError):
        FifoDict(0)


def test_lru_get_of_a_stored_none_and_a_miss() -> None:
    d: LruDict[str, int | None] = LruDict(2)
    d["a"] = None
    d["b"] = 1
    assert d.get("a", 5) is None and list(d) == ["b", "a"]  # found (None), and moved
    assert d.get("zz", 5) == 5 and d.get("zz") is None and list(d) == ["b", "a"]  # a miss moves nothing
