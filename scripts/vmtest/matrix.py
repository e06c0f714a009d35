"""The kernel matrix: run the kernel tests inside Debian's own kernels, one hook group at a time.

    matrix.py [--only KERNEL:GROUP ...] [--jobs N] [--timeout S] [--keep]
    matrix.py shell KERNEL [--hooks GROUP] -- CMD...     (a command in a guest, console live)

Each (kernel, group) boots two fresh guests (vm.py), each with one shard of the test files, whose
root is the host's / read-only; each runs pytest there with SOCKSCOPE_HOOKS=GROUP (and
`sockscope doctor`, for reading, when a test failed), and the junit xml is read back and summed per (kernel, group).
Writes build/vmtest/results.{md,json}; the last line is `kernel matrix: N passed, M failed`.
Exit status 1 when any run or test failed, a guest timed out or crashed, or junit is missing.
Run as root (BPF in the guest, 9p of /), after `bash scripts/install-vm-deps.sh` and `make setup`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.dont_write_bytecode = True  # the host's tree is the guest's root: keep it clean
sys.path.insert(0, str(Path(__file__).resolve().parent))
import vm  # noqa: E402

REPO = vm.REPO
OUT = REPO / "build" / "vmtest"
VENV_BIN = REPO / ".venv" / "bin"
BPF_OBJ = REPO / "src" / "sockscope" / "bpf" / "sockscope.bpf.o"
SHARE = "/tmp/vmtest"  # where init.sh mounts the results share in the guest

# What runs in each guest; one list, easy to change. Left to the host's run (they prove
# nothing a hook group changes, and TCG makes them the slowest): the CLI acceptance tests
# (the same TCP/UDP paths as test_coverage's, through `top --json`), the minute of low and
# slow traffic, and hundreds of short-lived processes (test_burst_of_short_lived_processes
# stays). The daemon and full-screen tests run on the host only.
# Each (kernel, group) runs as two guests, each one shard of the files: five runs on two CPUs
# leave one CPU idle through the last run, ten halves keep both busy (with the doctor tests
# moved to the host, 1554 s became 1465 on a slow host). The shards take about the same time
# under TCG (coverage alone is ~40 % of a run).
SHARDS = (
    ("tests/kernel/test_coverage.py", "tests/kernel/test_opens.py"),
    (
        "tests/kernel/test_collector.py",
        "tests/kernel/test_commands.py",
        "tests/kernel/test_names.py",
        "tests/kernel/test_events.py",
    ),
)
TESTS = [t for shard in SHARDS for t in shard]
# What is the same whatever group counts runs once per kernel, in the group that kernel counts
# with by default: `sockscope opens` (an object and hooks of its own; the io_uring tracepoints'
# shapes differ between the kernels), each group forced in-process or refused (whatever
# SOCKSCOPE_HOOKS says), and the refusal without privileges.
ONCE_PER_KERNEL_FILES = ("tests/kernel/test_opens.py",)
ONCE_PER_KERNEL_TESTS = "each_forced_group_counts_or_says_why or no_counting_group_at_all or without_privileges"
# Names: the capture in each hook group (UDP connected and not, TCP, v4 and v6, fork) runs in the
# guests; what only user space decides (PTR, the daemon and reports, attribution between
# processes, the parser's answer to each hostile packet but one) runs on the host only. Opens:
# how hostile names are shown is user space's alone (two more commands to start under TCG).
# Doctor: its --json run (every group probed, each refusal's reason) runs in the guests; its
# text and -v renderings, a forced group's exit 1 (the collector's own refusal of it is
# test_collector's, in the guests) and --check's reconciliation with the interface counters
# are user space's, on the host (about 30 s of TCG a run).
DESELECT = (
    "not low_and_slow and not hundreds_of_short_lived and not reverse_names_only_when_asked"
    " and not the_daemon_keeps_names and not two_processes_two_names"
    " and not (hostile_answers and not random)"
    " and not hostile_names_are_inert_on_screen"
    " and not doctor_text and not forced_group_that_cannot_count and not doctor_check_reconciles"
)

# (kernel series, hook group), each kernel's default group first. The host's own kernel
# (tracepoint) is the plain pytest run.
DEFAULT_MATRIX = [
    ("6.1", "fentry"),
    ("6.1", "kprobe"),
    ("6.12", "tracepoint"),
    ("6.12", "fentry"),
    ("6.12", "kprobe"),
]
# The group each kernel counts with by default (tests/kernel/conftest.py's first allowed).
DEFAULT_GROUP = {s: g for s, g in reversed(DEFAULT_MATRIX)}
GROUPS = ("tracepoint", "fentry", "kprobe")
# Kernel lines of the console (the tests' own output goes there too, without the timestamp).
# A crash fails the run even if pytest somehow finished; warnings are reported.
KLINE = r"^\[\s*\d+\.\d+\] "
CRASH = re.compile(KLINE + r".*(Kernel panic|BUG: |Oops|general protection fault)", re.M)
WARN = re.compile(KLINE + r".*(WARNING: |Call Trace:)", re.M)


@dataclass
class Result:
    series: str
    group: str
    kernel: str = ""  # uname -r and Debian's version, from the guest
    passed: int = 0
    failed: int = 0  # failures and errors
    skipped: int = 0
    failing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # run-level: timeout, crash, no junit, rc
    kernel_warnings: int = 0
    seconds: float = 0.0
    logs: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and self.failed == 0


def guest_env(group: str | None) -> str:
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    if group:
        env["SOCKSCOPE_HOOKS"] = group
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())


def runs_once_per_kernel(series: str, group: str) -> bool:
    return DEFAULT_GROUP.get(series, group) == group


def shard_tests(series: str, group: str, shard: int) -> list[str]:
    """The test files one shard of (kernel, group) runs."""
    once = runs_once_per_kernel(series, group)
    return [t for t in SHARDS[shard] if once or t not in ONCE_PER_KERNEL_FILES]


def test_script(group: str, tests: Sequence[str] = TESTS, once: bool = True) -> str:
    """run.sh for one (kernel, group) and these test files: pytest, then, if a test failed,
    doctor's output for reading (about 13 s of TCG otherwise), both kept in the share."""
    py, cli = shlex.quote(str(VENV_BIN / "python")), shlex.quote(str(VENV_BIN / "sockscope"))
    pytest = [
        "-m", "pytest", "-p", "no:cacheprovider", "-q", *tests,
        f"--junitxml={SHARE}/junit.xml", "-k", DESELECT if once else f"{DESELECT} and not ({ONCE_PER_KERNEL_TESTS})",
    ]  # fmt: skip
    return f"""set -u
cd {shlex.quote(str(REPO))}
export {guest_env(group)}
uname -rv > {SHARE}/uname.txt
{py} {" ".join(shlex.quote(a) for a in pytest)} 2>&1 | tee {SHARE}/pytest.txt
rc=${{PIPESTATUS[0]}}
if [ "$rc" != 0 ]; then
  {cli} doctor > {SHARE}/doctor.txt 2>&1
  echo "(doctor exited $?)" >> {SHARE}/doctor.txt
fi
exit $rc
"""


def read_junit(path: Path, res: Result) -> None:
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        kids = {child.tag for child in case}
        module = case.get("classname", "").rsplit(".", 1)[-1]
        name = f"{module}::{case.get('name', '?')}"
        if kids & {"failure", "error"}:
            res.failed += 1
            res.failing.append(name)
        elif "skipped" in kids:
            res.skipped += 1
        else:
            res.passed += 1


def uname_of(text: str) -> str:
    """'6.1.0-56-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)' -> release (Debian x)."""
    parts = text.split()
    m = re.search(r"Debian (\S+)", text)
    return f"{parts[0]} (Debian {m.group(1)})" if parts and m else (parts[0] if parts else "")


def run_one(kernel: vm.Kernel, initrd: Path, group: str, timeout: float, cpus: int, shard: int = 0) -> Result:
    res = Result(kernel.series, group, kernel=kernel.release)
    share = OUT / "runs" / f"{kernel.series}-{group}-{shard + 1}"
    shutil.rmtree(share, ignore_errors=True)
    once = runs_once_per_kernel(kernel.series, group)
    script = test_script(group, shard_tests(kernel.series, group, shard), once=once)
    boot = vm.boot(kernel, initrd, share, script, timeout, cpus=cpus)
    res.seconds = boot.seconds
    res.logs = str(share)
    if (share / "uname.txt").exists():
        res.kernel = uname_of((share / "uname.txt").read_text())
    console = boot.console.read_text(errors="replace") if boot.console.exists() else ""
    res.kernel_warnings = len(WARN.findall(console))
    if boot.timed_out:
        res.problems.append(f"guest timed out after {timeout:.0f} s")
    if CRASH.search(console):
        res.problems.append("kernel crash in the console")
    if boot.rc is None:
        res.problems.append("guest ended without an exit code (crashed or never ran the tests)")
    junit = share / "junit.xml"
    if junit.exists():
        try:
            read_junit(junit, res)
        except ET.ParseError as exc:
            res.problems.append(f"junit xml unreadable: {exc}")
    else:
        res.problems.append("no junit xml")
    if boot.rc not in (None, 0) and res.failed == 0:
        res.problems.append(f"pytest exited {boot.rc}")
    if res.passed + res.failed == 0 and not res.problems:
        res.problems.append("no tests ran")
    return res


def summary_line(res: Result) -> str:
    line = (
        f"{res.series:<5} {res.group:<10} {res.kernel:<40} {res.passed:>4} passed {res.failed:>3} failed"
        f" {res.skipped:>3} skipped  {res.seconds:5.0f} s"
    )
    if res.kernel_warnings:
        line += f"  ({res.kernel_warnings} kernel warnings in the console)"
    for p in res.problems:
        line += f"\n      RUN FAILED: {p}"
    for name in res.failing:
        line += f"\n      FAILED {name}"
    return line


def merged(series: str, group: str, shards: Sequence[Result]) -> Result:
    """One (kernel, group)'s result from its shards' (problems and failures name the shard)."""
    res = Result(series, group, kernel=next((r.kernel for r in shards if r.kernel), ""))
    for i, r in enumerate(shards, 1):
        res.passed += r.passed
        res.failed += r.failed
        res.skipped += r.skipped
        res.failing += r.failing
        res.problems += [f"shard {i}: {p}" for p in r.problems]
        res.kernel_warnings += r.kernel_warnings
        res.seconds += r.seconds
    res.logs = " ".join(r.logs for r in shards if r.logs)
    return res


def markdown(results: list[Result]) -> str:
    rows = ["| kernel | hook group | passed | failed |", "|---|---|---:|---:|"]
    for r in results:
        failed = f"{r.failed}" + (f" ({'; '.join(r.problems)})" if r.problems else "")
        rows.append(f"| {r.kernel} | {r.group} | {r.passed} | {failed} |")
    return "\n".join(rows) + "\n"


def parse_only(values: list[str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for v in values:
        series, _, group = v.partition(":")
        if group and group not in GROUPS:
            raise SystemExit(f"matrix: unknown hook group {group!r} (known: {', '.join(GROUPS)})")
        pairs += [(series, group)] if group else [p for p in DEFAULT_MATRIX if p[0] == series]
    if not pairs:
        raise SystemExit(f"matrix: --only matched nothing in {DEFAULT_MATRIX}")
    return pairs


def preflight() -> None:
    if os.geteuid() != 0:
        raise SystemExit("matrix: run as root (BPF in the guest, the host's / over 9p)")
    for what, path in (("the venv (make setup)", VENV_BIN / "python"), ("the BPF object (make bpf)", BPF_OBJ)):
        if not path.exists():
            raise SystemExit(f"matrix: {path} missing: build {what} first")
    for tool in (vm.QEMU, "cpio", "timeout"):
        if not shutil.which(tool):
            raise SystemExit(f"matrix: {tool} not found: run `bash scripts/install-vm-deps.sh`")
    if not Path(vm.BUSYBOX).exists():
        raise SystemExit(f"matrix: {vm.BUSYBOX} not found: run `bash scripts/install-vm-deps.sh`")


def compile_for_guests(tests: Sequence[str] = TESTS) -> None:
    """Bytecode for what the guests import: their root is read-only, so without it every guest
    process compiles sockscope and the tests again under TCG (pytest's assertion rewriting too:
    collecting test_coverage took 15 s instead of 7.6; `import sockscope.cli` 3.7 s, not 2.6)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    py = str(VENV_BIN / "python")
    for cmd in (
        [py, "-m", "compileall", "-q", "src/sockscope", "tests"],
        [py, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--collect-only", *tests],  # the rewritten modules
    ):
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise SystemExit(f"matrix: {shlex.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")


def prepare(series: list[str]) -> tuple[dict[str, vm.Kernel], dict[str, Path]]:
    compile_for_guests()
    kernels = vm.fetch_kernels(series)
    (OUT / "initramfs").mkdir(parents=True, exist_ok=True)
    initrds = {s: vm.build_initramfs(k, OUT / "initramfs") for s, k in kernels.items()}
    return kernels, initrds


class Slots:
    """Guests at a time: `jobs`, but one while the file `hold` exists (scripts/test-all.sh holds it
    while the host's own tests run beside the matrix, so they keep a CPU to themselves)."""

    def __init__(self, jobs: int, hold: Path | None) -> None:
        self.jobs, self.hold = jobs, hold
        self.running = 0
        self.cond = threading.Condition()

    def limit(self) -> int:
        return 1 if self.hold is not None and self.hold.exists() else self.jobs

    def take(self) -> None:
        with self.cond:
            while self.running >= self.limit():
                self.cond.wait(timeout=1.0)  # the hold file is looked at again every second
            self.running += 1

    def give(self) -> None:
        with self.cond:
            self.running -= 1
            self.cond.notify_all()


def cmd_run(args: argparse.Namespace) -> int:
    preflight()
    pairs = parse_only(args.only) if args.only else DEFAULT_MATRIX
    t0 = time.monotonic()
    kernels, initrds = prepare(sorted({s for s, _ in pairs}))
    # Every pair's second shard first (once the longer; the ten guests now take 205-315 s each,
    # so their order moves the total by under 30 s).
    guests = [(pair, shard) for shard in range(len(SHARDS) - 1, -1, -1) for pair in pairs]
    jobs = max(1, min(args.jobs, len(guests)))
    print(
        f"matrix: {len(pairs)} runs in {len(guests)} guests ({len(SHARDS)} shards of the tests each),"
        f" {jobs} at a time, {args.cpus} vCPU each",
        flush=True,
    )
    lock = threading.Lock()

    slots = Slots(jobs, Path(args.hold) if args.hold else None)

    def one(guest: tuple[tuple[str, str], int]) -> Result:
        (series, group), shard = guest
        slots.take()
        try:
            res = run_one(kernels[series], initrds[series], group, args.timeout, args.cpus, shard)
        finally:
            slots.give()
        with lock:
            print(f"[{shard + 1}/{len(SHARDS)}] " + summary_line(res), flush=True)
            if res.problems:
                print(f"      console tail ({res.logs}/console.log):", flush=True)
                print("\n".join("      | " + ln for ln in vm.tail(Path(res.logs) / "console.log").splitlines()))
        return res

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        done = dict(zip(guests, pool.map(one, guests), strict=True))
    elapsed = time.monotonic() - t0

    for r in done.values():
        # Logs of a passing run are noise; a failing run's are kept for reading.
        if r.ok and not args.keep:
            shutil.rmtree(r.logs, ignore_errors=True)
            r.logs = ""
    results = [merged(s, g, [done[((s, g), i)] for i in range(len(SHARDS))]) for s, g in pairs]
    table = markdown(results)
    (OUT / "results.md").write_text(table)
    doc = {"seconds": round(elapsed, 1), "jobs": jobs, "tests": TESTS, "deselect": DESELECT,
           "runs": [{**asdict(r), "ok": r.ok} for r in results]}  # fmt: skip
    (OUT / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    print()
    print(table, end="")
    print(f"(written to {OUT / 'results.md'} and results.json; {elapsed:.0f} s in all)")
    passed = sum(r.passed for r in results)
    # A run with no test results (crash, timeout, no junit) counts as one failure, so the
    # last line never says 0 failed while the exit status says otherwise.
    failed = sum(r.failed or (1 if r.problems else 0) for r in results)
    print(f"kernel matrix: {passed} passed, {failed} failed")
    return 0 if all(r.ok for r in results) else 1


def cmd_shell(args: argparse.Namespace) -> int:
    preflight()
    kernels, initrds = prepare([args.kernel])
    cmd: list[str] = args.cmd
    script = f"cd {shlex.quote(str(REPO))}\nexport {guest_env(args.hooks)}\n{shlex.join(cmd) if cmd else 'true'}\n"
    share = OUT / "runs" / f"shell-{args.kernel}"
    shutil.rmtree(share, ignore_errors=True)
    boot = vm.boot(kernels[args.kernel], initrds[args.kernel], share, script, args.timeout, args.cpus, live=True)
    print(f"matrix shell: exit {boot.rc} after {boot.seconds:.1f} s" + (" (timed out)" if boot.timed_out else ""))
    return boot.rc if boot.rc is not None else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["shell"]:
        p = argparse.ArgumentParser(prog="matrix.py shell", description="run CMD in a guest, console live")
        p.add_argument("kernel", help="kernel series: 6.1 or 6.12")
        p.add_argument("--hooks", choices=GROUPS, help="set SOCKSCOPE_HOOKS in the guest")
        p.add_argument("--timeout", type=float, default=600)
        p.add_argument("--cpus", type=int, default=1)
        # Split at "--" by hand: argparse's REMAINDER would swallow options after KERNEL.
        rest = argv[1:]
        cut = rest.index("--") if "--" in rest else len(rest)
        args = p.parse_args(rest[:cut])
        args.cmd = rest[cut + 1 :]
        return cmd_shell(args)
    p = argparse.ArgumentParser(prog="matrix.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", action="append", default=[], metavar="KERNEL[:GROUP]", help="e.g. 6.1:fentry; repeatable")
    p.add_argument("--jobs", type=int, default=2, help="guests at a time (default 2)")
    p.add_argument("--cpus", type=int, default=1, help="vCPUs per guest (default 1)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per guest (default 900)")
    p.add_argument("--keep", action="store_true", help="keep build/vmtest/runs/* of passing runs too")
    p.add_argument("--hold", metavar="FILE", help="one guest at a time while FILE exists")
    return cmd_run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
