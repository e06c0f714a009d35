"""LruDict: the newest entries stay, up to the limit."""

from __future__ import annotations

import pytest

from sockscope.lru import LruDict


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
