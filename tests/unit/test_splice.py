"""SpliceClaims' bookkeeping of network namespaces (the walks themselves: tests/kernel/test_coverage.py)."""

from __future__ import annotations

import os

from sockscope.bpf import splice
from sockscope.bpf.splice import SpliceClaims, WalkSchedule


class FakeIterLink:
    """open_iter() gives a pipe's read end holding what the walk printed: by default nothing (it
    claimed no bytes); `prints` queues what the next walks print (ss_iter_rxseq: a __u32 per
    socket it claimed bytes of)."""

    def __init__(self, prints: list[bytes] | None = None) -> None:
        self.runs = 0
        self.prints = prints or []

    def open_iter(self) -> int:
        self.runs += 1
        r, w = os.pipe()
        if self.prints:
            os.write(w, self.prints.pop(0))
        os.close(w)
        return r


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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


def test_the_schedule_walks_again_at_once_after_a_claim_and_after_the_idle_period_otherwise() -> None:
    sched = WalkSchedule(idle=5.0)
    assert sched.due(1, 0.0)  # never walked: at once
    sched.walked(1, 10.0, claimed=False)
    assert not sched.due(1, 10.0) and not sched.due(1, 14.99)
    assert sched.due(1, 15.0)
    sched.walked(1, 15.0, claimed=True)
    assert sched.due(1, 15.0) and sched.due(1, 15.5)
    assert sched.due(2, 15.5)  # another namespace keeps its own time
    sched.walked(1, 16.0, claimed=False)
    sched.forget(1)
    assert sched.due(1, 16.0)


def test_own_namespace_is_walked_every_read_while_it_claims_and_every_idle_period_while_not() -> None:
    link = FakeIterLink([b"", b"\x10\x00\x00\x00", b"\x01\x00\x00\x00\x02\x00\x00\x00", b""])
    clock = Clock()
    claims = SpliceClaims(link, idle=5.0, clock=clock)  # type: ignore[arg-type]
    claims.run()  # the first read: walked, nothing claimed
    clock.now += 1
    claims.run()
    clock.now += 3.9
    claims.run()
    assert link.runs == 1  # idle: 4.9 s since
    clock.now += 0.1
    claims.run()  # 5 s: walked, claimed 16 bytes
    clock.now += 1
    claims.run()  # claimed before: walked again (claims 2 sockets' bytes)
    clock.now += 1
    claims.run()  # and again: nothing this time
    clock.now += 1
    claims.run()
    assert link.runs == 4 and claims.walks == 4


def test_a_newly_noted_namespace_is_walked_at_the_next_read_even_while_its_own_is_idle() -> None:
    link = FakeIterLink()
    clock = Clock()
    claims = SpliceClaims(link, idle=5.0, clock=clock)  # type: ignore[arg-type]
    joined: list[int] = []

    def run_in(netns: int, pid: int) -> bytes:
        joined.append(netns)
        return b""

    claims._run_in = run_in  # type: ignore[method-assign]
    claims.run()
    claims.note(777, 1)
    clock.now += 1
    claims.run()
    clock.now += 1
    claims.run()
    assert (link.runs, joined) == (1, [777])


def test_the_schedule_forgets_namespaces_no_longer_walked(monkeypatch) -> None:
    monkeypatch.setattr(splice, "MAX_NETNS", 2)
    link = FakeIterLink()
    claims = SpliceClaims(link, clock=Clock())  # type: ignore[arg-type]
    claims._run_in = lambda netns, pid: b""  # type: ignore[method-assign]
    for ns in range(100, 110):  # namespaces come and go (containers): the LRU keeps two
        claims.note(ns, 1)
        claims.run()
    assert set(claims.schedule._due) == {claims.own, 108, 109}
