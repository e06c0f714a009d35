"""`sockscope opens [PATH|GLOB ...]`: one line (or JSON object) per open as it happens.

Every open reaches user space (the founding design: the wanted files change without reloading
anything); PATH and GLOB are matched here, against the absolute path. --pid, --uid, --comm and
--failed are also decided in the kernel, before a record is made."""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from sockscope.collector import procfs
from sockscope.collector.cgroups import CgroupPaths, classify
from sockscope.collector.lifecycle import boot_ns_to_wall
from sockscope.lru import FifoDict
from sockscope.opens import abi
from sockscope.opens.collector import OpensCollector, OpensOptions
from sockscope.opens.model import Open, creates, flag_names, result_text
from sockscope.output.safe import decode_untrusted, printable
from sockscope.output.table import clock

SCHEMA_VERSION = 1
READY = "sockscope opens: tracing (interrupt to stop)"
POLL_MS = 100
MAX_PROCS = 4096  # processes whose identity is kept (by pid and comm), briefly
PROC_TTL = 2.0  # seconds an identity is trusted without reading /proc again (a pid may be reused)
Factory = Callable[[OpensOptions], OpensCollector]


def _whole(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value < 2**32:
            raise argparse.ArgumentTypeError(f"must be >= {low} and < 2**32, got {text}")
        return value

    return parse


def _comm(text: str) -> str:
    if not text or len(os.fsencode(text)) > abi.COMM_LEN - 1:
        raise argparse.ArgumentTypeError(
            f"a process name is 1 to {abi.COMM_LEN - 1} bytes (the kernel keeps no more), got {text!r}"
        )
    return text


def add_parser(sub: Any) -> None:
    op = sub.add_parser("opens", help="which processes open which files, as it happens")
    op.add_argument("paths", nargs="*", metavar="PATH|GLOB",
                    help="only opens whose absolute path is PATH or matches GLOB (* ? [..]); default all")  # fmt: skip
    op.add_argument("--pid", type=_whole(1), help="only this process (decided in the kernel)")
    op.add_argument("--uid", type=_whole(0), help="only this user id (decided in the kernel)")
    op.add_argument("--comm", type=_comm, help="only processes of this name, 15 bytes at most (decided in the kernel)")
    op.add_argument("--failed", action="store_true", help="only failed opens (decided in the kernel)")
    op.add_argument("--json", action="store_true", help="one JSON object per line (see README, 'File opens')")
    op.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    op.add_argument("--count", type=_whole(1), metavar="N", help="stop after N opens shown")


class PathMatch:
    """PATHs and GLOBs against an absolute path (bytes, as the kernel has it)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        exact, globs = set(), []
        for p in patterns:
            raw = os.fsencode(p)
            if any(c in p for c in "*?["):
                globs.append(re.compile(fnmatch.translate(os.fsdecode(os.path.abspath(raw))), re.DOTALL))
            else:
                exact.add(os.path.normpath(os.path.abspath(raw)))
        self._exact, self._globs = exact, globs

    def __call__(self, path: bytes | None) -> bool:
        if not self._exact and not self._globs:
            return True
        if path is None:
            return False
        return path in self._exact or any(g.match(os.fsdecode(path)) for g in self._globs)


class Identities:
    """exe, user, unit or container of a pid: from /proc while it lives, else what the kernel's
    record had (comm, uid, cgroup). Kept briefly per (pid, comm)."""

    def __init__(self, cgroups: CgroupPaths | None) -> None:
        self._cgroups = cgroups
        self._cache: FifoDict[tuple[int, bytes], tuple[float, dict[str, Any]]] = FifoDict(MAX_PROCS)

    def __call__(self, o: Open) -> dict[str, Any]:
        now = time.monotonic()
        hit = self._cache.get((o.tgid, o.comm))
        if hit is not None and now < hit[0]:
            return hit[1]
        rec = procfs.read_process(o.tgid)
        cgroup = rec.cgroup if rec is not None else (self._cgroups.path(o.cgroup_id) if self._cgroups else None)
        unit, container = classify(cgroup)
        ident = {"exe": rec.exe if rec is not None else None, "user": procfs.user_name(o.uid), "unit": unit,
                 "container": container}  # fmt: skip
        self._cache[(o.tgid, o.comm)] = (now + PROC_TTL, ident)
        return ident


def to_dict(o: Open, ident: dict[str, Any]) -> dict[str, Any]:
    """The JSON object: bytes from the system (names, paths) as decode_untrusted text, exact and
    unambiguous (invalid UTF-8 as \\xNN, a backslash doubled)."""
    return {
        "v": SCHEMA_VERSION,
        "time": round(boot_ns_to_wall(o.ts_ns), 6),
        "ktime_ns": o.ts_ns,
        "pid": o.tgid,
        "tid": o.tid,
        "comm": decode_untrusted(o.comm),
        **ident,
        "uid": o.uid,
        "call": o.call,
        "flags": o.flags,
        "flag_names": flag_names(o.flags),
        "mode": o.mode if creates(o.flags) else None,
        "result": o.ret,
        "fd": o.ret if o.ret >= 0 else None,
        "error": None if o.ret >= 0 else result_text(o.ret),
        "dirfd": None if o.call in ("open", "creat") else o.dirfd,
        "given": decode_untrusted(o.given),
        "path": None if o.path is None else decode_untrusted(o.path),
        "complete": not o.cut,
    }


def describe(d: dict[str, Any]) -> str:
    """One readable line: every string from the system made inert (printable)."""
    when = clock(d["time"])
    result = str(d["fd"]) if d["fd"] is not None else d["error"]
    flags = d["flag_names"] + (f" {d['mode']:04o}" if d["mode"] is not None else "")
    path = printable(d["path"]) if d["path"] is not None else f"?/{printable(d['given'])}"
    line = f"{when} {d['pid']:>7} {printable(d['comm'], limit=16):<16} {result:>7} {flags:<28} {path}"
    if not d["complete"]:
        line += "  (cut: longer than the kernel's record holds)"
    if d["path"] != d["given"]:
        given = f"given {printable(d['given'])}"
        if d["dirfd"] not in (None, abi.AT_FDCWD):
            given += f", dirfd {d['dirfd']}"
        line += f"  ({given})"
    return line


def run_opens(args: argparse.Namespace, out: TextIO, stop: threading.Event, factory: Factory = OpensCollector) -> int:
    match = PathMatch(args.paths)
    options = OpensOptions(pid=args.pid, uid=args.uid, comm=args.comm, failed_only=args.failed)
    collector = factory(options)
    collector.start()
    if collector.uring is not None:  # said once: what this run cannot see
        print(f"sockscope opens: io_uring's opens are not seen: {collector.uring}", file=sys.stderr)
    # On stderr (stdout may be JSON): from here on every open is seen; scripts may wait for it.
    print(READY, file=sys.stderr, flush=True)
    ident = Identities(CgroupPaths(_cgroup_root()))
    deadline = time.monotonic() + args.duration if args.duration else None
    shown = 0
    lost_said = 0
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            for o in collector.poll(POLL_MS):
                # A path whose top is missing (deeper than the kernel walks) matches no PATH or GLOB.
                if not match(None if o.cut & abi.Cut.DEEP else o.path):
                    continue
                d = to_dict(o, ident(o))
                out.write(json.dumps(d) + "\n" if args.json else describe(d) + "\n")
                shown += 1
                if args.count and shown >= args.count:
                    stop.set()
                    break
            lost = collector.stats()[abi.Stat.LOST]
            if lost > lost_said:  # said in the stream, where they are missing
                n, lost_said = lost - lost_said, lost
                out.write(json.dumps({"v": SCHEMA_VERSION, "lost": n}) + "\n" if args.json
                          else f"-- {n} opens lost (the ring buffer was full)\n")  # fmt: skip
            out.flush()
    finally:
        lost = collector.stats()[abi.Stat.LOST]
        collector.close()
    if lost:
        print(f"sockscope opens: {lost} opens were lost (the kernel's ring buffer was full)", file=sys.stderr)
        return 1
    return 0


def _cgroup_root() -> str | None:
    from sockscope.bpf.loader import cgroup2_root

    return cgroup2_root()
