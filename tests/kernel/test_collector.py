"""The real collector, in process: peers of unconnected UDP, v4-mapped, MSG_PEEK,
short-lived processes, reads during traffic, a full map, identity."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sockscope.bpf.loader import COUNT_GROUP_NAMES, CollectorError, CollectorOptions
from sockscope.collector.bpf_source import BpfSource
from tests.kernel.conftest import ALLOWED, Netns, Tally, Traffic, drain, options


def udp_server(name: str, addr: str, count: int, reply: int, prefix: list[str] | None = None) -> tuple[Traffic, int]:
    srv = Traffic(name, "udp-server", "--bind", addr, "--count", str(count), "--reply", str(reply), prefix=prefix)
    return srv, int(srv.line()["port"])


def test_unconnected_udp_two_servers_are_two_endpoints(source: BpfSource, netns: Netns) -> None:
    a, port_a = udp_server("ss-dns-a", "127.0.0.1", 100, 90)
    b, port_b = udp_server("ss-dns-b", netns.peer4, 100, 91, prefix=netns.exec_prefix())
    client = Traffic(
        "ss-resolver", "udp-client", "--host", "127.0.0.1", "--port", str(port_a),
        "--host", netns.peer4, "--port", str(port_b), "--count", "200", "--size", "40",
    )  # fmt: skip
    done = client.wait()
    a.wait(), b.wait()
    tally = Tally()
    drain(source, tally)
    lport = done["local"][1]
    assert tally.conns[client.pid] == {
        ("udp", 4, "0.0.0.0", lport, "127.0.0.1", port_a, False): {"tx": 4000, "rx": 9000},
        ("udp", 4, "0.0.0.0", lport, netns.peer4, port_b, False): {"tx": 4000, "rx": 9100},
    }


def test_v4_mapped_peer_is_one_ipv4_row(source: BpfSource) -> None:
    srv, port = udp_server("ss-v4-srv", "127.0.0.1", 50, 33)
    client = Traffic(
        "ss-v6-sock", "udp-client", "--v6socket", "--host", "::ffff:127.0.0.1", "--port", str(port),
        "--count", "50", "--size", "20",
    )  # fmt: skip
    done = client.wait()
    srv.wait()
    tally = Tally()
    drain(source, tally)
    # Sent through the IPv4 hook, received through the IPv6 one: still one peer.
    assert tally.conns[client.pid] == {
        ("udp", 4, "::", done["local"][1], "127.0.0.1", port, True): {"tx": 1000, "rx": 1650}
    }


def test_connected_udp_uses_socket_endpoints(source: BpfSource) -> None:
    srv, port = udp_server("ss-c-srv", "::1", 30, 10)
    client = Traffic(
        "ss-c-cli", "udp-client", "--connected", "--host", "::1", "--port", str(port), "--count", "30", "--size", "7"
    )
    done = client.wait()
    srv.wait()
    tally = Tally()
    drain(source, tally)
    assert tally.conns[client.pid] == {("udp", 6, "::1", done["local"][1], "::1", port, False): {"tx": 210, "rx": 300}}


def test_msg_peek_is_not_counted_twice(source: BpfSource) -> None:
    srv, port = udp_server("ss-p-srv", "127.0.0.1", 40, 50)
    client = Traffic(
        "ss-peeker", "udp-client", "--peek", "--host", "127.0.0.1", "--port", str(port), "--count", "40", "--size", "5"
    )
    client.wait()
    srv.wait()
    tally = Tally()
    drain(source, tally)
    assert (tally.procs[client.pid]["tx"], tally.procs[client.pid]["rx"]) == (200, 2000)
    assert tally.peek_skipped >= 40


class Sink:
    """A TCP server in this process that reads every connection to the end."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.sock.settimeout(30)
        self.port = self.sock.getsockname()[1]
        self.total = 0
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            with conn:
                conn.settimeout(10)
                while data := conn.recv(65536):
                    self.total += len(data)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.sock.close()


def test_burst_of_short_lived_processes(source: BpfSource) -> None:
    sink = Sink()
    sizes: dict[int, int] = {}
    try:
        for batch in range(5):
            procs = []
            for i in range(20):
                n = 4000 + batch * 20 + i
                # head writes n bytes to a connection it was given and exits: a few ms of life, one
                # exec (a shell opening the connection first cost twice the time under TCG).
                with socket.create_connection(("127.0.0.1", sink.port)) as conn:
                    procs.append((subprocess.Popen(["head", "-c", str(n), "/dev/zero"], stdout=conn.fileno()), n))
            for p, n in procs:
                assert p.wait(timeout=30) == 0
                sizes[p.pid] = n
        deadline = time.monotonic() + 10
        while sink.accepted < len(sizes) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sink.close()
    tally = Tally()
    drain(source, tally)
    assert sink.total == sum(sizes.values())
    got = {pid: (tally.procs[pid]["comm"], tally.procs[pid]["tx"]) for pid in sizes if pid in tally.procs}
    assert got == {pid: ("head", n) for pid, n in sizes.items()}
    assert tally.procs[os.getpid()]["rx"] == sum(sizes.values())


def test_without_splice_counting_tcp_is_still_exact() -> None:
    src = BpfSource(options(splice=False))
    src.start()
    try:
        assert not any(h.program == "ss_tp_rcvspace" for h in src.hooks)
        server = Traffic("ss-ns-srv", "tcp-server", "--bind", "::1", "--reply", "1234567")
        try:
            port = server.line()["port"]
            client = Traffic("ss-ns-cli", "tcp-client", "--host", "::1", "--port", str(port), "--send", "7654321")
            c_done, s_done = client.wait(), server.wait()
        finally:
            server.kill()
        tally = Tally()
        drain(src, tally)
    finally:
        src.close()
    assert (tally.procs[client.pid]["tx"], tally.procs[client.pid]["rx"]) == (c_done["tx"], c_done["rx"])
    assert (tally.procs[server.pid]["tx"], tally.procs[server.pid]["rx"]) == (s_done["tx"], s_done["rx"])


def test_reads_during_a_transfer_lose_nothing(source: BpfSource) -> None:
    # The client sends until told to stop, after 20 reads that found its bytes: every read swaps
    # and drains the maps mid-transfer however fast the machine (a fixed size took 30 s under
    # TCG, a blink here).
    server = Traffic("ss-big-srv", "tcp-server", "--bind", "127.0.0.1", "--reply", "0")
    try:
        port = server.line()["port"]
        client = Traffic("ss-big-cli", "tcp-client", "--host", "127.0.0.1", "--port", str(port), "--until-usr1")
        assert client.line().get("sending")
        tally = Tally()
        busy = reads = 0  # reads that found bytes of the transfer, and all reads
        while busy < 20 and reads < 2000:  # a loaded machine may run some reads between two sends
            before = tally.procs.get(client.pid, {}).get("tx", 0)
            tally.add(source.read())  # swap and drain as fast as it goes
            busy += tally.procs.get(client.pid, {}).get("tx", 0) > before
            reads += 1
        assert client.proc.poll() is None  # still sending: every read was mid-transfer
        os.kill(client.pid, signal.SIGUSR1)
        c_done, s_done = client.wait(), server.wait()
    finally:
        server.kill()
    drain(source, tally)
    assert busy == 20, (busy, reads)
    assert c_done["tx"] == s_done["rx"] > 0
    assert tally.procs[client.pid]["tx"] == c_done["tx"]
    assert tally.procs[server.pid]["rx"] == s_done["rx"]


def test_full_flow_map_counts_what_it_drops() -> None:
    src = BpfSource(options(max_flows=8))
    src.start()
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = 0
        for port in range(40000, 40064):  # 64 peers: 64 keys in one interval, for 8 places
            sent += s.sendto(b"d" * 10, ("127.0.0.1", port))
        s.close()
        tally = Tally()
        iv = src.read()
        tally.add(iv)
    finally:
        src.close()
    counted = tally.procs.get(os.getpid(), {"tx": 0})["tx"]
    assert iv.counters.dropped_events > 0
    assert counted < sent
    assert counted + iv.counters.dropped_bytes >= sent


def test_identity_of_a_live_process(source: BpfSource) -> None:
    srv, port = udp_server("ss-id-srv", "127.0.0.1", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("127.0.0.1", port))
    s.settimeout(10)
    s.recv(10)
    s.close()
    iv = source.read()
    procs: dict[int, Any] = {p.pid: p for p in iv.processes}
    me = procs[os.getpid()]
    assert me.alive
    assert me.exe == os.path.realpath(f"/proc/{os.getpid()}/exe")
    argv = Path(f"/proc/{os.getpid()}/cmdline").read_bytes().decode().rstrip("\0").split("\0")
    assert me.cmdline == " ".join(argv)
    assert me.uid == os.getuid() and me.user == "root" and me.ppid == os.getppid()
    srv.wait()


# Why a kernel refuses a group: this host refuses fentry at load and has no kprobes; 6.1 has no
# length tracepoints.
REFUSALS = {
    "tracepoint": "lacks the tracepoints",
    "fentry": "load failed: Operation not permitted; this kernel refuses fentry/fexit",
    "kprobe": "CONFIG_KPROBES off",
}


@pytest.mark.parametrize("group", COUNT_GROUP_NAMES)
def test_each_forced_group_counts_or_says_why_in_one_paragraph(group: str) -> None:
    src = BpfSource(CollectorOptions(count_groups=(group,)))
    try:
        if group in ALLOWED:
            src.start()
            assert src.collector.group == group
            assert all(h.ok for h in src.hooks if h.group == group)
            return
        with pytest.raises(CollectorError) as exc:
            src.start()
    finally:
        src.close()
    msg = str(exc.value)
    assert "\n" not in msg
    assert f"The '{group}' hooks were asked for (--hooks {group})" in msg
    assert REFUSALS[group] in msg and "sockscope doctor" in msg


def test_no_counting_group_at_all_names_each_reason() -> None:
    refused = [g for g in COUNT_GROUP_NAMES if g not in ALLOWED]
    if len(refused) < 2:
        # 6.12 allows all three: make every group fail for the same, known reason.
        refused, opts = list(COUNT_GROUP_NAMES), CollectorOptions(max_flows=2**32 - 1)
    else:
        opts = CollectorOptions(count_groups=tuple(refused))
    src = BpfSource(opts)
    with pytest.raises(CollectorError) as exc:
        src.start()
    src.close()
    msg = str(exc.value)
    assert "\n" not in msg and "sockscope doctor" in msg
    assert msg.startswith("No way to count socket traffic could be attached on this kernel. Tried")
    for g in refused:
        assert f"{g}: " in msg
        if opts.max_flows != 2**32 - 1:
            assert REFUSALS[g] in msg
