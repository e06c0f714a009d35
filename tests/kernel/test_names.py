"""Names from DNS answers (issue 13): a DNS server of the test's own in a network namespace,
clients resolving through it (glibc's getaddrinfo with a private /etc/resolv.conf, or queries
of their own over UDP and TCP), then connecting: each connection shows the name its process
asked for."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dns.reversename
import pytest

from sockscope.collector.bpf_source import BpfSource
from sockscope.collector.model import ConnectionSample, Interval
from tests.kernel.conftest import Netns, Traffic

API, EDGE, OTHER = "api.sockscope.test", "edge.sockscope.test", "other.sockscope.test"


def DnsTool(name: str, mode: str, *args: str, prefix: list[str] | None = None) -> Traffic:
    """tests/kernel/dns_tools.py running: the server, or a client."""
    return Traffic(name, mode, *args, prefix=prefix, tool="dns_tools")


def server(netns: Netns, bind: str, *extra: str) -> Traffic:
    records = [f"{API}=CNAME:{EDGE}", f"{EDGE}=A:{netns.peer4}", f"{EDGE}=AAAA:{netns.peer6}",
               f"{OTHER}=A:{netns.peer4}"]  # fmt: skip
    srv = DnsTool("ss-dns-srv", "server", "--bind", bind, *(f"--record={r}" for r in records), *extra,
                  prefix=netns.exec_prefix())  # fmt: skip
    assert srv.line()["ready"]
    return srv


@pytest.fixture
def dns4(netns: Netns) -> Iterator[Traffic]:
    srv = server(netns, netns.peer4)
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture
def resolv(netns: Netns) -> Iterator[list[str]]:
    """A prefix that runs a command with /etc/resolv.conf naming the test's server (a mount
    namespace of its own), and hosts looked up in files, then DNS."""
    d = Path(tempfile.mkdtemp(prefix="sockscope-dns-"))
    (d / "resolv.conf").write_text(f"nameserver {netns.peer4}\noptions timeout:3 attempts:2\n")
    (d / "nsswitch.conf").write_text("hosts: files dns\n")
    script = (f"mount --bind {d}/resolv.conf /etc/resolv.conf && "
              f"mount --bind {d}/nsswitch.conf /etc/nsswitch.conf && exec \"$@\"")  # fmt: skip
    try:
        yield ["unshare", "-m", "sh", "-c", script, "sh"]
    finally:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


@pytest.fixture
def target(netns: Netns) -> Iterator[tuple[Traffic, int]]:
    srv = Traffic("ss-n-target", "tcp-server", "--bind", "::", "--accept", "2", "--reply", "0",
                  prefix=netns.exec_prefix())  # fmt: skip
    try:
        yield srv, srv.line()["port"]
    finally:
        srv.kill()


def reads(source: BpfSource, n: int = 2) -> list[Interval]:
    import time

    time.sleep(0.2)
    return [source.read() for _ in range(n)]


def conns(ivs: list[Interval], pid: int, port: int) -> list[ConnectionSample]:
    return [c for iv in ivs for p in iv.processes if p.pid == pid for c in p.connections if c.rport == port]


def named(c: ConnectionSample) -> tuple[str | None, tuple[str, ...], str | None]:
    return c.name, c.cname, c.name_source


def test_getaddrinfo_over_udp_names_the_connection_with_its_cname_chain(
    source: BpfSource, netns: Netns, dns4: Traffic, resolv: list[str], target: tuple[Traffic, int]
) -> None:
    _, port = target
    cli = DnsTool("ss-gai", "client", "--getaddrinfo", API, "--connect-port", str(port), "--send", "1000",
                  prefix=resolv)  # fmt: skip
    done = cli.wait()
    assert done["addr"] == netns.peer4
    found = conns(reads(source), done["pid"], port)
    assert found and {named(c) for c in found} == {(API, (EDGE,), "process")}
    assert sum(c.tx_bytes for c in found) == 1000


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("rtype", ["A", "AAAA"])
def test_a_query_of_its_own_names_the_connection(
    source: BpfSource, netns: Netns, dns4: Traffic, target: tuple[Traffic, int], transport: str, rtype: str
) -> None:
    _, port = target
    extra = ["--tcp"] if transport == "tcp" else []
    cli = DnsTool("ss-q", "client", "--query", API, "--server", netns.peer4, "--type", rtype, *extra,
                  "--connect-port", str(port), "--send", "10")  # fmt: skip
    done = cli.wait()
    assert done["addr"] == (netns.peer4 if rtype == "A" else netns.peer6)
    found = conns(reads(source), done["pid"], port)
    assert found and {named(c) for c in found} == {(API, (EDGE,), "process")}


def test_two_processes_two_names_one_address(
    source: BpfSource, netns: Netns, dns4: Traffic, target: tuple[Traffic, int]
) -> None:
    _, port = target
    a = DnsTool("ss-q-a", "client", "--query", API, "--server", netns.peer4, "--connect-port", str(port), "--send", "5")
    b = DnsTool(
        "ss-q-b", "client", "--query", OTHER, "--server", netns.peer4, "--connect-port", str(port), "--send", "5"
    )
    da, db = a.wait(), b.wait()
    ivs = reads(source)
    assert {named(c) for c in conns(ivs, da["pid"], port)} == {(API, (EDGE,), "process")}
    assert {named(c) for c in conns(ivs, db["pid"], port)} == {(OTHER, (), "process")}


def test_resolved_before_fork_names_the_childs_connection(
    source: BpfSource, netns: Netns, dns4: Traffic, target: tuple[Traffic, int]
) -> None:
    _, port = target
    cli = DnsTool("ss-q-fork", "client", "--query", API, "--server", netns.peer4, "--fork",
                  "--connect-port", str(port), "--send", "5")  # fmt: skip
    done = cli.wait()
    assert done["pid"] != cli.pid  # the child connected
    found = conns(reads(source), done["pid"], port)
    assert found and {named(c) for c in found} == {(API, (EDGE,), "process")}


@pytest.mark.parametrize("mode", ["random", "truncated", "loop", "counts"])
def test_hostile_answers_give_no_name_and_are_counted(
    source: BpfSource, netns: Netns, target: tuple[Traffic, int], mode: str
) -> None:
    srv = server(netns, netns.peer4, "--hostile", mode)
    try:
        cli = DnsTool("ss-q-bad", "client", "--query", API, "--server", netns.peer4)
        assert cli.proc.wait(timeout=60) != 0  # dnspython refuses the answer too
    finally:
        srv.kill()
    ivs = reads(source)
    assert sum(iv.counters.dns_malformed for iv in ivs) >= 1
    assert not [c for iv in ivs for p in iv.processes for c in p.connections if c.name]


def test_the_daemon_keeps_names_and_report_groups_by_host(
    netns: Netns, dns4: Traffic, target: tuple[Traffic, int], dbdir: Path
) -> None:
    from tests.kernel.daemon_run import Daemon, report

    _, port = target
    db = dbdir / "names.db"
    daemon = Daemon(db)
    try:
        cli = DnsTool("ss-q-db", "client", "--query", API, "--server", netns.peer4, "--connect-port", str(port),
                      "--send", "4321")  # fmt: skip
        done = cli.wait()
    finally:
        daemon.stop()
    mine = [r for r in report(db, "--by", "connection") if r["pid"] == done["pid"]]
    conn = [(r["name"], r["tx_bytes"]) for r in mine if r["rport"] == port]
    assert conn == [(API, 4321)]
    # The DNS server listens on the address the name resolved to: its query (to port 53, sent
    # before the answer) is that host's traffic too, and the report groups both under the name.
    query = [r["tx_bytes"] for r in mine if r["rport"] == 53]
    hosts = {r["host"]: r["tx_bytes"] for r in report(db, "--by", "host")}
    assert len(query) == 1 and hosts[API] == 4321 + query[0]


@pytest.mark.parametrize("ptr", [True, False])
def test_reverse_names_only_when_asked_for(
    netns: Netns, resolv: list[str], target: tuple[Traffic, int], ptr: bool
) -> None:
    from tests.kernel.conftest import SOCKSCOPE

    reverse = dns.reversename.from_address(netns.peer4).to_text()
    srv = server(netns, netns.peer4, "--log", f"--record={reverse}=PTR:target.sockscope.test.")
    _, port = target
    top = subprocess.Popen(
        [*resolv, SOCKSCOPE, "top", "--json", "--interval", "0.75", "--count", "13", *(["--ptr"] if ptr else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert top.stdout is not None
        first = top.stdout.readline()  # counting: the client's traffic is seen from its start
        assert first, top.stderr.read() if top.stderr else ""
        cli = Traffic("ss-ptr-cli", "tcp-client", "--host", netns.peer4, "--port", str(port),
                      "--pace", "100:0.25:8")  # fmt: skip
        cli.wait()
        lines = [json.loads(line) for line in top.stdout]
        assert top.wait(timeout=30) == 0
    finally:
        if top.poll() is None:
            top.kill()
        srv.kill()
    seen = {
        (c["name"], c["name_source"])
        for d in lines for p in d["processes"] if p["pid"] == cli.pid for c in p["connections"] if c["rport"] == port
    }  # fmt: skip
    assert srv.proc.stdout is not None
    asked = [json.loads(x) for x in srv.proc.stdout.read().splitlines() if x.strip()]
    ptr_queries = [q for q in asked if q.get("type") == "PTR"]
    if ptr:
        assert ("target.sockscope.test", "ptr") in seen
        # The answer came after the connection was first shown: its name shows from the next
        # interval (Templates.rename), while it is open, not only at its close.
        open_named = {
            c["name"]
            for d in lines for p in d["processes"] if p["pid"] == cli.pid for c in p["connections"]
            if c["rport"] == port and c["state"] == "ESTABLISHED"
        }  # fmt: skip
        assert "target.sockscope.test" in open_named
        # Every peer without a name is asked once (here also the client's address, the server's peer).
        names = [q["query"] for q in ptr_queries]
        assert reverse in names and len(names) == len(set(names))
    else:
        assert seen == {(None, None)} and ptr_queries == []
