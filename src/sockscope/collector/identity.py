"""Turn what the kernel captured about a process into the identity users see.

/proc has the full exe path and command line but only while the process lives
and only if the pid has not been reused; the kernel's facts are always there
but shorter. /proc is read once per process (pid, start time) and cached.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, replace

from sockscope.collector import procfs
from sockscope.collector.cgroups import CgroupPaths, classify
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
    unit: str | None = None  # systemd unit, from the cgroup
    container: str | None = None  # container id, from the cgroup
    netns: int | None = None
    parent_comm: str | None = None
    parent_exe: str | None = None


def _join(args: tuple[str, ...]) -> str | None:
    return " ".join(args) or None


def unknown(pid: int) -> ProcessIdentity:
    """A pid neither the kernel nor /proc knows anything about."""
    return ProcessIdentity(pid, 0, "?", None, None, None, None, None, alive=False)


def _parent_exe(ppid: int | None, root: str) -> str | None:
    if not ppid:
        return None
    try:
        return os.readlink(f"{root}/{ppid}/exe")
    except OSError:
        return None


def from_record(record: procfs.ProcRecord) -> ProcessIdentity:
    """Identity from /proc alone (the kernel kept no facts); start_ns is unknown."""
    unit, container = classify(record.cgroup)
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
        unit=unit,
        container=container,
        netns=record.netns,
    )


def from_facts(
    facts: ProcFacts, pid: int, record: procfs.ProcRecord | None, cgroup: str | None = None
) -> ProcessIdentity:
    """Identity from the kernel's facts, with /proc's fuller names when `record` is that process.
    `cgroup` is the path of facts.cgroup_id, for when the process is gone."""
    exe, cmdline = facts.exe_name or None, _join(facts.args)
    if record is not None:
        # A zombie or kernel thread shows no exe/cmdline in /proc: keep the kernel's then.
        exe, cmdline = record.exe or exe, _join(record.cmdline) or cmdline
        cgroup = record.cgroup or cgroup
    unit, container = classify(cgroup)
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
        unit=unit,
        container=container,
        netns=facts.netns or (record.netns if record is not None else None),
        parent_comm=facts.parent_comm or None,
    )


class ProcessResolver:
    """Cached kernel-facts-plus-/proc identities, keyed by (pid, start_ns)."""

    def __init__(
        self,
        root: str = procfs.PROC,
        hz: int | None = None,
        max_cached: int = MAX_CACHED,
        cgroups: CgroupPaths | None = None,
    ) -> None:
        self._root = root
        self._cgroups = cgroups
        self._hz = procfs.clock_ticks() if hz is None else hz
        self._max_cached = max_cached
        self._cache: OrderedDict[tuple[int, int, str], ProcessIdentity] = OrderedDict()

    def resolve(self, facts: ProcFacts | None, pid: int) -> ProcessIdentity:
        if facts is None:
            # Without a start time a cached answer could belong to a reused pid: read afresh.
            record = procfs.read_process(pid, self._root)
            return unknown(pid) if record is None else from_record(record)
        # comm too: an exec keeps pid and start time but is another program.
        key = (pid, facts.start_ns, facts.comm)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        record = self._same_process(facts, pid)
        cgroup = None
        if record is None and self._cgroups is not None:
            cgroup = self._cgroups.path(facts.cgroup_id)
        identity = from_facts(facts, pid, record, cgroup)
        if record is not None:
            identity = replace(identity, parent_exe=_parent_exe(identity.ppid, self._root))
        self._remember(key, identity)
        return identity

    def forget(self, pid: int, start_ns: int) -> None:
        for key in [k for k in self._cache if k[:2] == (pid, start_ns)]:
            del self._cache[key]

    def __len__(self) -> int:
        return len(self._cache)

    def _same_process(self, facts: ProcFacts, pid: int) -> procfs.ProcRecord | None:
        """/proc's record of `pid` if it is still the process the kernel described, else None."""
        record = procfs.read_process(pid, self._root)
        if record is None or record.starttime_ticks != procfs.ns_to_ticks(facts.start_ns, self._hz):
            return None
        return record

    def _remember(self, key: tuple[int, int, str], identity: ProcessIdentity) -> None:
        self._cache[key] = identity
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
