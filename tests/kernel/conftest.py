"""Fixtures for tests that load the real BPF programs and move real traffic.

These need root and a kernel like this one. They fail, loudly, when they cannot
run: a skipped kernel test would hide a broken collector.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sockscope.bpf.loader import COUNT_GROUP_NAMES, CollectorOptions, count_groups_for
from sockscope.collector.bpf_source import BpfSource
from sockscope.collector.model import Interval
from tests.kernel.spawner import Spawned, Spawner

REPO = Path(__file__).resolve().parents[2]
SOCKSCOPE = str(Path(sys.executable).with_name("sockscope"))

# The counting group under test: forced by the kernel matrix (scripts/vmtest) through the same
# variable the CLI reads, so `sockscope` run by a test counts with it too.
HOOKS = os.environ.get("SOCKSCOPE_HOOKS", "auto")
# The counting groups each kernel is declared to allow, best first, so that tests assert what
# works and what is refused: Debian's kernels of the matrix allow fentry and kprobes (6.1 has no
# length tracepoints); this machine kind's own kernel refuses fentry and has no kprobes.
KERNEL_GROUPS = {"6.1.": ("fentry", "kprobe"), "6.12.": ("tracepoint", "fentry", "kprobe")}
HOST_GROUPS = ("tracepoint",)


def _allowed(release: str) -> tuple[str, ...]:
    env = os.environ.get("SOCKSCOPE_TEST_ALLOWED")  # another kernel: say what it allows
    if env:
        return tuple(env.split(","))
    return next((g for prefix, g in KERNEL_GROUPS.items() if release.startswith(prefix)), HOST_GROUPS)


ALLOWED = _allowed(os.uname().release)
GROUP = HOOKS if HOOKS != "auto" else ALLOWED[0]  # the group that counts in this run
assert set(ALLOWED) <= set(COUNT_GROUP_NAMES) and GROUP in ALLOWED, (HOOKS, ALLOWED)


def options(**kw: Any) -> CollectorOptions:
    """Collector options for a test, with the counting group under test."""
    return CollectorOptions(count_groups=count_groups_for(HOOKS), **kw)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.kernel)


@pytest.fixture(autouse=True)
def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("kernel tests need root (BPF programs, network namespaces): run `make test` as root")


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


# How a command is run in a namespace; Traffic forks its generator into one instead (setns).
NETNS_EXEC = ("ip", "netns", "exec")


@dataclass
class Netns:
    """A network namespace joined to the host by a veth pair (198.18.0.0/15, fd00::/8)."""

    name: str
    host_if: str = ""
    host4: str = "198.18.0.1"
    peer4: str = "198.18.0.2"
    host6: str = "fd00:5353::1"
    peer6: str = "fd00:5353::2"

    def exec_prefix(self) -> list[str]:
        return [*NETNS_EXEC, self.name]

    def inode(self) -> int:
        return os.stat(f"/run/netns/{self.name}").st_ino


@pytest.fixture(scope="session")
def netns() -> Iterator[Netns]:
    tag = uuid.uuid4().hex[:6]
    host_if, peer_if = f"ssh{tag}", f"ssp{tag}"
    # A subnet of its own per run, so two suites on one machine do not route into each other.
    net = int(tag[:2], 16)
    ns = Netns(
        name=f"sstest-{tag}",
        host_if=host_if,
        host4=f"198.18.{net}.1",
        peer4=f"198.18.{net}.2",
        host6=f"fd00:5353:{net:x}::1",
        peer6=f"fd00:5353:{net:x}::2",
    )
    run("ip", "netns", "add", ns.name)
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        run("ip", "link", "set", peer_if, "netns", ns.name)
        run("ip", "addr", "add", f"{ns.host4}/24", "dev", host_if)
        run("ip", "addr", "add", f"{ns.host6}/64", "dev", host_if, "nodad")
        run("ip", "link", "set", host_if, "up")
        inside = ns.exec_prefix()
        run(*inside, "ip", "addr", "add", f"{ns.peer4}/24", "dev", peer_if)
        run(*inside, "ip", "addr", "add", f"{ns.peer6}/64", "dev", peer_if, "nodad")
        run(*inside, "ip", "link", "set", peer_if, "up")
        run(*inside, "ip", "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=30)


SPAWNER = Spawner()


@pytest.fixture(scope="session", autouse=True)
def _spawner() -> Iterator[None]:
    yield
    SPAWNER.close()


class Traffic:
    """A running traffic generator (tests/kernel/traffic.py)."""

    def __init__(
        self, name: str, mode: str, *args: str, prefix: list[str] | None = None, tool: str = "traffic"
    ) -> None:
        # tool: the module under tests/kernel (traffic, or dns_tools: a DNS server and clients)
        argv = ["--name", name, mode, *args]
        self.name = name
        netns = prefix[3] if prefix and len(prefix) == 4 and tuple(prefix[:3]) == NETNS_EXEC else None
        self.proc: subprocess.Popen[str] | Spawned
        if prefix is None or netns:  # forked by the spawner: a fresh Python costs 1.7 s under TCG
            self.proc = SPAWNER.spawn(tool, argv, netns)
        else:  # another wrapper (unshare, a cgroup): run it
            cmd = [*prefix, sys.executable, "-m", f"tests.kernel.{tool}", *argv]
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        text = self.proc.stdout.readline()
        if not text:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"{self.name} ended early: {err}")
        return dict(json.loads(text))

    def wait(self) -> dict[str, Any]:
        done = self.line()
        assert self.proc.wait(timeout=60) == 0
        assert done.get("done"), done
        return done

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class Tally:
    """Totals per pid and per (pid, connection endpoints) over several intervals."""

    procs: dict[int, dict[str, Any]] = field(default_factory=dict)
    netns: dict[int, set[int]] = field(default_factory=dict)
    conns: dict[int, dict[tuple[Any, ...], dict[str, int]]] = field(default_factory=dict)
    dropped_events: int = 0
    calls_missed: int = 0
    peek_skipped: int = 0
    life: list[Any] = field(default_factory=list)  # LifeEvent objects from in-process reads

    def add_dict(self, d: dict[str, Any]) -> None:
        self.dropped_events += d["dropped"]["events"]
        self.calls_missed += d["dropped"]["missed_calls"]
        self.peek_skipped += d["peek_skipped"]
        for p in d["processes"]:
            t = self.procs.setdefault(p["pid"], {"tx": 0, "rx": 0, "comm": p["comm"], "exe": p["exe"]})
            t["tx"] += p["tx_bytes"]
            t["rx"] += p["rx_bytes"]
            conns = self.conns.setdefault(p["pid"], {})
            for c in p["connections"]:
                self.netns.setdefault(p["pid"], set()).add(c["netns"])
                key = (c["proto"], c["family"], c["laddr"], c["lport"], c["raddr"], c["rport"], c["v4mapped"])
                ct = conns.setdefault(key, {"tx": 0, "rx": 0})
                ct["tx"] += c["tx_bytes"]
                ct["rx"] += c["rx_bytes"]

    def add(self, iv: Interval) -> None:
        from sockscope.output.jsonl import interval_dict

        self.add_dict(interval_dict(iv))
        self.life += iv.lifecycle


@pytest.fixture
def source() -> Iterator[BpfSource]:
    src = BpfSource(options())
    src.start()
    assert src.collector.group == GROUP, src.collector.group
    try:
        yield src
    finally:
        src.close()


def drain(src: BpfSource, tally: Tally, settle: float = 0.2) -> None:
    """Read until everything the finished traffic produced is in the tally."""
    time.sleep(settle)
    for _ in range(2):
        tally.add(src.read())


@pytest.fixture
def dbdir() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are 0700, and a reader without root must get in.
    path = Path(tempfile.mkdtemp(prefix="sockscope-db-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
