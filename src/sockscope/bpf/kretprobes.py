"""kretprobes with room for many calls in flight, and a count of the calls they missed.

A kretprobe holds one instance per call in flight; the kernel's default is 10 (2 per CPU
on larger machines), and every call that starts while they are all taken is not seen at
return. A thread waiting in recvmsg holds one for as long as it waits, so a server with
many waiting threads would lose bytes. libbpf (1.1) cannot ask for more, so these are
made through tracefs (`r4096:...`, the kernel's maximum) and attached as perf events;
their `nmissed` in kprobe_profile is counted as dropped events, never silent.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
from dataclasses import dataclass

from sockscope.bpf import libbpf

MAXACTIVE = 4096  # KRETPROBE_MAXACTIVE_MAX
GROUP = "sockscope"
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

_PERF_TYPE_TRACEPOINT = 2
_PERF_FLAG_FD_CLOEXEC = 8
_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}


class _PerfEventAttr(ctypes.Structure):
    # PERF_ATTR_SIZE_VER0: the fields a tracepoint event needs.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
    ]


def tracefs() -> str | None:
    for path in TRACEFS:
        if os.path.exists(os.path.join(path, "kprobe_events")):
            return path
    return None


def event_name(func: str, pid: int, seq: int = 0) -> str:
    """seq: which of a process's collectors (a benchmark loads several); the first's names carry
    the pid alone."""
    return f"ss{pid}_{seq}_{func}" if seq else f"ss{pid}_{func}"


def parse_profile(text: str) -> dict[str, tuple[int, int]]:
    """kprobe_profile: event name -> (hits, missed)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out[parts[0].rsplit("/", 1)[-1]] = (int(parts[1]), int(parts[2]))
    return out


_SEQ = itertools.count()  # this process's Kretprobes, for event names of their own
_OURS = re.compile(rf"^r\d*:{GROUP}/ss(\d+)_(\w+) ", re.M)


def stale_events(kprobe_events: str, alive: set[int] | None = None) -> list[str]:
    """Our events left behind by a sockscope that died (its pid gone)."""
    out = []
    for m in _OURS.finditer(kprobe_events):
        pid = int(m.group(1))
        if (pid not in alive) if alive is not None else not os.path.exists(f"/proc/{pid}"):
            out.append(event_name(m.group(2), pid))
    return out


@dataclass
class Kretprobes:
    """The kretprobe events of one collector; remove() when done."""

    root: str
    pid: int
    events: list[str]
    seq: int = 0

    @classmethod
    def open(cls) -> Kretprobes:
        root = tracefs()
        if root is None:
            raise OSError("tracefs is not mounted (/sys/kernel/tracing): kretprobes cannot be made")
        self = cls(root, os.getpid(), [], next(_SEQ))
        with contextlib.suppress(OSError):
            with open(os.path.join(root, "kprobe_events"), encoding="ascii", errors="replace") as f:
                current = f.read()
            for name in stale_events(current):
                self._write(f"-:{GROUP}/{name}")
        return self

    def _write(self, line: str) -> None:
        # os.open: Python's append mode seeks to the end, which tracefs refuses (EINVAL).
        fd = os.open(os.path.join(self.root, "kprobe_events"), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            os.write(fd, (line + "\n").encode("ascii"))
        finally:
            os.close(fd)

    def add(self, func: str) -> int:
        """Make the kretprobe on func (once) and open it as a perf event: the fd to attach a program
        to. Again after its link was destroyed (Collector.pause), a new fd on the same event."""
        name = event_name(func, self.pid, self.seq)
        if name not in self.events:
            self._write(f"r{MAXACTIVE}:{GROUP}/{name} {func}")
            self.events.append(name)
        with open(os.path.join(self.root, "events", GROUP, name, "id"), encoding="ascii") as f:
            config = int(f.read())
        attr = _PerfEventAttr(type=_PERF_TYPE_TRACEPOINT, size=ctypes.sizeof(_PerfEventAttr), config=config)
        attr.sample_period = 1
        attr.wakeup_events = 1
        libc = libbpf.lib().libc  # the C library libbpf's binding already loaded, errno kept
        nr = _NR_PERF_EVENT_OPEN.get(os.uname().machine)
        if nr is None:
            raise OSError(f"perf_event_open: unknown system call number on {os.uname().machine}")
        # pid -1, cpu 0: the program runs for every CPU (as libbpf's own legacy kprobes do).
        fd = int(libc.syscall(nr, ctypes.byref(attr), -1, 0, -1, _PERF_FLAG_FD_CLOEXEC))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"perf_event_open({GROUP}/{name}): {os.strerror(err)}")
        return fd

    def missed(self) -> int:
        """Calls our kretprobes missed since they were made (the kernel's nmissed)."""
        try:
            with open(os.path.join(self.root, "kprobe_profile"), encoding="ascii", errors="replace") as f:
                prof = parse_profile(f.read())
        except OSError:
            return 0
        return sum(prof.get(name, (0, 0))[1] for name in self.events)

    def remove(self) -> None:
        """After the perf events are closed (their links destroyed)."""
        for name in self.events:
            with contextlib.suppress(OSError):
                self._write(f"-:{GROUP}/{name}")
        self.events = []
