"""BpfSource's socket-facts cache: read again when due, the same object while unchanged."""

from __future__ import annotations

from sockscope.collector import bpf_source
from sockscope.collector.bpf_source import BpfSource
from sockscope.collector.model import SockFacts
from sockscope.lru import FifoDict

V4 = bytes(10) + b"\xff\xff\x7f\x00\x00\x01"


def facts(cookie: int, protocol: int = 17, state: int = 7, rport: int = 0) -> SockFacts:
    return SockFacts(cookie, 2, protocol, 2 if protocol == 17 else 1, V4, 5000, V4, rport, state)


class FakeKernel:
    def __init__(self) -> None:
        self.socks: dict[int, SockFacts] = {}
        self.lookups = 0

    def sock_facts(self, cookie: int) -> SockFacts | None:
        self.lookups += 1
        f = self.socks.get(cookie)
        return None if f is None else f._replace()  # a new object each read, as from the map


def source(kernel: FakeKernel) -> BpfSource:
    src = object.__new__(BpfSource)  # the cache alone: no BPF
    src.collector = kernel  # type: ignore[assignment]
    src._socks = FifoDict(64)
    src._now = 0.0
    return src


def test_facts_are_read_once_per_period_and_kept_as_one_object_while_unchanged() -> None:
    k = FakeKernel()
    k.socks[1] = facts(1)
    src = source(k)
    first = src._sock(1)
    assert first == k.socks[1] and k.lookups == 1
    src._now = bpf_source.FACTS_REFRESH * 0.49  # before the earliest due time
    assert src._sock(1) is first and k.lookups == 1
    src._now = bpf_source.FACTS_REFRESH * 1.51  # past the latest
    assert src._sock(1) is first and k.lookups == 2  # read again, equal: the same object


def test_changed_facts_replace_and_evicted_facts_stay() -> None:
    k = FakeKernel()
    k.socks[2] = facts(2)
    src = source(k)
    src._sock(2)
    k.socks[2] = facts(2, state=1, rport=53)  # the UDP socket connect()ed
    src._now = bpf_source.FACTS_REFRESH * 2
    assert src._sock(2) == k.socks[2]
    last = k.socks.pop(2)  # gone from the kernel's LRU map
    src._now = bpf_source.FACTS_REFRESH * 4
    assert src._sock(2) == last


def test_tcp_facts_wait_for_their_events_longer() -> None:
    k = FakeKernel()
    k.socks[3] = facts(3, protocol=6, state=1)
    src = source(k)
    src._sock(3)
    src._now = bpf_source.FACTS_REFRESH * 2
    src._sock(3)
    assert k.lookups == 1
    src._now = bpf_source.TCP_FACTS_REFRESH * 2
    src._sock(3)
    assert k.lookups == 2


def test_due_times_spread_over_the_period() -> None:
    k = FakeKernel()
    src = source(k)
    for c in range(50):
        k.socks[c] = facts(c)
        src._sock(c)
    dues = sorted(src._socks[c][0] for c in range(50))
    assert dues[0] >= 0.5 * bpf_source.FACTS_REFRESH and dues[-1] < 1.5 * bpf_source.FACTS_REFRESH
    assert dues[-1] - dues[0] > 0.04 * bpf_source.FACTS_REFRESH  # not all due at once
