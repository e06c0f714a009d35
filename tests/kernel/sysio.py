"""Kernel I/O paths Python's socket module does not expose, for the traffic generators.

- `sendmmsg` / `recvmmsg`: batched datagram syscalls through libc, via ctypes.
- `IoUring`: a minimal io_uring client over raw syscalls (no liburing) with one-at-a-time
  IORING_OP_SEND / IORING_OP_RECV. The kernel may run a send on an io-wq worker thread named
  `iou-wrk-<pid>`; that is expected, nothing here tries to prevent it.

Stdlib + ctypes only. Linux, x86_64 struct layouts (asserted below).
Run `python3 tests/kernel/sysio.py` for a self-check over loopback; it prints "ok".
"""

from __future__ import annotations

import ctypes
import errno
import math
import mmap
import os
import select
import socket
import threading
import time
from types import TracebackType
from typing import Self

__all__ = ["IoUring", "recvmmsg", "sendmmsg"]

Buffer = bytes | bytearray | memoryview

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_libc.sendmmsg.restype = ctypes.c_int
_libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_libc.recvmmsg.restype = ctypes.c_int
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.munmap.restype = ctypes.c_int

_MSG_WAITFORONE = 0x10000
_UIO_MAXIOV = 1024  # the kernel silently caps vlen of sendmmsg/recvmmsg at this
_MAP_FAILED = ctypes.c_void_p(-1).value

_SYS_io_uring_setup = 425
_SYS_io_uring_enter = 426
_IORING_OFF_SQ_RING = 0
_IORING_OFF_CQ_RING = 0x8000000
_IORING_OFF_SQES = 0x10000000
_IORING_FEAT_SINGLE_MMAP = 1 << 0
_IORING_ENTER_GETEVENTS = 1 << 0
_IOSQE_IO_LINK = 1 << 2
_IORING_OP_OPENAT = 18
_IORING_OP_LINK_TIMEOUT = 15
_IORING_OP_SEND = 26
_IORING_OP_RECV = 27
_U32 = 0xFFFFFFFF


def _oserror(what: str, err: int | None = None) -> OSError:
    err = ctypes.get_errno() if err is None else err
    return OSError(err, f"{what}: {os.strerror(err)}")


def _syscall(nr: int, *args: int) -> int:
    # syscall() is variadic: without explicit c_long, ctypes would pass Python ints as 32-bit C ints.
    return int(_libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)))


def _copy(data: Buffer) -> ctypes.Array[ctypes.c_char]:
    view = memoryview(data).cast("B")
    return (ctypes.c_char * view.nbytes).from_buffer_copy(view)


# --- sendmmsg / recvmmsg -------------------------------------------------------------------------


class _IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))
    iov_base: int | None
    iov_len: int


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )
    msg_name: int | None
    msg_namelen: int
    msg_iov: int | None
    msg_iovlen: int
    msg_flags: int


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint))
    msg_hdr: _MsgHdr
    msg_len: int


class _SockaddrIn(ctypes.Structure):
    _fields_ = (
        ("sin_family", ctypes.c_uint16),
        ("sin_port", ctypes.c_uint16),
        ("sin_addr", ctypes.c_uint8 * 4),
        ("sin_zero", ctypes.c_uint8 * 8),
    )
    sin_family: int
    sin_port: int
    sin_addr: ctypes.Array[ctypes.c_uint8]


class _SockaddrIn6(ctypes.Structure):
    _fields_ = (
        ("sin6_family", ctypes.c_uint16),
        ("sin6_port", ctypes.c_uint16),
        ("sin6_flowinfo", ctypes.c_uint32),
        ("sin6_addr", ctypes.c_uint8 * 16),
        ("sin6_scope_id", ctypes.c_uint32),
    )
    sin6_family: int
    sin6_port: int
    sin6_flowinfo: int
    sin6_addr: ctypes.Array[ctypes.c_uint8]
    sin6_scope_id: int


assert ctypes.sizeof(_IoVec) == 16
assert ctypes.sizeof(_MsgHdr) == 56
assert ctypes.sizeof(_MMsgHdr) == 64
assert ctypes.sizeof(_SockaddrIn) == 16
assert ctypes.sizeof(_SockaddrIn6) == 28


def _sockaddr(sock: socket.socket, addr: tuple[str, int]) -> _SockaddrIn | _SockaddrIn6:
    # AI_V4MAPPED lets an AF_INET6 socket send to an IPv4 address (as ::ffff:a.b.c.d), like sendto() can.
    flags = socket.AI_V4MAPPED if sock.family == socket.AF_INET6 else 0
    sa = socket.getaddrinfo(addr[0], addr[1], sock.family, socket.SOCK_DGRAM, 0, flags)[0][4]
    host, port = str(sa[0]), int(sa[1])
    if sock.family == socket.AF_INET:
        sin = _SockaddrIn(sin_family=socket.AF_INET, sin_port=socket.htons(port))
        ctypes.memmove(sin.sin_addr, socket.inet_pton(socket.AF_INET, host), 4)
        return sin
    if sock.family == socket.AF_INET6:
        # getaddrinfo has already split a "%scope" suffix off into sa[3]
        sin6 = _SockaddrIn6(sin6_family=socket.AF_INET6, sin6_port=socket.htons(port))
        if len(sa) == 4:
            sin6.sin6_flowinfo = socket.htonl(sa[2])
            sin6.sin6_scope_id = sa[3]
        ctypes.memmove(sin6.sin6_addr, socket.inet_pton(socket.AF_INET6, host.partition("%")[0]), 16)
        return sin6
    raise ValueError(f"sendmmsg: unsupported address family {sock.family!r}")


def _wait(sock: socket.socket, events: int, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(None if timeout is None else math.ceil(max(timeout, 0.0) * 1000)))


def sendmmsg(sock: socket.socket, payloads: list[bytes], addr: tuple[str, int] | None = None) -> int:
    """Send each payload as one message with sendmmsg(2); return the total bytes sent.

    Loops until every message is sent (a call may send fewer than asked). `addr` is the destination for
    unconnected UDP sockets (IPv4 or IPv6, resolved for the socket's family). A socket with a timeout
    (non-blocking underneath) waits for writability up to that timeout, then raises TimeoutError.
    On a stream socket a message sent short is finished before the next one.
    """
    n = len(payloads)
    if n == 0:
        return 0
    name = _sockaddr(sock, addr) if addr is not None else None
    bufs = [_copy(p) for p in payloads]  # kept alive until the kernel has read them
    iovs = (_IoVec * n)()
    msgs = (_MMsgHdr * n)()
    for i, buf in enumerate(bufs):
        iovs[i].iov_base = ctypes.addressof(buf)
        iovs[i].iov_len = len(buf)
        hdr = msgs[i].msg_hdr
        hdr.msg_iov = ctypes.addressof(iovs) + i * ctypes.sizeof(_IoVec)
        hdr.msg_iovlen = 1
        if name is not None:
            hdr.msg_name = ctypes.addressof(name)
            hdr.msg_namelen = ctypes.sizeof(name)
    fd = sock.fileno()
    done = total = 0
    while done < n:
        r = int(_libc.sendmmsg(fd, ctypes.addressof(msgs) + done * ctypes.sizeof(_MMsgHdr), n - done, 0))
        if r < 0:
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                if not _wait(sock, select.POLLOUT, sock.gettimeout()):
                    raise TimeoutError(errno.ETIMEDOUT, f"sendmmsg: {done} of {n} messages sent before the timeout")
                continue
            raise _oserror("sendmmsg", err)
        last = done + r - 1
        for k in range(done, done + r):
            sent, iov = msgs[k].msg_len, iovs[k]
            total += sent
            if sent < iov.iov_len:
                if k != last:
                    raise OSError(errno.EIO, f"sendmmsg: message {k} sent short and later ones were sent")
                iov.iov_base = (iov.iov_base or 0) + sent
                iov.iov_len -= sent
                done = k
                break
        else:
            done += r
    return total


def recvmmsg(sock: socket.socket, count: int, bufsize: int = 65536, timeout: float = 10.0) -> list[bytes]:
    """Receive exactly `count` messages with recvmmsg(2), in as many calls as needed; return their payloads.

    Raises TimeoutError if `count` messages have not arrived within `timeout` seconds (those received so far
    are lost), and OSError(EMSGSIZE) if a datagram was longer than `bufsize`.
    """
    if count <= 0:
        return []
    slots = min(count, _UIO_MAXIOV)
    buf = ctypes.create_string_buffer(slots * bufsize)
    iovs = (_IoVec * slots)()
    msgs = (_MMsgHdr * slots)()
    base = ctypes.addressof(buf)
    for i in range(slots):
        iovs[i].iov_base = base + i * bufsize
        iovs[i].iov_len = bufsize
        msgs[i].msg_hdr.msg_iov = ctypes.addressof(iovs) + i * ctypes.sizeof(_IoVec)
        msgs[i].msg_hdr.msg_iovlen = 1
    fd = sock.fileno()
    deadline = time.monotonic() + timeout
    out: list[bytes] = []
    while len(out) < count:
        # recvmmsg's own timeout argument is only checked after each datagram (see its man page, BUGS), so
        # the deadline is kept with poll(); MSG_DONTWAIT because a poll() readiness can be stale.
        r = int(_libc.recvmmsg(fd, msgs, min(slots, count - len(out)), _MSG_WAITFORONE | socket.MSG_DONTWAIT, None))
        if r < 0:
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            if err not in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise _oserror("recvmmsg", err)
            left = deadline - time.monotonic()
            if left <= 0 or not _wait(sock, select.POLLIN, left):
                raise TimeoutError(errno.ETIMEDOUT, f"recvmmsg: {len(out)} of {count} messages within {timeout}s")
            continue
        for k in range(r):
            if msgs[k].msg_hdr.msg_flags & socket.MSG_TRUNC:
                raise OSError(errno.EMSGSIZE, f"recvmmsg: a datagram was longer than bufsize={bufsize}")
            out.append(ctypes.string_at(base + k * bufsize, msgs[k].msg_len))
    return out


# --- io_uring ------------------------------------------------------------------------------------


class _SqringOffsets(ctypes.Structure):
    _fields_ = (
        ("head", ctypes.c_uint32),
        ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("dropped", ctypes.c_uint32),
        ("array", ctypes.c_uint32),
        ("resv1", ctypes.c_uint32),
        ("user_addr", ctypes.c_uint64),
    )
    head: int
    tail: int
    ring_mask: int
    array: int


class _CqringOffsets(ctypes.Structure):
    _fields_ = (
        ("head", ctypes.c_uint32),
        ("tail", ctypes.c_uint32),
        ("ring_mask", ctypes.c_uint32),
        ("ring_entries", ctypes.c_uint32),
        ("overflow", ctypes.c_uint32),
        ("cqes", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("resv1", ctypes.c_uint32),
        ("user_addr", ctypes.c_uint64),
    )
    head: int
    tail: int
    ring_mask: int
    cqes: int


class _IoUringParams(ctypes.Structure):
    _fields_ = (
        ("sq_entries", ctypes.c_uint32),
        ("cq_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("sq_thread_cpu", ctypes.c_uint32),
        ("sq_thread_idle", ctypes.c_uint32),
        ("features", ctypes.c_uint32),
        ("wq_fd", ctypes.c_uint32),
        ("resv", ctypes.c_uint32 * 3),
        ("sq_off", _SqringOffsets),
        ("cq_off", _CqringOffsets),
    )
    sq_entries: int
    cq_entries: int
    features: int
    sq_off: _SqringOffsets
    cq_off: _CqringOffsets


class _IoUringSqe(ctypes.Structure):
    # Unions flattened to the members send/recv/link-timeout use: off, addr, op_flags (msg_flags), buf_index.
    _fields_ = (
        ("opcode", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("ioprio", ctypes.c_uint16),
        ("fd", ctypes.c_int32),
        ("off", ctypes.c_uint64),
        ("addr", ctypes.c_uint64),
        ("len", ctypes.c_uint32),
        ("op_flags", ctypes.c_uint32),
        ("user_data", ctypes.c_uint64),
        ("buf_index", ctypes.c_uint16),
        ("personality", ctypes.c_uint16),
        ("splice_fd_in", ctypes.c_int32),
        ("addr3", ctypes.c_uint64),
        ("pad2", ctypes.c_uint64),
    )
    opcode: int
    flags: int
    fd: int
    addr: int
    len: int
    op_flags: int
    user_data: int


class _IoUringCqe(ctypes.Structure):
    _fields_ = (("user_data", ctypes.c_uint64), ("res", ctypes.c_int32), ("flags", ctypes.c_uint32))
    user_data: int
    res: int


class _KernelTimespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_int64))
    tv_sec: int
    tv_nsec: int


assert ctypes.sizeof(_IoUringParams) == 120
assert ctypes.sizeof(_IoUringSqe) == 64
assert ctypes.sizeof(_IoUringCqe) == 16
assert ctypes.sizeof(_KernelTimespec) == 16


class IoUring:
    """A minimal io_uring: one request in flight at a time, submitted and reaped synchronously.

    Not thread-safe: use one instance per thread. With `timeout` (seconds), each request is linked to an
    IORING_OP_LINK_TIMEOUT and raises TimeoutError if it has not completed in time (then 2 SQEs per request).
    """

    # Memory ordering: the kernel publishes CQ tail / consumes SQ tail with smp_load_acquire and
    # smp_store_release. On x86 (TSO) those are plain loads and stores, and every ctypes access here is an
    # opaque call the interpreter cannot reorder, so plain loads/stores through ctypes suffice. We also only
    # read the CQ after io_uring_enter(GETEVENTS) returned, and never have more than 2 CQEs outstanding in a
    # ring of at least 2, so the kernel can't overwrite a CQE we are still reading.

    def __init__(self, entries: int = 8, timeout: float | None = None) -> None:
        self._fd = -1
        self._maps: list[tuple[int, int]] = []
        self._next_id = 1
        self._timeout: _KernelTimespec | None = None
        if timeout is not None:
            sec = max(timeout, 0.0)
            self._timeout = _KernelTimespec(tv_sec=int(sec), tv_nsec=int((sec - int(sec)) * 1e9))
        p = _IoUringParams()
        fd = _syscall(_SYS_io_uring_setup, entries, ctypes.addressof(p))
        if fd < 0:
            raise _oserror("io_uring_setup")
        self._fd = fd
        try:
            self._setup(p)
        except BaseException:
            self.close()
            raise

    def _mmap(self, size: int, offset: int) -> int:
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        addr = _libc.mmap(None, size, prot, mmap.MAP_SHARED | mmap.MAP_POPULATE, self._fd, offset)
        if addr is None or addr == _MAP_FAILED:
            raise _oserror(f"mmap io_uring offset {offset:#x}")
        self._maps.append((int(addr), size))
        return int(addr)

    def _setup(self, p: _IoUringParams) -> None:
        self._sq_entries = p.sq_entries
        if self._timeout is not None and p.sq_entries < 2:
            raise ValueError("IoUring with a timeout needs entries >= 2")
        sq_size = p.sq_off.array + p.sq_entries * ctypes.sizeof(ctypes.c_uint32)
        cq_size = p.cq_off.cqes + p.cq_entries * ctypes.sizeof(_IoUringCqe)
        if p.features & _IORING_FEAT_SINGLE_MMAP:
            sq = cq = self._mmap(max(sq_size, cq_size), _IORING_OFF_SQ_RING)
        else:
            sq = self._mmap(sq_size, _IORING_OFF_SQ_RING)
            cq = self._mmap(cq_size, _IORING_OFF_CQ_RING)
        sqes = self._mmap(p.sq_entries * ctypes.sizeof(_IoUringSqe), _IORING_OFF_SQES)
        self._sq_head = ctypes.c_uint32.from_address(sq + p.sq_off.head)
        self._sq_tail = ctypes.c_uint32.from_address(sq + p.sq_off.tail)
        self._sq_mask = ctypes.c_uint32.from_address(sq + p.sq_off.ring_mask).value
        self._sq_array = (ctypes.c_uint32 * p.sq_entries).from_address(sq + p.sq_off.array)
        self._sqes = (_IoUringSqe * p.sq_entries).from_address(sqes)
        self._cq_head = ctypes.c_uint32.from_address(cq + p.cq_off.head)
        self._cq_tail = ctypes.c_uint32.from_address(cq + p.cq_off.tail)
        self._cq_mask = ctypes.c_uint32.from_address(cq + p.cq_off.ring_mask).value
        self._cqes = (_IoUringCqe * p.cq_entries).from_address(cq + p.cq_off.cqes)

    def _prep(self, tail: int, opcode: int, fd: int, addr: int, length: int, op_flags: int, user_data: int) -> None:
        index = tail & self._sq_mask
        sqe = self._sqes[index]
        ctypes.memset(ctypes.addressof(sqe), 0, ctypes.sizeof(_IoUringSqe))
        sqe.opcode = opcode
        sqe.fd = fd
        sqe.addr = addr
        sqe.len = length
        sqe.op_flags = op_flags
        sqe.user_data = user_data
        self._sq_array[index] = index

    def _reap(self, results: dict[int, int]) -> None:
        head = self._cq_head.value
        while head != self._cq_tail.value:
            cqe = self._cqes[head & self._cq_mask]
            results[cqe.user_data] = cqe.res
            head = (head + 1) & _U32
            self._cq_head.value = head

    def _submit(self, opcode: int, fd: int, addr: int, length: int, op_flags: int) -> int:
        if self._fd < 0:
            raise ValueError("IoUring is closed")
        op_id, timeout_id = self._next_id, self._next_id + 1
        self._next_id += 2
        tail = self._sq_tail.value
        self._prep(tail, opcode, fd, addr, length, op_flags, op_id)
        wanted = {op_id}
        if self._timeout is not None:
            self._sqes[tail & self._sq_mask].flags = _IOSQE_IO_LINK
            tail = (tail + 1) & _U32
            self._prep(tail, _IORING_OP_LINK_TIMEOUT, -1, ctypes.addressof(self._timeout), 1, 0, timeout_id)
            wanted.add(timeout_id)
        self._sq_tail.value = (tail + 1) & _U32
        results: dict[int, int] = {}
        while not wanted <= results.keys():
            # Recomputed each round: an interrupted enter may or may not have consumed the SQEs.
            pending = (self._sq_tail.value - self._sq_head.value) & _U32
            ret = _syscall(_SYS_io_uring_enter, self._fd, pending, 1, _IORING_ENTER_GETEVENTS, 0, 0)
            if ret < 0 and ctypes.get_errno() not in (errno.EINTR, errno.EAGAIN, errno.EBUSY):
                raise _oserror("io_uring_enter")
            self._reap(results)
        res = results[op_id]
        if res < 0 and results.get(timeout_id) == -errno.ETIME:
            raise TimeoutError(errno.ETIMEDOUT, f"io_uring op {opcode} did not complete within the timeout")
        if res < 0:
            raise _oserror(f"io_uring op {opcode}", -res)
        return res

    def send(self, fd: int, data: Buffer, flags: int = 0) -> int:
        """One IORING_OP_SEND; returns the bytes sent, which may be fewer than len(data)."""
        buf = _copy(data)
        return self._submit(_IORING_OP_SEND, fd, ctypes.addressof(buf), len(buf), flags)

    def recv(self, fd: int, n: int, flags: int = 0) -> bytes:
        """One IORING_OP_RECV of up to n bytes; b"" at EOF."""
        buf = ctypes.create_string_buffer(n)
        got = self._submit(_IORING_OP_RECV, fd, ctypes.addressof(buf), n, flags)
        return ctypes.string_at(buf, got)

    def send_all(self, fd: int, data: Buffer, flags: int = 0) -> int:
        """Send all of data, in as many IORING_OP_SENDs as it takes; returns len(data) in bytes."""
        buf = _copy(data)
        base, size, done = ctypes.addressof(buf), len(buf), 0
        while done < size:
            sent = self._submit(_IORING_OP_SEND, fd, base + done, size - done, flags)
            if sent == 0:
                raise OSError(errno.EIO, f"io_uring send made no progress after {done} of {size} bytes")
            done += sent
        return size

    def recv_exact(self, fd: int, n: int, flags: int = 0) -> bytes:
        """Receive exactly n bytes; raises EOFError if the peer closes first."""
        buf = ctypes.create_string_buffer(n)
        base, done = ctypes.addressof(buf), 0
        while done < n:
            got = self._submit(_IORING_OP_RECV, fd, base + done, n - done, flags)
            if got == 0:
                raise EOFError(f"EOF after {done} of {n} bytes")
            done += got
        return buf.raw

    def openat(self, dirfd: int, path: bytes, flags: int, mode: int = 0) -> int:
        """One IORING_OP_OPENAT: the new fd (OSError with the errno when it fails)."""
        name = ctypes.create_string_buffer(path)  # held until the call returns
        return self._submit(_IORING_OP_OPENAT, dirfd, ctypes.addressof(name), mode, flags)

    def close(self) -> None:
        if self._fd < 0:
            return
        for addr, size in self._maps:
            _libc.munmap(addr, size)
        self._maps.clear()
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --- self-check ----------------------------------------------------------------------------------


def _demo_tcp() -> None:
    size = 1_000_003
    data = os.urandom(size)
    with socket.create_server(("127.0.0.1", 0)) as srv:
        cli = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
        with cli, conn:
            cli.settimeout(10)  # the sender's fd is then O_NONBLOCK: io_uring must still complete the send
            received: list[bytes] = []
            errors: list[BaseException] = []

            def receive() -> None:
                try:
                    with IoUring(timeout=30) as ring:
                        received.append(ring.recv_exact(conn.fileno(), size))
                except BaseException as e:
                    errors.append(e)

            t = threading.Thread(target=receive)
            t.start()
            with IoUring() as ring:
                sent = ring.send_all(cli.fileno(), data)
            t.join(60)
            assert not t.is_alive(), "receiver hung"
            if errors:
                raise errors[0]
            assert sent == size, sent
            assert len(received[0]) == size and received[0] == data

            with IoUring(timeout=0.2) as ring:
                start = time.monotonic()
                try:
                    ring.recv(conn.fileno(), 1)
                    raise AssertionError("recv on an idle socket returned")
                except TimeoutError:
                    assert 0.15 < time.monotonic() - start < 5
                assert ring.send(cli.fileno(), b"x") == 1  # the ring is still usable after a timeout
                assert ring.recv(conn.fileno(), 10) == b"x"


def _demo_udp(family: socket.AddressFamily, host: str, connected: bool) -> None:
    payloads = [bytes([i]) * 123 for i in range(100)]
    with socket.socket(family, socket.SOCK_DGRAM) as rx, socket.socket(family, socket.SOCK_DGRAM) as tx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        rx.bind((host, 0))
        dest = (host, int(rx.getsockname()[1]))
        if connected:
            tx.connect(dest)
        assert sendmmsg(tx, payloads, None if connected else dest) == 100 * 123
        got = recvmmsg(rx, 100, timeout=10)
        assert len(got) == 100 and all(len(d) == 123 for d in got), [len(d) for d in got]
        assert got == payloads


def _demo() -> None:
    _demo_tcp()
    _demo_udp(socket.AF_INET, "127.0.0.1", connected=False)
    _demo_udp(socket.AF_INET, "127.0.0.1", connected=True)
    if socket.has_ipv6 and os.path.exists("/proc/net/if_inet6"):
        _demo_udp(socket.AF_INET6, "::1", connected=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        start = time.monotonic()
        try:
            recvmmsg(s, 1, timeout=0.2)
            raise AssertionError("recvmmsg on an idle socket returned")
        except TimeoutError:
            assert 0.15 < time.monotonic() - start < 5
    print("ok")


if __name__ == "__main__":
    _demo()
