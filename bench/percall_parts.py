"""The moving parts of bench/percall.py: building and running the ping-pong, the floor's empty
BPF programs, the monitor configurations, the kernel's per-program run-time statistics, and the
collector's user-space cost under many connections."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.overhead import BenchError, Children, Monitor, log

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
PINGPONG_SRC = BENCH_DIR / "pingpong.c"
FLOOR_SRC = BENCH_DIR / "floor.bpf.c"
CONNS_SCRIPT = BENCH_DIR / "percall_conns.py"
VMLINUX_H = REPO_ROOT / "build" / "vmlinux.h"
STATS_KNOB = Path("/proc/sys/kernel/bpf_stats_enabled")
MONITOR_START_TIMEOUT = 60.0
FLOOR_SEND_RECV = ("floor_send", "floor_recv")
FLOOR_ALL = (*FLOOR_SEND_RECV, "floor_rcvspace")


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    proto: str  # tcp | udp
    sockets: int  # connections the thread cycles through


MODES: tuple[Mode, ...] = (Mode("tcp", "tcp", 1), Mode("udp", "udp", 1), Mode("tcp4", "tcp", 4), Mode("udp4", "udp", 4))


@dataclass(frozen=True, slots=True)
class Setup:
    """One configuration measured against `none`: kind none | floor | sockscope."""

    name: str
    kind: str
    programs: tuple[str, ...] = ()  # floor: the programs attached
    args: tuple[str, ...] = ()  # sockscope: extra arguments of `sockscope top`


@dataclass(slots=True)
class PingResult:
    ns_per_round: float  # median of the repeats
    repeats: list[float]
    total_rounds: int  # warm-up included
    switches: list[int] = field(default_factory=list)  # involuntary context switches during each repeat


def tool(name: str, fallback: str | None = None) -> str | None:
    found = shutil.which(name)
    if found is None and fallback is not None and os.access(fallback, os.X_OK):
        return fallback
    return found


def run_checked(argv: Sequence[str], what: str, timeout: float = 120.0) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        raise BenchError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def build_c(src: Path, workdir: Path) -> Path:
    """One of the benchmarks' C programs (bench/NAME.c), compiled with cc -O2 into workdir/NAME."""
    cc = tool("cc") or tool("gcc")
    if cc is None:
        raise BenchError("no C compiler (cc/gcc)")
    exe = workdir / src.stem
    run_checked([cc, "-O2", "-Wall", "-o", str(exe), str(src)], f"compiling bench/{src.name}")
    return exe


def build_pingpong(workdir: Path) -> Path:
    return build_c(PINGPONG_SRC, workdir)


def ensure_vmlinux_h(bpftool: str) -> Path:
    """build/vmlinux.h as the Makefile makes it (left in place, as `make bpf` would)."""
    if not VMLINUX_H.is_file():
        log(f"generating {VMLINUX_H} with bpftool")
        text = run_checked([bpftool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"], "bpftool btf")
        VMLINUX_H.parent.mkdir(parents=True, exist_ok=True)
        tmp = VMLINUX_H.with_suffix(".h.tmp")
        tmp.write_text(text)
        tmp.rename(VMLINUX_H)
    return VMLINUX_H


def build_floor(workdir: Path, clang: str, bpftool: str, arch: str) -> Path:
    vmlinux = ensure_vmlinux_h(bpftool)
    obj = workdir / "floor.bpf.o"
    argv = [clang, "-g", "-O2", "-Wall", "-target", "bpf", f"-D__TARGET_ARCH_{arch}"]
    argv += ["-I", str(vmlinux.parent), "-c", str(FLOOR_SRC), "-o", str(obj)]
    run_checked(argv, "compiling bench/floor.bpf.c")
    return obj


def parse_pingpong(out: str) -> PingResult:
    repeats: list[float] = []
    total = 0
    switches: list[int] = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total_rounds":
            total = int(parts[1])
        elif len(parts) == 4:
            repeats.append(float(parts[0]))
            switches.append(int(parts[3]))
    if not repeats or total <= 0:
        raise BenchError(f"pingpong printed no measurement: {out.strip()[:200]!r}")
    return PingResult(statistics.median(repeats), repeats, total, switches)


@dataclass(frozen=True, slots=True)
class PingPong:
    exe: Path
    cpu: int
    warmup: int
    repeats: int
    max_seconds: int

    def run(self, children: Children, mode: Mode, rounds: int) -> PingResult:
        argv = [str(self.exe), mode.proto, str(mode.sockets), str(self.cpu), str(self.warmup), str(rounds)]
        argv += [str(self.repeats), str(self.max_seconds)]
        proc = children.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=self.max_seconds + 10)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise BenchError(f"pingpong {mode.name} hung") from exc
        finally:
            children.forget(proc)
        if proc.returncode != 0:
            raise BenchError(f"pingpong {mode.name} exited {proc.returncode}: {err.strip()}")
        return parse_pingpong(out)


class Floor:
    """bench/floor.bpf.c loaded once through sockscope's own libbpf binding; attach() per run.
    `names`: the programs loaded (a kernel lacks some groups' hooks: tp_btf before 6.3, fexit
    where it is refused); all when None."""

    def __init__(self, obj_path: Path, names: Sequence[str] | None = None) -> None:
        from sockscope.bpf.libbpf import Link, Object, Program

        self._links: list[Link] = []
        self._obj = Object(str(obj_path))
        try:
            if names is not None:
                for prog in self._obj.programs():
                    prog.set_autoload(prog.name in names)
            self._obj.load()
        except Exception:
            self._obj.close()
            raise
        self._progs: dict[str, Program] = {p.name: p for p in self._obj.programs()}

    @contextlib.contextmanager
    def attached(self, names: Sequence[str]) -> Iterator[None]:
        try:
            self.attach(names)
            yield
        finally:
            self.detach()

    def attach(self, names: Sequence[str]) -> None:
        for name in names:
            self._links.append(self._progs[name].attach())

    def detach(self) -> None:
        while self._links:
            self._links.pop().destroy()

    def close(self) -> None:
        self.detach()
        self._obj.close()


@dataclass(slots=True)
class Active:
    """A configuration in force: what it costs to start, and whose programs to watch."""

    setup: Setup
    pid: int  # process holding the programs (the bench itself for the floor)
    startup_s: float | None = None
    monitor: Monitor | None = None
    names: tuple[str, ...] = ()  # floor: program names to watch


class StartedMonitor(Monitor):
    startup_s: float | None = None


def start_monitor(children: Children, sockscope: Path, workdir: Path, index: int, setup: Setup) -> StartedMonitor:
    """`sockscope top` with its programs attached; one more try when a start fails (the tree
    may be caught mid-edit by someone else: a second failure is the answer)."""
    for attempt in (1, 2):
        mon = StartedMonitor(children, sockscope, workdir, index * 10 + attempt, setup.args)
        try:
            mon.startup_s = mon.wait_attached(MONITOR_START_TIMEOUT)
            return mon
        except BenchError as exc:
            mon.stop()
            if attempt == 2:
                raise
            log(f"  warning: {setup.name} did not start, trying once more in 5 s: {exc}")
            time.sleep(5.0)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def activate(
    setup: Setup, children: Children, floor: Floor | None, sockscope: Path, workdir: Path, index: int
) -> Iterator[Active]:
    if setup.kind == "none":
        yield Active(setup, os.getpid())
    elif setup.kind == "floor":
        if floor is None:
            raise BenchError("floor configuration without the floor object")
        with floor.attached(setup.programs):
            yield Active(setup, os.getpid(), names=setup.programs)
    else:
        mon = start_monitor(children, sockscope, workdir, index, setup)
        try:
            assert mon.startup_s is not None
            yield Active(setup, mon.proc.pid, mon.startup_s, mon)
            if not mon.alive():
                raise BenchError(f"{setup.name}: sockscope exited ({mon.proc.returncode}): {mon.stderr_tail()}")
        finally:
            code = mon.stop()
            if code not in (0, None):
                log(f"  warning: {setup.name} exited {code} on SIGINT: {mon.stderr_tail()}")


def code_state() -> str:
    """What sockscope code is measured: HEAD, whether src/ or bpf/ differ from it, the BPF object's hash."""
    import hashlib

    obj = REPO_ROOT / "src" / "sockscope" / "bpf" / "sockscope.bpf.o"
    git = ["git", "-C", str(REPO_ROOT)]
    try:
        head = run_checked([*git, "rev-parse", "--short", "HEAD"], "git rev-parse", timeout=10).strip()
        dirty = run_checked([*git, "status", "--porcelain", "--", "src", "bpf"], "git status", timeout=10).strip()
    except BenchError:
        head, dirty = "unknown", ""
    digest = hashlib.sha256(obj.read_bytes()).hexdigest()[:12] if obj.is_file() else "missing"
    return f"HEAD {head}, src/ and bpf/ {'MODIFIED' if dirty else 'as committed'}, sockscope.bpf.o sha256 {digest}"


# --- kernel.bpf_stats_enabled ---------------------------------------------------------------


@contextlib.contextmanager
def bpf_stats_enabled() -> Iterator[None]:
    old = STATS_KNOB.read_text().strip()
    STATS_KNOB.write_text("1")
    try:
        yield
    finally:
        STATS_KNOB.write_text(old)


def prog_ids_of(pid: int) -> set[int]:
    """Ids of the BPF programs a process holds (prog and link fds carry `prog_id:` in fdinfo)."""
    ids: set[int] = set()
    base = Path(f"/proc/{pid}/fdinfo")
    for entry in base.iterdir():
        with contextlib.suppress(OSError):
            for line in entry.read_text().splitlines():
                if line.startswith("prog_id:"):
                    ids.add(int(line.split()[1]))
    return ids


def bpftool_progs(bpftool: str) -> list[dict[str, Any]]:
    progs = json.loads(run_checked([bpftool, "-j", "prog", "show"], "bpftool prog show", timeout=30))
    return [p for p in progs if isinstance(p, dict)]


def watched_stats(bpftool: str, active: Active) -> dict[str, tuple[int, int]]:
    """name -> (run_cnt, run_time_ns) of the programs of a configuration in force."""
    ids = prog_ids_of(active.pid)
    out: dict[str, tuple[int, int]] = {}
    for p in bpftool_progs(bpftool):
        name = str(p.get("name", p.get("id")))
        if p.get("id") not in ids or (active.setup.kind == "floor" and name not in active.names):
            continue
        out[name] = (int(p.get("run_cnt", 0)), int(p.get("run_time_ns", 0)))
    return out


def foreign_programs(bpftool: str) -> list[str]:
    """Tracing and cgroup programs loaded by someone else: they would be measured as the floor."""
    mine = prog_ids_of(os.getpid())
    return sorted(
        {
            f"{p.get('name', '?')} ({p.get('type')})"
            for p in bpftool_progs(bpftool)
            if p.get("id") not in mine
            and p.get("type") in ("tracing", "cgroup_sock_addr", "raw_tracepoint", "tracepoint")
        }
    )
