"""The collector's user-space cost for bench/percall.py: its CPU while many loopback TCP
connections (bench/percall_conns.py) each move a few bytes every second. Measured twice with the
same connections: `sockscope top --json` as a whole, then the collector alone (its reads, as top
makes them, without formatting the output: bench/collector_loop.py)."""

from __future__ import annotations

import contextlib
import json
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
from bench.percall_parts import CONNS_SCRIPT, MONITOR_START_TIMEOUT, REPO_ROOT


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
    alone_cpu_pct: float | None = None  # the collector without output (bench/collector_loop.py)
    alone_seen: list[int] = field(default_factory=list)  # its connections of the generator, per interval
    alone_dropped: int = 0
    alone_startup_s: float | None = None  # spawn to counting (its "ready": loaded and attached)


def collector_alone(
    children: Children, args: Sequence[str], pids: set[int], window: float, settle: float
) -> tuple[float, list[int], int, float]:
    """CPU % of one core of the collector alone over `window`, the generator's connections it saw
    per interval, the events it dropped, and seconds from spawn to counting."""
    spawned = time.monotonic()
    # top's extra arguments
    proc, lines = _spawn_lines(children, [sys.executable, "-m", "bench.collector_loop", "--interval", "1", *args])
    try:
        first = lines.get(timeout=MONITOR_START_TIMEOUT)
        startup = time.monotonic() - spawned
        if first != "ready":
            proc.wait(timeout=10)
            err = proc.stderr.read() if proc.stderr else ""
            raise BenchError(f"collector loop did not start ({proc.returncode}): {err.strip()[-2000:]}")
        time.sleep(settle)
        while not lines.empty():
            lines.get_nowait()
        c0, t0, w0 = cpu_seconds(proc.pid), time.monotonic(), time.time()
        time.sleep(window)
        c1, t1, w1 = cpu_seconds(proc.pid), time.monotonic(), time.time()
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise BenchError(f"collector loop exited ({proc.returncode}): {err.strip()[-2000:]}")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        seen, dropped = [], 0
        while (item := lines.get(timeout=5)) is not None:
            if not item.startswith("{"):
                continue
            doc = json.loads(item)
            if w0 < doc["ts"] <= w1:
                seen.append(sum(n for pid, n in doc["conns"].items() if int(pid) in pids))
                dropped += doc["dropped"]
        return 100.0 * (c1 - c0) / (t1 - t0), seen, dropped, startup
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        children.forget(proc)


def _reader(stream: IO[str], out: queue.Queue[str | None]) -> None:
    with contextlib.suppress(OSError, ValueError):
        for line in stream:
            out.put(line.strip())
    out.put(None)


def _spawn_lines(children: Children, argv: Sequence[str]) -> tuple[subprocess.Popen[str], queue.Queue[str | None]]:
    """A child of the bench (run from the repository) whose stdout lines arrive in a queue, None at
    its end; its stderr is kept for the error message."""
    proc = children.spawn(
        argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    return proc, lines


def collector_cpu(
    children: Children, sockscope: Path, workdir: Path, args: Sequence[str], conns: int, window: float
) -> UserSpace:
    settle = 3.0
    gen, lines = _spawn_lines(
        children, [sys.executable, str(CONNS_SCRIPT), "--conns", str(conns), "--seconds", str(window + 120)]
    )
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
        alone_pct, alone_seen, alone_dropped, alone_startup = collector_alone(children, args, pids, window, settle)
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
            alone_cpu_pct=alone_pct,
            alone_seen=alone_seen,
            alone_dropped=alone_dropped,
            alone_startup_s=alone_startup,
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
