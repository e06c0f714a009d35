"""Read one process's identity from /proc.

Parsers are pure (text or bytes in, values out); readers take a `root` so tests
can point them at a fixture tree. Names and command lines are untrusted data:
they are decoded without ever raising and are never interpreted.
"""

from __future__ import annotations

import functools
import os
import pwd
from dataclasses import dataclass

from sockscope.output.safe import decode_untrusted

PROC = "/proc"
_NS_PER_SEC = 1_000_000_000
# /proc/PID/stat fields after the comm, counted from field 3 (state).
_STATE, _PPID, _STARTTIME = 0, 1, 19


@dataclass(frozen=True, slots=True)
class StatFields:
    comm: str
    state: str
    ppid: int
    starttime_ticks: int


@dataclass(frozen=True, slots=True)
class StatusFields:
    uid: int | None
    gid: int | None
    ppid: int | None
    tgid: int | None


@dataclass(frozen=True, slots=True)
class ProcRecord:
    pid: int
    comm: str
    exe: str | None
    cmdline: tuple[str, ...]
    uid: int | None
    gid: int | None
    ppid: int
    starttime_ticks: int
    cgroup: str | None
    netns: int | None


def _decode(raw: bytes) -> str:
    return decode_untrusted(raw)


def parse_stat(text: str) -> StatFields:
    """Parse /proc/PID/stat; raises ValueError when it is malformed."""
    # comm may contain spaces, '(' and ')': it ends at the LAST ')'.
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ValueError("no (comm) in stat")
    rest = text[close_paren + 1 :].split()
    if len(rest) <= _STARTTIME:
        raise ValueError(f"stat has {len(rest) + 2} fields, need 22")
    return StatFields(
        comm=text[open_paren + 1 : close_paren],
        state=rest[_STATE],
        ppid=int(rest[_PPID]),
        starttime_ticks=int(rest[_STARTTIME]),
    )


def _status_int(value: str) -> int | None:
    first = value.split(maxsplit=1)
    try:
        return int(first[0]) if first else None
    except ValueError:
        return None


def parse_status(text: str) -> StatusFields:
    """Real uid/gid, ppid and tgid from /proc/PID/status; None for what is absent."""
    values: dict[str, int | None] = dict.fromkeys(("Uid", "Gid", "PPid", "Tgid"))
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key in values:
            # Uid:/Gid: list real, effective, saved, fs: the first is the real one.
            values[key] = _status_int(value)
    return StatusFields(uid=values["Uid"], gid=values["Gid"], ppid=values["PPid"], tgid=values["Tgid"])


def parse_cmdline(raw: bytes) -> tuple[str, ...]:
    """NUL-separated arguments; a rewritten title without NULs stays one element."""
    # setproctitle-style rewrites pad with NULs, so all trailing NULs are dropped,
    # not only the terminator (a trailing empty argument is lost; it shows as nothing anyway).
    body = raw.rstrip(b"\0")
    if not body:
        return ()
    return tuple(_decode(arg) for arg in body.split(b"\0"))


def parse_cgroup(text: str) -> str | None:
    """The cgroup v2 path (the `0::` line), else the first line's path."""
    lines = [line for line in text.splitlines() if line]
    for line in lines:
        if line.startswith("0::"):
            return line[3:]
    if not lines:
        return None
    parts = lines[0].split(":", 2)
    return parts[2] if len(parts) == 3 else None


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _readlink(path: str) -> str | None:
    # Kernel threads have no exe and other users' processes refuse it: both are "unknown".
    try:
        return _decode(os.readlink(os.fsencode(path)))
    except OSError:
        return None


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def read_process(pid: int, root: str = PROC) -> ProcRecord | None:
    """Everything /proc says about `pid`, or None if it is gone (or unreadable)."""
    base = os.path.join(root, str(pid))
    try:
        stat = parse_stat(_decode(_read(os.path.join(base, "stat"))))
        status = parse_status(_decode(_read(os.path.join(base, "status"))))
        cmdline = parse_cmdline(_read(os.path.join(base, "cmdline")))
        cgroup = parse_cgroup(_decode(_read(os.path.join(base, "cgroup"))))
    except (OSError, ValueError):
        # The process exited between (or during) reads: ENOENT or ESRCH, or a torn stat.
        return None
    return ProcRecord(
        pid=pid,
        comm=stat.comm,
        exe=_readlink(os.path.join(base, "exe")),
        cmdline=cmdline,
        uid=status.uid,
        gid=status.gid,
        ppid=stat.ppid,
        starttime_ticks=stat.starttime_ticks,
        cgroup=cgroup,
        netns=_inode(os.path.join(base, "ns", "net")),
    )


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def ns_to_ticks(ns: int, hz: int) -> int:
    """The kernel's nsec_to_clock_t, as applied to start_boottime for stat field 22."""
    return ns * hz // _NS_PER_SEC


@functools.lru_cache(maxsize=4096)
def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None
