"""One open, decoded from its kernel record; pure (tested alone): the absolute path, the flags
and the result as text."""

from __future__ import annotations

import errno
import os
import posixpath
from dataclasses import dataclass

from sockscope.opens import abi

ACCESS = {0: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}
# The other flags, by the names this platform's os module gives them (their values differ by
# architecture). O_SYNC and O_TMPFILE include another bit: shown whole when all of theirs are set.
_FLAG_NAMES = ("O_CREAT", "O_EXCL", "O_NOCTTY", "O_TRUNC", "O_APPEND", "O_NONBLOCK", "O_DSYNC", "O_ASYNC",
               "O_DIRECT", "O_LARGEFILE", "O_DIRECTORY", "O_NOFOLLOW", "O_NOATIME", "O_CLOEXEC", "O_SYNC",
               "O_PATH", "O_TMPFILE")  # fmt: skip
FLAGS: tuple[tuple[str, int], ...] = tuple(
    sorted(((n, getattr(os, n)) for n in _FLAG_NAMES if hasattr(os, n)), key=lambda f: -bin(f[1]).count("1"))
)
CALLS = {abi.Call.OPEN: "open", abi.Call.OPENAT: "openat", abi.Call.OPENAT2: "openat2", abi.Call.CREAT: "creat",
         abi.Call.URING: "io_uring"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Open:
    ts_ns: int  # CLOCK_BOOTTIME, at the call's return
    tgid: int
    tid: int
    uid: int
    comm: bytes
    call: str
    flags: int
    mode: int
    ret: int  # the fd, or -errno
    dirfd: int
    given: bytes  # the path as the program gave it
    path: bytes | None  # absolute; None when it could not be known (see `base`)
    base: abi.Base
    cgroup_id: int
    cut: abi.Cut

    @property
    def failed(self) -> bool:
        return self.ret < 0


def absolute(given: bytes, base: abi.Base, components: list[bytes]) -> bytes | None:
    """The absolute path of an open: the opened file's own path (the kernel walked it), else the
    directory the name was relative to (dirfd's, or the current one) joined with the given name,
    else the given name if it is absolute. A failed open's path is joined lexically ("a/../b"
    is taken as "b"), as no file was there to walk."""
    walked = b"/" + b"/".join(reversed(components))
    if base == abi.Base.FILE:
        return walked
    if given.startswith(b"/"):
        return posixpath.normpath(given)
    if base in (abi.Base.DIRFD, abi.Base.CWD):
        return posixpath.normpath(posixpath.join(walked, given)) if given else walked
    return None


def decode(raw: bytes) -> Open:
    (ts_ns, cgroup_id, flags, tgid, tid, uid, mode, ret, dirfd, given_len, data_len, depth, call, base, cut,
     comm) = abi.HEAD.unpack_from(raw)  # fmt: skip
    data = raw[abi.HEAD.size : abi.HEAD.size + data_len]
    given = data[:given_len]
    components = data[given_len:].split(b"\0")[:depth]
    b = abi.Base(base) if base in abi.Base._value2member_map_ else abi.Base.NONE
    return Open(
        ts_ns=ts_ns, tgid=tgid, tid=tid, uid=uid, comm=comm.split(b"\0", 1)[0],
        call=CALLS.get(abi.Call(call), "?") if call in abi.Call._value2member_map_ else "?",
        flags=flags, mode=mode, ret=ret, dirfd=dirfd, given=given, path=absolute(given, b, components), base=b,
        cgroup_id=cgroup_id, cut=abi.Cut(cut & 7),
    )  # fmt: skip


def flag_names(flags: int) -> str:
    """O_RDONLY|O_CLOEXEC...; bits with no name as a hexadecimal rest."""
    access = flags & 3
    parts = [ACCESS.get(access, f"O_ACCMODE={access}")]
    rest = flags & ~3
    for name, bit in FLAGS:
        if bit & ~3 and rest & bit == bit:
            parts.append(name)
            rest &= ~bit
    if rest:
        parts.append(hex(rest))
    return "|".join(parts)


def result_text(ret: int) -> str:
    """The fd, or the errno's name (ENOENT), or its number when it has none."""
    if ret >= 0:
        return str(ret)
    return errno.errorcode.get(-ret, f"E{-ret}")


def creates(flags: int) -> bool:
    """Whether the mode argument means anything (a file may be created)."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    return bool(flags & os.O_CREAT) or bool(tmpfile and flags & tmpfile == tmpfile)
