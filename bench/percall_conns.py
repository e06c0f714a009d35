"""Many loopback TCP connections that each move a few bytes every second: the load under which
bench/percall.py measures the collector's user-space CPU.

Usage:
    .venv/bin/python bench/percall_conns.py [--conns 10000] [--bytes 16] [--seconds 120]

Two processes: this one connects --conns TCP connections to a listener on 127.0.0.1 and holds
the client ends, a forked child accepts them and holds the server ends (each needs --conns
descriptors; RLIMIT_NOFILE is raised to the hard limit when short). Prints ``ready N CHILD_PID``
on stdout once all are established, then once a second writes --bytes on every client end (the
child reads them as they come), printing ``tick T SECONDS_SPENT`` (the time the sweep took),
until --seconds have passed or SIGTERM/SIGINT. Connections are closed with RST (SO_LINGER 0):
no TIME_WAIT is left behind. The child leaves when its parent or all connections are gone.
Exit status: 0 done, 1 failure, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import select
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from types import FrameType

LOOPBACK = "127.0.0.1"
BACKLOG = 4096
FD_SLACK = 64
LINGER_RST = struct.pack("ii", 1, 0)


class Stop(Exception):
    """SIGTERM or SIGINT."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stop(signum)


def raise_nofile(needed: int) -> None:
    """Make room for `needed` descriptors (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise OSError(f"RLIMIT_NOFILE hard limit {hard} < {needed} descriptors needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def serve(listener: socket.socket, count: int, ready_fd: int, parent: int) -> None:
    """The child: accept `count` connections, then read whatever arrives."""
    sel = selectors.DefaultSelector()
    for _ in range(count):
        s, _ = listener.accept()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    listener.close()
    os.write(ready_fd, b"r")
    os.close(ready_fd)
    while sel.get_map() and os.getppid() == parent:
        for key, _ in sel.select(timeout=1.0):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                sock.close()


def connect_all(addr: tuple[str, int], count: int) -> list[socket.socket]:
    clients: list[socket.socket] = []
    for _ in range(count):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.connect(addr)
        clients.append(c)
    return clients


def wait_ready(fd: int, timeout: float) -> None:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready or os.read(fd, 1) != b"r":
        raise OSError(f"the accepting child did not report all connections within {timeout:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Loopback TCP connections moving a few bytes every second.")
    p.add_argument("--conns", type=int, default=10_000, help="connections (default 10000)")
    p.add_argument("--bytes", type=int, default=16, help="bytes per connection per second (default 16)")
    p.add_argument("--seconds", type=float, default=120.0, help="stop after this long (default 120)")
    args = p.parse_args(argv)
    if args.conns < 1 or not 1 <= args.bytes <= 65536 or args.seconds <= 0:
        p.error("--conns >= 1, --bytes 1..65536, --seconds > 0")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    clients: list[socket.socket] = []
    child = 0
    try:
        raise_nofile(args.conns + FD_SLACK)
        deadline = time.monotonic() + args.seconds
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((LOOPBACK, 0))
        listener.listen(BACKLOG)
        ready_r, ready_w = os.pipe()
        parent = os.getpid()
        child = os.fork()
        if child == 0:
            code = 1
            try:
                os.close(ready_r)
                serve(listener, args.conns, ready_w, parent)
                code = 0
            finally:
                os._exit(code)  # never back into the parent's code
        os.close(ready_w)
        addr = listener.getsockname()
        listener.close()
        clients = connect_all(addr, args.conns)
        wait_ready(ready_r, 120.0)
        print(f"ready {len(clients)} {child}", flush=True)
        payload = b"p" * args.bytes
        tick = 0
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            for c in clients:
                c.send(payload)
            tick += 1
            print(f"tick {tick} {time.monotonic() - t0:.4f}", flush=True)
            next_at += 1.0
            time.sleep(max(0.0, next_at - time.monotonic()))
    except Stop:
        pass
    except OSError as exc:
        print(f"percall_conns: {exc}", file=sys.stderr)
        return 1
    finally:
        for c in clients:
            with contextlib.suppress(OSError):
                c.close()
        if child > 0:
            with contextlib.suppress(OSError):
                os.kill(child, signal.SIGTERM)
            with contextlib.suppress(OSError):
                os.waitpid(child, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
