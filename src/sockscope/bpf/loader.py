"""Load sockscope.bpf.o, choose the hooks this kernel allows, attach, and read.

One counting group is attached: the first of COUNT_GROUPS that loads and
attaches. The auxiliary groups (TCP facts, UDP peers) are attached beside it
when they can be; without them counting still works, with less detail.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sockscope.bpf import abi, libbpf
from sockscope.bpf.kretprobes import Kretprobes
from sockscope.bpf.reads import CollectorError as CollectorError  # raised here too; re-exported
from sockscope.bpf.reads import Reads
from sockscope.bpf.splice import SpliceClaims

# Where sock_sendmsg/sock_recvmsg dispatch to a family: one call per send or receive, the
# same return value the length tracepoints see. inet_sendpage exists only before 6.5 (sendfile()
# and splice() to a socket; later they go through sendmsg); packet_* may sit in a module.
SEND_FUNCS = ("inet_sendmsg", "inet6_sendmsg", "packet_sendmsg", "inet_sendpage")
RECV_FUNCS = ("inet_recvmsg", "inet6_recvmsg", "packet_recvmsg")
FUNCS = SEND_FUNCS + RECV_FUNCS
# Functions a kernel may lack without losing anything it can do (see above).
OPTIONAL_FUNCS = frozenset({"inet_sendpage", "packet_sendmsg", "packet_recvmsg"})
# TCP receives are counted as advances of copied_seq (exact for splice() too; see ss_rxseq in
# sockscope.bpf.c): claimed by the receive hook itself, by ITER before reads and by DESTROY at
# a socket's end; the kprobe group, whose returns cannot reach socket storage, claims at RCVSPACE.
RCVSPACE = "ss_tp_rcvspace"
DESTROY = "ss_tp_destroy"
END = "ss_tp_end"  # live events: a TCP socket's end with its totals (CollectorOptions.live)
ITER = "ss_iter_rxseq"
SPLICE_PROGS = (DESTROY, ITER)
# Every new task moves the generation of its stack's blocks, by which the counting programs tell a
# thread without a helper call (ss_ident in sockscope.bpf.c): first in every counting group, so it
# is attached before anything counts.
NEWTASK = "ss_tp_newtask"


@dataclass(frozen=True)
class HookGroup:
    name: str
    programs: tuple[str, ...]
    what: str
    cgroup: bool = False
    # program -> kernel function it hooks, for those a kernel may lack (left out, and said so)
    optional: tuple[tuple[str, str], ...] = ()


COUNT_GROUPS = (
    HookGroup(
        "tracepoint",
        (NEWTASK, "ss_tp_send", "ss_tp_recv", *SPLICE_PROGS),
        "sock:sock_send_length / sock:sock_recv_length (TCP reads, splice() included, claimed by copied_seq)",
    ),
    HookGroup(
        "fentry",
        (NEWTASK, *(f"ss_fx_{f}" for f in FUNCS), *SPLICE_PROGS),
        "fexit on inet/inet6/packet sendmsg and recvmsg (and inet_sendpage before 6.5)",
        optional=tuple((f"ss_fx_{f}", f) for f in FUNCS if f in OPTIONAL_FUNCS),
    ),
    HookGroup(
        "kprobe",
        (NEWTASK, *(p for f in FUNCS for p in (f"ss_kp_{f}", f"ss_krp_{f}")), RCVSPACE, *SPLICE_PROGS),
        "kprobe/kretprobe on the same functions, tcp:tcp_rcv_space_adjust for TCP reads",
        optional=tuple((p, f) for f in FUNCS if f in OPTIONAL_FUNCS for p in (f"ss_kp_{f}", f"ss_krp_{f}")),
    ),
)
COUNT_GROUP_NAMES = tuple(g.name for g in COUNT_GROUPS)
AUX_GROUPS = (
    HookGroup(
        "tcp_state",
        ("ss_tp_state", END),
        "sock:inet_sock_set_state: TCP endpoints, state, who opened; tcp:tcp_destroy_sock: the end (live events)",
    ),
    HookGroup(
        "udp_peers",
        ("ss_sendmsg4", "ss_sendmsg6", "ss_recvmsg4", "ss_recvmsg6"),
        "cgroup sendmsg/recvmsg: the peer of each unconnected UDP datagram",
        cgroup=True,
    ),
)
ALL_GROUPS = COUNT_GROUPS + AUX_GROUPS


@dataclass(frozen=True)
class HookStatus:
    group: str
    program: str
    target: str
    attached: bool
    error: str | None = None
    absent: str | None = None  # an optional program left out: why (the kernel lacks its function)

    @property
    def ok(self) -> bool:
        return self.attached or self.absent is not None


@dataclass(frozen=True)
class CollectorOptions:
    max_flows: int = 16384  # distinct (socket, process, peer) keys per interval
    max_sockets: int = 65536
    max_processes: int = 16384
    capture_args: bool = True
    object_path: str | None = None
    count_groups: tuple[str, ...] = COUNT_GROUP_NAMES  # in order of preference; one: forced (--hooks)
    udp_idle: float = 60.0  # seconds without traffic that end a UDP flow (user space)
    # Count TCP receives as advances of copied_seq: exact for splice() too. Off: the receive
    # calls' own return values, a little cheaper, splice() reads from TCP unseen.
    splice: bool = True
    # Capture the DNS answers processes read (names for their connections: sockscope.names).
    dns: bool = True
    # Reverse DNS (PTR) for peers no program resolved: queries of sockscope's own, so off by default.
    ptr: bool = False
    # Live events (sockscope.events): listeners, TCP ends with totals and UDP flow starts in the
    # ring buffer too, read as they come by a thread of their own.
    live: bool = False
    # Slots of ss_claims (a power of two), where TCP sockets keep how far their reads were
    # counted; a socket whose slot another holds uses its socket storage (slower, as exact).
    claim_slots: int = 65536

    def __post_init__(self) -> None:
        n = self.claim_slots
        if n < 1 or n & (n - 1):
            raise ValueError(f"claim_slots must be a power of two, got {n}")


def count_groups_for(hooks: str) -> tuple[str, ...]:
    """The counting groups to try for a --hooks value: all in order for "auto", else the one forced."""
    if hooks == "auto":
        return COUNT_GROUP_NAMES
    if hooks not in COUNT_GROUP_NAMES:
        raise ValueError(f"unknown hook group {hooks!r}: use auto, {', '.join(COUNT_GROUP_NAMES)}")
    return (hooks,)


def default_object_path() -> Path:
    return Path(str(resources.files("sockscope.bpf").joinpath("sockscope.bpf.o")))


def cgroup2_root(mounts: str = "/proc/self/mounts") -> str | None:
    """Mount point of the cgroup v2 hierarchy (not always /sys/fs/cgroup)."""
    try:
        with open(mounts, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "cgroup2":
                    return parts[1].replace("\\040", " ")
    except OSError:
        return None
    return None


@contextlib.contextmanager
def _cgroup_dir() -> Iterator[int | None]:
    """An fd of the cgroup v2 root, where the sock_addr hooks attach (None: not mounted)."""
    root = cgroup2_root()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY) if root else None
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


_HINTS = {
    "fentry": "this kernel refuses fentry/fexit programs (kernel lockdown or a security policy)",
    "kprobe": "this kernel has no kprobe support (CONFIG_KPROBES off)",
}


def kernel_functions(names: Iterable[str], kallsyms: str = "/proc/kallsyms") -> set[str]:
    """Which of names are functions of the running kernel or its loaded modules."""
    try:
        with open(kallsyms, "rb") as f:
            text = f.read()
    except OSError:
        return set(names)  # cannot tell: try them all, a failure then says why
    # Lines are "addr type name" or "addr type name\t[module]".
    return {n for n in names if f" {n}\n".encode() in text or f" {n}\t".encode() in text}


def absent_programs(group: HookGroup, kallsyms: str = "/proc/kallsyms") -> dict[str, str]:
    """Optional programs of group whose kernel function is missing here: program -> why."""
    if not group.optional:
        return {}
    present = kernel_functions({f for _, f in group.optional}, kallsyms)
    return {
        prog: f"{func}() is not in this kernel (nothing goes through it here)"
        for prog, func in group.optional
        if func not in present
    }


def _hint(group: HookGroup, err: libbpf.LibbpfError, stage: str) -> str:
    msg = f"{stage} failed: {os.strerror(err.errno or errno.EINVAL)}"
    if group.name == "kprobe" and not os.path.exists("/sys/bus/event_source/devices/kprobe"):
        msg += f"; {_HINTS['kprobe']}"
    elif group.name == "fentry" and stage == "load" and err.errno == errno.EPERM:
        msg += f"; {_HINTS['fentry']}"
    elif group.name == "tracepoint" and err.errno in (errno.ESRCH, errno.ENOENT, errno.EINVAL):
        msg += "; this kernel lacks the tracepoints (they arrived in Linux 6.3)"
    # libbpf guesses at RLIMIT_MEMLOCK on any EPERM; with memcg accounting that guess misleads.
    tail = [ln for ln in err.detail.splitlines() if ln.strip() and "ulimit -l" not in ln][-3:]
    if tail:
        msg += " [libbpf: " + " | ".join(t.strip() for t in tail) + "]"
    return msg


class Collector(Reads):
    """The kernel side, loaded and attached. Use start(), then read() once per interval."""

    def __init__(self, options: CollectorOptions | None = None) -> None:
        self.options = options or CollectorOptions()
        self.hooks: list[HookStatus] = []
        self.group: str | None = None
        self._obj: libbpf.Object | None = None
        self._links: list[libbpf.Link] = []
        self._paused: set[str] = set()
        self._ncpu = 0
        self._active = 0
        self._prev_stats = [0] * abi.SS_STAT_MAX
        self._last_read = 0.0
        self._events: libbpf.RingBuffer | None = None
        self._dns_events: libbpf.RingBuffer | None = None
        self._absent: dict[str, str] | None = None
        self._kretprobes: Kretprobes | None = None  # the kprobe group's returns (see kretprobes.py)
        self.splice: SpliceClaims | None = None  # ITER, run before reads (bpf/splice.py)
        self._maps: dict[str, libbpf.Map] = {}
        self._prev_missed = 0

    def absent(self) -> dict[str, str]:
        """Optional programs this kernel has no function for: program -> why (read once)."""
        if self._absent is None:
            self._absent = {}
            for g in COUNT_GROUPS:
                self._absent.update(absent_programs(g))
        return self._absent

    # ---- loading ----

    def _object_path(self) -> str:
        path = self.options.object_path or str(default_object_path())
        if not os.path.exists(path):
            raise CollectorError(
                f"The BPF object {path} is missing: the package was installed without building it. "
                "Run `make bpf` in the source tree (needs clang and bpftool), then try again."
            )
        return path

    def _open(self, programs: set[str]) -> libbpf.Object:
        obj = libbpf.Object(self._object_path())
        if not self.options.splice:
            programs = programs - {RCVSPACE, *SPLICE_PROGS}
        if not self.options.live:
            programs = programs - {END}
        if any(p.startswith(("ss_fx_", "ss_kp_", "ss_krp_")) for p in programs):
            programs = programs - set(self.absent())
        try:
            for prog in obj.programs():
                prog.set_autoload(prog.name in programs)
            for name in ("ss_flows_a", "ss_flows_b"):
                obj.map(name).set_max_entries(self.options.max_flows)
            obj.map("ss_socks").set_max_entries(self.options.max_sockets)
            obj.map("ss_procs").set_max_entries(self.options.max_processes)
            obj.map("ss_claims").set_max_entries(self.options.claim_slots)
            cfg = abi.Config(
                capture_args=int(self.options.capture_args),
                tcp_rx_by_seq=int(self.options.splice),
                dns=int(self.options.dns),
                live=int(self.options.live),
                claim_mask=self.options.claim_slots - 1,
            )
            obj.map(".rodata").write_initial_value(bytes(cfg))
            obj.load()
        except BaseException:
            obj.close()
            raise
        return obj

    def _attach(self, obj: libbpf.Object, group: HookGroup, cgroup_fd: int | None) -> list[HookStatus]:
        out: list[HookStatus] = []
        byname = {p.name: p for p in obj.programs()}
        absent = self.absent() if group.optional else {}
        for name in group.programs:
            if name == NEWTASK and name not in byname:
                continue  # an object built before the stack idents (bench --toggle-object) needs none
            prog = byname[name]
            if name in absent:
                out.append(HookStatus(group.name, name, prog.section, False, absent=absent[name]))
                continue
            if not prog.autoload:  # left out by an option
                continue
            try:
                if group.cgroup:
                    if cgroup_fd is None:
                        raise libbpf.LibbpfError("cgroup v2", errno.ENOENT, "no cgroup v2 hierarchy is mounted")
                    self._links.append(prog.attach_cgroup(cgroup_fd))
                elif name == ITER:
                    link = prog.attach_iter()
                    self._links.append(link)
                    self.splice = SpliceClaims(link)
                else:
                    self._links.append(self._attach_tracing(prog))
                out.append(HookStatus(group.name, name, prog.section, True))
            except libbpf.LibbpfError as exc:
                out.append(HookStatus(group.name, name, prog.section, False, _hint(group, exc, "attach")))
        return out

    def _attach_tracing(self, prog: libbpf.Program) -> libbpf.Link:
        """A tracing program, at start and again at resume(): kretprobes through tracefs."""
        if prog.name.startswith("ss_krp_"):
            return self._attach_kretprobe(prog, prog.name.removeprefix("ss_krp_"))
        return prog.attach()

    def _attach_kretprobe(self, prog: libbpf.Program, func: str) -> libbpf.Link:
        """A kretprobe with room for MAXACTIVE calls in flight, made through tracefs."""
        try:
            if self._kretprobes is None:
                self._kretprobes = Kretprobes.open()
            fd = self._kretprobes.add(func)
        except OSError as exc:
            raise libbpf.LibbpfError(f"kretprobe {func}", exc.errno or errno.ENOENT, str(exc)) from None
        try:
            return prog.attach_perf_event(fd)
        except libbpf.LibbpfError:
            os.close(fd)
            raise

    def _failed(self, group: HookGroup, err: str) -> list[HookStatus]:
        return [HookStatus(group.name, p, "", False, err) for p in group.programs]

    def start(self) -> None:
        """Load and attach the best hooks; raise CollectorError when none count."""
        check_privileges()
        try:
            self._ncpu = libbpf.num_possible_cpus()
        except libbpf.LibbpfMissing as exc:
            raise CollectorError(f"{exc}. sockscope loads BPF programs through the distribution's libbpf.") from exc
        tried: list[HookStatus] = []
        with _cgroup_dir() as cgroup_fd:
            groups = [g for g in COUNT_GROUPS if g.name in self.options.count_groups]
            for group in groups:
                obj, aux_failed = self._load_best(group)
                if obj is None:
                    tried += aux_failed
                    continue
                statuses = self._attach(obj, group, cgroup_fd)
                if not all(s.ok for s in statuses):
                    self._detach()
                    obj.close()
                    tried += statuses
                    continue
                loaded_aux = [g for g in AUX_GROUPS if g.name not in {s.group for s in aux_failed}]
                for aux in loaded_aux:
                    statuses += self._attach(obj, aux, cgroup_fd)
                self._obj = obj
                self._events = libbpf.RingBuffer(obj.map("ss_events"))
                self._dns_events = libbpf.RingBuffer(obj.map("ss_dns"))
                self.group = group.name
                self.hooks = tried + statuses + aux_failed
                self._last_read = time.monotonic()
                return
        self.hooks = tried
        first_error = {s.group: s.error for s in reversed(tried) if s.error}
        reasons = "; ".join(f"{g.name}: {first_error[g.name]}" for g in groups if g.name in first_error)
        if len(groups) == 1 and len(COUNT_GROUPS) > 1:
            name = groups[0].name
            raise CollectorError(
                f"The '{name}' hooks were asked for (--hooks {name}) and cannot count on this kernel: "
                f"{first_error.get(name, 'they did not attach')}. "
                "Use --hooks auto to let sockscope choose, or run `sockscope doctor` to see what works here."
            )
        raise CollectorError(
            "No way to count socket traffic could be attached on this kernel. "
            f"Tried {', '.join(g.name for g in groups)}: {reasons}. "
            "sockscope needs Linux >= 6.3 (sock_send_length tracepoints), or fentry or kprobes enabled. "
            "Run `sockscope doctor` for details."
        )

    def _load_best(self, group: HookGroup) -> tuple[libbpf.Object | None, list[HookStatus]]:
        """Load group with as many auxiliary groups as load with it.
        Returns (object or None, statuses of what failed to load)."""
        failed: list[HookStatus] = []
        aux = list(AUX_GROUPS)
        try:
            return self._open({p for g in [group, *aux] for p in g.programs}), []
        except libbpf.LibbpfError:
            pass
        try:
            self._open(set(group.programs)).close()
        except libbpf.LibbpfError as exc:
            return None, self._failed(group, _hint(group, exc, "load"))
        ok: list[HookGroup] = []
        for g in aux:
            try:
                self._open(set(group.programs) | set(g.programs)).close()
                ok.append(g)
            except libbpf.LibbpfError as exc:
                failed += self._failed(g, _hint(g, exc, "load"))
        return self._open({p for g in [group, *ok] for p in g.programs}), failed

    def probe(self, group: HookGroup) -> list[HookStatus]:
        """Load and attach one group alone, then detach: what doctor reports."""
        with _cgroup_dir() as cgroup_fd:
            try:
                obj = self._open(set(group.programs))
            except libbpf.LibbpfError as exc:
                return self._failed(group, _hint(group, exc, "load"))
            saved = self._links, self._kretprobes
            self._links, self._kretprobes = [], None
            try:
                return self._attach(obj, group, cgroup_fd)
            finally:
                self._detach()
                self._links, self._kretprobes = saved
                obj.close()

    # ---- for benchmarks: the monitor off and on inside one process ----

    def pause(self, names: Iterable[str]) -> None:
        """Detach these attached tracing programs (the rest stays attached, maps and all). NEWTASK
        stays: the counting programs' slots are safe only while it keeps the stacks' generations."""
        want = set(names) - {NEWTASK}
        keep = []
        for link in self._links:
            if link.program in want:
                link.destroy()
                self._paused.add(link.program)
            else:
                keep.append(link)
        self._links = keep

    def resume(self) -> None:
        """Attach again what pause() detached."""
        if self._obj is None:
            return
        byname = {p.name: p for p in self._obj.programs()}
        for name in sorted(self._paused):
            self._links.append(self._attach_tracing(byname[name]))
        self._paused.clear()

    def _detach(self) -> None:
        for link in reversed(self._links):  # the reverse of attaching: NEWTASK after what counts
            link.destroy()
        self._links = []
        self._paused.clear()
        self.splice = None
        if self._kretprobes is not None:  # their perf events were closed with the links
            self._kretprobes.remove()
            self._kretprobes = None

    def close(self) -> None:
        self._detach()
        for ring in (self._events, self._dns_events):
            if ring is not None:
                ring.close()
        self._events = self._dns_events = None
        self._maps.clear()
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self) -> Collector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- privileges ----

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def effective_caps(status_path: str = "/proc/self/status") -> int:
    with open(status_path, encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing_privileges(caps: int) -> list[str]:
    """Capabilities sockscope still needs, given an effective set."""
    if caps >> CAP_SYS_ADMIN & 1:
        return []
    need = [("CAP_BPF", CAP_BPF), ("CAP_PERFMON", CAP_PERFMON), ("CAP_NET_ADMIN", CAP_NET_ADMIN)]
    return [name for name, bit in need if not caps >> bit & 1]


def check_privileges() -> None:
    missing = missing_privileges(effective_caps())
    if missing:
        raise CollectorError(
            f"Loading the kernel programs needs privileges this process lacks: {', '.join(missing)}. "
            "Run sockscope as root (for example `sudo sockscope top`), or grant the capabilities: "
            "`sudo setcap cap_bpf,cap_perfmon,cap_net_admin+ep` on the Python interpreter of its "
            "virtual environment. To read history without privileges use `sockscope report`."
        )
