"""The daemon's live event socket and its client, over real Unix sockets in a directory of their own:
order, several subscribers, a slow one told exactly what it lost, a stalled one disconnected, the
limit on subscribers, the path taken, stale or not a socket, and the daemon's thread never slowed."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import stat
import struct
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sockscope.events.client import MAX_LINE, ClientError, daemon_listening, subscribe
from sockscope.events.server import EventServer, ServerError


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Short: a Unix socket's path is at most 107 bytes, and pytest's tmp_path can be long.
    path = Path(tempfile.mkdtemp(prefix="ssev-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Recorded(EventServer):
    """An EventServer whose reports are kept, for the test to read."""

    def __init__(self, path: str, **kw: object) -> None:
        self.said: list[str] = []
        super().__init__(path, report=self.said.append, **kw)  # type: ignore[arg-type]


@pytest.fixture
def serve(sockdir: Path) -> Iterator[Callable[..., Recorded]]:
    """Start a server at sockdir/events.sock; all are closed after the test."""
    made: list[Recorded] = []

    def start(**kw: object) -> Recorded:
        server = Recorded(str(sockdir / "events.sock"), **kw)
        made.append(server)
        server.start()
        return server

    yield start
    for server in made:
        server.close()


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def event(n: int, pad: int = 0) -> bytes:
    return json.dumps({"v": 1, "kind": "tcp_connect", "n": n, "pad": "x" * pad}).encode() + b"\n"


def connect(server: EventServer) -> socket.socket:
    """A raw subscriber, once the server has taken it in."""
    before = server.stats.served
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(server.path)
    wait_until(lambda: server.stats.served > before)
    return sock


def pending(sock: socket.socket) -> int:
    """Bytes waiting to be read at this end (FIONREAD)."""
    return int(struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0\0\0\0"))[0])


class Reader:
    """A raw subscriber's lines, whole, newline and all, however long (one buffer per socket, so
    nothing read ahead is lost between calls)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(10)
        self.file = sock.makefile("rb")

    def lines(self, n: int) -> list[bytes]:
        return [self.file.readline() for _ in range(n)]


def test_delivery_in_order(serve: Callable[..., Recorded]) -> None:
    server = serve()
    lines = subscribe(server.path, timeout=10)
    wait_until(lambda: server.stats.subscribers == 1)
    for n in range(4000):  # within the queue (4096): none may be dropped, however fast offered
        server.offer(event(n))
    got = [json.loads(next(lines))["n"] for _ in range(4000)]
    assert got == list(range(4000))
    s = server.stats
    assert (s.subscribers, s.served, s.refused, s.dropped_events, s.dropped_subscribers) == (1, 1, 0, 0, 0)


def test_lines_come_without_their_newline_and_end_when_the_daemon_closes(serve: Callable[..., Recorded]) -> None:
    server = serve()
    lines = subscribe(server.path, timeout=10)
    wait_until(lambda: server.stats.subscribers == 1)
    server.offer(b'{"v":1}\n')
    server.offer(b'{"v":2}\n')
    assert [next(lines), next(lines)] == [b'{"v":1}', b'{"v":2}']
    server.close()
    assert list(lines) == []
    assert not os.path.exists(server.path)
    server.close()  # twice: nothing more to do


def test_several_subscribers_each_get_everything(serve: Callable[..., Recorded]) -> None:
    server = serve()
    streams = [subscribe(server.path, timeout=10) for _ in range(4)]
    wait_until(lambda: server.stats.subscribers == 4)
    for n in range(2000):
        server.offer(event(n, pad=n % 300))
    for lines in streams:
        assert [json.loads(next(lines))["n"] for _ in range(2000)] == list(range(2000))
    assert server.stats.dropped_events == 0


def test_a_slow_subscriber_loses_lines_and_is_told_how_many_where(serve: Callable[..., Recorded]) -> None:
    queue, extra = 50, 37
    server = serve(queue=queue)
    sub = connect(server)
    # One line larger than any socket buffer: the server writes part of it, then must wait for
    # this subscriber to read, holding the rest; the queue behind it fills, then drops.
    big = event(-1, pad=8 << 20)
    server.offer(big)
    wait_until(lambda: pending(sub) > 0)
    for n in range(queue + extra):
        server.offer(event(n))
    assert server.stats.dropped_events == extra
    reader = Reader(sub)
    got = reader.lines(1 + queue + 1)
    assert got[0] == big
    assert [json.loads(x)["n"] for x in got[1:-1]] == list(range(queue))
    lost = json.loads(got[-1])
    assert set(lost) == {"v", "kind", "time", "reason", "count"}
    assert (lost["v"], lost["kind"], lost["reason"], lost["count"]) == (1, "lost", "subscriber_queue", extra)
    assert abs(lost["time"] - time.time()) < 30
    server.offer(event(1000))  # after the `lost` line, the stream goes on
    assert json.loads(reader.lines(1)[0])["n"] == 1000
    assert server.stats.dropped_subscribers == 0
    sub.close()


def test_a_slow_reader_never_loses_a_line_silently(serve: Callable[..., Recorded]) -> None:
    """Offered at full speed to a reader that dawdles: every line is either received, in order, or
    counted by a `lost` line standing exactly where it is missing."""
    server = serve(queue=64)
    lines = subscribe(server.path, timeout=10)
    wait_until(lambda: server.stats.subscribers == 1)
    total = 30_000
    for n in range(total):
        server.offer(event(n, pad=200))
    expect, losses = 0, 0  # the next line expected; `lost` lines seen
    for i, line in enumerate(lines):
        if i % 500 == 0:
            time.sleep(0.002)
        e = json.loads(line)
        if e["kind"] == "lost":
            expect += e["count"]
            losses += 1
        else:
            assert e["n"] == expect
            expect += 1
        if expect == total:  # the last lines may be lost too: then a `lost` line ends the stream
            break
    assert expect == total
    assert losses >= 1 and server.stats.dropped_events > 0


@pytest.mark.wallclock  # a bound in wall-clock time
def test_offer_is_not_slowed_by_a_subscriber_that_never_reads(serve: Callable[..., Recorded]) -> None:
    server = serve(queue=4096)
    count = 200_000

    def offer_all() -> float:
        t0 = time.perf_counter()
        for n in range(count):
            server.offer(event(n))  # the daemon's loop: make the line, offer it
        return time.perf_counter() - t0

    alone = min(offer_all() for _ in range(2))
    sub = connect(server)
    wait_until(lambda: server.stats.subscribers == 1)
    stuck = offer_all()
    assert server.stats.dropped_events > count // 2  # it did not read: most were dropped, not waited for
    assert stuck / alone < 3, (stuck, alone)
    assert server.stats.subscribers == 1  # not stalled yet: 10 s by default
    t0 = time.monotonic()
    server.close()  # with a subscriber whose socket is full: still at once
    assert time.monotonic() - t0 < 1.0
    assert not os.path.exists(server.path)
    sub.close()


@pytest.mark.wallclock  # a reader starved for 0.3 s would be taken for stalled
def test_a_stalled_subscriber_is_disconnected_once(serve: Callable[..., Recorded]) -> None:
    server = serve(queue=10, stall=0.3)
    stuck, reader = connect(server), connect(server)
    wait_until(lambda: server.stats.subscribers == 2)
    server.offer(event(-1, pad=8 << 20))  # stuck's socket is full with it, and stays so
    wait_until(lambda: pending(stuck) > 0)
    got: list[bytes] = []
    reading = threading.Thread(target=lambda: got.extend(Reader(reader).lines(61)), daemon=True)
    reading.start()
    gone = None
    for n in range(60):  # over 0.6 s: stuck's queue is full after 10, then the stall clock runs
        if n == 10:
            first_drop = time.monotonic()  # before: the server's clock starts within this offer()
        server.offer(event(n))
        if gone is None and server.stats.dropped_subscribers:
            gone = time.monotonic()
        time.sleep(0.01)
    wait_until(lambda: server.stats.dropped_subscribers == 1)
    assert gone is None or gone - first_drop >= 0.3
    assert server.stats.subscribers == 1
    stalls = [m for m in server.said if "took nothing" in m]
    assert len(stalls) == 1 and f"pid {os.getpid()}" in stalls[0] and "lines lost to it" in stalls[0], server.said
    stuck.settimeout(10)
    while stuck.recv(1 << 20):  # what was in its socket, then the end
        pass
    reading.join(timeout=10)
    assert [json.loads(x)["n"] for x in got] == list(range(-1, 60))  # the one that reads lost nothing
    stuck.close()
    reader.close()


def test_subscribers_beyond_the_limit_are_refused_and_said_once_per_burst(
    serve: Callable[..., Recorded],
) -> None:
    server = serve(max_subscribers=2)
    first, second = connect(server), connect(server)
    wait_until(lambda: server.stats.subscribers == 2)
    for _ in range(3):
        extra = connect(server)
        extra.settimeout(5)
        assert extra.recv(10) == b""  # closed at once
        extra.close()
    s = server.stats
    assert (s.subscribers, s.served, s.refused) == (2, 5, 3)
    assert len([m for m in server.said if "refused" in m]) == 1
    assert f"pid {os.getpid()}" in server.said[0]
    first.close()
    wait_until(lambda: server.stats.subscribers == 1)
    third = connect(server)
    wait_until(lambda: server.stats.subscribers == 2)
    again = connect(server)
    again.settimeout(5)
    assert again.recv(10) == b""
    assert server.stats.refused == 4
    assert len([m for m in server.said if "refused" in m]) == 2  # a new burst
    for s_ in (second, third, again):
        s_.close()


def test_what_subscribers_send_is_read_and_ignored(serve: Callable[..., Recorded]) -> None:
    server = serve()
    sub = connect(server)
    wait_until(lambda: server.stats.subscribers == 1)
    sub.sendall(b'{"kind":"please"}\n' * 10_000 + b"\xff\x00 garbage")
    server.offer(event(7))
    assert json.loads(Reader(sub).lines(1)[0])["n"] == 7
    assert server.stats.subscribers == 1
    sub.close()
    wait_until(lambda: server.stats.subscribers == 0)  # a closed subscriber is noticed without a write


def test_a_path_in_use_by_a_live_server_is_refused_naming_its_pid(serve: Callable[..., Recorded]) -> None:
    server = serve()
    other = EventServer(server.path, report=lambda m: None)
    with pytest.raises(ServerError, match=rf"in use by another sockscope \(pid {os.getpid()}\): stop it or set"):
        other.start()
    other.close()
    assert stat.S_ISSOCK(os.lstat(server.path).st_mode)  # the first one's socket is still there, and works
    lines = subscribe(server.path, timeout=10)
    wait_until(lambda: server.stats.served == 2 and server.stats.subscribers == 1)  # the probe has gone
    server.offer(event(1))
    assert json.loads(next(lines))["n"] == 1


def test_a_stale_socket_is_replaced(sockdir: Path, serve: Callable[..., Recorded]) -> None:
    path = sockdir / "events.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: a daemon that was killed
    assert not daemon_listening(str(path))
    with pytest.raises(ClientError, match="no sockscope daemon at"):
        subscribe(str(path))
    server = serve()
    assert daemon_listening(server.path)
    lines = subscribe(server.path, timeout=10)
    wait_until(lambda: server.stats.served == 2 and server.stats.subscribers == 1)  # the probe has gone
    server.offer(event(3))
    assert json.loads(next(lines))["n"] == 3


@pytest.mark.parametrize("kind", ["file", "directory", "symlink"])
def test_a_path_that_is_not_a_socket_is_refused_and_kept(sockdir: Path, kind: str) -> None:
    path = sockdir / "events.sock"
    if kind == "file":
        path.write_text("keep me\n")
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to("/etc/passwd")
    server = EventServer(str(path), report=lambda m: None)
    with pytest.raises(ServerError, match="exists and is not a socket: left alone"):
        server.start()
    server.close()
    if kind == "file":
        assert path.read_text() == "keep me\n"
    assert path.is_dir() if kind == "directory" else (path.is_symlink() or path.is_file())


def test_close_removes_only_the_socket_it_made(sockdir: Path) -> None:
    path = str(sockdir / "events.sock")
    first = EventServer(path, report=lambda m: None)
    first.start()
    os.unlink(path)  # an operator removed it, and another daemon took the path since
    second = EventServer(path, report=lambda m: None)
    second.start()
    first.close()
    assert daemon_listening(path)
    second.close()
    assert not os.path.exists(path)


def test_the_parent_directory_is_made_0755_and_the_socket_gets_its_mode(sockdir: Path) -> None:
    path = sockdir / "run" / "sockscope" / "events.sock"
    old = os.umask(0o077)  # a strict umask changes neither
    try:
        server = EventServer(str(path), mode=0o640, report=lambda m: None)
        server.start()
    finally:
        os.umask(old)
    try:
        for d in (path.parent, path.parent.parent):
            assert stat.S_IMODE(d.stat().st_mode) == 0o755
        st = path.lstat()
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
        assert st.st_uid == os.geteuid()
    finally:
        server.close()


def test_an_unknown_group_is_named_and_nothing_is_made(sockdir: Path) -> None:
    path = sockdir / "events.sock"
    server = EventServer(str(path), group="no-such-group-ssev", report=lambda m: None)
    with pytest.raises(ServerError, match="group 'no-such-group-ssev' does not exist"):
        server.start()
    assert not path.exists()


def test_a_path_too_long_for_a_unix_socket(sockdir: Path) -> None:
    with pytest.raises(ServerError, match="too long for a Unix socket"):
        EventServer(str(sockdir / ("x" * 120)), report=lambda m: None).start()


def test_no_daemon_is_one_clear_error(sockdir: Path) -> None:
    path = str(sockdir / "absent" / "events.sock")
    assert not daemon_listening(path)
    with pytest.raises(ClientError, match=r"^no sockscope daemon at /tmp/ssev-.*/absent/events.sock$"):
        subscribe(path)


def _fake_daemon(path: Path, payload: bytes) -> threading.Thread:
    """A server that is not sockscope: sends payload, then closes."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def run() -> None:
        conn, _ = listener.accept()
        with contextlib.suppress(OSError):  # the client gave up, as it should
            conn.sendall(payload)
        conn.close()
        listener.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_line_longer_than_the_bound_is_an_error_not_unbounded_memory(sockdir: Path) -> None:
    path = sockdir / "fake.sock"
    t = _fake_daemon(path, b'{"v":1}\n' + b"x" * (4 * MAX_LINE))
    lines = subscribe(str(path), timeout=10)
    assert next(lines) == b'{"v":1}'
    with pytest.raises(ClientError, match="a line of more than 1 MiB: not a sockscope event stream"):
        next(lines)
    t.join(timeout=10)


def test_a_line_cut_off_by_the_daemon_closing_is_dropped(sockdir: Path) -> None:
    path = sockdir / "fake.sock"
    t = _fake_daemon(path, b'{"v":1}\n{"v":1,"kin')
    assert list(subscribe(str(path), timeout=10)) == [b'{"v":1}']
    t.join(timeout=10)


def test_idle_and_timeout(serve: Callable[..., Recorded]) -> None:
    server = serve()
    lines = subscribe(server.path, idle=0.05)
    assert next(lines) == b""  # nothing for a while: a chance to look at the clock
    wait_until(lambda: server.stats.subscribers == 1)
    server.offer(event(5))
    assert json.loads(next(line for line in lines if line))["n"] == 5
    quiet = subscribe(server.path, timeout=0.2)
    with pytest.raises(ClientError, match=r"nothing from the daemon for 0\.2 s"):
        next(quiet)
