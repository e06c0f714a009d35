"""The comparison's report: markdown tables, the targets for sockscope, and the PNG chart."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.compare_accuracy import ScenarioRun, Score
from bench.compare_overhead import Startup, Summary
from bench.lab_tools import Attempt, ToolSpec
from bench.overhead import WORKLOADS, Workload, format_bps, format_mib, markdown_table

STARTUP_TARGET_S = 0.5


@dataclass(slots=True)
class Report:
    """Everything measured, as the report needs it."""

    header: list[str]  # "- key: value" lines
    specs: list[ToolSpec]
    versions: dict[str, str]
    scenarios: list[ScenarioRun]
    scores: list[Score]
    summaries: list[Summary]
    startup: Startup | None
    attempts: list[Attempt]
    missing: dict[str, str]  # tools not run at all, and why
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    noise: dict[str, float | None] = field(default_factory=dict)  # workload -> baseline-to-baseline, %
    context: str = ""  # "on DATE, Linux KERNEL, N CPUs", for the README block
    baseline_bps: dict[str, float] = field(default_factory=dict)  # workload -> median of all runs without a tool


def fmt_pct(value: float | None, digits: int = 1, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:+.{digits}f}%" if signed else f"{value:.{digits}f}%"


def fmt_err(value: float | None) -> str:
    """An error in percent; exact zero printed as 0."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if math.isinf(value):
        return "all extra"
    if abs(value) < 0.01:
        return f"{value:+.5f}%"
    return f"{value:+.3f}%" if abs(value) < 1 else f"{value:+.1f}%"


def fmt_s(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def title_of(specs: Sequence[ToolSpec], name: str) -> str:
    return next((s.title for s in specs if s.name == name), name)


# ---------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------


def verdict(s: Score) -> str:
    if s.error is not None:
        return f"no result: {s.error[:200]}"
    ok = "exact" if s.accurate else "off"
    if s.reference == "wire" and s.accurate:
        ok = "exact (to its 6 printed digits)"
    return ok


def accuracy_table(report: Report) -> str:
    header = ("scenario", "tool", "reference", "tx: reference", "tx: reported", "tx error", "rx: reference",
              "rx: reported", "rx error", "bytes correct", "named correctly", "shown as")  # fmt: skip
    rows = []
    titles = {r.name: r.title for r in report.scenarios}
    for s in report.scores:
        exact_col = verdict(s)
        if s.reference == "socket" and s.subjects > 1 and s.error is None:
            exact_col += f" ({s.exact}/{s.subjects} processes)"
        rows.append((
            titles.get(s.scenario, s.scenario),
            title_of(report.specs, s.tool),
            "generator's count (payload)" if s.reference == "socket" else "nftables (frames on the veth)",
            f"{s.ref_tx:,}", f"{s.got_tx:,}", fmt_err(s.tx_err_pct),
            f"{s.ref_rx:,}", f"{s.got_rx:,}", fmt_err(s.rx_err_pct),
            exact_col,
            "n/a" if s.error else f"{s.named}/{s.subjects}" + (" yes" if s.attributed else " NO"),
            ", ".join(s.shown_as) or "(nothing)",
        ))  # fmt: skip
    return markdown_table(header, rows)


def unknown_note(report: Report) -> str:
    """Does 'nethogs shows short-lived processes and UDP as unknown' hold here?"""
    lines = []
    for run in report.scenarios:
        lives = sorted(s.lifetime_s for s in run.subjects if s.lifetime_s is not None)
        if lives:
            lines.append(
                f"- {run.title}: each process lived {1000 * lives[len(lives) // 2]:.0f} ms (median; from spawn"
                f" to its last output, {1000 * lives[0]:.0f}-{1000 * lives[-1]:.0f} ms), {len(lives)} processes."
            )
    for s in report.scores:
        if s.tool != "nethogs" or s.error is not None or s.scenario not in ("udp", "short_lived"):
            continue
        unknown = s.unknown_tx + s.unknown_rx
        total = s.ref_tx + s.ref_rx
        share = 100.0 * unknown / total if total else 0.0
        what = "UDP" if s.scenario == "udp" else "short-lived processes"
        holds = "holds" if s.named < s.subjects else "does not hold"
        lines.append(
            f"- {what}: nethogs named {s.named} of {s.subjects} process(es) and put {unknown:,} B"
            f' ({share:.0f}% of the wire bytes) under "unknown": the claim {holds} here.'
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Overhead, CPU, memory
# ---------------------------------------------------------------------------


def find(summaries: Sequence[Summary], workload: str, tool: str) -> Summary | None:
    return next((s for s in summaries if s.workload == workload and s.tool == tool), None)


def target_cell(s: Summary, tool: str) -> tuple[str, str]:
    if tool != "sockscope":
        return "-", "-"
    met = "met" if s.met else f"MISSED by {s.target_pct - s.ratio_pct:.1f} points"
    return f">= {s.target_pct:.0f}%", met


def measured(report: Report) -> Iterator[tuple[Workload, ToolSpec, Summary]]:
    """Every (workload, tool) pair the overhead phase measured, in report order."""
    for wl in WORKLOADS:
        for spec in report.specs:
            s = find(report.summaries, wl.name, spec.name)
            if s is not None:
                yield wl, spec, s


def overhead_table(report: Report) -> str:
    header = ("workload", "tool", "pairs", "no tool (median)", "with tool (median)", "ratio (median of pairs)",
              "per-pair ratios", "target", "verdict", "tool saw of iperf3's bytes")  # fmt: skip
    rows = []
    for wl, spec, s in measured(report):
        target, met = target_cell(s, spec.name)
        rows.append((
            wl.title, spec.title, str(s.pairs), format_bps(s.baseline_bps), format_bps(s.monitored_bps),
            fmt_pct(s.ratio_pct), " ".join(f"{r:.0f}" for r in s.ratios_pct), target, met,
            fmt_pct(s.seen_pct),
        ))  # fmt: skip
    return markdown_table(header, rows)


def noise_line(report: Report) -> str:
    parts = [f"{wl.title} {fmt_pct(report.noise.get(wl.name))}" for wl in WORKLOADS if wl.name in report.noise]
    if not parts:
        return ""
    return (
        "Run-to-run noise on this machine without any tool (median difference between consecutive baseline"
        f" runs): {', '.join(parts)}. A ratio that far from 100% or less is within the noise."
    )


def cpu_table(report: Report) -> str:
    header = ("workload", "tool", "process CPU s/s (median)", "in-kernel BPF s/s (extra run)", "sum",
              "peak RSS", "spawn -> counting (median)")  # fmt: skip
    rows = []
    for wl, spec, s in measured(report):
        bpf = fmt_s(s.bpf_s_per_s) if spec.bpf else "n/a (not BPF)"
        rows.append((
            wl.title, spec.title, fmt_s(s.cpu_s_per_s), bpf, fmt_s(total_cpu(s)), format_mib(s.peak_rss_kib),
            "n/a" if s.ready_s is None else f"{s.ready_s:.2f} s",
        ))  # fmt: skip
    return markdown_table(header, rows)


def total_cpu(s: Summary) -> float | None:
    if s.cpu_s_per_s is None:
        return None
    return s.cpu_s_per_s + (s.bpf_s_per_s or 0.0)


def startup_table(st: Startup) -> str:
    med_first = sorted(st.first_line_s)[len(st.first_line_s) // 2]
    med_count = sorted(st.counting_s)[len(st.counting_s) // 2]
    rows = [
        ("spawn -> counting (first interval starts)", f"{med_count:.3f} s",
         " ".join(f"{v:.3f}" for v in st.counting_s), f"< {STARTUP_TARGET_S} s",
         "met" if med_count < STARTUP_TARGET_S else f"MISSED by {med_count - STARTUP_TARGET_S:.3f} s"),
        (f"spawn -> first JSON line (--interval {st.interval:g})", f"{med_first:.3f} s",
         " ".join(f"{v:.3f}" for v in st.first_line_s), "-", "-"),
    ]  # fmt: skip
    return markdown_table(("what", "median", "all starts (s)", "target", "verdict"), rows)


# ---------------------------------------------------------------------------
# Targets and the README summary
# ---------------------------------------------------------------------------


def accuracy_counts(report: Report, tool: str) -> tuple[int, int, int]:
    scores = [s for s in report.scores if s.tool == tool]
    return sum(s.accurate for s in scores), sum(s.attributed for s in scores), len(scores)


def cpu_verdict(report: Report, workload: str, total: bool) -> tuple[str, str]:
    """sockscope's CPU against every peer that counts the same traffic (every other tool run here):
    (measured, verdict)."""
    mine = find(report.summaries, workload, "sockscope")
    if mine is None:
        return "n/a", "n/a"
    pick = total_cpu if total else (lambda s: s.cpu_s_per_s)
    own = pick(mine)
    peers = [s for s in report.summaries if s.workload == workload and s.tool != "sockscope"]
    known = [(s.tool, v) for s in peers if (v := pick(s)) is not None]
    if own is None or not known:
        return "n/a", "n/a"
    lowest_tool, lowest = min(known, key=lambda tv: tv[1])
    measured = f"{own:.4f} s/s; lowest peer: {lowest_tool} {lowest:.4f} s/s"
    if own < lowest:
        return measured, "met"
    times = f", {own / lowest:.1f}x" if lowest > 0 else ""
    return measured, f"MISSED by {own - lowest:.4f} s/s{times}"


def targets_table(report: Report) -> str:
    rows: list[tuple[str, str, str]] = []
    scores = [s for s in report.scores if s.tool == "sockscope"]
    if scores:
        bad = [s.scenario for s in scores if not (s.accurate and s.attributed)]
        rows.append((
            "exact bytes and correct attribution in every scenario",
            f"{len(scores) - len(bad)}/{len(scores)} scenarios",
            "met" if not bad else f"MISSED in {', '.join(bad)}",
        ))  # fmt: skip
    for wl in WORKLOADS:
        s = find(report.summaries, wl.name, "sockscope")
        if s is not None:
            rows.append((f"{wl.title}: throughput >= {wl.target_pct:.0f}% of no monitor", fmt_pct(s.ratio_pct),
                         target_cell(s, "sockscope")[1]))  # fmt: skip
    for wl in WORKLOADS:
        if find(report.summaries, wl.name, "sockscope") is None:
            continue
        rows.append((f"{wl.title}: CPU below every peer (the tool's own process CPU)",
                     *cpu_verdict(report, wl.name, False)))  # fmt: skip
        rows.append((f"{wl.title}: same, adding BPF programs' in-kernel time (nethogs: capture cost not included)",
                     *cpu_verdict(report, wl.name, True)))  # fmt: skip
    if report.startup is not None and report.startup.counting_s:
        med = sorted(report.startup.counting_s)[len(report.startup.counting_s) // 2]
        rows.append((f"start-up < {STARTUP_TARGET_S} s (spawn -> counting)", f"{med:.3f} s",
                     "met" if med < STARTUP_TARGET_S else f"MISSED by {med - STARTUP_TARGET_S:.3f} s"))  # fmt: skip
    return markdown_table(("target", "measured", "verdict"), rows)


def summary_table(report: Report) -> str:
    """One row per tool, for the README."""
    header = ("tool", "bytes exact", "process named", "bulk TCP throughput, % of none", "64 B storm throughput",
              "CPU s/s bulk / storm", "peak RSS")  # fmt: skip
    rows = []
    base = [report.baseline_bps.get(wl.name) for wl in WORKLOADS]
    rows.append(("no monitor (baseline)", "-", "-",
                 *(format_bps(b) if b else "n/a" for b in base), "-", "-"))  # fmt: skip
    for spec in report.specs:
        exact, named, n = accuracy_counts(report, spec.name)
        per_wl = [find(report.summaries, wl.name, spec.name) for wl in WORKLOADS]
        cpu = " / ".join(fmt_s(total_cpu(s)) if s else "n/a" for s in per_wl)
        rss = max((s.peak_rss_kib for s in per_wl if s and s.peak_rss_kib), default=None)
        rows.append((
            spec.title, f"{exact}/{n} scenarios", f"{named}/{n} scenarios",
            *(fmt_pct(s.ratio_pct) if s else "n/a" for s in per_wl), cpu, format_mib(rss),
        ))  # fmt: skip
    for a in report.attempts:
        if not a.runs:
            rows.append((a.tool, f"cannot run here: {a.error[:160]}", "-", "-", "-", "-", "-"))
    for name, why in report.missing.items():
        rows.append((name, f"not measured: {why[:160]}", "-", "-", "-", "-", "-"))
    return markdown_table(header, rows)


def readme_block(report: Report) -> str:
    """The summary table with just enough words around it to stand in the README."""
    return "\n".join([
        f"Measured side by side by `make bench-compare` (bench/compare.py) {report.context}; the full report"
        " with every table is bench/results/compare.md.",
        "",
        summary_table(report),
        "",
        "Bytes exact: against the generators' own byte counts for the socket-level tools, against the frames"
        " nftables counted on the veth for nethogs (a packet-capture tool). Throughput: iperf3 over a veth pair"
        " with the tool running, % of the same without any tool (median of A/B pairs). CPU: the tool's process"
        " CPU plus, for BPF tools, the in-kernel run time of its programs, per second of load (nethogs' in-kernel"
        " capture cost is not included).",
    ])  # fmt: skip


def attempts_table(attempts: Sequence[Attempt]) -> str:
    rows = [
        (a.tool, f"`{' '.join(a.argv)}`", "runs" if a.runs else f"cannot run here (exit {a.exit_code})", a.error or "-")
        for a in attempts
    ]
    return markdown_table(("tool", "command", "result", "error it gave"), rows)


def markdown(report: Report) -> str:
    parts = [
        "# sockscope against the tools people use instead",
        "",
        *report.header,
        f"- whole run: {report.elapsed_s / 60:.1f} min",
        "",
        "## Tools",
        "",
        markdown_table(
            ("tool", "version", "command", "one byte is"),
            [(s.title, report.versions.get(s.name, "?"), f"`{' '.join(s.argv)}`", s.counts) for s in report.specs],
        ),
        "",
        "## Summary (for the README)",
        "",
        readme_block(report),
        "",
        "## Targets for sockscope",
        "",
        targets_table(report),
        "",
        "## Accuracy and attribution",
        "",
        "Every tool watched every scenario at once, started fresh for each. The subject is the host-side process"
        " (named after the scenario); its peer runs inside the namespace. Socket-level tools are held to the"
        " generator's own count of what its send/receive calls moved; nethogs, which counts captured packets, to"
        " the frames nftables counted on the peer side of the veth (IP bytes + 14 B Ethernet header per packet;"
        " with segmentation offload one large packet stands for several on a real wire).",
        "",
        accuracy_table(report),
        "",
        unknown_note(report),
        "",
        "## Overhead: throughput with the tool running",
        "",
        "iperf3 from the host to a server inside the namespace, over the veth pair (not loopback: nethogs only"
        " sees traffic on a device, so every tool does its full work), client and server pinned to their own CPUs."
        " Per pair: a run without any tool, then a run with the tool (A B A B ...), interleaved across tools; the"
        " ratio is the median of the per-pair ratios.",
        "",
        overhead_table(report),
        "",
        noise_line(report),
        "",
        "## CPU and memory during the same load",
        "",
        "Process CPU is the user + system time of the tool's process tree over the iperf3 run (from the threads'"
        " /proc/PID/task/TID/schedstat, in ns), per second; peak RSS is the"
        " largest VmHWM. A BPF tool's programs run in the context of the processes moving the bytes: their cost"
        " is not in the tool's CPU time but in the lost throughput above, and as in-kernel run time measured in"
        " one extra run per tool and workload with kernel.bpf_stats_enabled=1 (off during the pairs). nethogs'"
        " in-kernel cost (copying every packet to its capture ring, in softirq) is not measured. Spawn -> counting:"
        " sockscope's first line minus the interval it covers (`--interval 1` here), bpftrace's \"attached probes\""
        " line, nethogs' first refresh.",
        "",
        cpu_table(report),
        "",
    ]
    if report.startup is not None and report.startup.counting_s:
        parts += [
            "## sockscope start-up",
            "",
            f"`sockscope top --json --interval {report.startup.interval:g} --count 1`, started"
            f" {len(report.startup.counting_s)} times. Its first line comes one interval after it starts counting"
            " and carries that interval's measured length, so spawn -> counting = spawn -> first line - `interval`.",
            "",
            startup_table(report.startup),
            "",
        ]
    parts += ["## Tools that cannot run here", "", attempts_table(report.attempts) if report.attempts else "(none)"]
    if report.missing:
        parts += ["", *(f"- {name}: not measured: {why}" for name, why in report.missing.items())]
    if report.notes:
        parts += ["", "## Notes", "", *(f"- {n}" for n in report.notes)]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------
# Chart
# ---------------------------------------------------------------------------


def chart(report: Report, path: Path, subtitle: str = "") -> None:
    """Two panels: throughput with the tool as % of none per workload (bar: median of the pairs,
    whisker: lowest to highest pair), and the tool's CPU per second of load (process, plus the
    in-kernel run time of a BPF tool's programs on top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tools = [s for s in report.specs if any(x.tool == s.name for x in report.summaries)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5.2))
    width = 0.8 / max(len(tools), 1)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"]
    all_ratios = [r for s in report.summaries for r in s.ratios_pct]
    for i, spec in enumerate(tools):
        color = colors[i % len(colors)]
        xs = [w + (i - (len(tools) - 1) / 2) * width for w in range(len(WORKLOADS))]
        found = [find(report.summaries, wl.name, spec.name) for wl in WORKLOADS]
        ratios = [s.ratio_pct if s else 0.0 for s in found]
        low = [s.ratio_pct - min(s.ratios_pct) if s else 0.0 for s in found]
        high = [max(s.ratios_pct) - s.ratio_pct if s else 0.0 for s in found]
        bars = ax1.bar(xs, ratios, width, label=spec.title, color=color, yerr=[low, high], capsize=3)
        ax1.bar_label(bars, fmt="%.1f", fontsize=8, label_type="center", color="white")
        proc = [(s.cpu_s_per_s or 0.0) if s else 0.0 for s in found]
        ax2.bar(xs, proc, width, label=f"{spec.title}: process", color=color)
        if spec.bpf:
            kern = [(s.bpf_s_per_s or 0.0) if s else 0.0 for s in found]
            ax2.bar(xs, kern, width, bottom=proc, color=color, alpha=0.4, hatch="//",
                    label=f"{spec.title}: its BPF programs")  # fmt: skip
    for j, wl in enumerate(WORKLOADS):
        ax1.hlines(wl.target_pct, j - 0.45, j + 0.45, colors="red", linestyles="dashed", linewidth=1)
    ax1.axhline(100.0, color="grey", linewidth=0.8)
    labels = [wl.title for wl in WORKLOADS]
    ax1.set_xticks(range(len(WORKLOADS)), labels)
    ax1.set_ylabel("throughput with the tool, % of no tool")
    ax1.set_ylim(min([50.0, *(r - 5 for r in all_ratios)]), max([105.0, *(r + 5 for r in all_ratios)]))
    ax1.set_title("Throughput kept: median of pairs, whiskers min-max\n(red dashes: sockscope's targets)", fontsize=10)
    ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    ax2.set_xticks(range(len(WORKLOADS)), labels)
    ax2.set_ylabel("CPU seconds per second of load")
    ax2.set_title("Tool CPU during the same load\n(hatched: in-kernel run time of its BPF programs)", fontsize=10)
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
    fig.suptitle(f"sockscope vs nethogs vs bpftrace, iperf3 over a veth pair {subtitle}".strip(), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def versions_line(versions: Mapping[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items())
