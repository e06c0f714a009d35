"""The file-open programs (bpf/opens.bpf.c), loaded and attached through the project's libbpf
binding; their records read as they come."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from pathlib import Path

from sockscope.bpf import libbpf
from sockscope.bpf.kretprobes import TRACEFS
from sockscope.bpf.loader import CollectorError, check_privileges
from sockscope.opens import abi
from sockscope.opens.model import Open, decode

TRACEFS_MOUNT = "/sys/kernel/tracing"
URING_PROGRAMS = frozenset({"ss_uring_submit", "ss_uring_submit_sqe", "ss_uring_complete"})
# The submission tracepoint by kernel: (tracepoint, its argument count, our program on it).
URING_SUBMIT = (("io_uring_submit_req", 1, "ss_uring_submit"), ("io_uring_submit_sqe", 2, "ss_uring_submit_sqe"))
URING_COMPLETE_CQE = 3  # io_uring_complete(ctx, req, cqe); 7: (ctx, req, user_data, res, cflags, extra1, extra2)
URING_COMPLETE_ARGS = frozenset({URING_COMPLETE_CQE, 7})


@dataclass(frozen=True)
class OpensOptions:
    """Kernel-side filters (decided before a record is made: a storm of others costs less), set
    before load. The path is matched in user space (sockscope.opens.cli)."""

    pid: int | None = None
    uid: int | None = None
    comm: str | None = None
    failed_only: bool = False
    ring_bytes: int = 4 << 20  # the ring buffer (a power of two)
    object_path: str | None = None


def object_path() -> Path:
    return Path(__file__).resolve().parent.parent / "bpf" / "opens.bpf.o"


def ensure_tracefs() -> None:
    """The syscall tracepoints are found through tracefs: mount it where it is missing (a fresh
    VM, a container); as root, as bpftrace does."""
    if any(os.path.isdir(os.path.join(p, "events")) for p in TRACEFS):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mount(b"nodev", TRACEFS_MOUNT.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise CollectorError(
            f"tracefs is not mounted and could not be ({os.strerror(err)}): the syscall tracepoints "
            f"need it. Mount it (`mount -t tracefs nodev {TRACEFS_MOUNT}`) and try again."
        )


class OpensCollector:
    def __init__(self, options: OpensOptions | None = None) -> None:
        self.options = options or OpensOptions()
        self._obj: libbpf.Object | None = None
        self._links: list[libbpf.Link] = []
        self._ring: libbpf.RingBuffer | None = None
        self._ncpu = 0
        self.uring: str | None = None  # why io_uring's opens are not seen here (None: they are)

    def start(self) -> None:
        check_privileges()
        path = self.options.object_path or str(object_path())
        if not os.path.exists(path):
            raise CollectorError(f"The BPF object {path} is missing: run `make bpf` in the source tree.")
        ensure_tracefs()
        try:
            self._ncpu = libbpf.num_possible_cpus()
        except libbpf.LibbpfMissing as exc:
            raise CollectorError(f"{exc}. sockscope loads BPF programs through the distribution's libbpf.") from exc
        obj = libbpf.Object(path)
        try:
            o = self.options
            comm = (o.comm or "").encode()[: abi.COMM_LEN - 1]
            # io_uring's tracepoints differ between kernels: which ones, from the kernel's BTF.
            complete = libbpf.tracepoint_args("io_uring_complete")
            submit = next((prog for tp, n, prog in URING_SUBMIT if libbpf.tracepoint_args(tp) == n), None)
            if submit is None or complete not in URING_COMPLETE_ARGS:
                self.uring = "this kernel has no io_uring submission/completion tracepoints of a known shape"
            wanted = {submit, "ss_uring_complete"} if self.uring is None else set()
            for prog in obj.programs():
                if prog.name in URING_PROGRAMS and prog.name not in wanted:
                    prog.set_autoload(False)
            cfg = abi.Config(tgid=o.pid or 0, uid=o.uid or 0, failed_only=int(o.failed_only),
                             filter_uid=int(o.uid is not None), comm=comm,
                             uring_cqe=int(complete == URING_COMPLETE_CQE))  # fmt: skip
            obj.map(".rodata").write_initial_value(bytes(cfg))
            obj.map("ss_opens").set_max_entries(o.ring_bytes)
            obj.load()
            for prog in obj.programs():
                if not prog.autoload:
                    continue
                try:
                    self._links.append(prog.attach())
                except libbpf.LibbpfError as exc:
                    raise CollectorError(f"cannot attach {prog.section}: {exc}") from exc
            self._ring = libbpf.RingBuffer(obj.map("ss_opens"))
        except BaseException:
            self.close_links()
            obj.close()
            raise
        self._obj = obj

    def poll(self, timeout_ms: int) -> list[Open]:
        if self._ring is None:
            raise CollectorError("the opens collector is not started")
        return [decode(raw) for raw in self._ring.poll(timeout_ms)]

    def stats(self) -> list[int]:
        """The kernel's counters since load (abi.Stat), summed over CPUs."""
        if self._obj is None:
            return [0] * abi.STAT_MAX
        size = ctypes.sizeof(abi.Stats)
        buf = ctypes.create_string_buffer(size * self._ncpu)
        if not self._obj.map("ss_open_stats").lookup_into(ctypes.c_uint32(0), buf):
            return [0] * abi.STAT_MAX
        total = [0] * abi.STAT_MAX
        for cpu in range(self._ncpu):
            s = abi.Stats.from_buffer_copy(buf.raw, cpu * size)
            for i in range(abi.STAT_MAX):
                total[i] += s.v[i]
        return total

    def close_links(self) -> None:
        for link in self._links:
            link.destroy()
        self._links = []

    def close(self) -> None:
        self.close_links()
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self) -> OpensCollector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
