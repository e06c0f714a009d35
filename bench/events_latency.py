#!/usr/bin/env python3
"""Live events: latency from the kernel's event to a subscriber of the daemon's socket.

A real `sockscope daemon` runs with its event socket in a temporary directory; this process
subscribes to it like any program would. bench/connstorm.c (compiled here with cc -O2) makes
loopback TCP connections at a steady rate: 1, 100, 1,000 and 10,000 a second. For each
connection's `tcp_connect` event the latency is the subscriber's CLOCK_BOOTTIME when the line
arrived less the event's `ktime_ns` (the kernel's clock when the connection reached
ESTABLISHED). Reported per rate: p50, p99, max, events received against connections made
(each connection gives four events: connect, accept and two closes), events announced lost,
and the daemon's CPU (utime + stime from /proc over the run) in % of one core.

Needs root and cc. Only loopback traffic. Exit status: 0 measured, 1 failure, 2 setup.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.overhead import BenchError, log  # noqa: E402
from bench.percall_parts import build_c  # noqa: E402

STORM_SRC = REPO_ROOT / "bench" / "connstorm.c"
SOCKSCOPE = str(Path(sys.executable).with_name("sockscope"))
RATES = (1, 100, 1000, 10000)
TARGET_RATE = 1000
KTIME = re.compile(rb'"ktime_ns":(\d+)')
PID = re.compile(rb'"pid":(\d+)')
COUNT = re.compile(rb'"count":(\d+)')
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class RateResult:
    rate: int
    seconds: float
    connections: int
    latencies: int  # tcp_connect events of the storm's connections received
    events: int  # all events of the storm's processes received
    lost: int  # announced lost (ring buffer, subscriber queue)
    p50_ms: float
    p99_ms: float
    max_ms: float
    daemon_cpu_pct: float


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def start_daemon(workdir: Path) -> tuple[subprocess.Popen[str], Path]:
    sock = workdir / "events.sock"
    cmd = [SOCKSCOPE, "daemon", "--db", str(workdir / "h.db"), "--interval", "1",
           "-o", f"events.socket={json.dumps(str(sock))}", "-o", "events.queue=65536"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise BenchError(f"the daemon ended: {proc.wait()}")
        if line.startswith("sockscope daemon: counting;"):
            return proc, sock
    raise BenchError("the daemon did not start counting within 60 s")


def measure(storm: Path, sock_path: Path, daemon_pid: int, rate: int, seconds: float) -> RateResult:
    sub = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sub.connect(str(sock_path))
    sub.settimeout(0.2)
    proc = subprocess.Popen([str(storm), str(rate), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()  # "port P": listening
    pids = {proc.pid}
    cpu0, wall0 = cpu_seconds(daemon_pid), time.monotonic()
    latencies: list[int] = []
    events = lost = 0
    buf = b""
    done_at: float | None = None
    while True:
        try:
            chunk = sub.recv(1 << 20)
        except TimeoutError:
            chunk = b""
        arrived = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        if proc.poll() is not None and done_at is None:
            done_at = time.monotonic()
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if b'"kind":"lost"' in line:
                m = COUNT.search(line)
                lost += int(m.group(1)) if m else 0
                continue
            pid = PID.search(line)
            if pid is None or (int(pid.group(1)) not in pids and b'"comm":"connstorm"' not in line):
                continue
            events += 1
            if b'"kind":"tcp_connect"' in line and int(pid.group(1)) in pids:
                k = KTIME.search(line)
                if k:
                    latencies.append(arrived - int(k.group(1)))
        # Two seconds after the storm for the stragglers (closes come at the daemon's pace too).
        if done_at is not None and time.monotonic() - done_at > 2.0:
            break
    wall = time.monotonic() - wall0
    cpu = cpu_seconds(daemon_pid) - cpu0
    out = proc.stdout.read()
    sub.close()
    if proc.wait() != 0:
        raise BenchError(f"connstorm failed at {rate}/s")
    made = int(out.split()[-1])
    latencies.sort()
    ms = [x / 1e6 for x in latencies] or [float("nan")]
    return RateResult(
        rate=rate, seconds=seconds, connections=made, latencies=len(latencies), events=events, lost=lost,
        p50_ms=round(statistics.median(ms), 3), p99_ms=round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
        max_ms=round(ms[-1], 3), daemon_cpu_pct=round(100 * cpu / wall, 1),
    )  # fmt: skip


def render(results: list[RateResult]) -> str:
    head = ("| connections/s | made | connect events | all events | lost | p50 ms | p99 ms | max ms | daemon CPU |\n"
            "|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    rows = [
        f"| {r.rate:,} | {r.connections:,} | {r.latencies:,} | {r.events:,} | {r.lost} | {r.p50_ms} | {r.p99_ms} "
        f"| {r.max_ms} | {r.daemon_cpu_pct} % |"
        for r in results
    ]
    return "\n".join([head, *rows])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", type=int, nargs="+", default=list(RATES))
    p.add_argument("--seconds", type=float, default=5.0, help="storm length per rate (1/s runs 10 s)")
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("events_latency: needs root (the daemon loads BPF programs)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="sockscope-evlat-"))
    daemon = None
    try:
        storm = build_c(STORM_SRC, workdir)
        daemon, sock = start_daemon(workdir)
        results = []
        for rate in a.rates:
            seconds = max(a.seconds, 10.0) if rate <= 1 else a.seconds
            log(f"{rate}/s for {seconds:g} s")
            results.append(measure(storm, sock, daemon.pid, rate, seconds))
            time.sleep(1.0)
        text = render(results)
        print(text)
        if a.json:
            a.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
        # The target: at up to 1,000 connections a second, none lost and p99 under 100 ms. Above
        # it, what is lost is counted and announced: reported, not a failure.
        failed = [r for r in results if r.rate <= TARGET_RATE and (r.latencies < r.connections or r.p99_ms >= 100)]
        for r in failed:
            print(f"events_latency: {r.rate}/s: {r.connections - r.latencies} connect events missing, "
                  f"p99 {r.p99_ms} ms (target: none missing, p99 < 100 ms)", file=sys.stderr)  # fmt: skip
        return 1 if failed else 0
    except BenchError as exc:
        print(f"events_latency: {exc}", file=sys.stderr)
        return 1
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
