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
import os
import signal
import socket
import struct
import tempfile
import threading
import time
from typing import Any

TIMEOUT = 20.0  # per socket operation
RUN_LIMIT = 600.0  # a whole connection: a low-and-slow one lasts minutes, each read is bounded by TIMEOUT
CHUNK = 65536


def set_name(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def say(**fields: Any) -> None:
    print(json.dumps({**fields, "pid": os.getpid()}), flush=True)


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


def recv_all(sock: socket.socket, peek: bool = False) -> int:
    total = 0
    while True:
        if peek:
            sock.recv(CHUNK, socket.MSG_PEEK)  # looked at, then read: must count once
        data = sock.recv(CHUNK)
        if not data:
            return total
        total += len(data)


def send_file(sock: socket.socket, n: int) -> int:
    sock.settimeout(None)  # os.sendfile() on a socket with a timeout (non-blocking) would EAGAIN
    with tempfile.TemporaryFile() as f:
        f.write(b"f" * n)
        f.flush()
        offset = 0
        while offset < n:
            offset += os.sendfile(sock.fileno(), f.fileno(), offset, n - offset)
    return n


def splice_all(sock: socket.socket) -> int:
    """Receive to EOF with splice(socket -> pipe -> /dev/null): no recvmsg at all."""
    sock.settimeout(None)  # splice() needs a blocking socket; the peer's timeout bounds it
    r, w = os.pipe()
    total = 0
    with open(os.devnull, "wb") as null:
        try:
            while True:
                got = os.splice(sock.fileno(), w, CHUNK)
                if got == 0:
                    return total
                total += got
                left = got
                while left:
                    left -= os.splice(r, null.fileno(), left)
        finally:
            os.close(r)
            os.close(w)


def uring_send(sock: socket.socket, n: int) -> int:
    from tests.kernel.sysio import IoUring

    with IoUring() as ring:
        ring.send_all(sock.fileno(), b"q" * n)
    return n


def uring_recv_all(sock: socket.socket) -> int:
    from tests.kernel.sysio import IoUring

    total = 0
    with IoUring() as ring:
        while data := ring.recv(sock.fileno(), CHUNK):
            total += len(data)
    return total


SENDERS = {"send": send_exact, "sendfile": send_file, "uring": uring_send}
RECEIVERS = {
    "recv": recv_all,
    "peek": lambda s: recv_all(s, peek=True),
    "splice": splice_all,
    "uring": uring_recv_all,
}


def exchange(sock: socket.socket, send: int, send_how: str, recv_how: str, duplex: bool) -> tuple[int, int]:
    """Send `send` bytes, then (or, duplex, meanwhile) receive to EOF. Returns (tx, rx)."""
    if not duplex:
        tx = SENDERS[send_how](sock, send)
        sock.shutdown(socket.SHUT_WR)
        return tx, RECEIVERS[recv_how](sock)
    result: list[int] = []

    def sender() -> None:
        result.append(SENDERS[send_how](sock, send))
        sock.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=sender)
    t.start()
    rx = RECEIVERS[recv_how](sock)
    t.join(RUN_LIMIT)
    return result[0], rx


def tcp_server(a: argparse.Namespace) -> None:
    srv = socket.socket(family_of(a.bind), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.settimeout(TIMEOUT)
    srv.bind((a.bind, a.port))
    srv.listen(128)
    say(ready=True, port=srv.getsockname()[1])
    totals = {"tx": 0, "rx": 0}
    lock = threading.Lock()
    peers: list[list[Any]] = []
    local: list[Any] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(TIMEOUT)
            if a.duplex:
                tx, rx = exchange(conn, a.reply, "send", "recv", True)
            else:
                rx = recv_all(conn)
                tx = send_exact(conn, a.reply)
            with lock:
                totals["tx"] += tx
                totals["rx"] += rx

    workers = []
    for _ in range(a.accept):
        conn, peer = srv.accept()
        peers.append(endpoint(peer))
        local = endpoint(conn.getsockname())
        t = threading.Thread(target=serve, args=(conn,))
        t.start()
        workers.append(t)
    for t in workers:
        t.join(RUN_LIMIT)
    say(done=True, tx=totals["tx"], rx=totals["rx"], local=local, peer=peers[0], peers=peers)


def tcp_client(a: argparse.Namespace) -> None:
    totals = {"tx": 0, "rx": 0}
    lock = threading.Lock()
    locals_: list[list[Any]] = []

    def one() -> None:
        c = socket.socket(family_of(a.host), socket.SOCK_STREAM)
        c.settimeout(TIMEOUT)
        c.connect((a.host, a.port))
        with c:
            local = endpoint(c.getsockname())
            if a.hold:
                # Read to the peer's EOF without closing our side (it stays a full, hashed socket,
                # in CLOSE_WAIT), say so, and keep it open a while.
                tx, rx = 0, RECEIVERS[a.recv_how](c)
                say(read=True, tx=tx, rx=rx)
                time.sleep(a.hold)
            elif a.pace:
                tx, rx = paced(c, a.pace), recv_all(c)
            elif a.until_usr1:
                say(sending=True)
                tx, rx = send_until_stopped(c), recv_all(c)
            else:
                tx, rx = exchange(c, a.send, a.send_how, a.recv_how, a.duplex)
        with lock:
            totals["tx"] += tx
            totals["rx"] += rx
            locals_.append(local)

    signal.signal(signal.SIGUSR1, lambda *_: STOP.set())
    for _ in range(a.connections):
        threads = [threading.Thread(target=one) for _ in range(a.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(RUN_LIMIT)
    say(done=True, tx=totals["tx"], rx=totals["rx"], local=locals_[0], locals=locals_)


STOP = threading.Event()  # --until-usr1: SIGUSR1 sets it


def send_until_stopped(sock: socket.socket) -> int:
    """Send until SIGUSR1 (or RUN_LIMIT), then shut down the sending side: however fast or slow
    the machine, the transfer lasts as long as the test needs it to."""
    block = b"u" * CHUNK
    deadline = time.monotonic() + RUN_LIMIT
    tx = 0
    while not STOP.is_set() and time.monotonic() < deadline:
        tx += sock.send(block)
    sock.shutdown(socket.SHUT_WR)
    return tx


def paced(sock: socket.socket, spec: str) -> int:
    """Low and slow: 'BYTES:EVERY_SECONDS:FOR_SECONDS'."""
    nbytes, every, duration = spec.split(":")
    deadline = time.monotonic() + float(duration)
    tx = 0
    while time.monotonic() < deadline:
        tx += send_exact(sock, int(nbytes))
        time.sleep(float(every))
    sock.shutdown(socket.SHUT_WR)
    return tx


def udp_server(a: argparse.Namespace) -> None:
    s = socket.socket(family_of(a.bind), socket.SOCK_DGRAM)
    # Flood mode ends after `idle` quiet seconds, counted from the first datagram: a slow kernel
    # (TCG) may take longer than that to start the sender.
    s.settimeout(TIMEOUT)
    s.bind((a.bind, a.port))
    say(ready=True, port=s.getsockname()[1])
    rx = tx = received = 0
    peers: set[tuple[Any, ...]] = set()
    if a.mmsg:
        from tests.kernel.sysio import recvmmsg, sendmmsg

        while received < a.count:
            batch = recvmmsg(s, min(BATCH, a.count - received), timeout=TIMEOUT)
            received += len(batch)
            rx += sum(len(d) for d in batch)
            # connected replies: the client is the only sender
            tx += sendmmsg(s, [b"r" * a.reply] * len(batch), (a.reply_to[0], int(a.reply_to[1])))
    else:
        while a.idle or received < a.count:
            try:
                data, peer = s.recvfrom(65535)
            except TimeoutError:
                break  # flood mode: the sender stopped
            if a.idle and not received:
                s.settimeout(a.idle)
            received += 1
            rx += len(data)
            peers.add(tuple(endpoint(peer)))
            if a.reply:
                tx += s.sendto(b"r" * a.reply, peer)
    say(done=True, tx=tx, rx=rx, received=received, peers=sorted(peers))


BATCH = 16


def udp_client(a: argparse.Namespace) -> None:
    hosts = [(h, p) for h, p in zip(a.host, a.port, strict=True)]
    fam = socket.AF_INET6 if a.v6socket else family_of(hosts[0][0])
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    if a.bind_port:
        s.bind(("", a.bind_port))
    if a.connected:
        s.connect(hosts[0])
    payload = b"u" * a.size
    tx = rx = 0
    if a.flood:
        for i in range(a.count):
            tx += s.sendto(payload, hosts[i % len(hosts)])
    elif a.mmsg:
        from tests.kernel.sysio import recvmmsg, sendmmsg

        sent = 0
        while sent < a.count:
            n = min(BATCH, a.count - sent)
            tx += sendmmsg(s, [payload] * n, hosts[0])
            rx += sum(len(d) for d in recvmmsg(s, n, timeout=TIMEOUT))
            sent += n
    else:
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


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, size: int) -> bytes:
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    body = bytes(i & 0xFF for i in range(size))
    return struct.pack("!BBHHH", 8, 0, checksum(head + body), ident, seq) + body


def icmp(a: argparse.Namespace) -> None:
    """Echo requests from a raw ICMP socket, or a ping socket (--ping); replies counted as received."""
    kind = socket.SOCK_DGRAM if a.ping else socket.SOCK_RAW
    s = socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP)
    s.settimeout(TIMEOUT)
    ident = os.getpid() & 0xFFFF
    tx = rx = 0
    for seq in range(a.count):
        tx += s.sendto(echo_request(ident, seq, a.size), (a.host, 0))
        while True:
            data = s.recv(65535)
            rx += len(data)  # raw: every ICMP packet for this host, IP header included
            icmp_part = data if a.ping else data[(data[0] & 0x0F) * 4 :]
            if icmp_part[0] == 0 and struct.unpack("!H", icmp_part[6:8])[0] == seq:
                break
    say(done=True, tx=tx, rx=rx)


def raw_send(a: argparse.Namespace) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, a.proto)
    tx = sum(s.sendto(b"w" * a.size, (a.host, 0)) for _ in range(a.count))
    say(done=True, tx=tx, rx=0)


def raw_recv(a: argparse.Namespace) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, a.proto)
    s.settimeout(TIMEOUT)
    say(ready=True)
    rx = sum(len(s.recv(65535)) for _ in range(a.count))  # IPv4 raw receive: IP header + payload
    say(done=True, tx=0, rx=rx)


def packet_send(a: argparse.Namespace) -> None:
    """Whole Ethernet frames through an AF_PACKET socket: no IP stack on the way out."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.ifname, 0))
    frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + struct.pack("!H", 0x88B5) + b"p" * (a.size - 14)
    tx = sum(s.send(frame) for _ in range(a.count))
    say(done=True, tx=tx, rx=0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    sub = p.add_subparsers(dest="mode", required=True)
    ts = sub.add_parser("tcp-server")
    ts.add_argument("--bind", required=True)
    ts.add_argument("--port", type=int, default=0)
    ts.add_argument("--reply", type=int, default=0, help="bytes to send on each connection")
    ts.add_argument("--accept", type=int, default=1, help="connections to serve (each in a thread)")
    ts.add_argument("--duplex", action="store_true", help="send while receiving")
    tc = sub.add_parser("tcp-client")
    tc.add_argument("--host", required=True)
    tc.add_argument("--port", type=int, required=True)
    tc.add_argument("--send", type=int, default=0, help="bytes to send on each connection")
    tc.add_argument("--send-how", choices=sorted(SENDERS), default="send")
    tc.add_argument("--recv-how", choices=sorted(RECEIVERS), default="recv")
    tc.add_argument("--duplex", action="store_true", help="send while receiving")
    tc.add_argument("--connections", type=int, default=1, help="rounds of connections, one after another")
    tc.add_argument("--threads", type=int, default=1, help="connections at once in each round, a thread each")
    tc.add_argument("--pace", help="low and slow: BYTES:EVERY_SECONDS:FOR_SECONDS")
    tc.add_argument("--until-usr1", action="store_true", help='say {"sending"}, then send until SIGUSR1')
    tc.add_argument(
        "--hold", type=float, default=0.0, help="read to EOF (sending nothing), then keep the socket open so long"
    )
    us = sub.add_parser("udp-server")
    us.add_argument("--bind", required=True)
    us.add_argument("--port", type=int, default=0)
    us.add_argument("--count", type=int, default=0)
    us.add_argument("--reply", type=int, default=0)
    us.add_argument("--idle", type=float, default=0.0, help="flood: stop after this many idle seconds")
    us.add_argument("--mmsg", action="store_true", help="recvmmsg/sendmmsg in batches")
    us.add_argument("--reply-to", nargs=2, metavar=("HOST", "PORT"), help="mmsg: where replies go")
    uc = sub.add_parser("udp-client")
    uc.add_argument("--host", action="append", required=True)
    uc.add_argument("--port", type=int, action="append", required=True)
    uc.add_argument("--count", type=int, required=True)
    uc.add_argument("--size", type=int, required=True)
    uc.add_argument("--connected", action="store_true")
    uc.add_argument("--peek", action="store_true", help="MSG_PEEK each reply before reading it")
    uc.add_argument("--v6socket", action="store_true", help="IPv6 socket even for IPv4 (v4-mapped) peers")
    uc.add_argument("--flood", action="store_true", help="send all without waiting for replies")
    uc.add_argument("--mmsg", action="store_true", help="sendmmsg/recvmmsg in batches")
    uc.add_argument("--bind-port", type=int, default=0, help="bind to this local port first")
    ic = sub.add_parser("icmp")
    ic.add_argument("--host", required=True)
    ic.add_argument("--count", type=int, required=True)
    ic.add_argument("--size", type=int, required=True)
    ic.add_argument("--ping", action="store_true", help="a ping socket (SOCK_DGRAM) instead of a raw one")
    rs = sub.add_parser("raw-send")
    rs.add_argument("--host", required=True)
    rs.add_argument("--proto", type=int, required=True)
    rs.add_argument("--count", type=int, required=True)
    rs.add_argument("--size", type=int, required=True)
    rr = sub.add_parser("raw-recv")
    rr.add_argument("--proto", type=int, required=True)
    rr.add_argument("--count", type=int, required=True)
    ps = sub.add_parser("packet-send")
    ps.add_argument("--ifname", required=True)
    ps.add_argument("--count", type=int, required=True)
    ps.add_argument("--size", type=int, required=True)
    a = p.parse_args(argv)
    set_name(a.name)
    modes = {
        "tcp-server": tcp_server,
        "tcp-client": tcp_client,
        "udp-server": udp_server,
        "udp-client": udp_client,
        "icmp": icmp,
        "raw-send": raw_send,
        "raw-recv": raw_recv,
        "packet-send": packet_send,
    }
    modes[a.mode](a)


if __name__ == "__main__":
    main()
