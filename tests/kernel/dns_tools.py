"""A DNS server and DNS clients for the kernel tests: real DNS on the wire, built on dnspython.

    python -m tests.kernel.dns_tools server --bind ADDR [--record NAME=TYPE:VALUE ...] [--hostile MODE]
    python -m tests.kernel.dns_tools client --name N (--getaddrinfo HOST | --query HOST --server ADDR
        [--tcp] [--type A|AAAA]) [--connect-port P] [--send BYTES] [--fork]

The server answers on ADDR port 53, UDP and TCP, from its --record list (A, AAAA, CNAME, PTR; a
CNAME is followed within the list), until --seconds pass; with --hostile it answers every query
with that kind of broken packet instead. It prints {"ready": true} once listening, and with --log
a line {"query": NAME, "type": TYPE} per query.

The client resolves a name (getaddrinfo: the system's resolver, with whatever /etc/resolv.conf
it sees; or one query of its own with dnspython), then connects over TCP to the first address
and sends --send bytes; with --fork the child connects, after the parent resolved. It prints
{"done": ..., "addr": ..., "pid": the process that connected}. Bounded by timeouts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import socketserver
import struct
import sys
import threading
import time
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdatatype
import dns.rrset

from tests.kernel.traffic import set_name

TIMEOUT = 10.0


def _records(specs: list[str]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        rtype, _, value = rest.partition(":")
        out.setdefault((dns.name.from_text(name).to_text(), rtype), []).append(value)
    return out


def hostile(query: bytes, mode: str) -> bytes:
    qid = query[:2] if len(query) >= 2 else b"\0\0"
    header = qid + b"\x81\x80"  # a response, no error
    if mode == "random":
        return qid + bytes(random.getrandbits(8) for _ in range(200))
    if mode == "truncated":
        return header + struct.pack("!HHHH", 1, 1, 0, 0) + b"\x03api"  # the question stops mid-name
    if mode == "loop":  # a question whose name points at itself
        return header + struct.pack("!HHHH", 1, 1, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)
    if mode == "counts":  # claims 65535 answers, has none
        return header + struct.pack("!HHHH", 0, 65535, 65535, 65535)
    raise ValueError(mode)


class Answers:
    def __init__(self, records: dict[tuple[str, str], list[str]], hostile_mode: str | None, log: bool) -> None:
        self.records = records
        self.hostile = hostile_mode
        self.log = log
        self.lock = threading.Lock()

    def answer(self, wire: bytes) -> bytes:
        if self.hostile:
            return hostile(wire, self.hostile)
        q = dns.message.from_wire(wire)
        if self.log:  # one line per query, for tests that check what was asked
            with self.lock:
                print(json.dumps({"query": q.question[0].name.to_text(),
                                  "type": dns.rdatatype.to_text(q.question[0].rdtype)}), flush=True)  # fmt: skip
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        name = q.question[0].name.to_text()
        want = dns.rdatatype.to_text(q.question[0].rdtype)
        for _ in range(8):  # follow CNAMEs within the zone
            if (name, "CNAME") in self.records:
                target = dns.name.from_text(self.records[(name, "CNAME")][0]).to_text()  # absolute
                r.answer.append(dns.rrset.from_text(name, 300, "IN", "CNAME", target))
                name = target
                continue
            values = self.records.get((name, want), [])
            if values:
                r.answer.append(dns.rrset.from_text(name, 60, "IN", want, *values))
            break
        return r.to_wire()


def server(a: argparse.Namespace) -> None:
    answers = Answers(_records(a.record), a.hostile, a.log)
    fam = socket.AF_INET6 if ":" in a.bind else socket.AF_INET

    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            sock.sendto(answers.answer(data), self.client_address)

    class Tcp(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.connection.settimeout(TIMEOUT)
            head = self.rfile.read(2)
            if len(head) == 2:
                reply = answers.answer(self.rfile.read(struct.unpack("!H", head)[0]))
                self.wfile.write(struct.pack("!H", len(reply)) + reply)

    class UdpServer(socketserver.ThreadingUDPServer):
        address_family = fam
        allow_reuse_address = True

    class TcpServer(socketserver.ThreadingTCPServer):
        address_family = fam
        allow_reuse_address = True
        daemon_threads = True

    servers = [UdpServer((a.bind, 53), Udp), TcpServer((a.bind, 53), Tcp)]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    time.sleep(a.seconds)
    for srv in servers:
        srv.shutdown()


def resolve(a: argparse.Namespace) -> str:
    if a.getaddrinfo:
        fam = socket.AF_INET6 if a.type == "AAAA" else socket.AF_INET
        return str(socket.getaddrinfo(a.getaddrinfo, None, fam, socket.SOCK_STREAM)[0][4][0])
    q = dns.message.make_query(a.query, a.type)
    query = dns.query.tcp if a.tcp else dns.query.udp
    r = query(q, a.server, timeout=TIMEOUT)
    want = dns.rdatatype.from_text(a.type)
    for rrset in r.answer:
        if rrset.rdtype == want:
            return str(rrset[0].address)
    raise SystemExit(f"no {a.type} answer for {a.query}")


def connect(addr: str, port: int, size: int, pace: str | None = None) -> dict[str, Any]:
    with socket.create_connection((addr, port), timeout=TIMEOUT) as s:
        s.sendall(b"x" * size)
        if pace:  # BYTES:EVERY_SECONDS:FOR_SECONDS, as tests/kernel/traffic.py's
            chunk, every, total = pace.split(":")
            end = time.monotonic() + float(total)
            while time.monotonic() < end:
                s.sendall(b"x" * int(chunk))
                time.sleep(float(every))
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
        return {"local": list(s.getsockname()[:2])}


def client(a: argparse.Namespace) -> None:
    addr = resolve(a)
    if not a.connect_port:
        print(json.dumps({"done": True, "addr": addr, "pid": os.getpid()}), flush=True)
        return
    if a.fork:
        pid = os.fork()
        if pid == 0:
            try:
                info = connect(addr, a.connect_port, a.send)
                print(json.dumps({"done": True, "addr": addr, "pid": os.getpid(), **info}), flush=True)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    info = connect(addr, a.connect_port, a.send, a.pace)
    print(json.dumps({"done": True, "addr": addr, "pid": os.getpid(), **info}), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--bind", required=True)
    s.add_argument("--record", action="append", default=[], metavar="NAME=TYPE:VALUE")
    s.add_argument("--hostile", choices=["random", "truncated", "loop", "counts"])
    s.add_argument("--seconds", type=float, default=120.0)
    s.add_argument("--log", action="store_true", help="print each query as a JSON line")
    c = sub.add_parser("client")
    how = c.add_mutually_exclusive_group(required=True)
    how.add_argument("--getaddrinfo", metavar="HOST")
    how.add_argument("--query", metavar="HOST")
    c.add_argument("--server", help="--query: the DNS server's address")
    c.add_argument("--tcp", action="store_true", help="--query over TCP")
    c.add_argument("--type", choices=["A", "AAAA"], default="A")
    c.add_argument("--connect-port", type=int, default=0)
    c.add_argument("--send", type=int, default=0)
    c.add_argument("--fork", action="store_true", help="connect from a child, after resolving")
    c.add_argument("--pace", help="then send BYTES every EVERY seconds for FOR seconds (BYTES:EVERY:FOR)")
    a = p.parse_args(argv)
    set_name(a.name)
    server(a) if a.mode == "server" else client(a)


if __name__ == "__main__":
    main()
