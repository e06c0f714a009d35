"""SpliceClaims' bookkeeping of network namespaces (the walks themselves: tests/kernel/test_coverage.py)."""

from __future__ import annotations

import os

from sockscope.bpf import splice
from sockscope.bpf.splice import SpliceClaims


class FakeIterLink:
    """open_iter() gives a pipe's read end with nothing in it: a walk that printed nothing."""

    def __init__(self) -> None:
        self.runs = 0

    def open_iter(self) -> int:
        self.runs += 1
        r, w = os.pipe()
        os.close(w)
        return r


def test_only_other_namespaces_are_noted_and_they_stay_bounded(monkeypatch) -> None:
    monkeypatch.setattr(splice, "MAX_NETNS", 4)
    claims = SpliceClaims(FakeIterLink())  # type: ignore[arg-type]
    claims.note(claims.own, 1)
    claims.note(0, 1)
    claims.note(None, 1)
    assert dict(claims.others) == {}
    for ns in range(100, 110):
        claims.note(ns, ns)
    assert list(claims.others) == [106, 107, 108, 109]  # the most lately active


def test_a_run_walks_its_own_namespace_and_drops_the_ones_it_cannot_join() -> None:
    link = FakeIterLink()
    claims = SpliceClaims(link)  # type: ignore[arg-type]
    claims.note(12345, os.getpid())  # this process is not in netns 12345: moved or reused
    claims.note(12346, 2**22 + 7)  # no such process
    claims.run()
    assert link.runs == 1 and dict(claims.others) == {}
