"""The issue's acceptance cases, through the real `sockscope top --json` command.

A 7,340,033-byte TCP transfer (answered with 3,145,739 bytes) and 1,000 UDP
datagrams of 123 bytes (answered with 77 bytes each) must show up exactly under
the right pid, comm and endpoints, in both directions, over loopback and over a
veth pair into a network namespace, for IPv4 and IPv6.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.kernel.conftest import SOCKSCOPE, Netns, Tally, Traffic

TCP_UP, TCP_DOWN = 7_340_033, 3_145_739
UDP_COUNT, UDP_SIZE, UDP_REPLY = 1000, 123, 77


@contextmanager
def sockscope_top(interval: str = "0.5") -> Iterator[Tally]:
    """Run `sockscope top --json` around the block; the tally fills when it exits."""
    proc = subprocess.Popen(
        [SOCKSCOPE, "top", "--json", "--interval", interval],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    tally = Tally()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # attached and counting once the first interval is out
        assert first, proc.stderr.read() if proc.stderr else ""
        tally.add_dict(json.loads(first))
        yield tally
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    for line in out.splitlines():
        tally.add_dict(json.loads(line))


def where(netns: Netns, path: str, family: int) -> tuple[str, list[str] | None]:
    """Server address and command prefix: loopback on the host, or the far end of the veth."""
    if path == "loopback":
        return ("127.0.0.1" if family == 4 else "::1"), None
    return (netns.peer4 if family == 4 else netns.peer6), netns.exec_prefix()


CASES = [(path, fam) for path in ("loopback", "veth") for fam in (4, 6)]


@pytest.mark.parametrize(("path", "family"), CASES, ids=[f"{p}-ipv{f}" for p, f in CASES])
def test_tcp_transfer_exact(netns: Netns, path: str, family: int) -> None:
    addr, prefix = where(netns, path, family)
    with sockscope_top() as tally:
        server = Traffic("ss-tcp-srv", "tcp-server", "--bind", addr, "--reply", str(TCP_DOWN), prefix=prefix)
        try:
            port = server.line()["port"]
            client = Traffic("ss-tcp-cli", "tcp-client", "--host", addr, "--port", str(port), "--send", str(TCP_UP))
            c_done, s_done = client.wait(), server.wait()
        finally:
            server.kill()
    assert (c_done["tx"], c_done["rx"], s_done["rx"], s_done["tx"]) == (TCP_UP, TCP_DOWN, TCP_UP, TCP_DOWN)

    cli, srv = tally.procs[client.pid], tally.procs[server.pid]
    assert (cli["comm"], cli["tx"], cli["rx"]) == ("ss-tcp-cli", TCP_UP, TCP_DOWN)
    assert (srv["comm"], srv["tx"], srv["rx"]) == ("ss-tcp-srv", TCP_DOWN, TCP_UP)
    laddr, lport = c_done["local"]
    assert tally.conns[client.pid] == {("tcp", family, laddr, lport, addr, port, False): {"tx": TCP_UP, "rx": TCP_DOWN}}
    assert tally.conns[server.pid] == {("tcp", family, addr, port, laddr, lport, False): {"tx": TCP_DOWN, "rx": TCP_UP}}


@pytest.mark.parametrize(("path", "family"), CASES, ids=[f"{p}-ipv{f}" for p, f in CASES])
def test_udp_datagrams_exact(netns: Netns, path: str, family: int) -> None:
    addr, prefix = where(netns, path, family)
    with sockscope_top() as tally:
        server = Traffic(
            "ss-udp-srv", "udp-server", "--bind", addr, "--count", str(UDP_COUNT), "--reply", str(UDP_REPLY),
            prefix=prefix,
        )  # fmt: skip
        try:
            port = server.line()["port"]
            client = Traffic(
                "ss-udp-cli", "udp-client", "--host", addr, "--port", str(port),
                "--count", str(UDP_COUNT), "--size", str(UDP_SIZE),
            )  # fmt: skip
            c_done, s_done = client.wait(), server.wait()
        finally:
            server.kill()
    up, down = UDP_COUNT * UDP_SIZE, UDP_COUNT * UDP_REPLY
    assert (c_done["tx"], c_done["rx"], s_done["rx"], s_done["tx"]) == (up, down, up, down)

    cli, srv = tally.procs[client.pid], tally.procs[server.pid]
    assert (cli["comm"], cli["tx"], cli["rx"]) == ("ss-udp-cli", up, down)
    assert (srv["comm"], srv["tx"], srv["rx"]) == ("ss-udp-srv", down, up)
    # Both sockets are unconnected: the peer of each datagram comes from the cgroup sock_addr hooks.
    lport = c_done["local"][1]
    any_addr = "0.0.0.0" if family == 4 else "::"
    assert tally.conns[client.pid] == {("udp", family, any_addr, lport, addr, port, False): {"tx": up, "rx": down}}
    [(s_key, s_counts)] = tally.conns[server.pid].items()
    assert s_key[4:6] == (s_done["peers"][0][0], lport)
    assert s_key[:4] == ("udp", family, addr, port)
    assert s_counts == {"tx": down, "rx": up}
