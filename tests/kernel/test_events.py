"""Live events (issue 14) from the real kernel programs: every connection, listener and UDP
flow start of the test's generators, at once, under the right process, with TCP totals equal
to the generators' own counts; the JSON valid against the schema."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sockscope.collector.bpf_source import BpfSource
from sockscope.events.model import Event, encode
from tests.kernel.conftest import GROUP, Netns, Traffic, options

SCHEMA = json.loads((Path(__file__).parents[2] / "src/sockscope/events/schema/event-v1.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


class Collected:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: str, pids: set[int] | int) -> list[Event]:
        want = {pids} if isinstance(pids, int) else pids
        with self.lock:
            return [e for e in self.events if e["kind"] == kind and e["pid"] in want]

    def wait(self, kind: str, pids: set[int] | int, n: int, timeout: float = 10.0) -> list[Event]:
        deadline = time.monotonic() + timeout
        while len(found := self.of(kind, pids)) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return found


@pytest.fixture
def live() -> Iterator[tuple[BpfSource, Collected]]:
    got = Collected()
    src = BpfSource(options(), publish=got)
    src.start()
    assert src.collector.group == GROUP, src.collector.group
    # The interval path still runs (it drains the flow maps and ends quiet UDP flows).
    stop = threading.Event()

    def intervals() -> None:
        while not stop.wait(0.5):
            src.read()

    t = threading.Thread(target=intervals, daemon=True)
    t.start()
    try:
        yield src, got
    finally:
        stop.set()
        t.join(5)
        src.close()
    for e in got.events:  # everything published is valid against the schema, and encodes
        VALIDATOR.validate(json.loads(encode(e)))
    assert src.pump is None  # closed
    lost = [e for e in got.events if e["kind"] == "lost"]
    assert not lost, lost


def test_tcp_connections_from_short_lived_processes(live: tuple[BpfSource, Collected], netns: Netns) -> None:
    """200 connections from 10 processes of 20 each, to a server in a namespace: 200 connects and
    200 closes under the client pids, 200 accepts and closes under the server's, one listen;
    each close's totals are exact, and each process's sums equal its own counts."""
    _, got = live
    srv = Traffic("ss-ev-srv", "tcp-server", "--bind", netns.peer4, "--accept", "200", "--reply", "777",
                  prefix=netns.exec_prefix())  # fmt: skip
    port = srv.line()["port"]
    args = ["--host", netns.peer4, "--port", str(port), "--connections", "20"]
    done: dict[int, dict[str, Any]] = {}
    for i in range(10):  # one after another: under TCG, 10 starting at once outwait the server's accept()
        client = Traffic(f"ss-ev-c{i}", "tcp-client", *args, "--send", str(1000 + i))
        done[client.pid] = client.wait()
    server_done = srv.wait()
    pids = set(done)
    connects = got.wait("tcp_connect", pids, 200)
    closes = got.wait("tcp_close", pids, 200)
    accepts = got.wait("tcp_accept", srv.pid, 200)
    server_closes = got.wait("tcp_close", srv.pid, 200)
    time.sleep(0.3)  # nothing more comes: no event twice
    assert len(got.of("tcp_connect", pids)) == len(connects) == 200
    assert len(got.of("tcp_close", pids)) == len(closes) == 200
    assert len(got.of("tcp_accept", srv.pid)) == len(accepts) == 200
    assert len(got.of("tcp_close", srv.pid)) == len(server_closes) == 200
    listens = got.of("tcp_listen", srv.pid)
    assert [(e["laddr"], e["lport"]) for e in listens] == [(netns.peer4, port)]
    for pid, d in done.items():
        mine = [e for e in closes if e["pid"] == pid]
        assert len(mine) == 20
        assert all(e["tx_bytes"] == d["tx"] // 20 and e["rx_bytes"] == 777 for e in mine), mine[0]
        assert sum(e["tx_bytes"] for e in mine) == d["tx"]
        assert sum(e["rx_bytes"] for e in mine) == d["rx"]
        assert all(e["complete"] and e["initiator"] == "local" for e in mine)
    assert sum(e["tx_bytes"] for e in server_closes) == server_done["tx"] == 200 * 777
    assert sum(e["rx_bytes"] for e in server_closes) == server_done["rx"]
    assert all(e["initiator"] == "remote" and e["netns"] == netns.inode() for e in accepts + server_closes)
    c = connects[0]
    assert (c["raddr"], c["rport"], c["proto"], c["family"]) == (netns.peer4, port, "tcp", 4)
    assert c["comm"] and c["comm"].startswith("ss-ev-c")
    # The client's endpoints on its close, as it opened (a closed socket's own read 0).
    by_cookie = {e["cookie"]: e for e in connects}
    for e in closes:
        o = by_cookie[e["cookie"]]
        assert (e["laddr"], e["lport"], e["raddr"], e["rport"]) == (o["laddr"], o["lport"], o["raddr"], o["rport"])
        assert e["duration"] is not None and e["duration"] >= 0


def test_udp_starts_once_per_peer(live: tuple[BpfSource, Collected], netns: Netns) -> None:
    """2 processes each send 3 datagrams to each of 25 peers (ports): 50 udp_start events, one per
    (process, peer), each the first datagram's size, none for the repeats."""
    _, got = live
    clients = []
    for i in range(2):
        ports = [str(40000 + 25 * i + k) for k in range(25)]
        args = [a for p in ports for a in ("--host", netns.peer4, "--port", p)]
        clients.append(Traffic(f"ss-ev-u{i}", "udp-client", *args, "--count", "75", "--size", str(100 + i),
                               "--flood"))  # fmt: skip
    done = {c.pid: c.wait() for c in clients}
    starts = got.wait("udp_start", set(done), 50)
    time.sleep(0.3)
    assert len(got.of("udp_start", set(done))) == len(starts) == 50
    for i, c in enumerate(clients):
        mine = [e for e in starts if e["pid"] == c.pid]
        assert sorted(e["rport"] for e in mine) == [40000 + 25 * i + k for k in range(25)]
        assert all(e["raddr"] == netns.peer4 and e["dir"] == "tx" and e["tx_bytes"] == 100 + i for e in mine)
        assert done[c.pid]["tx"] == 75 * (100 + i)


def _pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    cl = socket.create_connection(srv.getsockname())
    acc, _ = srv.accept()
    return srv, cl, acc


def _recv(sock: socket.socket, n: int) -> int:
    """Read exactly n bytes (fewer only at EOF)."""
    got = 0
    while got < n:
        chunk = sock.recv(min(65536, n - got))
        if not chunk:
            break
        got += len(chunk)
    return got


def _half_close(read_eof: bool) -> tuple[int, int]:
    """The client writes and shuts down; the server reads it all and the EOF, replies and closes;
    the client reads the reply after its socket reached CLOSE (the hand-off to time-wait), then
    the EOF or not. Returns the (client, server) local ports."""
    srv, cl, acc = _pair()
    cl.sendall(b"a" * 5000)
    cl.shutdown(socket.SHUT_WR)
    assert _recv(acc, 5000) == 5000
    assert acc.recv(10) == b""  # the EOF, read: one sequence number, no byte
    acc.sendall(b"b" * 3000)
    ports = cl.getsockname()[1], acc.getsockname()[1]
    acc.close()
    time.sleep(0.1)
    assert _recv(cl, 3000) == 3000
    if read_eof:
        assert cl.recv(10) == b""
    cl.close()
    srv.close()
    return ports


def _abort(read: int) -> tuple[int, int]:
    """The client writes 4000 bytes; the server reads `read` of them and resets (SO_LINGER 0),
    the rest unread. Returns the (client, server) local ports."""
    srv, cl, acc = _pair()
    cl.sendall(b"c" * 4000)
    time.sleep(0.05)  # all of it queued at the server
    assert _recv(acc, read) == read
    acc.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ports = cl.getsockname()[1], acc.getsockname()[1]
    acc.close()  # RST; the server's socket is disconnected: its counters reset
    time.sleep(0.05)
    cl.close()
    srv.close()
    return ports


def test_close_totals_whatever_way_it_ends(live: tuple[BpfSource, Collected]) -> None:
    """Totals are what each side's application wrote and read: a reply read after TCP reached
    CLOSE (half-close), the EOF read or not, an abort (RST) with data unread or all read."""
    _, got = live
    want: dict[int, tuple[int, int]] = {}
    for read_eof in (True, False):
        client, server = _half_close(read_eof)
        want.update({client: (5000, 3000), server: (3000, 5000)})
    for read in (1000, 4000):
        client, server = _abort(read)
        want.update({client: (4000, 0), server: (0, read)})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with got.lock:
            closes = [e for e in got.events if e["kind"] == "tcp_close" and e["lport"] in want]
        if len(closes) >= len(want):
            break
        time.sleep(0.05)
    assert sorted(e["lport"] for e in closes) == sorted(want)  # one each
    assert {e["lport"]: (e["tx_bytes"], e["rx_bytes"]) for e in closes} == want


def test_a_udp_flow_that_went_quiet_starts_again() -> None:
    """udp_end after udp.idle_timeout of quiet (the interval path's rule), and the next datagram
    of the same flow a new udp_start: one rule for both ends."""
    got = Collected()
    src = BpfSource(options(udp_idle=1.0), publish=got)
    src.start()
    stop = threading.Event()
    t = threading.Thread(target=lambda: [src.read() for _ in iter(lambda: stop.wait(0.25), True)], daemon=True)
    t.start()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x" * 10, ("127.0.0.1", 9))
        time.sleep(0.5)
        s.sendto(b"x" * 10, ("127.0.0.1", 9))  # same flow, not quiet yet: no new start
        ended = got.wait("udp_end", os.getpid(), 1, timeout=10)
        s.sendto(b"y" * 20, ("127.0.0.1", 9))
        starts = got.wait("udp_start", os.getpid(), 2, timeout=10)
    finally:
        s.close()
        stop.set()
        t.join(5)
        src.close()
    mine = [e for e in got.events if e["pid"] == os.getpid() and e["rport"] == 9]
    assert [e["kind"] for e in mine] == ["udp_start", "udp_end", "udp_start"], mine
    assert ended[0]["tx_bytes"] == 20 and [e["tx_bytes"] for e in starts] == [10, 20]
