"""Turn what the kernel captured about a process into the identity users see.

/proc has the full exe path and command line but only while the process lives
and only if the pid has not been reused; the kernel's facts are always there
but shorter. /proc is read once per process (pid, start time) and cached.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from sockscope.collector import procfs
from sockscope.collector.model import ProcFacts

MAX_CACHED = 8192


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    pid: int
    start_ns: int
    comm: str
    exe: str | None
    cmdline: str | None
    uid: int | None
    user: str | None
    ppid: int | None
    alive: bool
    cgroup: str | None = None


def _join(args: tuple[str, ...]) -> str | None:
    return " ".join(args) or None


def unknown(pid: int) -> ProcessIdentity:
    """A pid neither the kernel nor /proc knows anything about."""
    return ProcessIdentity(pid, 0, "?", None, None, None, None, None, alive=False)


def from_record(record: procfs.ProcRecord) -> ProcessIdentity:
    """Identity from /proc alone (the kernel kept no facts); start_ns is unknown."""
    return ProcessIdentity(
        pid=record.pid,
        start_ns=0,
        comm=record.comm,
        exe=record.exe,
        cmdline=_join(record.cmdline),
        uid=record.uid,
        user=None if record.uid is None else procfs.user_name(record.uid),
        ppid=record.ppid,
        alive=True,
        cgroup=record.cgroup,
    )


def from_facts(facts: ProcFacts, pid: int, record: procfs.ProcRecord | None) -> ProcessIdentity:
    """Identity from the kernel's facts, with /proc's fuller names when `record` is that process."""
    exe, cmdline = facts.exe_name or None, _join(facts.args)
    cgroup = None
    if record is not None:
        # A zombie or kernel thread shows no exe/cmdline in /proc: keep the kernel's then.
        exe, cmdline = record.exe or exe, _join(record.cmdline) or cmdline
        cgroup = record.cgroup
    return ProcessIdentity(
        pid=pid,
        start_ns=facts.start_ns,
        comm=facts.comm,
        exe=exe,
        cmdline=cmdline,
        uid=facts.uid,
        user=procfs.user_name(facts.uid),
        ppid=facts.ppid,
        alive=record is not None,
        cgroup=cgroup,
    )


class ProcessResolver:
    """Cached kernel-facts-plus-/proc identities, keyed by (pid, start_ns)."""

    def __init__(self, root: str = procfs.PROC, hz: int | None = None, max_cached: int = MAX_CACHED) -> None:
        self._root = root
        self._hz = procfs.clock_ticks() if hz is None else hz
        self._max_cached = max_cached
        self._cache: OrderedDict[tuple[int, int], ProcessIdentity] = OrderedDict()

    def resolve(self, facts: ProcFacts | None, pid: int) -> ProcessIdentity:
        if facts is None:
            # Without a start time a cached answer could belong to a reused pid: read afresh.
            record = procfs.read_process(pid, self._root)
            return unknown(pid) if record is None else from_record(record)
        key = (pid, facts.start_ns)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        identity = from_facts(facts, pid, self._same_process(facts, pid))
        self._remember(key, identity)
        return identity

    def forget(self, pid: int, start_ns: int) -> None:
        self._cache.pop((pid, start_ns), None)

    def __len__(self) -> int:
        return len(self._cache)

    def _same_process(self, facts: ProcFacts, pid: int) -> procfs.ProcRecord | None:
        """/proc's record of `pid` if it is still the process the kernel described, else None."""
        record = procfs.read_process(pid, self._root)
        if record is None or record.starttime_ticks != procfs.ns_to_ticks(facts.start_ns, self._hz):
            return None
        return record

    def _remember(self, key: tuple[int, int], identity: ProcessIdentity) -> None:
        self._cache[key] = identity
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
