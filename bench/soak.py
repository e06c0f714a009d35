"""Soak benchmark: does the daemon's memory level off under process and connection churn?

Usage:
    sudo .venv/bin/python bench/soak.py [--minutes 12] [--sample 10] [--procs-per-s 80] [--json PATH] [--keep]
    sudo .venv/bin/python bench/soak.py --tracemalloc [--tracemalloc-every 120] [--tracemalloc-out PATH] ...

1. Starts the real daemon, `sockscope daemon --db <tmp>/soak.db --interval 1`, its stderr in
   <tmp>/daemon.stderr (the temporary directory is removed at the end unless --keep).
2. Runs bench/soak_churn.py for --minutes: --procs-per-s short-lived processes a second (forked, each with
   its own comm, each a new TCP connection and --udp-per-proc datagrams to new peers), long-lived workers
   opening new TCP connections and writing to new UDP peers, and a bulk TCP stream. Loopback only
   (127.0.0.0/8, ::1). At the default 80 a second the daemon's bounded caches (process identities 8,192;
   socket facts 16,384; the writer's row ids 16,384) are full within the first third of the default run.
3. Every --sample seconds: the daemon's RSS (VmRSS), CPU (utime + stime, % of one core over the sample),
   database size (file + -wal), and the generator's processes, bytes and own CPU.
4. SIGTERM to the daemon, which must exit 0. Prints a markdown report: a table per minute, and for RSS and
   database size the growth over the last half of the run (median of the last samples against the median of
   the samples around half-time); "flat" below 5 %. --json writes the raw series.

--tracemalloc: the daemon runs in a child Python process built as the CLI builds it (Daemon(config,
BpfSource(options), open_writer)) with tracemalloc started; from --tracemalloc-baseline seconds on (default a
third of the run, when the caches are full) it compares a snapshot every --tracemalloc-every seconds with the
baseline and prints the 15 allocation sites that grew most (file:line, MB and MB per minute), the sizes of
the daemon's known caches, and the object types whose count grew, to stderr and --tracemalloc-out.
tracemalloc roughly doubles the daemon's memory and slows it: compare shapes, not figures, with a plain run.

Needs root. Exit status: 0 measured (also when memory did not level off: the report says so), 1 failure
(the daemon did not start, died, or did not exit 0 on SIGTERM), 2 bad arguments or cannot start.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # run as a script: `bench` imports from the repo root

from bench import soak_churn, soak_trace  # noqa: E402
from bench.soak_trace import TM_LOG, rss_mb  # noqa: E402

DEFAULT_SOCKSCOPE = REPO_ROOT / ".venv" / "bin" / "sockscope"
READY_TIMEOUT = 60.0  # spawn -> "counting" on the daemon's stderr
STOP_TIMEOUT = 60.0  # SIGTERM -> exit, then SIGKILL
FLAT_PCT = 5.0
EDGE_SAMPLES = 3  # samples in each median (end, around half-time)
HZ = os.sysconf("SC_CLK_TCK")


class SoakError(RuntimeError):
    """The run could not be measured."""


class _Terminated(Exception):
    """SIGTERM to the benchmark: clean up as for Ctrl-C."""


@dataclass(slots=True)
class Sample:
    t: float  # seconds since the churn started
    rss_mb: float
    cpu_s: float  # daemon utime + stime, cumulative
    cpu_pct: float  # % of one core since the previous sample
    db_mb: float
    procs: int
    bytes_sent: int
    gen_cpu_pct: float  # the generator with its reaped children


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------


def cpu_seconds(pid: int, children: bool = False) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / HZ


def db_mb(db: Path) -> float:
    total = 0
    for p in (db, Path(f"{db}-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += p.stat().st_size
    return total / 1e6


def _median_near(samples: Sequence[Sample], t: float, attr: str) -> float:
    near = sorted(samples, key=lambda s: abs(s.t - t))[:EDGE_SAMPLES]
    return float(statistics.median(getattr(s, attr) for s in near))


def levelling(samples: Sequence[Sample], attr: str) -> dict[str, Any]:
    """Growth over the last half: median of the last samples against the median around half-time, and the
    least-squares slope over the last half (per minute)."""
    end_t = samples[-1].t
    half = _median_near(samples, end_t / 2, attr)
    end = statistics.median(getattr(s, attr) for s in samples[-EDGE_SAMPLES:])
    start = statistics.median(getattr(s, attr) for s in samples[:EDGE_SAMPLES])
    last = [s for s in samples if s.t >= end_t / 2]
    slope = 0.0
    if len(last) >= 2:
        slope = statistics.linear_regression([s.t / 60 for s in last], [getattr(s, attr) for s in last]).slope
    growth = (end - half) / half * 100 if half > 0 else 0.0
    return {"start": start, "half": half, "end": end, "growth_pct": growth, "slope_per_min": float(slope),
            "flat": growth < FLAT_PCT}  # fmt: skip


# ---------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------


def daemon_command(args: argparse.Namespace, db: Path, tm_out: Path | None) -> list[str]:
    if not args.tracemalloc:
        return [str(args.sockscope), "daemon", "--db", str(db), "--interval", f"{args.interval:g}"]
    assert tm_out is not None
    baseline = args.tracemalloc_baseline if args.tracemalloc_baseline is not None else args.minutes * 20
    return [sys.executable, str(Path(__file__).resolve()), "--tracemalloc-child", "--db", str(db),
            "--interval", f"{args.interval:g}", "--tracemalloc-every", f"{args.tracemalloc_every:g}",
            "--tracemalloc-baseline", f"{baseline:g}", "--tracemalloc-frames", str(args.tracemalloc_frames),
            "--tracemalloc-out", str(tm_out)]  # fmt: skip


def wait_ready(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SoakError(f"the daemon exited with {proc.returncode} at start: {tail(log)}")
        if b"counting;" in log.read_bytes():
            return
        time.sleep(0.2)
    raise SoakError(f"the daemon did not start counting within {READY_TIMEOUT:g} s: {tail(log)}")


def tail(log: Path, n: int = 5) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(log.read_text(errors="replace").splitlines()[-n:])
    return ""


def stop_daemon(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM; its exit code, or None when it had to be killed."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def churn_config(args: argparse.Namespace) -> soak_churn.ChurnConfig:
    return soak_churn.ChurnConfig(
        procs_per_s=args.procs_per_s,
        udp_per_proc=args.udp_per_proc,
        workers=args.workers,
        conns_per_s=args.conns_per_s,
        udp_peers_per_s=args.udp_peers_per_s,
        bulk_bytes_per_s=int(args.bulk_mb_per_s * 1e6),
        seed=args.seed,
    )


def run(args: argparse.Namespace, argv: Sequence[str], tmp: Path) -> dict[str, Any]:
    db, log = tmp / "soak.db", tmp / "daemon.stderr"
    tm_out = (args.tracemalloc_out or tmp / "tracemalloc.md").resolve() if args.tracemalloc else None
    cfg = churn_config(args)
    res: dict[str, Any] = {
        "command": shlex.join([sys.executable, *argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "churn": asdict(cfg),
        "dir": str(tmp),
    }
    seconds = args.minutes * 60
    cmd = daemon_command(args, db, tm_out)
    res["daemon_command"] = shlex.join(cmd)
    gen_pid: int | None = None
    samples: list[Sample] = []
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
    try:
        wait_ready(proc, log)
        print(f"soak.py: daemon pid {proc.pid} counting; churn for {args.minutes:g} min", file=sys.stderr)
        gen_pid, counters = soak_churn.start(cfg, seconds)
        t0 = time.monotonic()
        prev_t, prev_cpu, prev_gen = 0.0, cpu_seconds(proc.pid), cpu_seconds(gen_pid, children=True)
        while True:
            t = time.monotonic() - t0
            if proc.poll() is not None:
                raise SoakError(f"the daemon exited with {proc.returncode} after {t:.0f} s: {tail(log)}")
            cpu, gen = cpu_seconds(proc.pid), cpu_seconds(gen_pid, children=True)
            dt = max(t - prev_t, 1e-9)
            totals = counters.totals()
            s = Sample(t=round(t, 1), rss_mb=round(rss_mb(proc.pid), 2), cpu_s=round(cpu, 2),
                       cpu_pct=round((cpu - prev_cpu) / dt * 100, 1) if samples else 0.0,
                       db_mb=round(db_mb(db), 2), procs=totals["procs"], bytes_sent=totals["bytes_sent"],
                       gen_cpu_pct=round((gen - prev_gen) / dt * 100, 1) if samples else 0.0)  # fmt: skip
            samples.append(s)
            prev_t, prev_cpu, prev_gen = t, cpu, gen
            if args.verbose:
                print(f"soak.py: {s.t:6.0f} s  RSS {s.rss_mb:7.1f} MB  CPU {s.cpu_pct:5.1f} %  DB {s.db_mb:6.1f} MB"
                      f"  procs {s.procs}", file=sys.stderr)  # fmt: skip
            if t >= seconds - 0.5:
                break
            time.sleep(max(0.0, min(t0 + (len(samples)) * args.sample, t0 + seconds) - time.monotonic()))
        res["churn_totals"] = counters.totals()
        res["generator_exit"] = soak_churn.stop(gen_pid)
        gen_pid = None
        res["daemon_exit"] = stop_daemon(proc)
    finally:
        if gen_pid is not None:
            soak_churn.stop(gen_pid)
        if proc.poll() is None:
            res["daemon_exit"] = stop_daemon(proc)
        res["samples"] = [asdict(s) for s in samples]
        res["daemon_stderr"] = log.read_text(errors="replace").splitlines()[-200:] if log.exists() else []
    res["final_db_mb"] = db_mb(db)
    if len(samples) >= 2 * EDGE_SAMPLES:
        res["rss"] = levelling(samples, "rss_mb")
        res["db"] = levelling(samples, "db_mb")
        res["cpu_pct_mean"] = (samples[-1].cpu_s - samples[0].cpu_s) / max(samples[-1].t, 1e-9) * 100
    if tm_out is not None:
        with contextlib.suppress(OSError, ValueError):
            res["tracemalloc"] = json.loads(Path(f"{tm_out}.json").read_text())
        res["tracemalloc_out"] = str(tm_out)
    return res


# ---------------------------------------------------------------------------
# --tracemalloc: the daemon in Python, its allocations compared over time
# ---------------------------------------------------------------------------


def render(res: dict[str, Any]) -> str:
    samples = [Sample(**s) for s in res["samples"]]
    lines = ["# Daemon soak", "", f"`{res['command']}`", "",
             f"{res['date']}, {res['host']['cpus']} CPUs, Linux {res['host']['kernel']}, Python"
             f" {res['host']['python']}. Daemon: `{res['daemon_command']}`.", ""]  # fmt: skip
    c, tot = res["churn"], res.get("churn_totals", {})
    minutes = samples[-1].t / 60 if samples else 0.0
    lines.append(
        f"Churn ({minutes:.1f} min): {tot.get('procs', 0):,} short-lived processes ({c['procs_per_s']:g}/s asked,"
        f" {tot.get('procs_failed', 0):,} failed), {tot.get('tcp_conns', 0):,} TCP connections,"
        f" {tot.get('udp_datagrams', 0):,} UDP datagrams to new peers, {tot.get('bytes_sent', 0) / 1e6:,.0f} MB sent"
        f" (bulk {c['bulk_bytes_per_s'] / 1e6:g} MB/s); generator errors {tot.get('errors', 0)}, exit"
        f" {res.get('generator_exit')}."
    )
    lines += ["", "| minute | RSS MB | CPU % | DB MB | processes | MB sent | generator CPU % |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    shown: list[Sample] = []
    for m in range(int(minutes) + 1):
        s = min(samples, key=lambda s: abs(s.t - m * 60))
        if s not in shown:
            shown.append(s)
    if samples and samples[-1] not in shown:
        shown.append(samples[-1])
    for i, s in enumerate(shown):
        # CPU since the previous row (the first row: over the first sample interval).
        prev = shown[i - 1] if i else s
        cpu = (s.cpu_s - prev.cpu_s) / (s.t - prev.t) * 100 if i else samples[min(1, len(samples) - 1)].cpu_pct
        lines.append(f"| {s.t / 60:.1f} | {s.rss_mb:.1f} | {cpu:.1f} | {s.db_mb:.1f} | {s.procs:,} |"
                     f" {s.bytes_sent / 1e6:,.0f} | {s.gen_cpu_pct:.1f} |")  # fmt: skip
    lines.append("")
    for key, what in (("rss", "RSS"), ("db", "Database (file + WAL)")):
        lv = res.get(key)
        if lv is None:
            lines.append(f"{what}: too few samples to judge.")
            continue
        verdict = "flat" if lv["flat"] else "NOT flat"
        lines.append(
            f"- **{what}: {verdict}** — start {lv['start']:.1f} MB, half-time {lv['half']:.1f} MB, end"
            f" {lv['end']:.1f} MB: {lv['growth_pct']:+.1f} % over the last half (flat: < {FLAT_PCT:g} %);"
            f" slope over the last half {lv['slope_per_min']:+.2f} MB/min."
        )
    if "db" in res:
        lines.append("  (The database keeps raw rows for 2 days: it grows through any run shorter than that.)")
    if "cpu_pct_mean" in res:
        lines.append(f"- Daemon CPU: {res['cpu_pct_mean']:.1f} % of one core on average.")
    exit_code = res.get("daemon_exit")
    lines.append(f"- Daemon exit on SIGTERM: {exit_code if exit_code is not None else 'killed (did not exit)'}"
                 f"{'' if exit_code == 0 else ' — FAILURE'}.")  # fmt: skip
    routine = ("counting;", TM_LOG)
    errs = [ln for ln in res.get("daemon_stderr", []) if not any(r in ln for r in routine)]
    lines.append(
        f"- Daemon stderr: {len(res.get('daemon_stderr', []))} lines, {len(errs)} other than the start line"
        + (" and the tracemalloc progress." if "tracemalloc_out" in res else ".")
    )
    lines += [f"  - `{ln[:300]}`" for ln in errs[:20]]
    if "tracemalloc" in res:
        lines += ["", soak_trace.render_tracemalloc(res["tracemalloc"])]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/soak.py", description="Daemon soak: memory and CPU under churn.")
    ap.add_argument("--minutes", type=_positive, default=12.0, help="length of the churn (default 12)")
    ap.add_argument("--sample", type=_positive, default=10.0, help="seconds between samples (default 10)")
    ap.add_argument("--interval", type=_positive, default=1.0, help="the daemon's --interval (default 1)")
    ap.add_argument("--procs-per-s", type=_non_negative, default=80.0, help="short-lived processes a second")
    ap.add_argument("--udp-per-proc", type=int, default=3, help="datagrams to new peers per process (default 3)")
    ap.add_argument("--workers", type=int, default=2, help="long-lived churning processes (default 2)")
    ap.add_argument("--conns-per-s", type=_positive, default=20.0, help="their new TCP connections a second")
    ap.add_argument("--udp-peers-per-s", type=_positive, default=50.0, help="their datagrams to new peers a second")
    ap.add_argument("--bulk-mb-per-s", type=_non_negative, default=8.0, help="bulk TCP stream, MB/s (0: none)")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--sockscope", type=Path, default=DEFAULT_SOCKSCOPE)
    ap.add_argument("--json", type=Path, help="write the raw series here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (database, daemon stderr)")
    ap.add_argument("-v", "--verbose", action="store_true", help="each sample on stderr as it is taken")
    tm = ap.add_argument_group("diagnosis")
    tm.add_argument("--tracemalloc", action="store_true", help="run the daemon in Python with tracemalloc")
    tm.add_argument("--tracemalloc-every", type=_positive, default=120.0, help="seconds between snapshots")
    tm.add_argument("--tracemalloc-baseline", type=_positive, help="seconds to the baseline (default: a third)")
    tm.add_argument("--tracemalloc-frames", type=int, default=1, help="frames kept per allocation (default 1)")
    tm.add_argument("--tracemalloc-out", type=Path, help="the snapshots' report (default <tmp>/tracemalloc.md)")
    tm.add_argument("--tracemalloc-child", action="store_true", help=argparse.SUPPRESS)
    tm.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.tracemalloc_child and (args.db is None or args.tracemalloc_out is None):
        ap.error("--tracemalloc-child needs --db and --tracemalloc-out")
    if args.sample * 2 * EDGE_SAMPLES > args.minutes * 60:
        ap.error(f"--sample {args.sample:g} leaves fewer than {2 * EDGE_SAMPLES} samples in {args.minutes:g} min")
    if args.udp_per_proc < 0 or args.workers < 1 or not 1 <= args.tracemalloc_frames <= 100:
        ap.error("--udp-per-proc must be >= 0, --workers >= 1, --tracemalloc-frames 1..100")
    return args


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args = parse_args(argv[1:])
    if args.tracemalloc_child:
        return soak_trace.tracemalloc_child(args)
    if os.geteuid() != 0:
        print("soak.py: needs root (the daemon loads BPF programs)", file=sys.stderr)
        return 2
    if not args.tracemalloc and not os.access(args.sockscope, os.X_OK):
        print(f"soak.py: {args.sockscope} is not executable (make setup)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_term)
    tmp = Path(tempfile.mkdtemp(prefix="sockscope-soak-"))
    try:
        res = run(args, argv, tmp)
    except (KeyboardInterrupt, _Terminated):
        print("soak.py: interrupted", file=sys.stderr)
        return 130
    except (SoakError, OSError) as exc:
        print(f"soak.py: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"soak.py: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.stdout.write(render(res))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0 if res.get("daemon_exit") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
