"""Cost per call of a per-call monitor, against the floor: empty BPF programs on the same hooks.

Usage:
    sudo .venv/bin/python bench/percall.py [--pairs 7] [--seconds 1.5] [--json PATH]
    sudo .venv/bin/python bench/percall.py --quick          # a smoke run for developers (~2 min)
    sudo .venv/bin/python bench/percall.py --variant sockscope= --variant 'small=--max-flows 1024'

A small C program (bench/pingpong.c, compiled here with cc -O2) does rounds in one thread pinned
to one CPU: write 64 bytes on one end of a loopback socket pair, read them on the other. Modes:
tcp (a 127.0.0.1 TCP connection, TCP_NODELAY), udp (two connected UDP sockets), and tcp4/udp4
(the thread cycles through 4 such pairs). Each measurement is one process: a warm-up, then
--repeats timed batches (ns per round by CLOCK_MONOTONIC; the process's figure is their median);
rounds are calibrated so a measurement takes about --seconds.

First (bench/percall_toggle.py, the steadier figures): a ping-pong process per mode, and between
its short timed batches (--toggle-batch-ms) the bench attaches and detaches none / the floor / a
minimal counter / sockscope's collector loaded in this process; --toggle-reps repetitions, medians
of differences to `none`, in --toggle-blocks blocks, each with a fresh ping-pong and every monitor
loaded anew (a load's placement in memory moves its figure by several ns), with a second load of
sockscope as the control (how far rows must be apart to be told apart). --hooks fentry|kprobe
measures that hook group there instead (sockscope's collector with the group forced, the floor
empty programs on the group's hooks: fexit, or kprobe + kretprobe, on inet_sendmsg and
inet_recvmsg), for kernels without the length tracepoints; the next two sections are then skipped.

Then, configurations as separate processes, alternated within each of --pairs repetitions: per repetition and mode, each
configuration once, back to back (order rotated each time):
  none       no monitor;
  floor      bench/floor.bpf.c (compiled here with clang against build/vmlinux.h): EMPTY tp_btf
             programs on sock_send_length and sock_recv_length, loaded and attached through
             sockscope's own libbpf binding; floor+3 adds an empty tcp_rcv_space_adjust program;
  sockscope  `sockscope top --json --interval 1 [ARGS]` per --variant NAME=ARGS (default: none
             and --no-splice), measured once its first JSON line is out (programs attached).
Reported per mode: the base ns per round, and per configuration the median over repetitions of
(its ns per round - that repetition's `none` ns per round), with its ratio to the floor's.

Then, with kernel.bpf_stats_enabled=1 (restored afterwards): each program's run_time_ns/run_cnt
(bpftool) over one ping-pong per mode and configuration: ns per run and runs per round. Then
user space: the collector's CPU (utime+stime, % of one core) with --conns loopback TCP
connections each moving 16 bytes a second (bench/percall_conns.py; both ends are the generator's:
sockscope reports twice as many socket ends), and its start-up time (spawn
to first JSON line, from every start in the run). The bench and sockscope run on the other CPUs
than the ping-pong's while the per-call cost is measured.

Needs root, cc, clang, bpftool. Only loopback traffic. Exit status: 0 measured, 1 failure,
2 cannot start (not root, a tool or sockscope missing), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # run as a script: `bench` imports from the repo root

from bench.overhead import BenchError, Children, _raise_interrupt, log  # noqa: E402
from bench.percall_parts import (  # noqa: E402
    FLOOR_ALL,
    MODES,
    Floor,
    Mode,
    PingPong,
    Setup,
    activate,
    bpf_stats_enabled,
    build_floor,
    build_pingpong,
    code_state,
    foreign_programs,
    tool,
    watched_stats,
)
from bench.percall_report import (  # noqa: E402
    Run,
    Sample,
    StatRow,
    added,
    cost_table,
    header,
    preemption_line,
    rotated,
    spread_table,
    stats_table,
    userspace_lines,
)
from bench.percall_toggle import (  # noqa: E402
    AGAIN,
    COUNTER,
    HOOK_GROUPS,
    aa_gaps,
    block_spread,
    group_configs,
    hook_set,
    measure_toggled,
    switches,
    toggled_stats_table,
    toggled_table,
)
from bench.percall_userspace import collector_cpu  # noqa: E402

DEFAULT_SOCKSCOPE = REPO_ROOT / ".venv" / "bin" / "sockscope"
DEFAULT_VARIANTS = ("sockscope=", "sockscope --no-splice=--no-splice")


# --- protocol ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Ctx:
    pp: PingPong
    floor: Floor | None  # the tracepoint group's, for the sections of a process per configuration
    sockscope: Path
    workdir: Path
    modes: Sequence[Mode]
    bpftool: str


def calibrate(children: Children, pp: PingPong, modes: Sequence[Mode]) -> dict[str, float]:
    """ns per round of each mode, unmonitored."""
    probe = dataclasses.replace(pp, warmup=2000, repeats=5)
    return {m.name: probe.run(children, m, 5000).ns_per_round for m in modes}


def rounds_for(ns: dict[str, float], seconds: float) -> dict[str, int]:
    return {mode: max(1000, int(seconds * 1e9 / v)) for mode, v in ns.items()}


def need_floor(ctx: Ctx) -> Floor:
    if ctx.floor is None:
        raise BenchError("the floor of the tracepoint group was not loaded for this section")
    return ctx.floor


def check_foreign(ctx: Ctx, run: Run) -> None:
    """Someone else's programs on these hooks would be measured in every row: note them."""
    seen = foreign_programs(ctx.bpftool)
    # A monitor of ours just closed is freed after an RCU grace period: with several collectors
    # closed at once (--toggle-object) that took more than a second here. Wait up to 10 s.
    deadline = time.monotonic() + 10.0
    while seen and time.monotonic() < deadline:
        time.sleep(0.5)
        seen = [p for p in foreign_programs(ctx.bpftool) if p in seen]
    for prog in seen:
        if prog not in run.foreign:
            log(f"percall.py: WARNING: foreign BPF program loaded: {prog}")
            run.foreign.append(prog)


def measure(children: Children, ctx: Ctx, run: Run, setups: Sequence[Setup], pairs: int) -> None:
    """Per repetition and mode, every configuration back to back (order rotated): each `none` run
    is seconds away from the runs it is subtracted from."""
    for rep in range(pairs):
        check_foreign(ctx, run)
        for i, m in enumerate(ctx.modes):
            for st in rotated(setups, rep + i):
                with activate(st, children, need_floor(ctx), ctx.sockscope, ctx.workdir, len(run.samples)) as act:
                    if act.startup_s is not None:
                        run.startups.setdefault(st.name, []).append(act.startup_s)
                    res = ctx.pp.run(children, m, run.rounds[m.name])
                run.samples.append(Sample(rep, st.name, m.name, res))
                log(f"rep {rep + 1}/{pairs} {m.name:>5} {st.name:>24}: {res.ns_per_round:8.1f} ns/round")


def measure_stats(children: Children, ctx: Ctx, run: Run, setups: Sequence[Setup]) -> None:
    check_foreign(ctx, run)
    with bpf_stats_enabled():
        for st in setups:
            if st.kind == "none":
                continue
            with activate(st, children, need_floor(ctx), ctx.sockscope, ctx.workdir, 50_000 + len(run.stats)) as act:
                for m in ctx.modes:
                    before = watched_stats(ctx.bpftool, act)
                    res = ctx.pp.run(children, m, run.rounds[m.name])
                    after = watched_stats(ctx.bpftool, act)
                    progs = {
                        k: (n - before.get(k, (0, 0))[0], ns - before.get(k, (0, 0))[1]) for k, (n, ns) in after.items()
                    }
                    run.stats.append(StatRow(st.name, m.name, res.ns_per_round, res.total_rounds, progs))
                    log(f"stats {st.name} {m.name}: {progs}")


def parse_variant(text: str) -> Setup:
    name, sep, args = text.partition("=")
    if not sep or not name.strip() or name.strip() in ("none", "floor", "floor+3"):
        raise argparse.ArgumentTypeError(f"--variant wants NAME=ARGS with a new NAME, got {text!r}")
    return Setup(name.strip(), "sockscope", args=tuple(shlex.split(args)))


def parse_toggle_object(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--toggle-object wants NAME=PATH, got {text!r}")
    return name, path


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Cost per call of the sockscope monitor against empty BPF programs.")
    p.add_argument("--pairs", type=int, help="repetitions of every configuration (default 7; --quick: 2)")
    p.add_argument("--seconds", type=float, help="measured time per ping-pong (default 1.5; --quick: 0.3)")
    p.add_argument("--toggle-reps", type=int, help="repetitions of the toggled section (default 301; --quick: 20)")
    p.add_argument("--toggle-blocks", type=int,
                   help="the toggled repetitions' blocks, each with a fresh ping-pong and monitors loaded anew "
                   "(default 30; --quick: 2)")  # fmt: skip
    p.add_argument("--toggle-stats", action="store_true",
                   help="bpf_stats on in the toggled section: each configuration's programs' ns per run, median "
                   "of the blocks (its clock reads inflate every added ns: for comparing bodies)")  # fmt: skip
    p.add_argument("--toggle-batch-ms", type=float, default=15.0,
                   help="length of one toggled batch in ms (default 15)")  # fmt: skip
    p.add_argument("--toggle-object", action="append", default=[], type=parse_toggle_object, metavar="NAME=PATH",
                   help="also toggle this build of sockscope.bpf.o (an earlier commit's, say) under NAME")  # fmt: skip
    p.add_argument("--hooks", choices=HOOK_GROUPS, default="tracepoint",
                   help="the hook group measured in the toggled section (default tracepoint): fentry or kprobe for "
                   "kernels without the length tracepoints; its floor is empty programs on that group's hooks. "
                   "The sections of a process per configuration and bpf_stats measure the tracepoint group "
                   "alone: skipped with another group")  # fmt: skip
    p.add_argument("--repeats", type=int, default=5, help="timed batches per ping-pong process (default 5)")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: 2 pairs, short runs, 1000 connections")
    p.add_argument("--variant", action="append", type=parse_variant, metavar="NAME=ARGS",
                   help="a sockscope configuration: NAME=extra `sockscope top` arguments (repeatable; "
                   f"default: {' and '.join(repr(v) for v in DEFAULT_VARIANTS)})")  # fmt: skip
    p.add_argument("--mode", action="append", choices=[m.name for m in MODES], help="only this mode (repeatable)")
    p.add_argument("--no-floor3", action="store_true", help="skip the floor+3 configuration")
    p.add_argument("--skip", action="append", choices=["toggled", "percall", "stats", "userspace"], default=[],
                   help="skip a section: toggled (one process, monitors switched), percall (a process per "
                   "configuration), stats (bpf_stats), userspace")  # fmt: skip
    p.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1, help="CPU of the ping-pong (default: last)")
    p.add_argument("--conns", type=int, action="append",
                   help="loopback connections for the user-space cost, repeatable (default 5000 and 10000: 10,000 and "
                   "20,000 socket ends; --quick: 1000)")  # fmt: skip
    p.add_argument("--window", type=float, help="user-space measuring window in s (default 20; --quick: 5)")
    p.add_argument("--userspace-arg", action="append", default=[], metavar="ARG",
                   help="extra `sockscope top` argument for the user-space section (repeatable)")  # fmt: skip
    p.add_argument("--sockscope", type=Path, default=DEFAULT_SOCKSCOPE, help="sockscope executable")
    p.add_argument("--json", type=Path, metavar="PATH", help="write raw figures to PATH")
    a = p.parse_args(argv)
    a.pairs = a.pairs or (2 if a.quick else 7)
    a.seconds = a.seconds or (0.3 if a.quick else 1.5)
    a.toggle_reps = a.toggle_reps or (20 if a.quick else 301)
    a.toggle_blocks = a.toggle_blocks or (2 if a.quick else 30)
    a.conns = a.conns or ([1000] if a.quick else [5_000, 10_000])
    a.window = a.window or (5.0 if a.quick else 20.0)
    if min(a.pairs, a.repeats, *a.conns, a.toggle_reps, a.toggle_blocks) < 1:
        p.error("--pairs, --repeats, --conns, --toggle-reps, --toggle-blocks >= 1")
    if min(a.seconds, a.window, a.toggle_batch_ms) <= 0:
        p.error("--seconds, --window, --toggle-batch-ms > 0")
    if a.hooks != "tracepoint":
        a.skip = sorted({*a.skip, "percall", "stats"})
    return a


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    a = parse_args(argv[1:])
    if os.geteuid() != 0:
        print("percall.py: must run as root (BPF); try: sudo .venv/bin/python bench/percall.py", file=sys.stderr)
        return 2
    clang, bpftool = tool("clang"), tool("bpftool", "/usr/sbin/bpftool")
    missing = [n for n, t in (("cc", tool("cc") or tool("gcc")), ("clang", clang), ("bpftool", bpftool)) if not t]
    if missing or not os.access(a.sockscope, os.X_OK):
        print(f"percall.py: missing {', '.join(missing) or a.sockscope} (run `make setup`)", file=sys.stderr)
        return 2
    assert clang is not None and bpftool is not None
    if not 0 <= a.cpu < (os.cpu_count() or 1):
        print(f"percall.py: no CPU {a.cpu}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)

    modes = [m for m in MODES if not a.mode or m.name in a.mode]
    group = hook_set(a.hooks)
    setups = [Setup("none", "none"), Setup("floor", "floor", group.floor)]
    if not a.no_floor3 and a.hooks == "tracepoint":
        setups.append(Setup("floor+3", "floor", FLOOR_ALL))
    # The minimal counter beside the floor: its bodies in bpf_stats are the scale for sockscope's.
    if group.counter:
        setups.append(Setup("counter", "floor", group.counter))
    setups += a.variant or [parse_variant(v) for v in DEFAULT_VARIANTS]
    workdir = Path(tempfile.mkdtemp(prefix="sockscope-percall-"))
    children, run, floor = Children(), Run(), None
    affinity = os.sched_getaffinity(0)
    arch = platform.machine().replace("x86_64", "x86").replace("aarch64", "arm64")
    try:
        run.code.append(code_state())
        pp = PingPong(build_pingpong(workdir), a.cpu, 0, a.repeats, 60)
        floor_obj = build_floor(workdir, clang, bpftool, arch)
        if "percall" not in a.skip or "stats" not in a.skip:
            floor = Floor(floor_obj, (*FLOOR_ALL, *COUNTER))
        if len(affinity - {a.cpu}) > 0:
            os.sched_setaffinity(0, affinity - {a.cpu})  # the bench and its sockscope stay off the ping-pong's CPU
        ns = calibrate(children, pp, modes)
        run.rounds = rounds_for(ns, a.seconds / pp.repeats)
        run.toggle_rounds = rounds_for(ns, a.toggle_batch_ms / 1e3)
        for m in modes:
            log(f"calibration {m.name}: {ns[m.name]:.0f} ns/round -> {run.rounds[m.name]:,} rounds x {pp.repeats}"
                f" repeats; toggled batches of {run.toggle_rounds[m.name]:,} rounds")  # fmt: skip
        pp = dataclasses.replace(pp, warmup=max(run.rounds.values()) // 10)
        ctx = Ctx(pp, floor, a.sockscope, workdir, modes, bpftool)
        if "toggled" not in a.skip:
            check_foreign(ctx, run)
            stats_tool = bpftool if a.toggle_stats else None
            make = functools.partial(
                switches, floor_obj, group_configs(group), a.toggle_object, bpftool=stats_tool, hooks=group
            )
            with bpf_stats_enabled() if a.toggle_stats else contextlib.nullcontext():
                run.toggled = measure_toggled(
                    children, pp.exe, a.cpu, modes, make, a.toggle_reps, a.toggle_blocks, run.toggle_rounds,
                    run.toggled_stats, stats_tool,
                )  # fmt: skip
        if "percall" not in a.skip:
            measure(children, ctx, run, setups, a.pairs)
        if "stats" not in a.skip:
            measure_stats(children, ctx, run, setups)
        os.sched_setaffinity(0, affinity)
        first = next((s for s in setups if s.kind == "sockscope"), None)
        if "userspace" not in a.skip and first is not None:
            run.userspace_args = [*first.args, *a.userspace_arg]
            for conns in a.conns:
                run.userspace.append(collector_cpu(children, a.sockscope, workdir, run.userspace_args, conns, a.window))
    except KeyboardInterrupt:
        log("percall.py: interrupted")
        return 130
    except (BenchError, OSError) as exc:
        log(f"percall.py: {exc}")
        return 1
    finally:
        run.code.append(code_state())
        children.kill_all()
        if floor is not None:
            floor.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(header(argv, a, setups, run))
    if run.toggled:
        print("\n## One ping-pong process, monitors switched between its batches (steadier)\n")
        rounds = ", ".join(f"{m.name} {run.toggle_rounds[m.name]:,}" for m in modes)
        print(f"{a.toggle_reps} repetitions per mode in {a.toggle_blocks} blocks (each block a fresh ping-pong")
        print("process and every monitor loaded anew), a batch per configuration each, in orders where each")
        print("follows every other equally often (a Williams design); added ns =")
        print("median of (configuration - that repetition's none); quartiles of the same differences in brackets.")
        print(f"Rounds per batch ({a.toggle_batch_ms:g} ms): {rounds}.\n")
        print(toggled_table(run.toggled, modes))
        print(
            f"\nThe same differences' median within each of the {a.toggle_blocks} blocks (each block its own loads):\n"
        )
        print(block_spread(run.toggled, modes))
        gaps = aa_gaps(run.toggled, modes)
        if gaps:
            cells = ", ".join(f"{mode} {gap:.1f}" for mode, gap in gaps.items())
            print(f"\nThe control, `{AGAIN}` (the same build as `sockscope`): the two rows' medians differ by")
            print(f"{cells} ns a round: rows closer than that are not told apart by this run.")
    if run.toggled_stats:
        print("\n## The toggled programs' run time (--toggle-stats: kernel.bpf_stats_enabled=1 in that section)\n")
        print("ns per run of the send and the receive program, median of the blocks' own (each block its own loads);")
        print("bpf_stats' clock reads are inside: compare with the floor's empty programs.\n")
        print(toggled_stats_table(run.toggled_stats, modes))
    if run.samples:
        print("\n## A process per configuration: added ns per round, against no monitor (ratio to the floor's)\n")
        print(cost_table(run, setups, modes))
        print("\n## Per repetition (spread)\n")
        print(spread_table(run, setups, modes))
        print("\n" + preemption_line(run))
    if run.stats:
        print("\n## BPF run time per program (kernel.bpf_stats_enabled=1, one ping-pong per cell)\n")
        print("bpf_stats' own clock reads are inside ns/run: compare with the floor's empty programs.\n")
        print(stats_table(run, modes))
    if run.userspace or run.startups:
        print("\n## User space\n")
        print("\n".join(userspace_lines(run)))
    if a.json is not None:
        doc = {
            "command": [sys.executable, *argv],
            "kernel": platform.release(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "setups": [dataclasses.asdict(s) for s in setups],
            "modes": [dataclasses.asdict(m) for m in modes],
            "added_ns": {s.name: {m.name: added(run.samples, s.name, m.name) for m in modes} for s in setups[1:]},
            **dataclasses.asdict(run),
        }
        a.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nraw figures written to {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
