"""The hand-off end to end (issue 14): a real `sockscope daemon` with a rule, a real nftables table
in a network namespace the test creates, real connections; its event socket read by
`sockscope events` and by a subscriber that stops reading."""

from __future__ import annotations

import itertools
import json
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from tests.kernel.conftest import SOCKSCOPE, Traffic
from tests.kernel.daemon_run import Daemon

# Latency and pace against the wall clock: run on an otherwise idle machine (scripts/test-all.sh
# runs these before the kernel matrix starts).
pytestmark = pytest.mark.wallclock

SCHEMA = json.loads((Path(__file__).parents[2] / "src/sockscope/events/schema/event-v1.json").read_text())
TABLE = "sockscope_demo"
BLOCKED, OPEN = "198.18.250.2", "198.18.250.3"
RULESET = f"""\
table inet {TABLE} {{
    set blocked4 {{ type ipv4_addr; flags timeout; }}
    set blocked6 {{ type ipv6_addr; flags timeout; }}
    chain out {{
        type filter hook output priority 0; policy accept;
        ip daddr @blocked4 drop
        ip6 daddr @blocked6 drop
    }}
}}
"""


def sh(*cmd: str, input: str | None = None) -> str:
    done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, (cmd, done.stderr)
    return done.stdout


@pytest.fixture
def fw() -> Iterator[str]:
    """A namespace with two local addresses and the admin's own table: a set, and a rule that
    drops what goes to an address in it. sockscope only ever adds to the set."""
    name = f"ssfw-{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", name)
    try:
        inside = ["ip", "netns", "exec", name]
        sh(*inside, "ip", "link", "set", "lo", "up")
        for addr in (BLOCKED, OPEN):
            sh(*inside, "ip", "addr", "add", f"{addr}/32", "dev", "lo")
        sh(*inside, "nft", "-f", "-", input=RULESET)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def in_set(ns: str) -> list[str]:
    listing = json.loads(sh("ip", "netns", "exec", ns, "nft", "-j", "list", "set", "inet", TABLE, "blocked4"))
    [found] = [item["set"] for item in listing["nftables"] if "set" in item]
    return [e["elem"]["val"] if isinstance(e, dict) else e for e in found.get("elem", [])]


def connect_from(ns: str, addr: str, port: int, timeout: float) -> str:
    """A connection attempt from another program in the namespace: "ok" or the error's name."""
    code = (f"import socket\ntry:\n socket.create_connection(({addr!r}, {port}), timeout={timeout}).close()\n"
            " print('ok')\nexcept OSError as e:\n print(type(e).__name__)")  # fmt: skip
    return sh("ip", "netns", "exec", ns, "python3", "-c", code).strip()


def test_a_rule_fills_the_admins_set_and_nftables_drops_the_next_attempt(dbdir: Path, fw: str) -> None:
    inside = ["ip", "netns", "exec", fw]
    blocked_srv = Traffic("ss-fw-srv1", "tcp-server", "--bind", BLOCKED, "--accept", "1", prefix=inside)
    open_srv = Traffic("ss-fw-srv2", "tcp-server", "--bind", OPEN, "--accept", "2", prefix=inside)
    bport, oport = blocked_srv.line()["port"], open_srv.line()["port"]
    cfg = dbdir / "config.toml"
    cfg.write_text(f"""\
[events]
socket = "{dbdir}/events.sock"

[[rule]]
name = "block-bad"
match = "comm=ss-fw-bad rport={bport} kind=tcp_connect"
action = "nftables"
set4 = "inet {TABLE} blocked4"
timeout = "10m"
netns = "{fw}"
""")
    daemon = Daemon(dbdir / "h.db", "--config", str(cfg))
    try:
        assert in_set(fw) == []
        # Another program first: its connection matches no rule and adds nothing.
        good = Traffic("ss-fw-good", "tcp-client", "--host", OPEN, "--port", str(oport), "--send", "10", prefix=inside)
        good.wait()
        bad = Traffic("ss-fw-bad", "tcp-client", "--host", BLOCKED, "--port", str(bport), "--send", "10",
                      prefix=inside)  # fmt: skip
        bad.wait()
        connected = time.monotonic()
        while BLOCKED not in in_set(fw) and time.monotonic() - connected < 5:
            time.sleep(0.01)
        took = time.monotonic() - connected
        assert in_set(fw) == [BLOCKED], "the rule's address is in the set, and only it"
        assert took < 0.2, f"{took * 1000:.0f} ms from the connection to the address in the set"
        # nftables now drops the next attempt to it; the other program's peer is not affected.
        assert connect_from(fw, BLOCKED, bport, 1.0) == "TimeoutError"
        assert connect_from(fw, OPEN, oport, 5.0) == "ok"
        blocked_srv.wait()
        open_srv.wait()
    finally:
        blocked_srv.kill()
        open_srv.kill()
        err = daemon.stop()
    assert "rule block-bad" not in err, err  # the action never failed


def test_events_from_the_daemon_socket_and_a_subscriber_that_stops_reading(dbdir: Path, fw: str) -> None:
    """`sockscope events --json` reads the daemon's socket: valid JSON lines, the match applied.
    A subscriber that takes nothing is dropped and its loss counted; the daemon's intervals keep
    their pace meanwhile."""
    sock = dbdir / "events.sock"
    daemon = Daemon(dbdir / "h.db", "-o", f"events.socket={json.dumps(str(sock))}", "-o", "events.queue=2048",
                    "-o", 'events.stall="1s"')  # fmt: skip
    inside = ["ip", "netns", "exec", fw]
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(str(sock))  # and never reads
    out_file = (dbdir / "events.out").open("w+")  # a file, not a pipe: nothing slows the reader
    reader = subprocess.Popen([SOCKSCOPE, "events", "--socket", str(sock), "--json", "--match", "comm=ss-fw-c*",
                               "--count", "1600", "--duration", "40"], stdout=out_file, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        time.sleep(0.5)  # subscribed
        srv = Traffic("ss-fw-srv", "tcp-server", "--bind", OPEN, "--accept", "800", prefix=inside)
        port = srv.line()["port"]
        client = Traffic("ss-fw-cli", "tcp-client", "--host", OPEN, "--port", str(port), "--send", "100",
                         "--connections", "800", prefix=inside)  # fmt: skip
        client.wait()
        srv.wait()
        _, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err
        out_file.seek(0)
        events = [json.loads(line) for line in out_file.read().splitlines()]
        for e in events:
            jsonschema.validate(e, SCHEMA)
        assert len(events) == 1600 and {e["comm"] for e in events} == {"ss-fw-cli"}
        assert sorted({e["kind"] for e in events}) == ["tcp_close", "tcp_connect"]
        assert sum(e["tx_bytes"] for e in events if e["kind"] == "tcp_close") == 800 * 100
        time.sleep(2.5)  # past the stall
    finally:
        reader.kill()
        out_file.close()
        stuck.close()
        log = daemon.stop()
    assert "event socket: subscriber pid" in log and "disconnected (" in log, log
    lost = int(log.split("disconnected (")[1].split(" lines lost")[0].replace(",", ""))
    assert lost > 0
    # The intervals kept their pace: every half second written while the subscriber was stuck.
    with sqlite3.connect(dbdir / "h.db") as db:
        stamps = [r[0] / 1000 for r in db.execute("SELECT ts FROM intervals ORDER BY ts")]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(stamps) > 5 and max(gaps) < 0.75, gaps


def test_events_with_a_collector_of_its_own(fw: str) -> None:
    """Without a daemon (as root) `sockscope events` runs the collector itself: the readable lines
    of a listen, a connect, its accept and both closes, the match applied, the totals exact."""
    inside = ["ip", "netns", "exec", fw]
    reader = subprocess.Popen([SOCKSCOPE, "events", "--source", "collector", "--match", "comm=ss-fw-own*",
                               "--count", "5", "--duration", "30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        time.sleep(2.0)  # loaded and attached (the events of before are not its to show)
        srv = Traffic("ss-fw-own-srv", "tcp-server", "--bind", OPEN, "--reply", "300", prefix=inside)
        port = srv.line()["port"]
        cli = Traffic("ss-fw-own-cli", "tcp-client", "--host", OPEN, "--port", str(port), "--send", "1234",
                      prefix=inside)  # fmt: skip
        cli.wait()
        srv.wait()
        out, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err
    finally:
        reader.kill()
    by_kind: dict[str, list[str]] = {}
    for line in out.splitlines():
        by_kind.setdefault(line.split()[1], []).append(line)
    assert sorted((k, len(v)) for k, v in by_kind.items()) == [
        ("tcp_accept", 1), ("tcp_close", 2), ("tcp_connect", 1), ("tcp_listen", 1)], out  # fmt: skip
    [listen], [connect], [accept] = by_kind["tcp_listen"], by_kind["tcp_connect"], by_kind["tcp_accept"]
    assert f" {srv.pid} ss-fw-own-srv" in listen and f"{OPEN}:{port}" in listen and "->" not in listen
    assert f" {cli.pid} ss-fw-own-cli" in connect and f"-> {OPEN}:{port}" in connect
    assert f" {srv.pid} ss-fw-own-srv" in accept and f" {OPEN}:{port} -> {OPEN}:" in accept
    client_close = [c for c in by_kind["tcp_close"] if f" {cli.pid} " in c]
    server_close = [c for c in by_kind["tcp_close"] if f" {srv.pid} " in c]
    assert len(client_close) == len(server_close) == 1, out
    assert " tx 1234 rx 300 " in client_close[0] and " tx 300 rx 1234 " in server_close[0], out


def test_an_event_socket_that_cannot_be_made_is_refused_in_one_line(dbdir: Path) -> None:
    """A socket path in use by another daemon (with its pid), a group that does not exist: one
    line, exit 1, no traceback, and nothing left running."""
    sock = dbdir / "events.sock"
    first = Daemon(dbdir / "a.db", "-o", f"events.socket={json.dumps(str(sock))}")
    try:
        second = subprocess.run([SOCKSCOPE, "daemon", "--db", str(dbdir / "b.db"), "--duration", "5",
                                 "-o", f"events.socket={json.dumps(str(sock))}"],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
    finally:
        first.stop()
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
    assert f"in use by another sockscope (pid {first.proc.pid})" in second.stderr
    bad = subprocess.run([SOCKSCOPE, "daemon", "--db", str(dbdir / "c.db"), "--duration", "5",
                          "-o", f"events.socket={json.dumps(str(dbdir / 'other.sock'))}",
                          "-o", 'events.group="no-such-group-ssx"'],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
    assert "no-such-group-ssx" in bad.stderr and len(bad.stderr.strip().splitlines()) <= 2, bad.stderr
