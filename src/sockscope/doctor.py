"""`sockscope doctor`: what this kernel allows, and which hooks attach."""

from __future__ import annotations

import os
import subprocess
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
from sockscope.names.resolved import ResolvedMonitor
from sockscope.output.safe import printable


@dataclass
class GroupReport:
    name: str
    what: str
    role: str  # "count" or "detail"
    attached: bool
    hooks: list[HookStatus]
    reason: str = ""  # why it did not attach (one line), or which optional programs were left out


@dataclass
class DoctorReport:
    kernel: str
    btf: bool
    lockdown: str | None
    lockdown_unknown: str | None
    euid: int
    missing_privileges: list[str]
    libbpf: str | None
    bpf_object: str
    bpf_object_present: bool
    cgroup2: str | None
    kprobe_support: bool
    groups: list[GroupReport] = field(default_factory=list)
    selected: str | None = None
    forced: str | None = None  # --hooks GROUP
    # names: systemd-resolved's query monitor, a second source besides the DNS answers read
    resolved_monitor: str = "not checked"
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.selected is not None and not self.problems

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


LOCKDOWN = "/sys/kernel/security/lockdown"


def parse_lockdown(text: str) -> str:
    """The active mode of `none [integrity] confidentiality`."""
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else text.strip()


def _lockdown(path: str = LOCKDOWN) -> tuple[str | None, str | None]:
    """(mode, None), or (None, why it could not be read). When securityfs is not mounted it is
    mounted read-only in a private mount namespace of a child, so the host's mounts stay as they are."""
    try:
        with open(path, encoding="ascii") as f:
            return parse_lockdown(f.read()), None
    except FileNotFoundError:
        pass
    except OSError as exc:
        return None, f"{path}: {exc.strerror}"
    if path != LOCKDOWN:
        return None, f"{path} does not exist"
    script = f"mount -t securityfs -o ro securityfs /sys/kernel/security && cat {path}"
    try:
        res = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"securityfs is not mounted and could not be: {exc}"
    if res.returncode != 0:
        why = (res.stderr.strip().splitlines() or ["failed"])[-1]
        return None, f"securityfs is not mounted and could not be mounted ({why})"
    if not res.stdout.strip():
        return None, "no lockdown LSM in this kernel"
    return parse_lockdown(res.stdout), None


def _group_reason(hooks: list[HookStatus]) -> str:
    """One reason for a group: its first error, and how many programs share it."""
    errors = [h.error.split(" [libbpf:")[0] for h in hooks if h.error]  # libbpf's words: --verbose
    if not errors:
        absent = [h.absent for h in hooks if h.absent]
        return "; ".join(dict.fromkeys(absent))
    first = errors[0]
    same = sum(1 for e in errors if e == first)
    more = len(errors) - same
    text = first + (f" ({same} programs)" if same > 1 else "")
    return text + (f"; {more} other failures" if more else "") + "; --verbose: each program, libbpf's words"


def diagnose(options: CollectorOptions | None = None) -> DoctorReport:
    options = options or CollectorOptions()
    obj = options.object_path or str(default_object_path())
    lockdown, lockdown_why = _lockdown()
    report = DoctorReport(
        kernel=os.uname().release,
        btf=os.path.exists("/sys/kernel/btf/vmlinux"),
        lockdown=lockdown,
        lockdown_unknown=lockdown_why,
        euid=os.geteuid(),
        missing_privileges=missing_privileges(effective_caps()),
        libbpf=None,
        bpf_object=obj,
        bpf_object_present=os.path.exists(obj),
        cgroup2=cgroup2_root(),
        kprobe_support=os.path.exists("/sys/bus/event_source/devices/kprobe"),
        forced=options.count_groups[0] if len(options.count_groups) == 1 else None,
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
    monitor = ResolvedMonitor()
    report.resolved_monitor = monitor.start()
    monitor.close()
    collector = Collector(options)
    for group in ALL_GROUPS:
        hooks = collector.probe(group)
        attached = bool(hooks) and all(h.ok for h in hooks)
        role = "count" if group in COUNT_GROUPS else "detail"
        report.groups.append(GroupReport(group.name, group.what, role, attached, hooks, _group_reason(hooks)))
        if role == "count" and attached and report.selected is None and group.name in options.count_groups:
            report.selected = group.name
    if report.selected is None:
        if report.forced:
            report.problems.append(f"the forced '{report.forced}' hooks cannot count here (--hooks)")
        else:
            report.problems.append("no counting hook could attach")
    return report


def render(report: DoctorReport, verbose: bool = False) -> str:
    mark = {True: "ok  ", False: "FAIL"}
    lockdown = report.lockdown or f"unknown: {report.lockdown_unknown or 'not readable'}"
    lines = [
        f"kernel      {report.kernel}",
        f"BTF         {'present' if report.btf else 'missing'}",
        f"lockdown    {lockdown}",
        f"privileges  euid {report.euid}, "
        + ("all needed" if not report.missing_privileges else "missing " + ", ".join(report.missing_privileges)),
        f"libbpf      {report.libbpf or 'not loadable'}",
        f"BPF object  {report.bpf_object}{'' if report.bpf_object_present else ' (missing)'}",
        f"cgroup v2   {report.cgroup2 or 'not mounted'}",
        f"kprobes     {'available' if report.kprobe_support else 'not available (CONFIG_KPROBES off)'}",
        f"names       DNS answers as programs read them; systemd-resolved monitor: {report.resolved_monitor}",
        "",
        "hooks:" + (f" (--hooks {report.forced})" if report.forced else ""),
    ]
    for g in report.groups:
        chosen = "  <- counting with this" if g.name == report.selected else ""
        lines.append(f"  [{mark[g.attached]}] {g.name:<11} {g.role:<6} {g.what}{chosen}")
        if g.reason:
            lines.append(f"{'':<9}{'' if not g.attached else 'left out: '}{g.reason}")
        if verbose:
            for h in g.hooks:
                state = "attached" if h.attached else (f"left out: {h.absent}" if h.absent else h.error)
                lines.append(f"{'':<11}{h.program} ({h.target or '-'}): {state}")
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
