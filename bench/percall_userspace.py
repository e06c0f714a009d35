"""The collector's user-space cost for bench/percall.py: its CPU while many loopback TCP
connections (bench/percall_conns.py) each move a few bytes every second."""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bench.overhead import BenchError, Children, Monitor, cpu_seconds
from bench.percall_parts import CONNS_SCRIPT, MONITOR_START_TIMEOUT


@dataclass(slots=True)
class UserSpace:
    conns: int
    window_s: float
    cpu_s: float
    cpu_pct: float  # of one core
    gen_cpu_pct: float
    startup_s: float
    connections_seen: list[int] = field(default_factory=list)  # per interval, the generator's two processes
    dropped_events: int = 0
    sweep_s: list[float] = field(default_factory=list)


def _reader(stream: IO[str], out: queue.Queue[str | None]) -> None:
    with contextlib.suppress(OSError, ValueError):
        for line in stream:
            out.put(line.strip())
    out.put(None)


def collector_cpu(
    children: Children, sockscope: Path, workdir: Path, args: Sequence[str], conns: int, window: float
) -> UserSpace:
    settle = 3.0
    gen = children.spawn(
        [sys.executable, str(CONNS_SCRIPT), "--conns", str(conns), "--seconds", str(window + 120)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    assert gen.stdout is not None
    threading.Thread(target=_reader, args=(gen.stdout, lines), daemon=True).start()
    mon: Monitor | None = None
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty as exc:
                raise BenchError(f"connection generator not ready after 120 s ({conns} connections)") from exc
            if line is None:
                gen.wait(timeout=5)
                err = gen.stderr.read() if gen.stderr else ""
                raise BenchError(f"connection generator exited {gen.returncode}: {err.strip()}")
            if line.startswith("ready"):
                pids = {gen.pid, int(line.split()[2])}
                break
        mon = Monitor(children, sockscope, workdir, 90_000, args)
        startup = mon.wait_attached(MONITOR_START_TIMEOUT)
        time.sleep(settle)
        while not lines.empty():
            lines.get_nowait()
        c0, g0, w0, t0 = mon.cpu_seconds(), sum(map(cpu_seconds, pids)), time.time(), time.monotonic()
        time.sleep(window)
        c1, g1, t1 = mon.cpu_seconds(), sum(map(cpu_seconds, pids)), time.monotonic()
        w1 = time.time()
        sweeps = []
        while not lines.empty():
            item = lines.get_nowait()
            if item and item.startswith("tick"):
                sweeps.append(float(item.split()[2]))
        if not mon.alive():
            raise BenchError(f"sockscope exited ({mon.proc.returncode}): {mon.stderr_tail()}")
        mon.stop()
        inside = [d for d in mon.received if isinstance(d.get("ts"), float | int) and w0 < d["ts"] <= w1]
        seen = []
        dropped = 0
        for doc in inside:
            procs = [p for p in doc.get("processes", []) if isinstance(p, dict) and p.get("pid") in pids]
            seen.append(sum(len(p.get("connections") or []) for p in procs))
            drop = doc.get("dropped")
            if isinstance(drop, dict) and isinstance(drop.get("events"), int):
                dropped += drop["events"]
        elapsed = t1 - t0
        return UserSpace(
            conns=conns,
            window_s=elapsed,
            cpu_s=c1 - c0,
            cpu_pct=100.0 * (c1 - c0) / elapsed,
            gen_cpu_pct=100.0 * (g1 - g0) / elapsed,
            startup_s=startup,
            connections_seen=seen,
            dropped_events=dropped,
            sweep_s=sweeps,
        )
    finally:
        if mon is not None and mon.alive():
            mon.stop()
        if gen.poll() is None:
            gen.send_signal(signal.SIGTERM)
            try:
                gen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                gen.kill()
                gen.wait(timeout=5)
        children.forget(gen)
