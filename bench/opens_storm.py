#!/usr/bin/env python3
"""`sockscope opens` under an open storm: what it adds per open, and what rate it keeps up with.

bench/openstorm.c (compiled here with cc -O2) does openat(dirfd, NAME) + close in a loop, pinned
to CPU 0; `sockscope opens` runs pinned to CPU 1. Configurations, alternated in rotated order,
medians of the differences to `none` over --pairs rounds:

  none         no monitor
  all          every open to user space, matched there against a GLOB that matches none of them
               (the founding design: the filter changes without reloading anything)
  prefiltered  --pid 1: the kernel drops them at the entry of the call (kernel-side pre-filter)

Then, with `all`, storms at increasing paced rates: the highest rate with no open lost, and what
is lost above it (counted by the kernel, reported by `sockscope opens` with a non-zero exit).

Needs root and cc. Exit status: 0 measured, 1 failure, 2 setup.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.overhead import BenchError, log  # noqa: E402
from bench.percall_parts import build_c, run_checked, tool  # noqa: E402
from sockscope.opens.cli import READY  # noqa: E402

STORM_SRC = REPO_ROOT / "bench" / "openstorm.c"
SOCKSCOPE = str(Path(sys.executable).with_name("sockscope"))
CONFIGS = {"none": None, "all": ["/nonexistent-sockscope-bench/*"], "prefiltered": ["--pid", "1"]}
RATES = (50_000, 100_000, 200_000, 400_000, 0)  # 0: as fast as it goes


@dataclass
class Result:
    pairs: int
    opens: int
    ns_per_open: dict[str, float]  # medians
    added_ns: dict[str, float]  # medians of the differences to none
    rates: list[dict[str, float]]  # per paced rate: wanted, achieved, lost, lost_pct
    kept_up_to: float  # the highest achieved rate with nothing lost


class Monitor:
    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(["taskset", "-c", "1", SOCKSCOPE, "opens", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert self.proc.stderr is not None
        said = ""
        while (line := self.proc.stderr.readline()) and not line.startswith(READY):
            said += line
        if not line:
            raise BenchError(f"sockscope opens ended: {said}")

    def stop(self) -> int:
        """The opens it reported lost (0 if none)."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=60)
        if self.proc.returncode not in (0, 1):
            raise BenchError(f"sockscope opens failed ({self.proc.returncode}): {err}")
        for line in err.splitlines():
            if "opens were lost" in line:
                return int(line.split("sockscope opens: ")[1].split()[0])
        if self.proc.returncode:
            raise BenchError(f"sockscope opens exited {self.proc.returncode}: {err}")
        return 0


def storm(exe: Path, workdir: Path, n: int, rate: float = 0) -> tuple[float, float]:
    """(ns per open, seconds)."""
    out = run_checked([str(exe), str(workdir), "target", str(n), str(rate), "0"], "openstorm")
    f = out.split()
    return float(f[1]), float(f[5])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=7)
    p.add_argument("--opens", type=int, default=200_000, help="opens per storm")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("opens_storm: needs root", file=sys.stderr)
        return 2
    cc = tool("cc") or tool("gcc")
    if cc is None or shutil.which("taskset") is None:
        print("opens_storm: needs cc and taskset", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="sockscope-openstorm-"))
    try:
        exe = build_c(STORM_SRC, workdir)
        (workdir / "target").write_text("")
        names = list(CONFIGS)
        runs: dict[str, list[float]] = {n: [] for n in names}
        for i in range(a.pairs):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                args = CONFIGS[name]
                mon = Monitor(args) if args is not None else None
                try:
                    ns, _ = storm(exe, workdir, a.opens)
                finally:
                    if mon is not None:
                        mon.stop()
                runs[name].append(ns)
                log(f"round {i + 1}: {name} {ns:.0f} ns/open")
        medians = {n: round(statistics.median(v), 1) for n, v in runs.items()}
        added = {n: round(statistics.median(x - y for x, y in zip(runs[n], runs["none"], strict=True)), 1)
                 for n in names if n != "none"}  # fmt: skip
        rates = []
        for rate in RATES:
            n = a.opens if rate == 0 else int(rate * 2)
            mon = Monitor(CONFIGS["all"] or [])
            try:
                _, secs = storm(exe, workdir, n, rate)
            finally:
                lost = mon.stop()
            achieved = n / secs
            rates.append({"wanted": rate, "achieved": round(achieved), "lost": lost,
                          "lost_pct": round(100 * lost / n, 2)})  # fmt: skip
            log(f"rate {rate or 'max'}: {achieved:,.0f}/s, {lost} lost")
        kept = max((r["achieved"] for r in rates if r["lost"] == 0), default=0.0)
        res = Result(a.pairs, a.opens, medians, added, rates, kept)
        print("| configuration | ns per open (median) | added per open (median of pairs) |\n|---|---|---|")
        for n in names:
            print(f"| {n} | {medians[n]} | {added.get(n, 0.0)} |")
        print("\n| rate asked | achieved opens/s | lost | lost % |\n|---|---|---|---|")
        for r in rates:
            wanted = f"{r['wanted']:,}" if r["wanted"] else "as fast as it goes"
            print(f"| {wanted} | {r['achieved']:,} | {r['lost']:,} | {r['lost_pct']} |")
        print(f"\nkept up with {kept:,.0f} opens/s with nothing lost")
        if a.json:
            a.json.write_text(json.dumps(asdict(res), indent=2) + "\n")
        return 0
    except BenchError as exc:
        print(f"opens_storm: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
