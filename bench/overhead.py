"""Throughput cost of running the sockscope collector, measured against a monitor-free baseline.

Usage:
    sudo .venv/bin/python bench/overhead.py [--pairs 5] [--seconds 5]

Traffic is iperf3 over loopback (127.0.0.1 only): a bulk TCP transfer and a storm of 64-byte
writes (``-l 64``). For each workload the script alternates a baseline run (no monitor) and a
monitored run (``sockscope top --json --interval 1`` running) for ``--pairs`` pairs, so both sides
are measured in the same run under the same conditions. Per workload it reports the median
baseline and monitored throughput, the median of the per-pair ratios (monitored / baseline), the
monitor's CPU seconds per second of traffic, its peak RSS and its start-up time (spawn to first
JSON line), plus the bytes the monitor attributed next to iperf3's own count.

The monitor's kernel-side cost (the BPF programs run in the context of the processes moving the
bytes) shows up as lost throughput; its user-space cost shows up as its CPU time.

Needs root and iperf3 (``apt-get install iperf3``; scripts/install-deps.sh installs it). Installs
nothing. Exit status: 0 measured (``--strict``: and all targets met), 1 failure or missed target
under ``--strict``, 2 cannot start (not root, iperf3 or sockscope missing).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import queue
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOCKSCOPE = REPO_ROOT / ".venv" / "bin" / "sockscope"
LOOPBACK = "127.0.0.1"
STORM_LEN = 64
MONITOR_START_TIMEOUT = 60.0  # spawn -> first JSON line
MONITOR_STOP_TIMEOUT = 10.0  # SIGINT -> exit, then SIGKILL
SERVER_READY_TIMEOUT = 10.0
SERVER_EXIT_TIMEOUT = 10.0
CLIENT_SLACK = 30.0  # client timeout = --seconds + this
TCP_LISTEN = "0A"  # state column of /proc/net/tcp{,6}


class BenchError(RuntimeError):
    """A run could not be measured."""


# ---------------------------------------------------------------------------
# Workloads and results (plain data)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    title: str
    target_pct: float  # minimum acceptable monitored/baseline ratio, in percent
    length: int | None = None  # iperf3 -l; None = iperf3's default
    bulk: bool = False  # monitor's tx total must cover iperf3's byte count


WORKLOADS: tuple[Workload, ...] = (
    Workload("bulk", "bulk TCP", 99.0, None, bulk=True),
    Workload("storm64", "64-byte storm", 95.0, STORM_LEN),
)


@dataclass(frozen=True, slots=True)
class IperfResult:
    bits_per_second: float  # end.sum_received.bits_per_second
    received_bytes: int  # end.sum_received.bytes
    received_seconds: float  # end.sum_received.seconds
    sent_bytes: int  # end.sum_sent.bytes


@dataclass(slots=True)
class MonitorStats:
    startup_s: float  # spawn -> first JSON line
    cpu_s: float  # utime+stime accrued during the traffic window
    window_s: float  # wall-clock length of that window
    peak_rss_kib: int | None  # VmHWM
    lines: int  # JSON lines received (incl. the first and the final one)
    bad_lines: int  # non-JSON lines on stdout
    tx_bytes_all: int  # sum of tx_bytes over all processes in all lines
    tx_bytes_iperf3: int  # same, only processes whose comm is iperf3
    dropped_events: int  # sum of dropped.events over all lines (kernel-side overflow)
    exit_code: int | None  # None: had to be killed
    prog_stats: dict[str, tuple[int, int]] | None = None  # program -> (runs, ns) during traffic, when probed


@dataclass(slots=True)
class RunSample:
    pair: int
    monitored: bool
    started: float  # Unix time
    iperf: IperfResult
    monitor: MonitorStats | None = None


@dataclass(slots=True)
class WorkloadSummary:
    name: str
    title: str
    target_pct: float
    pairs: int
    baseline_bps: float
    monitored_bps: float
    ratio_pct: float  # median of per-pair ratios
    ratios_pct: list[float]
    meets_target: bool
    baseline_msgs_per_s: float | None
    monitored_msgs_per_s: float | None
    cpu_s_per_s: float | None
    peak_rss_kib: int | None
    startup_s: float | None
    seen_pct: float | None  # median of monitor tx_bytes / iperf3 sum_sent.bytes, percent
    seen_ok: bool | None  # bulk: monitor total >= iperf3 bytes in every monitored run


@dataclass(slots=True)
class WorkloadRuns:
    workload: Workload
    samples: list[RunSample] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Pure maths and formatting (unit-testable)
# ---------------------------------------------------------------------------


def ratio_percent(monitored: float, baseline: float) -> float:
    """monitored / baseline in percent; 0 when the baseline is not positive."""
    if baseline <= 0:
        return 0.0
    return 100.0 * monitored / baseline


def pair_ratios(baseline: Sequence[float], monitored: Sequence[float]) -> list[float]:
    """Per-pair ratios (percent) of two equally long series."""
    if len(baseline) != len(monitored):
        raise ValueError(f"unpaired samples: {len(baseline)} baseline vs {len(monitored)} monitored")
    return [ratio_percent(m, b) for b, m in zip(baseline, monitored, strict=True)]


def median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def messages_per_second(received_bytes: int, seconds: float, length: int) -> float:
    """Writes of `length` bytes per second that the receiver got."""
    if seconds <= 0 or length <= 0:
        return 0.0
    return received_bytes / length / seconds


def cpu_per_second(cpu_s: float, window_s: float) -> float:
    return cpu_s / window_s if window_s > 0 else 0.0


def meets_target(ratio_pct: float, target_pct: float) -> bool:
    return ratio_pct >= target_pct


def cpu_ticks_from_stat(stat: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/PID/stat."""
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = stat[stat.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(rest[11]) + int(rest[12])


def vmhwm_kib_from_status(status: str) -> int | None:
    """Peak resident set size (kB) from the text of /proc/PID/status."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])
    return None


def sum_tx_bytes(lines: Iterable[Mapping[str, Any]], comm: str | None = None) -> int:
    """Sum of tx_bytes over all processes of all interval lines (optionally only one comm)."""
    total = 0
    for line in lines:
        procs = line.get("processes")
        if not isinstance(procs, list):
            continue
        for proc in procs:
            if not isinstance(proc, Mapping):
                continue
            if comm is not None and proc.get("comm") != comm:
                continue
            tx = proc.get("tx_bytes")
            if isinstance(tx, int) and not isinstance(tx, bool):
                total += tx
    return total


def sum_dropped_events(lines: Iterable[Mapping[str, Any]]) -> int:
    """Sum of dropped.events over all interval lines (events the collector could not count)."""
    total = 0
    for line in lines:
        dropped = line.get("dropped")
        if isinstance(dropped, Mapping):
            events = dropped.get("events")
            if isinstance(events, int) and not isinstance(events, bool):
                total += events
    return total


def parse_iperf_json(doc: Mapping[str, Any]) -> IperfResult:
    """The figures this benchmark uses from an iperf3 -J report."""
    if doc.get("error"):
        raise BenchError(f"iperf3: {doc['error']}")
    try:
        end = doc["end"]
        received = end["sum_received"]
        sent = end["sum_sent"]
        return IperfResult(
            bits_per_second=float(received["bits_per_second"]),
            received_bytes=int(received["bytes"]),
            received_seconds=float(received["seconds"]),
            sent_bytes=int(sent["bytes"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"iperf3 JSON lacks end.sum_received/sum_sent: {exc!r}") from exc


def summarize(workload: Workload, samples: Sequence[RunSample]) -> WorkloadSummary:
    """Medians over the pairs of one workload (unpaired trailing samples are ignored)."""
    base = {s.pair: s for s in samples if not s.monitored}
    mon = {s.pair: s for s in samples if s.monitored}
    pairs = sorted(base.keys() & mon.keys())
    if not pairs:
        raise ValueError(f"{workload.name}: no complete baseline/monitored pair")
    b_bps = [base[p].iperf.bits_per_second for p in pairs]
    m_bps = [mon[p].iperf.bits_per_second for p in pairs]
    ratios = pair_ratios(b_bps, m_bps)
    ratio = statistics.median(ratios)

    b_msgs: float | None = None
    m_msgs: float | None = None
    if workload.length is not None:
        length = workload.length
        b_msgs = statistics.median(
            messages_per_second(base[p].iperf.received_bytes, base[p].iperf.received_seconds, length) for p in pairs
        )
        m_msgs = statistics.median(
            messages_per_second(mon[p].iperf.received_bytes, mon[p].iperf.received_seconds, length) for p in pairs
        )

    stats = [m for m in (mon[p].monitor for p in pairs) if m is not None]
    rss = [m.peak_rss_kib for m in stats if m.peak_rss_kib is not None]
    seen = [ratio_percent(m.tx_bytes_all, mon[p].iperf.sent_bytes) for p in pairs if (m := mon[p].monitor)]
    seen_ok: bool | None = None
    if workload.bulk and stats:
        seen_ok = all(m.tx_bytes_all >= mon[p].iperf.sent_bytes for p in pairs if (m := mon[p].monitor) is not None)
    return WorkloadSummary(
        name=workload.name,
        title=workload.title,
        target_pct=workload.target_pct,
        pairs=len(pairs),
        baseline_bps=statistics.median(b_bps),
        monitored_bps=statistics.median(m_bps),
        ratio_pct=ratio,
        ratios_pct=ratios,
        meets_target=meets_target(ratio, workload.target_pct),
        baseline_msgs_per_s=b_msgs,
        monitored_msgs_per_s=m_msgs,
        cpu_s_per_s=median_or_none([cpu_per_second(m.cpu_s, m.window_s) for m in stats]),
        peak_rss_kib=max(rss) if rss else None,
        startup_s=median_or_none([m.startup_s for m in stats]),
        seen_pct=median_or_none(seen),
        seen_ok=seen_ok,
    )


def format_bps(bps: float) -> str:
    if bps >= 1e9:
        return f"{bps / 1e9:.2f} Gbit/s"
    if bps >= 1e6:
        return f"{bps / 1e6:.1f} Mbit/s"
    return f"{bps / 1e3:.1f} kbit/s"


def format_count(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{value:.0f}"


def format_throughput(bps: float, msgs_per_s: float | None) -> str:
    text = format_bps(bps)
    return f"{text} ({format_count(msgs_per_s)} msgs/s)" if msgs_per_s is not None else text


def format_opt(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def format_mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def format_seen(summary: WorkloadSummary) -> str:
    if summary.seen_pct is None:
        return "n/a"
    text = f"{summary.seen_pct:.1f}%"
    if summary.seen_ok is not None:
        text += " ok" if summary.seen_ok else " LOW"
    return text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def summary_table(summaries: Sequence[WorkloadSummary]) -> str:
    header = (
        "workload",
        "pairs",
        "baseline (median)",
        "monitored (median)",
        "ratio (median of pairs)",
        "target",
        "met",
        "monitor CPU s/s",
        "peak RSS",
        "start-up",
        "monitor tx / iperf3 sent",
    )
    rows = [
        (
            s.title,
            str(s.pairs),
            format_throughput(s.baseline_bps, s.baseline_msgs_per_s),
            format_throughput(s.monitored_bps, s.monitored_msgs_per_s),
            f"{s.ratio_pct:.1f}%",
            f">= {s.target_pct:.0f}%",
            "yes" if s.meets_target else "NO",
            format_opt(s.cpu_s_per_s, ".3f"),
            format_mib(s.peak_rss_kib),
            "n/a" if s.startup_s is None else f"{s.startup_s:.2f} s",
            format_seen(s),
        )
        for s in summaries
    ]
    return markdown_table(header, rows)


def samples_table(runs: Sequence[WorkloadRuns]) -> str:
    header = (
        "workload",
        "pair",
        "run",
        "throughput",
        "iperf3 sent",
        "monitor tx (all / iperf3)",
        "dropped events",
        "monitor CPU s",
        "start-up",
    )
    rows: list[tuple[str, ...]] = []
    for wr in runs:
        for s in wr.samples:
            msgs = (
                messages_per_second(s.iperf.received_bytes, s.iperf.received_seconds, wr.workload.length)
                if wr.workload.length is not None
                else None
            )
            m = s.monitor
            rows.append(
                (
                    wr.workload.title,
                    str(s.pair),
                    "monitored" if s.monitored else "baseline",
                    format_throughput(s.iperf.bits_per_second, msgs),
                    f"{s.iperf.sent_bytes:,}",
                    f"{m.tx_bytes_all:,} / {m.tx_bytes_iperf3:,}" if m else "",
                    f"{m.dropped_events:,}" if m else "",
                    f"{m.cpu_s:.3f}" if m else "",
                    f"{m.startup_s:.2f} s" if m else "",
                )
            )
    return markdown_table(header, rows)


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


class Children:
    """Every subprocess this script starts; all are killed on exit."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []

    def spawn(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc: subprocess.Popen[Any] = subprocess.Popen(list(argv), **kwargs)
        self._procs.append(proc)
        return proc

    def forget(self, proc: subprocess.Popen[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)

    def kill_all(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                proc.wait(timeout=5)
        self._procs.clear()


def tail(path: Path, limit: int = 2000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:].strip()


def port_listening(port: int) -> bool:
    """Whether any TCP socket listens on `port` (from /proc/net/tcp and tcp6)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 3 and cols[3] == TCP_LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def read_proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def cpu_seconds(pid: int) -> float:
    return cpu_ticks_from_stat(read_proc(pid, "stat")) / os.sysconf("SC_CLK_TCK")


def affinity(cpu: int) -> list[str]:
    """Pin client and server to their own CPUs: unpinned, the scheduler's choices swing
    throughput by +-10% between runs here, more than the effect measured."""
    return ["-A", str(cpu)] if (os.cpu_count() or 1) >= 2 else []


@contextlib.contextmanager
def iperf3_server(children: Children, iperf3: str, port: int, workdir: Path) -> Iterator[subprocess.Popen[Any]]:
    """A one-shot iperf3 server bound to loopback, ready to accept when this yields."""
    if port_listening(port):
        raise BenchError(f"TCP port {port} is already in use; pick another with --port")
    log = workdir / f"iperf3-server-{port}.log"
    with log.open("wb") as out:
        proc = children.spawn(
            [iperf3, "-s", "-1", "-B", LOOPBACK, "-p", str(port), *affinity(1)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + SERVER_READY_TIMEOUT
        while not port_listening(port):
            if proc.poll() is not None:
                raise BenchError(f"iperf3 server exited with {proc.returncode}: {tail(log)}")
            if time.monotonic() > deadline:
                raise BenchError(f"iperf3 server not listening on port {port} after {SERVER_READY_TIMEOUT:.0f} s")
            time.sleep(0.02)
        yield proc
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=SERVER_EXIT_TIMEOUT)  # a one-shot server exits after its client; else killed below
    finally:
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        children.forget(proc)


def run_client(children: Children, iperf3: str, port: int, seconds: int, length: int | None) -> IperfResult:
    argv = [iperf3, "-c", LOOPBACK, "-p", str(port), "-t", str(seconds), "-J", *affinity(0)]
    if length is not None:
        argv += ["-l", str(length)]
    proc = children.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        return client_result(proc, seconds)
    finally:
        children.forget(proc)


def client_result(proc: subprocess.Popen[str], seconds: int) -> IperfResult:
    """Wait for an `iperf3 -c ... -J` client (stdout and stderr piped) and parse its report."""
    try:
        out, err = proc.communicate(timeout=seconds + CLIENT_SLACK)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise BenchError(f"iperf3 client did not finish within {seconds + CLIENT_SLACK:.0f} s") from exc
    try:
        doc = json.loads(out)
    except json.JSONDecodeError as exc:
        raise BenchError(f"iperf3 client exited {proc.returncode} without JSON: {err.strip() or out[:200]}") from exc
    if not isinstance(doc, dict):
        raise BenchError("iperf3 client printed JSON that is not an object")
    result = parse_iperf_json(doc)
    if proc.returncode != 0:
        raise BenchError(f"iperf3 client exited {proc.returncode}: {err.strip()}")
    return result


class Monitor:
    """`sockscope top --json --interval 1` in the background, its stdout collected by a thread."""

    def __init__(
        self, children: Children, sockscope: Path, workdir: Path, index: int, extra: Sequence[str] = ()
    ) -> None:
        self._children = children
        self._stderr_path = workdir / f"monitor-{index}.stderr"
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.received: list[dict[str, Any]] = []
        self.bad_lines = 0
        self.spawned = time.monotonic()
        with self._stderr_path.open("wb") as err:
            self.proc = children.spawn(
                [str(sockscope), "top", "--json", "--interval", "1", *extra],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                bufsize=1,
            )
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        if stream is None:
            self._lines.put(None)
            return
        try:
            for raw in stream:
                text = raw.strip()
                if not text:
                    continue
                try:
                    doc = json.loads(text)
                except json.JSONDecodeError:
                    self.bad_lines += 1
                    continue
                if isinstance(doc, dict):
                    self._lines.put(doc)
                else:
                    self.bad_lines += 1
        except (OSError, ValueError):
            pass
        finally:
            self._lines.put(None)  # EOF

    def _drain(self) -> bool:
        """Move queued lines to `received`; False once EOF was seen."""
        while True:
            try:
                doc = self._lines.get_nowait()
            except queue.Empty:
                return True
            if doc is None:
                return False
            self.received.append(doc)

    def wait_attached(self, timeout: float) -> float:
        """Block until the first JSON line; return seconds from spawn to it."""
        try:
            doc = self._lines.get(timeout=timeout)
        except queue.Empty as exc:
            raise BenchError(f"sockscope printed no JSON line within {timeout:.0f} s: {self.stderr_tail()}") from exc
        if doc is None:
            code = self.proc.wait(timeout=5)
            raise BenchError(f"sockscope exited ({code}) before its first JSON line: {self.stderr_tail()}")
        self.received.append(doc)
        return time.monotonic() - self.spawned

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def peak_rss_kib(self) -> int | None:
        return vmhwm_kib_from_status(read_proc(self.proc.pid, "status"))

    def stop(self) -> int | None:
        """SIGINT, collect the final line(s), and return the exit code (None: had to be killed)."""
        code: int | None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            code = self.proc.wait(timeout=MONITOR_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            code = None
        finally:
            self._children.forget(self.proc)
        self._reader.join(timeout=5)
        self._drain()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def stderr_tail(self) -> str:
        return tail(self._stderr_path) or "(no stderr)"


# ---------------------------------------------------------------------------
# Protocol
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    iperf3: str
    sockscope: Path
    pairs: int
    seconds: int
    port: int
    settle: float
    workdir: Path
    monitor_args: tuple[str, ...] = ()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def baseline_run(children: Children, cfg: Config, wl: Workload) -> IperfResult:
    with iperf3_server(children, cfg.iperf3, cfg.port, cfg.workdir):
        return run_client(children, cfg.iperf3, cfg.port, cfg.seconds, wl.length)


def bpf_prog_stats() -> dict[str, tuple[int, int]]:
    """(run count, total ns) of each loaded sockscope program (needs kernel.bpf_stats_enabled=1)."""
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    out = subprocess.run([bpftool, "-j", "prog", "show"], capture_output=True, text=True, timeout=30, check=True)
    progs = json.loads(out.stdout)
    return {
        p["name"]: (int(p.get("run_cnt", 0)), int(p.get("run_time_ns", 0)))
        for p in progs
        if str(p.get("name", "")).startswith("ss_")
    }


def stats_delta(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {k: (v[0] - before.get(k, (0, 0))[0], v[1] - before.get(k, (0, 0))[1]) for k, v in after.items()}


def monitored_run(
    children: Children, cfg: Config, wl: Workload, index: int, probe: bool = False
) -> tuple[IperfResult, MonitorStats]:
    monitor = Monitor(children, cfg.sockscope, cfg.workdir, index, cfg.monitor_args)
    stopped = False
    prog_stats = None
    try:
        startup = monitor.wait_attached(MONITOR_START_TIMEOUT)
        with iperf3_server(children, cfg.iperf3, cfg.port, cfg.workdir):
            cpu0 = monitor.cpu_seconds()
            before = bpf_prog_stats() if probe else {}
            t0 = time.monotonic()
            result = run_client(children, cfg.iperf3, cfg.port, cfg.seconds, wl.length)
            if probe:
                prog_stats = stats_delta(before, bpf_prog_stats())
        if not monitor.alive():
            raise BenchError(f"sockscope exited ({monitor.proc.returncode}) during traffic: {monitor.stderr_tail()}")
        cpu1 = monitor.cpu_seconds()
        t1 = time.monotonic()
        rss = monitor.peak_rss_kib()
        code = monitor.stop()
        stopped = True
    finally:
        if not stopped:
            monitor.stop()
    if code != 0:
        what = "did not exit within 10 s of SIGINT (killed)" if code is None else f"exited {code} on SIGINT"
        log(f"  warning: sockscope {what}: {monitor.stderr_tail()}")
    stats = MonitorStats(
        startup_s=startup,
        cpu_s=cpu1 - cpu0,
        window_s=t1 - t0,
        peak_rss_kib=rss,
        lines=len(monitor.received),
        bad_lines=monitor.bad_lines,
        tx_bytes_all=sum_tx_bytes(monitor.received),
        tx_bytes_iperf3=sum_tx_bytes(monitor.received, comm="iperf3"),
        dropped_events=sum_dropped_events(monitor.received),
        exit_code=code,
        prog_stats=prog_stats,
    )
    return result, stats


def hot_path_cost(children: Children, cfg: Config, wl: Workload) -> tuple[IperfResult, dict[str, tuple[int, int]]]:
    """One extra monitored run with the kernel's BPF run-time statistics on: the cost of
    each program per call in ns, free of the run-to-run noise of throughput."""
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = knob.read_text().strip()
    knob.write_text("1")
    try:
        result, stats = monitored_run(children, cfg, wl, index=10_000, probe=True)
    finally:
        knob.write_text(old)
    return result, stats.prog_stats or {}


def hot_path_table(result: IperfResult, seconds: float, length: int, stats: dict[str, tuple[int, int]]) -> str:
    messages = result.received_bytes / length
    per_msg_ns = seconds * 1e9 / messages if messages else 0.0
    rows = []
    for name in sorted(stats):
        runs, ns = stats[name]
        if runs == 0:
            continue
        per_run = ns / runs
        share = per_run * runs / messages / per_msg_ns * 100 if per_msg_ns else 0.0
        rows.append([name, f"{runs:,}", f"{runs / messages:.3f}", f"{per_run:.1f}", f"{share:.1f}%"])
    return (
        f"{messages:,.0f} messages of {length} B in {seconds:.0f} s: {per_msg_ns:.0f} ns of wall time per message"
        " on each of the sending and receiving CPUs.\n\n"
        + markdown_table(["program", "runs", "runs per message", "ns per run", "share of CPU time per message"], rows)
    )


def run_workload(children: Children, cfg: Config, wl: Workload) -> WorkloadRuns:
    runs = WorkloadRuns(wl)
    for pair in range(1, cfg.pairs + 1):
        for monitored in (False, True):
            time.sleep(cfg.settle)
            started = time.time()
            label = "monitored" if monitored else "baseline "
            if monitored:
                result, stats = monitored_run(children, cfg, wl, index=len(runs.samples))
                runs.samples.append(RunSample(pair, True, started, result, stats))
                extra = (
                    f"  monitor: start-up {stats.startup_s:.2f} s, CPU {stats.cpu_s:.2f} s,"
                    f" tx seen {stats.tx_bytes_all:,} B vs iperf3 sent {result.sent_bytes:,} B"
                )
            else:
                result = baseline_run(children, cfg, wl)
                runs.samples.append(RunSample(pair, False, started, result))
                extra = ""
            log(f"{wl.title} pair {pair}/{cfg.pairs} {label}: {format_bps(result.bits_per_second)}{extra}")
    return runs


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Throughput cost of the sockscope collector vs a monitor-free baseline (iperf3 over loopback).",
        usage="sudo .venv/bin/python bench/overhead.py [--pairs 5] [--seconds 5] [options]",
    )
    p.add_argument("--pairs", type=int, default=5, help="baseline/monitored pairs per workload (default 5)")
    p.add_argument("--seconds", type=int, default=5, help="length of each iperf3 run in seconds (default 5)")
    p.add_argument(
        "--sockscope",
        type=Path,
        default=DEFAULT_SOCKSCOPE,
        help="sockscope executable (default: .venv/bin/sockscope in the repo root)",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="write all raw samples and medians to PATH")
    p.add_argument("--port", type=int, default=5299, help="loopback TCP port for iperf3 (default 5299)")
    p.add_argument("--settle", type=float, default=1.0, help="pause before each run in seconds (default 1)")
    p.add_argument(
        "--workload",
        action="append",
        choices=[w.name for w in WORKLOADS],
        help="run only this workload (repeatable; default: all)",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument(
        "--monitor-arg", action="append", metavar="ARG", help="extra argument for sockscope top (repeatable)"
    )
    args = p.parse_args(argv)
    if args.pairs < 1:
        p.error("--pairs must be >= 1")
    if args.seconds < 1:
        p.error("--seconds must be >= 1")
    if not 1 <= args.port <= 65535:
        p.error("--port must be 1..65535")
    return args


def header_lines(argv: Sequence[str]) -> list[str]:
    cmd = shlex.join([sys.executable, *argv])
    now = datetime.datetime.now(datetime.UTC).astimezone().isoformat(timespec="seconds")
    return [
        "# sockscope overhead benchmark",
        "",
        f"- command: `{cmd}`",
        f"- kernel: {platform.release()}",
        f"- CPUs: {os.cpu_count()}",
        f"- date: {now}",
    ]


def write_json(
    path: Path, argv: Sequence[str], cfg: Config, runs: Sequence[WorkloadRuns], summaries: Sequence[WorkloadSummary]
) -> None:
    doc = {
        "command": [sys.executable, *argv],
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": {
            "pairs": cfg.pairs,
            "seconds": cfg.seconds,
            "port": cfg.port,
            "settle": cfg.settle,
            "sockscope": str(cfg.sockscope),
        },
        "workloads": {
            wr.workload.name: {
                "workload": dataclasses.asdict(wr.workload),
                "samples": [dataclasses.asdict(s) for s in wr.samples],
                "summary": next((dataclasses.asdict(s) for s in summaries if s.name == wr.workload.name), None),
            }
            for wr in runs
        },
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args = parse_args(argv[1:])
    if os.geteuid() != 0:
        print("overhead.py: must run as root (BPF); try: sudo .venv/bin/python bench/overhead.py", file=sys.stderr)
        return 2
    iperf3 = shutil.which("iperf3")
    if iperf3 is None:
        print("overhead.py: iperf3 not found; apt-get install iperf3 (or run scripts/install-deps.sh)", file=sys.stderr)
        return 2
    sockscope: Path = args.sockscope
    if not (sockscope.is_file() and os.access(sockscope, os.X_OK)):
        print(
            f"overhead.py: no executable sockscope at {sockscope} (run `make setup`, or --sockscope)", file=sys.stderr
        )
        return 2

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)

    workloads = [w for w in WORKLOADS if not args.workload or w.name in args.workload]
    print("\n".join(header_lines(argv)), flush=True)
    cfg = Config(
        iperf3=iperf3,
        sockscope=sockscope,
        pairs=args.pairs,
        seconds=args.seconds,
        port=args.port,
        settle=args.settle,
        workdir=Path(tempfile.mkdtemp(prefix="sockscope-bench-")),
        monitor_args=tuple(args.monitor_arg or ()),
    )
    print(f"- protocol: {cfg.pairs} pairs x {cfg.seconds} s per run, baseline then monitored (A B A B ...)")
    monitor_cmd = [str(sockscope), "top", "--json", "--interval", "1", *cfg.monitor_args]
    print(f"- monitor: `{shlex.join(monitor_cmd)}`", flush=True)
    children = Children()
    runs: list[WorkloadRuns] = []
    storm = next((w for w in workloads if w.length is not None), None)
    hot: tuple[IperfResult, dict[str, tuple[int, int]]] | None = None
    try:
        for wl in workloads:
            runs.append(run_workload(children, cfg, wl))
        if storm is not None:
            try:
                hot = hot_path_cost(children, cfg, storm)
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                log(f"overhead.py: hot-path cost not measured: {exc}")
    except KeyboardInterrupt:
        log("overhead.py: interrupted")
        return 130
    except BenchError as exc:
        log(f"overhead.py: {exc}")
        return 1
    finally:
        children.kill_all()
        shutil.rmtree(cfg.workdir, ignore_errors=True)

    summaries = [summarize(wr.workload, wr.samples) for wr in runs]
    print()
    print("## Summary (targets: bulk >= 99%, 64-byte storm >= 95%)")
    print()
    print(summary_table(summaries))
    print()
    if hot is not None and storm is not None and storm.length is not None:
        print("## Hot path cost (one more 64-byte storm run, kernel.bpf_stats_enabled=1)")
        print()
        print(hot_path_table(hot[0], cfg.seconds, storm.length, hot[1]))
        print()
    print("## Samples")
    print()
    print(samples_table(runs))
    if args.json is not None:
        write_json(args.json, argv, cfg, runs, summaries)
        print(f"\nraw samples and medians written to {args.json}")
    if args.strict and not all(s.meets_target and s.seen_ok is not False for s in summaries):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
