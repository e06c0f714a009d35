"""`sockscope doctor`: what this kernel allows, and which hooks attach."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sockscope.bpf import libbpf
from sockscope.bpf.loader import (
    ALL_GROUPS,
    COUNT_GROUPS,
    Collector,
    CollectorOptions,
    HookStatus,
    cgroup2_root,
    default_object_path,
    effective_caps,
    missing_privileges,
)
from sockscope.collector import netdev
from sockscope.collector.source import Source
from sockscope.output.safe import printable


@dataclass
class GroupReport:
    name: str
    what: str
    role: str  # "count" or "detail"
    attached: bool
    hooks: list[HookStatus]


@dataclass
class DoctorReport:
    kernel: str
    btf: bool
    lockdown: str | None
    euid: int
    missing_privileges: list[str]
    libbpf: str | None
    bpf_object: str
    bpf_object_present: bool
    cgroup2: str | None
    kprobe_support: bool
    groups: list[GroupReport] = field(default_factory=list)
    selected: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.selected is not None and not self.problems

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _lockdown(path: str = "/sys/kernel/security/lockdown") -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else text.strip()


def diagnose(options: CollectorOptions | None = None) -> DoctorReport:
    obj = (options.object_path if options else None) or str(default_object_path())
    report = DoctorReport(
        kernel=os.uname().release,
        btf=os.path.exists("/sys/kernel/btf/vmlinux"),
        lockdown=_lockdown(),
        euid=os.geteuid(),
        missing_privileges=missing_privileges(effective_caps()),
        libbpf=None,
        bpf_object=obj,
        bpf_object_present=os.path.exists(obj),
        cgroup2=cgroup2_root(),
        kprobe_support=os.path.exists("/sys/bus/event_source/devices/kprobe"),
    )
    try:
        report.libbpf = libbpf.version()
    except libbpf.LibbpfMissing as exc:
        report.problems.append(str(exc))
    if not report.btf:
        report.problems.append("no kernel BTF (/sys/kernel/btf/vmlinux): CO-RE programs cannot load")
    if not report.bpf_object_present:
        report.problems.append(f"BPF object missing: {obj} (run `make bpf`)")
    if report.missing_privileges:
        report.problems.append(
            f"missing privileges: {', '.join(report.missing_privileges)} (run as root, e.g. `sudo sockscope doctor`)"
        )
    if report.problems:
        return report
    collector = Collector(options)
    for group in ALL_GROUPS:
        hooks = collector.probe(group)
        attached = bool(hooks) and all(h.attached for h in hooks)
        role = "count" if group in COUNT_GROUPS else "detail"
        report.groups.append(GroupReport(group.name, group.what, role, attached, hooks))
        if role == "count" and attached and report.selected is None:
            report.selected = group.name
    if report.selected is None:
        report.problems.append("no counting hook could attach")
    return report


def render(report: DoctorReport) -> str:
    mark = {True: "ok  ", False: "FAIL"}
    lines = [
        f"kernel      {report.kernel}",
        f"BTF         {'present' if report.btf else 'missing'}",
        f"lockdown    {report.lockdown or 'unknown'}",
        f"privileges  euid {report.euid}, "
        + ("all needed" if not report.missing_privileges else "missing " + ", ".join(report.missing_privileges)),
        f"libbpf      {report.libbpf or 'not loadable'}",
        f"BPF object  {report.bpf_object}{'' if report.bpf_object_present else ' (missing)'}",
        f"cgroup v2   {report.cgroup2 or 'not mounted'}",
        f"kprobes     {'available' if report.kprobe_support else 'not available (CONFIG_KPROBES off)'}",
        "",
        "hooks:",
    ]
    for g in report.groups:
        chosen = "  <- counting with this" if g.name == report.selected else ""
        lines.append(f"  [{mark[g.attached]}] {g.name:<11} {g.role:<6} {g.what}{chosen}")
        errors = sorted({h.error for h in g.hooks if h.error})
        for h in g.hooks:
            if h.attached:
                lines.append(f"           {h.target or h.program}: attached")
        for err in errors:
            lines.append(f"           {err}")
    lines.append("")
    if report.ok:
        lines.append(f"OK: monitoring works here, counting with the '{report.selected}' hooks.")
        missing = [g.name for g in report.groups if g.role == "detail" and not g.attached]
        if missing:
            lines.append(f"Without {', '.join(missing)}: counts stay exact, with less detail.")
    else:
        lines.append("NOT OK: " + "; ".join(report.problems))
    return "\n".join(lines)


@dataclass
class CheckReport:
    """Reconciliation: what the interfaces carried against what was attributed, over one period."""

    seconds: float
    interfaces: dict[str, dict[str, int]]
    attributed_tx: int
    attributed_rx: int
    unattributed_tx: int
    unattributed_rx: int
    dropped_events: int
    dropped_bytes: int
    lifecycle_events_lost: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def reconcile(source: Source, seconds: float, step: float = 1.0) -> CheckReport:
    """Count for `seconds` with a started source, beside /proc/net/dev."""
    before = netdev.read_net_dev()
    source.read()  # start the period clean
    totals = [0] * 7
    deadline = time.monotonic() + seconds
    while True:
        time.sleep(max(0.0, min(step, deadline - time.monotonic())))
        iv = source.read()
        c = iv.counters
        for i, v in enumerate(
            (iv.tx_bytes, iv.rx_bytes, iv.unattributed_tx, iv.unattributed_rx, c.dropped_events, c.dropped_bytes,
             c.events_lost)
        ):  # fmt: skip
            totals[i] += v
        if time.monotonic() >= deadline:
            break
    after = netdev.read_net_dev()
    ifaces = {
        name: {"rx_bytes": d.rx_bytes, "tx_bytes": d.tx_bytes, "rx_packets": d.rx_packets, "tx_packets": d.tx_packets}
        for name, d in sorted(netdev.delta(before, after).items())
    }
    return CheckReport(seconds, ifaces, *totals)


def render_check(r: CheckReport) -> str:
    wire_tx = sum(i["tx_bytes"] for i in r.interfaces.values())
    wire_rx = sum(i["rx_bytes"] for i in r.interfaces.values())
    lines = [f"over {r.seconds:g} s:", f"  {'interface':<16} {'sent':>14} {'received':>14} {'packets out':>12}"]
    for name, i in r.interfaces.items():
        lines.append(f"  {printable(name):<16} {i['tx_bytes']:>14,} {i['rx_bytes']:>14,} {i['tx_packets']:>12,}")
    lines += [
        f"  {'all interfaces':<16} {wire_tx:>14,} {wire_rx:>14,}",
        f"  {'attributed':<16} {r.attributed_tx:>14,} {r.attributed_rx:>14,}   (payload; a process each)",
        f"  {'unattributed':<16} {r.unattributed_tx:>14,} {r.unattributed_rx:>14,}   (no process context)",
        f"  dropped: {r.dropped_events:,} events ({r.dropped_bytes:,} bytes) for a full flow map; "
        f"{r.lifecycle_events_lost:,} open/close events lost",
        "Interface bytes include protocol headers, loopback traffic counts on lo both ways, and traffic of",
        "other network namespaces is attributed here but carried by their own interfaces.",
    ]
    return "\n".join(lines)
