"""Traffic generators for the kernel tests: each counts its own bytes exactly.

Run as `python -m tests.kernel.traffic MODE ...`. Every process names itself
(prctl PR_SET_NAME on the main thread, which is the group leader's comm), prints
one JSON line {"ready": ...} when listening, and one {"done": ...} line at the end.
Bounded: every socket has a timeout, every loop a count.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import socket
from typing import Any

TIMEOUT = 20.0
CHUNK = 65536


def set_name(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def family_of(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def endpoint(sa: tuple[Any, ...]) -> list[Any]:
    return [sa[0], sa[1]]


def send_exact(sock: socket.socket, n: int) -> int:
    block = b"s" * CHUNK
    left = n
    while left:
        left -= sock.send(block[: min(left, CHUNK)])
    return n


def recv_all(sock: socket.socket) -> int:
    total = 0
    while True:
        data = sock.recv(CHUNK)
        if not data:
            return total
        total += len(data)


def tcp_server(a: argparse.Namespace) -> None:
    srv = socket.socket(family_of(a.bind), socket.SOCK_STREAM)
    srv.settimeout(TIMEOUT)
    srv.bind((a.bind, 0))
    srv.listen(1)
    say(ready=True, port=srv.getsockname()[1])
    conn, peer = srv.accept()
    conn.settimeout(TIMEOUT)
    local = endpoint(conn.getsockname())
    rx = recv_all(conn)
    tx = send_exact(conn, a.reply)
    conn.close()
    say(done=True, tx=tx, rx=rx, local=local, peer=endpoint(peer))


def tcp_client(a: argparse.Namespace) -> None:
    c = socket.socket(family_of(a.host), socket.SOCK_STREAM)
    c.settimeout(TIMEOUT)
    c.connect((a.host, a.port))
    local = endpoint(c.getsockname())
    tx = send_exact(c, a.send)
    c.shutdown(socket.SHUT_WR)
    rx = recv_all(c)
    c.close()
    say(done=True, tx=tx, rx=rx, local=local)


def udp_server(a: argparse.Namespace) -> None:
    s = socket.socket(family_of(a.bind), socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    s.bind((a.bind, 0))
    say(ready=True, port=s.getsockname()[1])
    rx = tx = 0
    peers: set[tuple[Any, ...]] = set()
    for _ in range(a.count):
        data, peer = s.recvfrom(65535)
        rx += len(data)
        peers.add(tuple(endpoint(peer)))
        tx += s.sendto(b"r" * a.reply, peer)
    say(done=True, tx=tx, rx=rx, peers=sorted(peers))


def udp_client(a: argparse.Namespace) -> None:
    hosts = [(h, p) for h, p in zip(a.host, a.port, strict=True)]
    fam = socket.AF_INET6 if a.v6socket else family_of(hosts[0][0])
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    if a.connected:
        s.connect(hosts[0])
    payload = b"u" * a.size
    tx = rx = 0
    # Lockstep (one datagram in flight) so no receive buffer overflows: counts stay exact.
    for i in range(a.count):
        host = hosts[i % len(hosts)]
        if a.connected:
            tx += s.send(payload)
            rx += len(s.recv(65535))
        else:
            tx += s.sendto(payload, host)
            if a.peek:
                s.recv(65535, socket.MSG_PEEK)
            data, _ = s.recvfrom(65535)
            rx += len(data)
    say(done=True, tx=tx, rx=rx, local=endpoint(s.getsockname()))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    sub = p.add_subparsers(dest="mode", required=True)
    ts = sub.add_parser("tcp-server")
    ts.add_argument("--bind", required=True)
    ts.add_argument("--reply", type=int, default=0)
    tc = sub.add_parser("tcp-client")
    tc.add_argument("--host", required=True)
    tc.add_argument("--port", type=int, required=True)
    tc.add_argument("--send", type=int, required=True)
    us = sub.add_parser("udp-server")
    us.add_argument("--bind", required=True)
    us.add_argument("--count", type=int, required=True)
    us.add_argument("--reply", type=int, required=True)
    uc = sub.add_parser("udp-client")
    uc.add_argument("--host", action="append", required=True)
    uc.add_argument("--port", type=int, action="append", required=True)
    uc.add_argument("--count", type=int, required=True)
    uc.add_argument("--size", type=int, required=True)
    uc.add_argument("--connected", action="store_true")
    uc.add_argument("--peek", action="store_true", help="MSG_PEEK each reply before reading it")
    uc.add_argument("--v6socket", action="store_true", help="IPv6 socket even for IPv4 (v4-mapped) peers")
    a = p.parse_args(argv)
    set_name(a.name)
    {"tcp-server": tcp_server, "tcp-client": tcp_client, "udp-server": udp_server, "udp-client": udp_client}[a.mode](a)


if __name__ == "__main__":
    main()
