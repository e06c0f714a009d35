"""The collector's own garbage-collection schedule."""

from __future__ import annotations

import gc

from sockscope.gcpace import paced


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_automatic_collection_is_off_inside_and_restored_after() -> None:
    assert gc.isenabled()
    with paced():
        assert not gc.isenabled() and gc.get_freeze_count() > 0
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_full_collection_when_due_frees_cycles() -> None:
    now = [0.0]
    with paced(every=60.0, clock=lambda: now[0]) as pacer:
        for _ in range(1000):
            Cycle()  # cyclic garbage: reference counting alone never frees it
        before = sum(isinstance(o, Cycle) for o in gc.get_objects())
        now[0] = 59.9
        pacer.after_interval()
        assert pacer.collections == 0
        now[0] = 60.0
        pacer.after_interval()
        assert pacer.collections == 1
        after = sum(isinstance(o, Cycle) for o in gc.get_objects())
    assert before >= 1000 and after == 0
