"""Claims of TCP bytes read without a receive call, run before each read.

TCP receives are counted as advances of copied_seq (see ss_rxseq in sockscope.bpf.c). A
receive call claims what it read itself; what splice(), zero-copy or io_uring splice read
on a socket that makes no more receive calls is claimed by the iterator ss_iter_rxseq,
which user space runs before each read, and at the socket's end. The kernel's TCP iterator
walks the sockets of the network namespace it is opened in: it is opened in sockscope's
own, and in each other namespace where processes moved bytes lately, from a thread that
joins it (setns) for that.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading

from sockscope.bpf import libbpf
from sockscope.lru import LruDict

CLONE_NEWNET = 0x40000000
MAX_NETNS = 256  # other network namespaces walked each interval, the most lately active


def _netns_inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return 0


class SpliceClaims:
    def __init__(self, link: libbpf.Link) -> None:
        self.link = link
        self.own = _netns_inode("/proc/self/ns/net")
        self.others: LruDict[int, int] = LruDict(MAX_NETNS)  # netns inode -> a process in it
        self._libc = ctypes.CDLL(None, use_errno=True)

    def note(self, netns: int | None, pid: int) -> None:
        """A process in netns moved bytes: walk that namespace too from now on."""
        if netns and netns != self.own:
            self.others[netns] = pid

    def run(self) -> None:
        libbpf.read_iter(self.link.open_iter())
        for netns, pid in list(self.others.items()):
            if not self._run_in(netns, pid):
                del self.others[netns]  # gone, or moved: noted again when it moves bytes

    def _run_in(self, netns: int, pid: int) -> bool:
        try:
            ns_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if os.fstat(ns_fd).st_ino != netns:
                return False
            fd = self._open_in(ns_fd)
        finally:
            os.close(ns_fd)
        if fd is None:
            return False
        libbpf.read_iter(fd)
        return True

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
