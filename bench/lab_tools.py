"""The monitors bench/compare.py runs side by side, behind one interface.

Each tool is a background process whose stdout a thread reads line by line (with arrival times),
started, waited on until it is counting, stopped with SIGINT (SIGKILL after a timeout), and then
asked for what it counted per process: {pid: ProcCount}. What "a byte" is differs:

- sockscope and the bpftrace one-liner count what send/receive calls returned (payload);
- nethogs counts captured frames on the veth (headers included), keyed by the process it finds
  for the connection in /proc; traffic it cannot match goes to "unknown TCP/UDP" rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.overhead import cpu_ticks_from_stat, vmhwm_kib_from_status

STOP_TIMEOUT = 10.0  # SIGINT -> exit, then SIGKILL
READY_TIMEOUT = 60.0

# The bpftrace one-liner: bytes per process from the same two tracepoints sockscope reads.
# ret < 0 is an error, and a MSG_PEEK (flags & 2) receive would count the same bytes twice.
BPFTRACE_PROGRAM = (
    "tracepoint:sock:sock_send_length /args->ret > 0/ { @tx[pid, comm] = sum(args->ret); } "
    "tracepoint:sock:sock_recv_length /args->ret > 0 && (args->flags & 2) == 0/ { @rx[pid, comm] = sum(args->ret); }"
)


class ToolError(RuntimeError):
    """A tool did not start, or its output could not be read."""


@dataclass(slots=True)
class ProcCount:
    name: str
    tx: int = 0
    rx: int = 0


@dataclass(slots=True)
class ToolResult:
    """What a tool reported over one session."""

    procs: dict[int, ProcCount] = field(default_factory=dict)
    unknown: dict[str, ProcCount] = field(default_factory=dict)  # nethogs: "unknown TCP" etc.
    exit_code: int | None = None  # None: killed
    stderr: str = ""


# ---------------------------------------------------------------------------
# Parsers (pure)
# ---------------------------------------------------------------------------


def parse_sockscope_lines(lines: Iterable[Mapping[str, Any]]) -> dict[int, ProcCount]:
    """Sum of tx/rx per pid over `sockscope top --json` interval lines (counts are per interval)."""
    out: dict[int, ProcCount] = {}
    for line in lines:
        procs = line.get("processes")
        if not isinstance(procs, list):
            continue
        for p in procs:
            if not isinstance(p, Mapping) or not isinstance(p.get("pid"), int):
                continue
            c = out.setdefault(p["pid"], ProcCount(str(p.get("comm", ""))))
            c.tx += int(p.get("tx_bytes") or 0)
            c.rx += int(p.get("rx_bytes") or 0)
    return out


def parse_nethogs_row(line: str) -> tuple[str, int, float, float] | None:
    """`program/pid/uid<TAB>sent<TAB>received` -> (program, pid, sent, received); None otherwise.
    The program may be a path and contain slashes, so split from the right."""
    cols = line.rstrip("\n").split("\t")
    if len(cols) != 3:
        return None
    ident = cols[0].rsplit("/", 2)
    if len(ident) != 3 or not ident[1].isdigit():
        return None
    try:
        return ident[0], int(ident[1]), float(cols[1]), float(cols[2])
    except ValueError:
        return None


def parse_nethogs_lines(lines: Iterable[str]) -> tuple[dict[int, ProcCount], dict[str, ProcCount]]:
    """nethogs -t -v 2 output: each refresh block lists running totals in bytes (printed with 6
    significant digits); a process's total is the largest value seen for it. Rows with pid 0 are
    nethogs' "unknown TCP/UDP" buckets for traffic it could not match to a process."""
    procs: dict[int, ProcCount] = {}
    unknown: dict[str, ProcCount] = {}
    for line in lines:
        row = parse_nethogs_row(line)
        if row is None:
            continue
        program, pid, sent, received = row
        c = unknown.setdefault(program, ProcCount(program)) if pid == 0 else procs.setdefault(pid, ProcCount(program))
        c.tx = max(c.tx, round(sent))
        c.rx = max(c.rx, round(received))
    return procs, unknown


def parse_bpftrace_maps(lines: Iterable[Mapping[str, Any]]) -> dict[int, ProcCount]:
    """`bpftrace -f json` map dumps {"type": "map", "data": {"@tx": {"PID,COMM": N}}} -> per pid."""
    out: dict[int, ProcCount] = {}
    for line in lines:
        if line.get("type") != "map" or not isinstance(line.get("data"), Mapping):
            continue
        for map_name, entries in line["data"].items():
            if map_name not in ("@tx", "@rx") or not isinstance(entries, Mapping):
                continue
            for key, value in entries.items():
                pid_text, _, comm = str(key).partition(",")  # comm may contain commas: split once
                if not pid_text.strip().isdigit():
                    continue
                c = out.setdefault(int(pid_text), ProcCount(comm.strip()))
                if map_name == "@tx":
                    c.tx += int(value)
                else:
                    c.rx += int(value)
    return out


# ---------------------------------------------------------------------------
# /proc: CPU time, peak memory and BPF programs of a process tree
# ---------------------------------------------------------------------------


def parent_of(stat: str) -> int:
    # Field 4, after the comm in parentheses (which may contain spaces and parentheses).
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (a tool may fork helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = parent_of(Path(f"/proc/{entry}/stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of one process. From the schedstat of each of its threads, in
    nanoseconds: a monitor that wakes once a second uses a few milliseconds per run, below the
    10 ms resolution of utime + stime in /proc/PID/stat, which is the fallback."""
    try:
        total_ns = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            total_ns += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        return total_ns / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        return cpu_ticks_from_stat(Path(f"/proc/{pid}/stat").read_text()) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def tree_cpu_seconds(root: int) -> float:
    return sum(process_cpu_seconds(pid) for pid in process_tree(root))


def tree_peak_rss_kib(root: int) -> int | None:
    """Sum of the peak resident set sizes (VmHWM) of the tree's processes."""
    total, seen = 0, False
    for pid in process_tree(root):
        try:
            hwm = vmhwm_kib_from_status(Path(f"/proc/{pid}/status").read_text())
        except OSError:
            continue
        if hwm is not None:
            total, seen = total + hwm, True
    return total if seen else None


def bpf_prog_ids(root: int) -> set[int]:
    """Ids of the BPF programs the tree's processes hold (program fds, or links to programs), from
    /proc/PID/fdinfo: this works without bpftool's pid support and ignores programs other
    processes load meanwhile (the kernel test suite may run on the same machine)."""
    ids: set[int] = set()
    for pid in process_tree(root):
        fd_dir = Path(f"/proc/{pid}/fd")
        with contextlib.suppress(OSError):
            for fd in os.listdir(fd_dir):
                try:
                    target = os.readlink(fd_dir / fd)
                    if not target.startswith("anon_inode:bpf"):
                        continue
                    info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                except OSError:
                    continue
                for line in info.splitlines():
                    if line.startswith("prog_id:") and line.split()[1].isdigit():
                        ids.add(int(line.split()[1]))
    return ids


def bpf_programs() -> list[dict[str, Any]]:
    """All loaded BPF programs, as `bpftool -j prog show` lists them."""
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    out = subprocess.run([bpftool, "-j", "prog", "show"], capture_output=True, text=True, timeout=30, check=True)
    progs = json.loads(out.stdout)
    return [p for p in progs if isinstance(p, dict)] if isinstance(progs, list) else []


def new_prog_ids(before: set[int], prefixes: Sequence[str]) -> set[int]:
    """Programs loaded since `before` whose names start with one of `prefixes`. For a tool that
    keeps its programs only through perf-event fds (bpftrace on tracepoints): fdinfo does not name
    them, the names do (bpftrace names a program after its probe, truncated to 15 characters)."""
    if not prefixes:
        return set()
    return {
        int(p["id"])
        for p in bpf_programs()
        if isinstance(p.get("id"), int) and p["id"] not in before and str(p.get("name", "")).startswith(tuple(prefixes))
    }


def bpf_run_time_ns(prog_ids: Iterable[int]) -> int:
    """Total run time of the given programs (needs kernel.bpf_stats_enabled=1 while they run)."""
    wanted = set(prog_ids)
    if not wanted:
        return 0
    return sum(int(p.get("run_time_ns", 0)) for p in bpf_programs() if p.get("id") in wanted)


# ---------------------------------------------------------------------------
# A background tool
# ---------------------------------------------------------------------------


class Spawned:
    """A tool process; its stdout read by a thread into (arrival time, line) pairs."""

    def __init__(self, argv: Sequence[str], stderr_path: Path) -> None:
        self.argv = list(argv)
        self.stderr_path = stderr_path
        self.lines: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self.seen: list[tuple[float, str]] = []
        self.spawned = time.monotonic()
        with stderr_path.open("wb") as err:
            self.proc: subprocess.Popen[str] = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1
            )
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        try:
            if stream is not None:
                for line in stream:
                    self.lines.put((time.monotonic(), line))
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put(None)

    def wait_for(self, ready: Callable[[str], bool], timeout: float) -> float:
        """Block until a line satisfies `ready`; return its arrival time (monotonic)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ToolError(f"{self.argv[0]}: not ready after {timeout:.0f} s: {self.stderr_tail()}")
            try:
                item = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if item is None:
                code = self.proc.wait(timeout=5)
                raise ToolError(f"{self.argv[0]} exited ({code}) before it was ready: {self.stderr_tail()}")
            self.seen.append(item)
            if ready(item[1]):
                return item[0]

    def stop(self) -> int | None:
        """SIGINT, wait, SIGKILL if need be; collect the rest of stdout. Exit code or None if killed."""
        code: int | None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            code = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        self._reader.join(timeout=5)
        while True:
            try:
                item = self.lines.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.seen.append(item)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    def stderr_tail(self, limit: int = 1500) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace").strip()
        except OSError:
            return "(no stderr)"
        return text[-limit:] or "(no stderr)"

    def texts(self) -> list[str]:
        return [line for _, line in self.seen]


def json_lines(texts: Iterable[str]) -> list[dict[str, Any]]:
    out = []
    for text in texts:
        with contextlib.suppress(json.JSONDecodeError):
            doc = json.loads(text)
            if isinstance(doc, dict):
                out.append(doc)
    return out


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """How to run one monitor and read what it counted."""

    name: str  # short id: sockscope, nethogs, bpftrace
    title: str  # for the report
    argv: tuple[str, ...]
    counts: str  # what one byte is, for the report
    reference: str  # "socket" (the generators' own counts) or "wire" (frames on the veth)
    ready: Callable[[str], bool]
    parse: Callable[[list[str]], ToolResult]
    bpf: bool  # counts in BPF programs (their run time can be measured)
    # seconds the tool had been counting when it printed its ready line (sockscope: one interval)
    counting_before_ready: Callable[[str], float] = lambda _line: 0.0
    linger: float = 0.0  # wait this long after the traffic before stopping it (nethogs: one refresh)
    prog_prefixes: tuple[str, ...] = ()  # program names, for tools that hold no program fds
    # after the ready line, poll this with the tool's pid until it is true (bpftrace: programs loaded)
    settled: Callable[[int], bool] | None = None


def _sockscope_parse(texts: list[str]) -> ToolResult:
    return ToolResult(procs=parse_sockscope_lines(json_lines(texts)))


def _nethogs_parse(texts: list[str]) -> ToolResult:
    procs, unknown = parse_nethogs_lines(texts)
    return ToolResult(procs=procs, unknown=unknown)


def _bpftrace_parse(texts: list[str]) -> ToolResult:
    return ToolResult(procs=parse_bpftrace_maps(json_lines(texts)))


def _is_json_object(text: str) -> bool:
    return text.lstrip().startswith("{")


def _bpftrace_attached(text: str) -> bool:
    return '"attached_probes"' in text


def _sockscope_interval(text: str) -> float:
    # The first line ends the first interval and carries its measured length.
    try:
        doc = json.loads(text)
        return float(doc["interval"]) if isinstance(doc, dict) else 0.0
    except (ValueError, KeyError, TypeError):
        return 0.0


def _bpftrace_loaded(pid: int) -> bool:
    return len(bpf_prog_ids(pid)) >= 2


def _nethogs_refreshed(text: str) -> bool:
    # The first refresh block: nethogs has opened the capture and read /proc once.
    return text.startswith("Refreshing:")


def sockscope_spec(exe: Path, interval: float = 1.0) -> ToolSpec:
    return ToolSpec(
        name="sockscope",
        title="sockscope",
        argv=(str(exe), "top", "--json", "--interval", f"{interval:g}"),
        counts="payload bytes per send/receive call (sock_send_length/sock_recv_length)",
        reference="socket",
        ready=_is_json_object,
        parse=_sockscope_parse,
        bpf=True,
        counting_before_ready=_sockscope_interval,
    )


def nethogs_spec(exe: str, device: str) -> ToolSpec:
    # -t trace mode, -v 2 running totals in bytes, -C TCP and UDP (by default only TCP), -d 1 refresh
    # every second; only the lab's veth, so it sees what crosses the wire and nothing else.
    return ToolSpec(
        name="nethogs",
        title="nethogs -t",
        argv=(exe, "-t", "-C", "-v", "2", "-d", "1", device),
        counts="captured frames on the device, headers included (libpcap)",
        reference="wire",
        ready=_nethogs_refreshed,
        parse=_nethogs_parse,
        bpf=False,
        # It prints what it counted once per refresh: without one more refresh after the traffic,
        # up to a second of it would never be printed.
        linger=1.2,
    )


def bpftrace_spec(exe: str) -> ToolSpec:
    return ToolSpec(
        name="bpftrace",
        title="bpftrace one-liner",
        argv=(exe, "-f", "json", "-e", BPFTRACE_PROGRAM),
        counts="payload bytes per send/receive call (same tracepoints, summed per pid and comm)",
        reference="socket",
        ready=_bpftrace_attached,
        parse=_bpftrace_parse,
        bpf=True,
        prog_prefixes=("sock_send_lengt", "sock_recv_lengt"),
        # bpftrace 0.17 prints "attached_probes" before it loads the programs: wait for both.
        settled=_bpftrace_loaded,
    )


class Running:
    """One session of a tool: started, ready, stopped, parsed."""

    def __init__(self, spec: ToolSpec, workdir: Path, label: str) -> None:
        self.spec = spec
        self.proc = Spawned(spec.argv, workdir / f"{spec.name}-{label}.stderr")
        self.ready_s: float | None = None

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Block until the tool counts; return seconds from spawn to the moment it began counting."""
        at = self.proc.wait_for(self.spec.ready, timeout)
        if self.spec.settled is not None:
            at = self._settle(self.spec.settled, self.proc.spawned + timeout)
        self.ready_s = at - self.proc.spawned - self.spec.counting_before_ready(self.proc.seen[-1][1])
        return self.ready_s

    def _settle(self, check: Callable[[int], bool], deadline: float) -> float:
        while not check(self.pid):
            if not self.alive():
                raise ToolError(f"{self.spec.name} exited ({self.proc.proc.returncode}): {self.proc.stderr_tail()}")
            if time.monotonic() > deadline:
                raise ToolError(f"{self.spec.name}: not counting in time: {self.proc.stderr_tail()}")
            time.sleep(0.01)
        time.sleep(0.05)  # loaded, then attached: a moment for the attach itself
        return time.monotonic() - 0.05

    @property
    def pid(self) -> int:
        return self.proc.proc.pid

    def alive(self) -> bool:
        return self.proc.proc.poll() is None

    def stop(self) -> ToolResult:
        code = self.proc.stop()
        result = self.spec.parse(self.proc.texts())
        result.exit_code = code
        result.stderr = self.proc.stderr_tail()
        return result

    def kill(self) -> None:
        self.proc.kill()


def tool_version(argv: Sequence[str]) -> str:
    """First non-empty line a `--version`-like command prints (stdout or stderr)."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    for text in (proc.stdout, proc.stderr):
        for line in text.splitlines():
            if line.strip():
                return line.strip()
    return "unknown"


def package_version(package: str) -> str | None:
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


@dataclass(slots=True)
class Attempt:
    """A tool tried for a few seconds: did it run, and what did it say."""

    tool: str
    argv: list[str]
    runs: bool
    exit_code: int | None
    error: str  # the telling lines of its output, empty when it ran


def telling_lines(output: str, limit: int = 3) -> str:
    """The lines that say why a tool failed: BCC prints a chdir() error for the missing kernel
    headers and ends with a Python exception; keep those, drop the traceback frames."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    keep = [
        line
        for line in lines
        if not line.startswith(("File ", "Traceback", "^", "~")) and not line.startswith(("b = ", "raise "))
    ]
    if len(keep) > limit:
        keep = keep[:1] + keep[-(limit - 1) :]
    return " / ".join(keep)[:600]


def try_tool(name: str, argv: Sequence[str], seconds: float = 5.0) -> Attempt:
    """Run `argv` for up to `seconds`: still running then means it works (it is stopped with
    SIGINT); an exit before means it could not run, and its output says why."""
    if shutil.which(argv[0]) is None:
        return Attempt(name, list(argv), False, None, f"{argv[0]} not installed")
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
    except OSError as exc:
        return Attempt(name, list(argv), False, None, str(exc))
    try:
        out, _ = proc.communicate(timeout=seconds)
        return Attempt(name, list(argv), False, proc.returncode, telling_lines(out) or f"exit {proc.returncode}")
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        return Attempt(name, list(argv), True, proc.returncode, "")
