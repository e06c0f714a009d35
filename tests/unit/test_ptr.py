"""Reverse DNS names: asked once per address, off the read path, bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import dns.resolver
import pytest

from sockscope.names import ptr
from sockscope.names.ptr import PtrNames

A = bytes(10) + b"\xff\xff" + bytes([198, 18, 0, 7])


def wait_for(cond: Callable[[], bool], seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_a_name_comes_in_a_later_read_and_each_address_is_asked_once() -> None:
    asked: list[bytes] = []
    answer = threading.Event()  # the lookup waits for it: the second read finds it pending, whatever the timing

    def resolve(a: bytes) -> str | None:
        asked.append(a)
        answer.wait(5.0)
        return "host.example"

    names = PtrNames(resolve)
    try:
        assert names.name(A) is None  # queued
        assert names.name(A) is None  # still pending: not queued twice
        answer.set()
        wait_for(lambda: names.name(A) == "host.example")
        assert asked == [A]
    finally:
        names.close()


def test_no_answer_is_remembered_too() -> None:
    asked: list[bytes] = []

    def resolve(a: bytes) -> str | None:
        asked.append(a)
        return None

    names = PtrNames(resolve)
    try:
        names.name(A)
        wait_for(lambda: A in names._cache)
        assert names.name(A) is None and asked == [A]
    finally:
        names.close()


def test_a_full_queue_is_counted() -> None:
    gate = threading.Event()

    def resolve(a: bytes) -> str | None:
        gate.wait(5)
        return None

    names = PtrNames(resolve)
    try:
        for i in range(ptr.QUEUE + 10):
            names.name(bytes(12) + i.to_bytes(4, "big"))
        assert names.dropped >= 9
    finally:
        gate.set()
        names.close()


def test_reverse_lookups_ask_for_the_address_text(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def resolve(qname: object, rdtype: str, lifetime: float) -> object:
        asked.append(str(qname))
        raise dns.resolver.NXDOMAIN

    monkeypatch.setattr(dns.resolver, "resolve", resolve)
    assert ptr.lookup(A) is None and ptr.lookup(bytes.fromhex("fd00" + "00" * 13 + "07")) is None
    assert (
        asked[0] == "7.0.18.198.in-addr.arpa."
        and asked[1].startswith("7.0.0.0.")
        and asked[1].endswith(".d.f.ip6.arpa.")
    )


def test_an_address_that_got_a_name_is_taken_once_as_fresh() -> None:
    names = PtrNames(lambda a: "host.example" if a == A else None)
    try:
        other = bytes(15) + b"\x01"
        names.name(A)
        names.name(other)
        wait_for(lambda: names.name(A) == "host.example" and names.take_fresh() == {A})
        assert names.take_fresh() == set()  # and an address without a name is never fresh
    finally:
        names.close()
