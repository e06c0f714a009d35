"""/proc/net/dev: bytes per interface, to reconcile with what was attributed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IfaceCounters:
    rx_bytes: int
    rx_packets: int
    tx_bytes: int
    tx_packets: int


def parse_net_dev(text: str) -> dict[str, IfaceCounters]:
    """Parse /proc/net/dev (two header lines, then 'name: 16 numbers')."""
    out: dict[str, IfaceCounters] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        f = rest.split()
        if len(f) < 16:
            raise ValueError(f"/proc/net/dev: short line for {name.strip()!r}")
        out[name.strip()] = IfaceCounters(int(f[0]), int(f[1]), int(f[8]), int(f[9]))
    return out


def read_net_dev(path: str = "/proc/net/dev") -> dict[str, IfaceCounters]:
    with open(path, encoding="ascii", errors="replace") as f:
        return parse_net_dev(f.read())


def delta(before: dict[str, IfaceCounters], after: dict[str, IfaceCounters]) -> dict[str, IfaceCounters]:
    """Per-interface change; interfaces that appeared count from zero, vanished ones are left out."""
    zero = IfaceCounters(0, 0, 0, 0)
    out = {}
    for name, a in after.items():
        b = before.get(name, zero)
        out[name] = IfaceCounters(
            a.rx_bytes - b.rx_bytes, a.rx_packets - b.rx_packets, a.tx_bytes - b.tx_bytes, a.tx_packets - b.tx_packets
        )
    return out
