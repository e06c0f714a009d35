"""Claims of TCP bytes read without a receive call, run before reads.

TCP receives are counted as advances of copied_seq (see ss_rxseq in sockscope.bpf.c). A
receive call claims what it read itself; what splice(), zero-copy or io_uring splice read
on a socket that makes no more receive calls is claimed by the iterator ss_iter_rxseq,
which user space runs before reads (below), and at the socket's end. The kernel's TCP iterator
walks the sockets of the network namespace it is opened in: it is opened in sockscope's
own, and in each other namespace where processes moved bytes lately, from a thread that
joins it (setns) for that.

The walk costs about a microsecond per socket in the kernel (a fifth of the collector's time at
10,000 connections) and finds nothing on most hosts: a program that reads with splice() is rare.
So each namespace is walked before every read while its last walk claimed bytes, and at most
every IDLE_PERIOD seconds while it claims none. A splice() reader that starts while the walks
are idle is counted up to IDLE_PERIOD late (at its socket's end at the latest), then every
interval; nothing is lost or counted twice either way (the claims are by copied_seq).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from collections.abc import Callable

from sockscope.bpf import libbpf
from sockscope.lru import LruDict

CLONE_NEWNET = 0x40000000
MAX_NETNS = 256  # other network namespaces walked each interval, the most lately active
IDLE_PERIOD = 5.0  # seconds between walks of a namespace whose last walk claimed nothing


def _netns_inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return 0


class WalkSchedule:
    """When each namespace is walked next: before the next read while its last walk claimed
    bytes, else `idle` seconds after that walk. Pure: the clock is the caller's."""

    def __init__(self, idle: float = IDLE_PERIOD) -> None:
        self.idle = idle
        self._due: dict[int, float] = {}  # netns inode -> not walked before (absent: at once)

    def due(self, netns: int, now: float) -> bool:
        return now >= self._due.get(netns, now)

    def walked(self, netns: int, now: float, claimed: bool) -> None:
        self._due[netns] = now if claimed else now + self.idle

    def forget(self, netns: int) -> None:
        self._due.pop(netns, None)

    def keep(self, netns: set[int]) -> None:
        """Forget every namespace but these (bounded by what is walked, not by uptime)."""
        for gone in self._due.keys() - netns:
            del self._due[gone]


class SpliceClaims:
    def __init__(
        self, link: libbpf.Link, idle: float = IDLE_PERIOD, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.link = link
        self.own = _netns_inode("/proc/self/ns/net")
        self.others: LruDict[int, int] = LruDict(MAX_NETNS)  # netns inode -> a process in it
        self.schedule = WalkSchedule(idle)
        self.walks = 0  # namespaces walked, for tests and the bench
        self._clock = clock
        self._libc = ctypes.CDLL(None, use_errno=True)

    def note(self, netns: int | None, pid: int) -> None:
        """A process in netns moved bytes: walk that namespace too from now on."""
        if netns and netns != self.own:
            if netns not in self.others:
                self.schedule.forget(netns)  # new, or back after an eviction: walked at once
            self.others[netns] = pid

    def run(self) -> None:
        now = self._clock()
        self.schedule.keep({self.own, *self.others})  # those dropped below or evicted by the LRU
        if self.schedule.due(self.own, now):
            self._walked(self.own, now, libbpf.read_iter(self.link.open_iter()))
        for netns, pid in list(self.others.items()):
            if not self.schedule.due(netns, now):
                continue
            printed = self._run_in(netns, pid)
            if printed is None:
                del self.others[netns]  # gone, or moved: noted again when it moves bytes
            else:
                self._walked(netns, now, printed)

    def _walked(self, netns: int, now: float, printed: bytes) -> None:
        # ss_iter_rxseq prints a __u32 for each socket it claimed bytes of.
        self.walks += 1
        self.schedule.walked(netns, now, claimed=bool(printed))

    def _run_in(self, netns: int, pid: int) -> bytes | None:
        try:
            ns_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if os.fstat(ns_fd).st_ino != netns:
                return None
            fd = self._open_in(ns_fd)
        finally:
            os.close(ns_fd)
        if fd is None:
            return None
        return libbpf.read_iter(fd)

    def _open_in(self, ns_fd: int) -> int | None:
        """Open the iterator from a thread of its own that joins the namespace (setns moves only
        the calling thread, which then ends)."""
        out: list[int] = []

        def joined() -> None:
            if self._libc.setns(ns_fd, CLONE_NEWNET) != 0:
                return
            with contextlib.suppress(libbpf.LibbpfError):  # not there: claimed at the sockets' end
                out.append(self.link.open_iter())

        t = threading.Thread(target=joined, name="sockscope-netns")
        t.start()
        t.join()
        return out[0] if out else None
