"""systemd-resolved's query monitor, against a fake varlink server on a socket of the test's own
(this machine runs no systemd-resolved): the subscription, the parse, the hand-over, refusals."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sockscope.names.cache import NameCache
from sockscope.names.resolved import METHOD, ResolvedMonitor, parse_reply

V4 = bytes(10) + b"\xff\xff"

REPLY = {
    "state": "success",
    "question": [{"class": 1, "type": 1, "name": "api.example.com"}],
    "answer": [
        {"rr": {"key": {"class": 1, "type": 5, "name": "api.example.com"}, "name": "edge.cdn.example"}},
        {"rr": {"key": {"class": 1, "type": 1, "name": "edge.cdn.example"}, "address": [198, 18, 0, 7]}},
        {"rr": {"key": {"class": 1, "type": 28, "name": "edge.cdn.example"}, "address": [253, 0] + [0] * 13 + [7]}},
        {"rr": {"key": {"class": 1, "type": 1, "name": "elsewhere.example"}, "address": [198, 18, 0, 66]}},
    ],
}


def test_a_reply_gives_the_chains_addresses() -> None:
    got = parse_reply(REPLY)
    assert got is not None
    assert [(r.addr, r.name, r.chain) for r in got] == [
        (V4 + bytes([198, 18, 0, 7]), "api.example.com", ("edge.cdn.example",)),
        (bytes([253, 0] + [0] * 13 + [7]), "api.example.com", ("edge.cdn.example",)),
    ]  # the record off the chain is not taken


@pytest.mark.parametrize(
    "params",
    [
        None,
        [],
        {"state": "success"},
        {"state": "success", "question": [], "answer": []},
        {"state": "success", "question": [{"name": 7}], "answer": []},
        {**REPLY, "answer": [{"rr": {"key": {"type": 1, "name": "a"}, "address": [1, 2, 3]}}]},
        {**REPLY, "answer": [{"rr": {"key": {"type": 1, "name": "a"}, "address": [1, 2, 3, 999]}}]},
        {**REPLY, "answer": [{"rr": {"key": {"type": 5, "name": "a"}}}]},
        {**REPLY, "answer": ["x"]},
    ],
)
def test_malformed_replies(params: Any) -> None:
    assert parse_reply(params) is None


def test_a_failed_lookup_names_nothing() -> None:
    assert parse_reply({"state": "not-found"}) == []


class FakeResolved:
    """A varlink server like systemd-resolved's monitor: replies to a subscription, or an error."""

    def __init__(self, path: str, replies: list[bytes]) -> None:
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)
        self.replies = replies
        self.requests: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.srv.accept()
        with conn:
            self.requests.append(json.loads(conn.recv(4096).rstrip(b"\0")))
            for r in self.replies:
                conn.sendall(r)
            conn.recv(1)  # until the client closes

    def close(self) -> None:
        self.srv.close()


def _wait(cond: Any, seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end
        time.sleep(0.01)


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "io.systemd.Resolve.Monitor")


def test_subscribed_names_reach_the_cache_as_the_namespaces(sock_path: str) -> None:
    good = json.dumps({"parameters": REPLY, "continues": True}).encode() + b"\0"
    split = good[:40], good[40:]  # a reply in two reads
    bad = json.dumps({"parameters": {"state": "success"}}).encode() + b"\0"  # no question
    fake = FakeResolved(sock_path, [*split, b"not json\0", bad])
    mon = ResolvedMonitor(sock_path)
    try:
        assert mon.start() == "subscribed"
        _wait(lambda: mon.malformed == 2)
        got = mon.drain()
        assert fake.requests == [{"method": METHOD, "more": True}]
        cache = NameCache()
        cache.learn_resolved(7, got)
        n = cache.lookup(7, 1234, V4 + bytes([198, 18, 0, 7]), lambda pid: None)
        assert n is not None and (n.name, n.chain, n.source) == ("api.example.com", ("edge.cdn.example",), "resolved")
        assert cache.lookup(7, 1234, V4 + bytes([198, 18, 0, 7]), lambda pid: None, namespace=False) is None
    finally:
        mon.close()
        fake.close()


def test_absent_and_refused(sock_path: str) -> None:
    mon = ResolvedMonitor(sock_path)
    assert mon.start().startswith("absent") and mon.drain() == []
    err = json.dumps({"error": "org.varlink.service.PermissionDenied"}).encode() + b"\0"
    fake = FakeResolved(sock_path, [err])
    mon = ResolvedMonitor(sock_path)
    try:
        mon.start()
        _wait(lambda: mon.state.startswith("refused"))
        assert "PermissionDenied" in mon.state
    finally:
        mon.close()
        fake.close()
