"""sockscope against the tools people use instead, measured side by side in one run.

Usage:
    sudo .venv/bin/python bench/compare.py [--pairs 5] [--seconds 5] [--quick]
    make bench-compare      # installs the tools first (scripts/install-bench-deps.sh), then runs this

Builds a lab (a network namespace behind a veth pair, 198.19.X.0/24 and fd00:b3e1:X::/64, nftables
counters on the namespace's side), then measures, for sockscope, nethogs (trace mode) and a bpftrace
one-liner summing the sock_send_length/sock_recv_length tracepoints per process:

1. accuracy and attribution over the coverage scenarios (bench/compare_accuracy.py);
2. overhead: iperf3 bulk TCP and a 64-byte write storm over the veth, each tool against no tool,
   alternately, median of --pairs pairs; the tool's CPU time and peak memory during the same load;
   its BPF programs' in-kernel run time in one extra run (bench/compare_overhead.py);
3. sockscope's start-up time;
4. whether BCC's tcptop and tcplife run here, with the error they give when they do not.

Writes bench/results/compare.md (the report), compare.json (all raw figures) and compare.png (the
chart), prints the summary table (for the README) on stdout and progress on stderr. The lab is
removed at the end, also after an error or Ctrl-C. Installs nothing.

Exit status: 0 measured (also when a target is missed: the report says by how much), 1 failure,
2 cannot start (not root, sockscope or iperf3 missing).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # run as a script: `bench` and `tests` import from the repo root

from bench.compare_accuracy import Ctx, ScenarioRun, run_accuracy, score  # noqa: E402
from bench.compare_overhead import (  # noqa: E402
    NONE,
    Run,
    Setup,
    Summary,
    baseline_noise,
    bpf_cost,
    run_pairs,
    sockscope_startup,
    summarize,
)
from bench.compare_report import Report, chart, markdown, readme_block  # noqa: E402
from bench.lab import Lab, LabError  # noqa: E402
from bench.lab_tools import (  # noqa: E402
    Attempt,
    ToolError,
    ToolSpec,
    bpftrace_spec,
    nethogs_spec,
    package_version,
    sockscope_spec,
    tool_version,
    try_tool,
)
from bench.overhead import WORKLOADS, BenchError  # noqa: E402

DEFAULT_SOCKSCOPE = REPO_ROOT / ".venv" / "bin" / "sockscope"
DEFAULT_OUT = REPO_ROOT / "bench" / "results"
TRACEFS = Path("/sys/kernel/tracing")
PARTS = ("bcc", "startup", "accuracy", "overhead")
BCC_TOOLS = (
    ("BCC tcptop", ["tcptop-bpfcc", "-C", "1", "3"]),
    ("BCC tcplife", ["tcplife-bpfcc"]),
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="sockscope against nethogs, a bpftrace one-liner and no monitor, side by side in one run.",
        usage="sudo .venv/bin/python bench/compare.py [--pairs 5] [--seconds 5] [--quick] [options]",
    )
    p.add_argument("--pairs", type=int, help="baseline/monitored pairs per tool and workload (default 5; quick 2)")
    p.add_argument("--seconds", type=int, help="length of each iperf3 run in seconds (default 5; quick 2)")
    p.add_argument("--quick", action="store_true", help="a short run for development: 2 pairs x 2 s, fewer starts")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where compare.{md,json,png} go (bench/results)")
    p.add_argument("--sockscope", type=Path, default=DEFAULT_SOCKSCOPE, help="sockscope executable (.venv/bin)")
    p.add_argument("--part", action="append", choices=PARTS, help="run only this part (repeatable; default all)")
    p.add_argument("--settle", type=float, default=0.5, help="pause before each iperf3 run, s (default 0.5)")
    args = p.parse_args(argv)
    args.pairs = args.pairs or (2 if args.quick else 5)
    args.seconds = args.seconds or (2 if args.quick else 5)
    if args.pairs < 1 or args.seconds < 1:
        p.error("--pairs and --seconds must be >= 1")
    return args


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def tracefs_mounted() -> Iterator[None]:
    """bpftrace reads tracepoint formats from tracefs: mount it when absent, unmount it after."""
    mounted = any(line.split()[1] == str(TRACEFS) for line in Path("/proc/self/mounts").read_text().splitlines())
    if not mounted:
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=False, capture_output=True)
    try:
        yield
    finally:
        if not mounted:
            subprocess.run(["umount", str(TRACEFS)], check=False, capture_output=True)


def find_tools(args: argparse.Namespace, lab: Lab) -> tuple[list[ToolSpec], dict[str, str]]:
    specs = [sockscope_spec(args.sockscope)]
    missing: dict[str, str] = {}
    nethogs = shutil.which("nethogs")
    if nethogs:
        specs.append(nethogs_spec(nethogs, lab.host_if))
    else:
        missing["nethogs -t"] = "nethogs not installed (make bench-compare installs it)"
    bpftrace = shutil.which("bpftrace")
    if bpftrace:
        specs.append(bpftrace_spec(bpftrace))
    else:
        missing["bpftrace one-liner"] = "bpftrace not installed (make bench-compare installs it)"
    return specs, missing


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10, check=False).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return rev or "?"


def versions(args: argparse.Namespace) -> dict[str, str]:
    sockscope = tool_version([str(args.sockscope), "--version"]).removeprefix("sockscope ")
    out = {"sockscope": f"{sockscope} (git {git_revision()})"}
    if shutil.which("nethogs"):
        out["nethogs"] = tool_version(["nethogs", "-V"]).removeprefix("version").strip()
    if shutil.which("bpftrace"):
        out["bpftrace"] = tool_version(["bpftrace", "--version"]).removeprefix("bpftrace ")
    out["bcc"] = package_version("bpfcc-tools") or "not installed"
    out["iperf3"] = tool_version(["iperf3", "--version"]).removeprefix("iperf ")
    out["nftables"] = tool_version(["nft", "--version"]).removeprefix("nftables ")
    return out


def header(argv: Sequence[str], args: argparse.Namespace, lab: Lab, vers: dict[str, str]) -> list[str]:
    now = datetime.datetime.now(datetime.UTC).astimezone().isoformat(timespec="seconds")
    return [
        f"- date: {now}",
        f"- kernel: {platform.release()} ({platform.machine()}), CPUs: {os.cpu_count()}",
        f"- command: `{shlex.join(['sudo', '.venv/bin/python', 'bench/compare.py', *argv])}`",
        f"- protocol: {args.pairs} pairs x {args.seconds} s per iperf3 run and tool"
        + (" (--quick)" if args.quick else ""),
        f"- lab: {lab.describe()}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in vers.items())}",
    ]


def bcc_attempts() -> list[Attempt]:
    attempts = []
    for name, argv in BCC_TOOLS:
        log(f"bcc: trying {' '.join(argv)} ...")
        a = try_tool(name, argv, seconds=8.0)
        log(f"  {'runs' if a.runs else 'cannot run: ' + a.error}")
        attempts.append(a)
    return attempts


def overhead(args: argparse.Namespace, lab: Lab, specs: Sequence[ToolSpec], workdir: Path) -> tuple[
    list[Run], list[Summary], list[str]
]:  # fmt: skip
    iperf3 = shutil.which("iperf3")
    if iperf3 is None:
        raise BenchError("iperf3 not found")
    cfg = Setup(lab, iperf3, args.seconds, args.pairs, args.settle, workdir)
    failed: dict[str, str] = {}
    runs = run_pairs(cfg, specs, failed)
    summaries = [s for wl in WORKLOADS for spec in specs if (s := summarize(runs, wl, spec.name)) is not None]
    notes = [f"{name} failed during the overhead runs and was dropped from them: {why}" for name, why in failed.items()]
    for wl in WORKLOADS:
        for spec in specs:
            if not spec.bpf or spec.name in failed:
                continue
            try:
                per_s, progs = bpf_cost(cfg, wl, spec)
            except (BenchError, ToolError, OSError, subprocess.SubprocessError) as exc:
                notes.append(f"{spec.name} in-kernel BPF time on {wl.title} not measured: {exc}")
                continue
            log(f"overhead: {wl.title} {spec.name}: {progs} BPF programs ran {per_s:.3f} s/s")
            for s in summaries:
                if s.workload == wl.name and s.tool == spec.name:
                    s.bpf_s_per_s = per_s
    return runs, summaries, notes


def scenario_json(run: ScenarioRun) -> dict[str, Any]:
    """A scenario with each tool's figures for its subjects only (the BPF tools see every process on
    the machine; the rest is noise here)."""
    pids = {s.pid for s in run.subjects}
    return {
        "name": run.name,
        "title": run.title,
        "seconds": run.seconds,
        "subjects": [dataclasses.asdict(s) for s in run.subjects],
        "wire": dataclasses.asdict(run.wire),
        "errors": run.errors,
        "tools": {
            tool: {
                "procs": {str(pid): dataclasses.asdict(c) for pid, c in res.procs.items() if pid in pids},
                "unknown": {k: dataclasses.asdict(c) for k, c in res.unknown.items()},
                "exit_code": res.exit_code,
            }
            for tool, res in run.results.items()
        },
    }


def write_json(path: Path, report: Report, runs: Sequence[Run], argv: Sequence[str]) -> None:
    doc = {
        "command": ["bench/compare.py", *argv],
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(report.elapsed_s, 1),
        "versions": report.versions,
        "tools": [{k: v for k, v in dataclasses.asdict(s).items() if not callable(v)} for s in report.specs],
        "missing": report.missing,
        "accuracy": {
            "scenarios": [scenario_json(r) for r in report.scenarios],
            "scores": [
                {
                    **dataclasses.asdict(s),
                    "tx_err_pct": s.tx_err_pct,
                    "rx_err_pct": s.rx_err_pct,
                    "accurate": s.accurate,
                    "attributed": s.attributed,
                }
                for s in report.scores
            ],
        },
        "overhead": {
            "workloads": [dataclasses.asdict(w) for w in WORKLOADS],
            "runs": [dataclasses.asdict(r) for r in runs],
            "summaries": [{**dataclasses.asdict(s), "met": s.met} for s in report.summaries],
        },
        "baseline_noise_pct": report.noise,
        "startup": dataclasses.asdict(report.startup) if report.startup else None,
        "bcc": [dataclasses.asdict(a) for a in report.attempts],
        "notes": report.notes,
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def measure(args: argparse.Namespace, argv: Sequence[str], lab: Lab, workdir: Path, t_start: float) -> tuple[
    Report, list[Run]
]:  # fmt: skip
    parts = set(args.part or PARTS)
    specs, missing = find_tools(args, lab)
    vers = versions(args)
    report = Report(header(argv, args, lab, vers), specs, vers, [], [], [], None, [], missing)
    report.context = f"on {datetime.date.today()}, Linux {platform.release()}, {os.cpu_count()} CPUs"
    log("\n".join(report.header))
    if "bcc" in parts:
        report.attempts = bcc_attempts()
    if "startup" in parts:
        log("startup: sockscope ...")
        report.startup = sockscope_startup(args.sockscope, workdir, 3 if args.quick else 7)
        log(f"  spawn -> counting: {' '.join(f'{v:.3f}' for v in report.startup.counting_s)} s")
    if "accuracy" in parts:
        ctx = Ctx(lab, workdir / "bin", sys.executable, 1.5 if args.quick else 3.0)
        report.scenarios, notes = run_accuracy(ctx, specs, workdir)
        report.notes += notes
        report.scores = [score(r, spec) for r in report.scenarios for spec in specs]
    runs: list[Run] = []
    if "overhead" in parts:
        runs, report.summaries, notes = overhead(args, lab, specs, workdir)
        report.notes += notes
        report.noise = {wl.name: baseline_noise(runs, wl.name) for wl in WORKLOADS}
        for wl in WORKLOADS:
            base = [r.iperf.bits_per_second for r in runs if r.workload == wl.name and r.tool == NONE]
            if base:
                report.baseline_bps[wl.name] = statistics.median(base)
    report.elapsed_s = time.monotonic() - t_start
    return report, runs


def write_outputs(args: argparse.Namespace, argv: Sequence[str], report: Report, runs: Sequence[Run]) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(markdown(report))
    write_json(out / "compare.json", report, runs, argv)
    try:
        if report.summaries:
            subtitle = f"(kernel {platform.release()}, {os.cpu_count()} CPUs, {datetime.date.today()})"
            chart(report, out / "compare.png", subtitle)
        else:
            log("compare.py: no overhead figures, so no chart")
    except ImportError as exc:
        log(f"compare.py: no chart ({exc}); install the bench extra: .venv/bin/pip install -e '.[bench]'")
    log(f"written: {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare.png'}")


def preflight(args: argparse.Namespace) -> str | None:
    if os.geteuid() != 0:
        return "must run as root (BPF, network namespaces): sudo .venv/bin/python bench/compare.py"
    sockscope: Path = args.sockscope
    if not (sockscope.is_file() and os.access(sockscope, os.X_OK)):
        return f"no executable sockscope at {sockscope} (run `make setup`, or --sockscope)"
    for cmd in ("iperf3", "ip", "nft"):
        if shutil.which(cmd) is None:
            return f"{cmd} not found: run `bash scripts/install-bench-deps.sh` (or `make bench-compare`)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    problem = preflight(args)
    if problem:
        log(f"compare.py: {problem}")
        return 2
    # SIGINT too: a shell starting this in the background without job control ignores SIGINT, and
    # Python then installs no handler for it; the lab must still go when someone sends it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    t_start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="sockscope-compare-"))
    lab = Lab()
    try:
        with tracefs_mounted():
            lab.open()
            log(f"lab: {lab.describe()}")
            report, runs = measure(args, argv, lab, workdir, t_start)
    except KeyboardInterrupt:
        log("compare.py: interrupted; lab removed")
        return 130
    except (BenchError, LabError, ToolError, OSError, subprocess.SubprocessError) as exc:
        log(f"compare.py: {exc}")
        return 1
    finally:
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
    write_outputs(args, argv, report, runs)
    print(readme_block(report))
    log(f"compare.py: done in {report.elapsed_s / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
