"""The benchmark lab: a network namespace behind a veth pair, with nftables counters on the peer side.

Used by bench/compare.py. Everything is created with a random tag and removed by `Lab.close()`
(also after an interrupt): the namespace, the veth pair, the processes left in the namespace.

Addresses: 198.19.X.0/24 and fd00:b3e1:X::/64 (inside 198.18.0.0/15 and fd00::/8). The kernel
test suite uses 198.18.X.0/24 and fd00:5353:X::/64, so a benchmark and a test run on the same
machine never route into each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMMAND_TIMEOUT = 30.0
NFT_TABLE = "sockscope_bench"
ETHERNET_HEADER = 14  # what a packet capture on the veth sees on top of the IP packet
TCP_LISTEN = "0A"  # state column of /proc/net/tcp{,6}


class LabError(RuntimeError):
    """The lab could not be set up or read."""


def run(*cmd: str, input_text: str | None = None) -> str:
    """Run a command to completion; raise LabError with its stderr when it fails."""
    try:
        proc = subprocess.run(
            list(cmd), input=input_text, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(cmd)}: {exc}") from exc
    if proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass(frozen=True, slots=True)
class WireCount:
    """What nftables counted in one direction: IP packets and their bytes (IP header included)."""

    packets: int
    ip_bytes: int

    @property
    def frame_bytes(self) -> int:
        # A capture on an Ethernet-like device (nethogs on the veth) also counts the link header.
        return self.ip_bytes + ETHERNET_HEADER * self.packets


@dataclass(frozen=True, slots=True)
class Wire:
    """TCP and UDP on the veth pair, from the host side's point of view."""

    sent: WireCount  # host -> namespace (counted at the namespace's input hook)
    received: WireCount  # namespace -> host (counted at the namespace's output hook)


def nft_ruleset(peer_if: str) -> str:
    # Counters in the namespace, on the peer's side of the wire: a packet counted there crossed
    # the veth. Only TCP and UDP, so neighbour discovery and the like do not blur the figures.
    return f"""
table inet {NFT_TABLE} {{
  counter to_peer {{ }}
  counter from_peer {{ }}
  chain input {{
    type filter hook input priority 0; policy accept;
    iifname "{peer_if}" meta l4proto {{ tcp, udp }} counter name "to_peer";
  }}
  chain output {{
    type filter hook output priority 0; policy accept;
    oifname "{peer_if}" meta l4proto {{ tcp, udp }} counter name "from_peer";
  }}
}}
"""


def parse_nft_counters(doc: Any) -> dict[str, WireCount]:
    """Named counters from `nft -j list counters ...` output."""
    out: dict[str, WireCount] = {}
    items = doc.get("nftables", []) if isinstance(doc, dict) else []
    for item in items:
        counter = item.get("counter") if isinstance(item, dict) else None
        if isinstance(counter, dict) and "name" in counter:
            out[str(counter["name"])] = WireCount(int(counter.get("packets", 0)), int(counter.get("bytes", 0)))
    return out


def listening_ports(pid: int) -> set[int]:
    """TCP ports listening in the network namespace of process `pid` (its /proc/PID/net view)."""
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 3 and cols[3] == TCP_LISTEN:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def used_subnets() -> str:
    return run("ip", "-o", "addr", "show")


class Lab:
    """A namespace `ssbench-<tag>` joined to the host by veth `sbh<tag>` <-> `sbp<tag>`."""

    def __init__(self) -> None:
        self.tag = os.urandom(3).hex()
        self.ns = f"ssbench-{self.tag}"
        self.host_if = f"sbh{self.tag}"
        self.peer_if = f"sbp{self.tag}"
        taken = used_subnets()
        octet = random.choice([n for n in range(1, 255) if f"198.19.{n}." not in taken] or [200])
        self.host4, self.peer4 = f"198.19.{octet}.1", f"198.19.{octet}.2"
        self.host6, self.peer6 = f"fd00:b3e1:{octet:x}::1", f"fd00:b3e1:{octet:x}::2"
        self._created = False

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]

    def open(self) -> Lab:
        self._created = True  # from here on close() has something to undo, even half-built
        run("ip", "netns", "add", self.ns)
        run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
        run("ip", "link", "set", self.peer_if, "netns", self.ns)
        run("ip", "addr", "add", f"{self.host4}/24", "dev", self.host_if)
        run("ip", "addr", "add", f"{self.host6}/64", "dev", self.host_if, "nodad")
        run("ip", "link", "set", self.host_if, "up")
        inside = self.exec_prefix()
        run(*inside, "ip", "addr", "add", f"{self.peer4}/24", "dev", self.peer_if)
        run(*inside, "ip", "addr", "add", f"{self.peer6}/64", "dev", self.peer_if, "nodad")
        run(*inside, "ip", "link", "set", self.peer_if, "up")
        run(*inside, "ip", "link", "set", "lo", "up")
        run(*inside, "nft", "-f", "-", input_text=nft_ruleset(self.peer_if))
        return self

    def reset_wire(self) -> None:
        run(*self.exec_prefix(), "nft", "reset", "counters", "table", "inet", NFT_TABLE)

    def read_wire(self) -> Wire:
        out = run(*self.exec_prefix(), "nft", "-j", "list", "counters", "table", "inet", NFT_TABLE)
        counters = parse_nft_counters(json.loads(out))
        try:
            return Wire(sent=counters["to_peer"], received=counters["from_peer"])
        except KeyError as exc:
            raise LabError(f"nftables counter {exc} missing in table {NFT_TABLE}") from exc

    def pids_inside(self) -> list[int]:
        try:
            out = run("ip", "netns", "pids", self.ns)
        except LabError:
            return []
        return [int(p) for p in out.split() if p.isdigit()]

    def close(self) -> None:
        """Kill what still runs in the namespace, then remove the veth pair and the namespace."""
        if not self._created:
            return
        self._created = False
        for pid in self.pids_inside():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
        for cmd in (["ip", "link", "del", self.host_if], ["ip", "netns", "del", self.ns]):
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(cmd, capture_output=True, timeout=COMMAND_TIMEOUT, check=False)

    def describe(self) -> str:
        return (
            f"network namespace `{self.ns}` behind veth `{self.host_if}` ({self.host4}, {self.host6})"
            f" <-> `{self.peer_if}` ({self.peer4}, {self.peer6})"
        )

    def __enter__(self) -> Lab:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def named_python(bindir: Path, name: str, python: str) -> str:
    """A symlink `bindir/name` to the Python interpreter: a process started through it is called
    `name` everywhere a tool may look (comm from exec, argv[0] in /proc/PID/cmdline)."""
    bindir.mkdir(parents=True, exist_ok=True)
    link = bindir / name
    if not link.is_symlink():
        link.symlink_to(os.path.realpath(python))
    return str(link)


def wait_listening(pid: int, port: int, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while port not in listening_ports(pid):
        if proc is not None and proc.poll() is not None:
            raise LabError(f"server exited ({proc.returncode}) before listening on port {port}")
        if time.monotonic() > deadline:
            raise LabError(f"nothing listening on port {port} after {timeout:.0f} s")
        time.sleep(0.02)


def argv_in(lab: Lab, argv: Sequence[str], inside: bool) -> list[str]:
    return [*lab.exec_prefix(), *argv] if inside else list(argv)


REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATOR_TIMEOUT = 120.0  # a generator's sockets time out after 20 s; this bounds the whole process


class Generator:
    """A traffic generator from tests/kernel/traffic.py that counts its own bytes exactly, run
    under a name of its own (see named_python), on the host or inside the lab's namespace."""

    def __init__(
        self,
        lab: Lab,
        bindir: Path,
        python: str,
        name: str,
        mode: str,
        *args: str,
        inside: bool = False,
        script: Path | None = None,
    ) -> None:
        exe = named_python(bindir, name, python)
        # -S: no site import (only the standard library is needed); starts faster. A `script`
        # (bench/lab_short.py) replaces the traffic module: `mode` is then its first argument.
        if script is not None:
            argv = [exe, "-S", "-I", str(script), mode, *args]
        else:
            argv = [exe, "-S", "-m", "tests.kernel.traffic", "--name", name, mode, *args]
        self.name = name
        self.proc = subprocess.Popen(
            argv_in(lab, argv, inside),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid  # `ip netns exec` execs the command: same pid
        self.spawned = time.monotonic()
        self.lifetime: float | None = None  # spawn -> its final line read (an upper bound of its life)

    def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        text = self.proc.stdout.readline()
        if not text:
            self.proc.wait(timeout=GENERATOR_TIMEOUT)
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise LabError(f"generator {self.name} ended early ({self.proc.returncode}): {err.strip()[-800:]}")
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise LabError(f"generator {self.name} printed {text!r}")
        return doc

    def wait(self) -> dict[str, Any]:
        """The generator's final count: {"done": true, "tx": N, "rx": N, ...}."""
        done = self.line()
        self.lifetime = time.monotonic() - self.spawned
        code = self.proc.wait(timeout=GENERATOR_TIMEOUT)
        if code != 0 or not done.get("done"):
            raise LabError(f"generator {self.name} exited {code}: {done}")
        self.close()
        return done

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self.close()

    def close(self) -> None:
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
