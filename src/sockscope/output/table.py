"""Plain-text table for `sockscope top` without --json (until the full-screen UI)."""

from __future__ import annotations

import time

from sockscope.collector.model import Interval
from sockscope.collector.rates import human_bytes, human_rate
from sockscope.output.safe import printable

HEADER = f"{'PID':>7} {'USER':<10} {'PROGRAM':<20} {'SEND':>12} {'RECEIVE':>12} {'CONNS':>5}"


def clock(ts: float) -> str:
    """Local time of day to the millisecond, for a line per event (sockscope events, opens)."""
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def render(iv: Interval, *, top: int = 20, bits: bool = False) -> str:
    lines = [
        f"{iv.interval:.2f}s  sent {human_rate(iv.tx_bytes, iv.interval, bits=bits)}"
        f"  received {human_rate(iv.rx_bytes, iv.interval, bits=bits)}"
        f"  dropped {iv.counters.dropped_events} events ({human_bytes(iv.counters.dropped_bytes)})",
        HEADER,
    ]
    for p in iv.processes[:top]:
        user = printable(p.user if p.user is not None else (str(p.uid) if p.uid is not None else None), limit=10)
        lines.append(
            f"{p.pid:>7} {user:<10} {printable(p.comm, limit=20):<20}"
            f" {human_rate(p.tx_bytes, iv.interval, bits=bits):>12}"
            f" {human_rate(p.rx_bytes, iv.interval, bits=bits):>12} {len(p.connections):>5}"
        )
    if len(iv.processes) > top:
        lines.append(f"... and {len(iv.processes) - top} more")
    return "\n".join(lines)
