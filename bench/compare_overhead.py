"""Overhead: iperf3 throughput with each tool running against no tool, alternately, over the veth.

The traffic crosses the lab's veth pair (client on the host, server in the namespace) rather than
loopback, so that nethogs, which captures on a device, does its full work too. Per workload and
pair the order is: none, sockscope, none, nethogs, none, bpftrace; each tool's ratio is its run
against the baseline just before it (A B A B ...), and the figure is the median over the pairs.
During each monitored run the tool's CPU time (user + system of its process tree, from
/proc/PID/task/*/schedstat) and its peak RSS (VmHWM) are read; a BPF tool's in-kernel cost is not in its CPU
time (the programs run in the context of iperf3), it shows up as lost throughput, and is
measured separately in one extra run per tool with kernel.bpf_stats_enabled=1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.lab import Lab, LabError, wait_listening
from bench.lab_tools import (
    Running,
    Spawned,
    ToolError,
    ToolSpec,
    bpf_prog_ids,
    bpf_programs,
    bpf_run_time_ns,
    new_prog_ids,
    tree_cpu_seconds,
    tree_peak_rss_kib,
)
from bench.overhead import (
    WORKLOADS,
    BenchError,
    IperfResult,
    Workload,
    affinity,
    client_result,
    median_or_none,
    pair_ratios,
)

PORT = 5399  # inside the lab's namespace: nothing else listens there
SERVER_READY_TIMEOUT = 10.0
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
NONE = "none"


@dataclass(slots=True)
class Run:
    workload: str
    tool: str  # NONE for the baseline
    pair: int
    started: float  # Unix time
    iperf: IperfResult
    client_pid: int
    ready_s: float | None = None  # spawn -> counting
    cpu_s: float | None = None  # the tool's CPU time during the traffic
    window_s: float | None = None
    peak_rss_kib: int | None = None
    seen_tx: int | None = None  # bytes the tool reported sent by the iperf3 client
    exit_code: int | None = None


@dataclass(slots=True)
class Summary:
    workload: str
    tool: str
    target_pct: float
    pairs: int
    baseline_bps: float
    monitored_bps: float
    ratio_pct: float
    ratios_pct: list[float]
    cpu_s_per_s: float | None
    peak_rss_kib: int | None
    ready_s: float | None
    seen_pct: float | None  # median of seen_tx / iperf3's sent bytes
    bpf_s_per_s: float | None = None  # in-kernel run time of the tool's BPF programs, per second

    @property
    def met(self) -> bool:
        return self.ratio_pct >= self.target_pct


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def iperf3_server(lab: Lab, iperf3: str, workdir: Path) -> Iterator[None]:
    """A one-shot iperf3 server inside the namespace, on the CPU the client does not use."""
    argv = [*lab.exec_prefix(), iperf3, "-s", "-1", "-B", lab.peer4, "-p", str(PORT), *affinity(1)]
    with (workdir / "iperf3-server.log").open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            wait_listening(proc.pid, PORT, SERVER_READY_TIMEOUT, proc)
        except LabError as exc:
            raise BenchError(f"iperf3 server: {exc}") from exc
        yield
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)  # one-shot: exits after its client
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def iperf3_client(lab: Lab, iperf3: str, seconds: int, length: int | None) -> tuple[IperfResult, int]:
    argv = [iperf3, "-c", lab.peer4, "-p", str(PORT), "-t", str(seconds), "-J", *affinity(0)]
    if length is not None:
        argv += ["-l", str(length)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return client_result(proc, seconds), proc.pid


@dataclass(frozen=True, slots=True)
class Setup:
    lab: Lab
    iperf3: str
    seconds: int
    pairs: int
    settle: float
    workdir: Path


def baseline(cfg: Setup, wl: Workload, pair: int) -> Run:
    started = time.time()
    with iperf3_server(cfg.lab, cfg.iperf3, cfg.workdir):
        result, pid = iperf3_client(cfg.lab, cfg.iperf3, cfg.seconds, wl.length)
    return Run(wl.name, NONE, pair, started, result, pid)


def monitored(cfg: Setup, wl: Workload, pair: int, spec: ToolSpec) -> Run:
    tool = Running(spec, cfg.workdir, f"{wl.name}-{pair}")
    try:
        ready = tool.wait_ready()
        started = time.time()
        with iperf3_server(cfg.lab, cfg.iperf3, cfg.workdir):
            cpu0, t0 = tree_cpu_seconds(tool.pid), time.monotonic()
            result, client_pid = iperf3_client(cfg.lab, cfg.iperf3, cfg.seconds, wl.length)
            cpu1, t1 = tree_cpu_seconds(tool.pid), time.monotonic()
            rss = tree_peak_rss_kib(tool.pid)
        if not tool.alive():
            raise BenchError(f"{spec.name} exited during the traffic: {tool.proc.stderr_tail()}")
        time.sleep(spec.linger)  # outside the CPU window
        seen = tool.stop()
    finally:
        tool.kill()
    got = seen.procs.get(client_pid)
    return Run(
        wl.name, spec.name, pair, started, result, client_pid,
        ready_s=ready, cpu_s=cpu1 - cpu0, window_s=t1 - t0, peak_rss_kib=rss,
        seen_tx=got.tx if got else 0, exit_code=seen.exit_code,
    )  # fmt: skip


def run_pairs(
    cfg: Setup, specs: Sequence[ToolSpec], failed: dict[str, str], workloads: Sequence[Workload] = WORKLOADS
) -> list[Run]:
    """All pairs; a tool that fails once is dropped from the rest of the run (its error goes into
    `failed`), so one broken tool cannot stall the whole benchmark on its timeouts."""
    runs: list[Run] = []
    for wl in workloads:
        for pair in range(1, cfg.pairs + 1):
            for spec in specs:
                if spec.name in failed:
                    continue
                time.sleep(cfg.settle)
                base = baseline(cfg, wl, pair)
                runs.append(base)
                time.sleep(cfg.settle)
                try:
                    mon = monitored(cfg, wl, pair, spec)
                except (BenchError, ToolError, OSError) as exc:
                    failed[spec.name] = f"{wl.title} pair {pair}: {exc}"
                    log(f"overhead: {spec.name} failed, dropped from the rest of the run: {exc}")
                    continue
                runs.append(mon)
                ratio = 100.0 * mon.iperf.bits_per_second / base.iperf.bits_per_second
                log(
                    f"overhead: {wl.title} pair {pair}/{cfg.pairs} {spec.name}: "
                    f"{base.iperf.bits_per_second / 1e6:,.0f} -> {mon.iperf.bits_per_second / 1e6:,.0f} Mbit/s"
                    f" ({ratio:.1f}%), CPU {mon.cpu_s or 0:.2f} s"
                )
    return runs


def bpf_cost(cfg: Setup, wl: Workload, spec: ToolSpec) -> tuple[float, int]:
    """One extra monitored run with BPF run-time statistics on: seconds the tool's programs ran
    per second of traffic, and the number of programs. The statistics cost a little themselves, so
    they are off during the measured pairs."""
    old = BPF_STATS.read_text().strip()
    before = {int(p["id"]) for p in bpf_programs() if isinstance(p.get("id"), int)}
    tool = Running(spec, cfg.workdir, f"{wl.name}-bpfstats")
    try:
        tool.wait_ready()
        ids = bpf_prog_ids(tool.pid) | new_prog_ids(before, spec.prog_prefixes)
        if not ids:
            raise BenchError(f"{spec.name}: its BPF programs were not found")
        BPF_STATS.write_text("1")
        with iperf3_server(cfg.lab, cfg.iperf3, cfg.workdir):
            ns0, t0 = bpf_run_time_ns(ids), time.monotonic()
            iperf3_client(cfg.lab, cfg.iperf3, cfg.seconds, wl.length)
            ns1, t1 = bpf_run_time_ns(ids), time.monotonic()
        tool.stop()
    finally:
        BPF_STATS.write_text(old)
        tool.kill()
    return (ns1 - ns0) / 1e9 / (t1 - t0), len(ids)


def summarize(runs: Sequence[Run], workload: Workload, tool: str) -> Summary | None:
    """Medians over the pairs of one tool on one workload: each monitored run against the
    baseline run just before it."""
    ordered = [r for r in runs if r.workload == workload.name]
    pairs: list[tuple[Run, Run]] = []
    for prev, cur in itertools.pairwise(ordered):
        if cur.tool == tool and prev.tool == NONE and prev.pair == cur.pair:
            pairs.append((prev, cur))
    if not pairs:
        return None
    b_bps = [b.iperf.bits_per_second for b, _ in pairs]
    m_bps = [m.iperf.bits_per_second for _, m in pairs]
    ratios = pair_ratios(b_bps, m_bps)
    mons = [m for _, m in pairs]
    cpu = [m.cpu_s / m.window_s for m in mons if m.cpu_s is not None and m.window_s]
    rss = [m.peak_rss_kib for m in mons if m.peak_rss_kib is not None]
    seen = [100.0 * m.seen_tx / m.iperf.sent_bytes for m in mons if m.seen_tx is not None and m.iperf.sent_bytes]
    return Summary(
        workload=workload.name,
        tool=tool,
        target_pct=workload.target_pct,
        pairs=len(pairs),
        baseline_bps=median_or_none(b_bps) or 0.0,
        monitored_bps=median_or_none(m_bps) or 0.0,
        ratio_pct=median_or_none(ratios) or 0.0,
        ratios_pct=ratios,
        cpu_s_per_s=median_or_none(cpu),
        peak_rss_kib=max(rss) if rss else None,
        ready_s=median_or_none([m.ready_s for m in mons if m.ready_s is not None]),
        seen_pct=median_or_none(seen),
    )


def baseline_noise(runs: Sequence[Run], workload: str) -> float | None:
    """How much two runs without any tool differ here: the median of |100% - b2/b1| over
    consecutive baseline runs of a workload. A tool's ratio closer to 100% than this is within
    the machine's noise."""
    base = [r.iperf.bits_per_second for r in runs if r.workload == workload and r.tool == NONE]
    diffs = [abs(100.0 - 100.0 * b2 / b1) for b1, b2 in itertools.pairwise(base) if b1 > 0]
    return median_or_none(diffs)


# ---------------------------------------------------------------------------
# sockscope start-up
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class Startup:
    first_line_s: list[float]  # spawn -> first JSON line, with --interval `interval`
    counting_s: list[float]  # spawn -> start of the first interval (first line minus its length)
    interval: float


def sockscope_startup(exe: Path, workdir: Path, starts: int, interval: float = 0.2) -> Startup:
    """Spawn `sockscope top --json --interval 0.2 --count 1` `starts` times. The first line comes
    one interval after the collector starts counting, and reports that interval's measured
    length: spawn -> counting = spawn -> first line - that length."""
    out = Startup([], [], interval)
    for i in range(starts):
        proc = Spawned(
            [str(exe), "top", "--json", "--interval", f"{interval:g}", "--count", "1"], workdir / f"startup-{i}.stderr"
        )
        try:
            at = proc.wait_for(lambda text: text.lstrip().startswith("{"), 60.0)
            doc: Any = json.loads(proc.seen[-1][1])
            first = at - proc.spawned
            out.first_line_s.append(first)
            out.counting_s.append(first - float(doc["interval"]))
            proc.stop()
        except (ToolError, ValueError, KeyError) as exc:
            raise BenchError(f"sockscope start-up: {exc}") from exc
        finally:
            proc.kill()
        time.sleep(0.3)
    return out


def as_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)
