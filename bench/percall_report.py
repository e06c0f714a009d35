"""Data and markdown tables of bench/percall.py."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.overhead import markdown_table
from bench.percall_parts import Mode, PingResult, Setup
from bench.percall_toggle import ToggleSample, ToggleStat
from bench.percall_userspace import UserSpace


@dataclass(slots=True)
class Sample:
    rep: int
    setup: str
    mode: str
    ping: PingResult


@dataclass(slots=True)
class StatRow:
    setup: str
    mode: str
    ns_per_round: float
    rounds: int
    programs: dict[str, tuple[int, int]]  # name -> (runs, ns) during the ping-pong


@dataclass(slots=True)
class Run:
    samples: list[Sample] = dataclasses.field(default_factory=list)
    stats: list[StatRow] = dataclasses.field(default_factory=list)
    startups: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    userspace: list[UserSpace] = dataclasses.field(default_factory=list)
    rounds: dict[str, int] = dataclasses.field(default_factory=dict)
    toggle_rounds: dict[str, int] = dataclasses.field(default_factory=dict)  # rounds per toggled batch
    foreign: list[str] = dataclasses.field(default_factory=list)  # others' BPF programs seen loaded
    userspace_args: list[str] = dataclasses.field(default_factory=list)
    code: list[str] = dataclasses.field(default_factory=list)  # code_state() at start and at the end
    toggled: list[ToggleSample] = dataclasses.field(default_factory=list)  # percall_toggle.py
    toggled_stats: list[ToggleStat] = dataclasses.field(default_factory=list)  # --toggle-stats


def added(samples: Sequence[Sample], setup: str, mode: str) -> list[float]:
    """Per repetition: setup's ns per round minus that repetition's `none` ns per round."""
    base = {s.rep: s.ping.ns_per_round for s in samples if s.setup == "none" and s.mode == mode}
    return [s.ping.ns_per_round - base[s.rep] for s in samples if s.setup == setup and s.mode == mode and s.rep in base]


def median_added(samples: Sequence[Sample], setup: str, mode: str) -> float | None:
    diffs = added(samples, setup, mode)
    return statistics.median(diffs) if diffs else None


def rotated(items: Sequence[Setup], k: int) -> list[Setup]:
    k %= len(items)
    return [*items[k:], *items[:k]]


def cost_table(run: Run, setups: Sequence[Setup], modes: Sequence[Mode]) -> str:
    header = ["configuration", *(f"{m.name} added ns (ratio to floor)" for m in modes)]
    base_row = ["none: base ns/round"]
    for m in modes:
        base = [s.ping.ns_per_round for s in run.samples if s.setup == "none" and s.mode == m.name]
        base_row.append(f"{statistics.median(base):.0f}" if base else "n/a")
    rows = [base_row]
    for st in setups[1:]:
        row = [st.name]
        for m in modes:
            got, floor = median_added(run.samples, st.name, m.name), median_added(run.samples, "floor", m.name)
            ratio = f" ({got / floor:.2f}x)" if got is not None and floor else ""
            row.append("n/a" if got is None else f"{got:+.0f}{ratio}")
        rows.append(row)
    return markdown_table(header, rows)


def spread_table(run: Run, setups: Sequence[Setup], modes: Sequence[Mode]) -> str:
    rows = []
    for st in setups:
        row = [st.name]
        for m in modes:
            vals = (
                [s.ping.ns_per_round for s in run.samples if s.setup == "none" and s.mode == m.name]
                if st.kind == "none"
                else added(run.samples, st.name, m.name)
            )
            row.append(" ".join(f"{v:.0f}" for v in vals))
        rows.append(row)
    return markdown_table(["configuration (none: ns/round; others: added ns)", *(m.name for m in modes)], rows)


def preemption_line(run: Run) -> str:
    """How often the ping-pong thread lost its CPU to something else during a timed batch."""
    per_batch = sorted(n for s in run.samples for n in s.ping.switches)
    if not per_batch:
        return ""
    q90 = per_batch[int(0.9 * (len(per_batch) - 1))]
    return (
        f"Involuntary context switches of the ping-pong thread per timed batch ({len(per_batch)} batches): "
        f"median {statistics.median(per_batch):.0f}, 90th percentile {q90}, max {per_batch[-1]}"
    )


def stats_table(run: Run, modes: Sequence[Mode]) -> str:
    rows: list[list[str]] = []
    for setup in dict.fromkeys(r.setup for r in run.stats):
        by_mode = {r.mode: r for r in run.stats if r.setup == setup}
        names = sorted({n for r in by_mode.values() for n, (runs, _) in r.programs.items() if runs > 0})
        total = [setup, "(sum: ns per round)"]
        for name in names:
            row = [setup, name]
            for m in modes:
                r = by_mode.get(m.name)
                runs, ns = r.programs.get(name, (0, 0)) if r else (0, 0)
                row.append(f"{ns / runs:.0f} ns x {runs / r.rounds:.2f}" if r and runs else "-")
            rows.append(row)
        for m in modes:
            r = by_mode.get(m.name)
            total.append(f"{sum(ns for _, ns in r.programs.values()) / r.rounds:.0f}" if r else "-")
        rows.append(total)
        rows.append([setup, "(ns/round with stats on)"] + [f"{by_mode[m.name].ns_per_round:.0f}" for m in modes])
    return markdown_table(["configuration", "program", *(f"{m.name}: ns/run x runs/round" for m in modes)], rows)


def userspace_lines(run: Run) -> list[str]:
    out = []
    for u in run.userspace:
        seen = f"{statistics.median(u.connections_seen):.0f}" if u.connections_seen else "n/a"
        sweep = f"{statistics.median(u.sweep_s) * 1000:.0f} ms" if u.sweep_s else "n/a"
        cmd = shlex.join(["sockscope", "top", "--json", "--interval", "1", *run.userspace_args])
        out += [
            f"- collector CPU (`{cmd}`) with {u.conns:,} loopback TCP connections ({2 * u.conns:,} socket ends), "
            f"each moving 16 B/s: **{u.cpu_pct:.1f}% of one core** ({u.cpu_s:.2f} s CPU over {u.window_s:.1f} s)",
            f"  - connections sockscope reported for the generator per interval (median; both ends count): {seen};"
            f" dropped events in the window: {u.dropped_events:,}",
            f"  - the generator itself (two processes): {u.gen_cpu_pct:.1f}% of one core"
            f" (one sweep of all connections: {sweep})",
        ]
        if u.alone_cpu_pct is not None:
            alone_seen = f"{statistics.median(u.alone_seen):.0f}" if u.alone_seen else "n/a"
            out += [
                f"- the collector alone (`bench/collector_loop.py`: the same reads, no output formatted), same "
                f"connections: **{u.alone_cpu_pct:.1f}% of one core**; connections seen per interval (median): "
                f"{alone_seen}; dropped events: {u.alone_dropped:,}",
                f"  - start-up, spawn to counting (loaded and attached, with these connections open): "
                f"{u.alone_startup_s:.2f} s",
            ]
    for name, vals in run.startups.items():
        if vals:
            out.append(
                f"- start-up of `{name}` (spawn to first JSON line, includes the first 1 s interval): median "
                f"{statistics.median(vals):.2f} s, min {min(vals):.2f}, max {max(vals):.2f} (n={len(vals)})"
            )
    return out


def cpu_model() -> str:
    """The CPU this ran on: the machine kind is not always the same one, and calls cost differently."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return "n/a"


def vulnerability(name: str) -> str:
    path = Path("/sys/devices/system/cpu/vulnerabilities") / name
    return path.read_text().strip() if path.exists() else "n/a"


def mitigations() -> str:
    """The mitigations that make a program's call and its helpers' returns slow, as the kernel says."""
    srso = vulnerability("spec_rstack_overflow")
    its = vulnerability("indirect_target_selection")
    parts = [f"spectre_v2: {vulnerability('spectre_v2')}", f"spec_rstack_overflow: {srso}"]
    if "Safe RET" in srso:
        parts[-1] += " (Safe RET: every return, so every BPF helper call, is slow)"
    if its not in ("n/a", "Not affected"):
        parts.append(f"indirect_target_selection: {its}")
    return "; ".join(parts)


def header(argv: Sequence[str], a: argparse.Namespace, setups: Sequence[Setup], run: Run) -> str:
    now = datetime.datetime.now(datetime.UTC).astimezone().isoformat(timespec="seconds")
    lines = [
        "# sockscope per-call cost against the floor",
        "",
        f"- command: `{shlex.join([sys.executable, *argv])}`",
        f"- kernel: {platform.release()}; CPUs: {os.cpu_count()}; date: {now}",
        f"- load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (anything else running is noise)",
        f"- CPU: {cpu_model()}; {mitigations()}",
        f"- ping-pong: one thread on CPU {a.cpu}, 64-byte write + read per round; {a.pairs} repetitions, "
        "each mode's configurations back to back, order rotated;"
        f" rounds per batch {', '.join(f'{k} {v:,}' for k, v in run.rounds.items())}; {a.repeats} batches "
        "per process (median); added ns = median over repetitions of (config - same repetition's none)",
        f"- code measured: {run.code[0] if run.code else 'n/a'}",
        "- the bench and sockscope are pinned to the other CPUs while the ping-pong runs",
    ]
    hooks = getattr(a, "hooks", "tracepoint")
    if hooks != "tracepoint":
        lines.append(f"- hook group (toggled section): **{hooks}**, forced in every sockscope load; its floor: empty"
                     " programs on the group's hooks (bench/floor.bpf.c)")  # fmt: skip
    for st in setups[1:]:
        if st.kind != "floor":
            what = f"`{shlex.join(['sockscope', 'top', '--json', '--interval', '1', *st.args])}`"
        elif all(p.startswith("count_") for p in st.programs):
            what = f"the minimal counter of bench/floor.bpf.c, {', '.join(st.programs)}"
        else:
            what = f"empty {'tp_btf ' if hooks == 'tracepoint' else ''}programs {', '.join(st.programs)}"
        lines.append(f"- {st.name}: {what}")
    if len(set(run.code)) > 1:
        lines.append(f"- **WARNING: the code changed during the run**; at the end: {run.code[-1]}")
    if run.foreign:
        lines.append("- **WARNING: BPF programs of someone else were loaded during the run** (their cost is in"
                     f" every row, and their noise): {', '.join(run.foreign)}")  # fmt: skip
    return "\n".join(lines)
