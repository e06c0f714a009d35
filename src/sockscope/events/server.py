"""The daemon's live event socket: every event, as it happens, to whoever subscribes.

A Unix stream socket, root:GROUP 0660 by default. Each subscriber gets every line offered, in
order, through a bounded queue of its own. One that reads too slowly loses lines, counted, and is
told how many by a `lost` line where they are missing; one that takes nothing at all for `stall`
seconds while its queue is full is disconnected. The daemon's thread that offers events is never
slowed by a subscriber: offer() only appends to queues and, when a queue was empty, wakes the one
thread that writes to the sockets.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import selectors
import socket
import stat
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sockscope.events.model import encode, lost_event
from sockscope.output.safe import printable

BATCH_BYTES = 64 * 1024  # taken from a queue per send(): few syscalls, little held outside the queue
BATCHES = 16  # per subscriber per turn, so one fast reader cannot starve the others
INCOMING = 4096  # read from a subscriber per turn and thrown away: subscribers have nothing to say
ACCEPTS = 64  # per turn, so a burst of connections cannot starve the writing
SUN_PATH_MAX = 107  # sun_path is 108 bytes, with its NUL
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
ELSEWHERE = "set events.socket to another path"


class ServerError(Exception):
    """An expected failure (the path taken, an unknown group): its message is one line for the log."""


@dataclass
class ServerStats:
    subscribers: int = 0  # connected now
    served: int = 0  # connections accepted in all, refused ones included
    refused: int = 0  # closed at once: max_subscribers were connected
    dropped_events: int = 0  # lines not delivered to subscribers that read too slowly
    dropped_subscribers: int = 0  # disconnected for taking nothing for `stall` seconds


def peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process at the other end of a connected Unix socket (SO_PEERCRED)."""
    try:
        pid, _uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except OSError:
        return None
    return pid or None


def _stderr(msg: str) -> None:
    print(f"sockscope: {msg}", file=sys.stderr, flush=True)


class _Subscriber:
    """One connection. queue, lost, lost_all and full_since are shared with offer(): under the lock."""

    def __init__(self, sock: socket.socket, pid: int | None) -> None:
        self.sock = sock
        self.pid = pid
        self.alive = True
        self.queue: deque[bytes] = deque()
        self.lost = 0  # lines dropped since room was last made: its next `lost` line
        self.lost_all = 0
        self.full_since: float | None = None  # monotonic: when lines began to be dropped
        self.out = memoryview(b"")  # a batch taken from the queue, not all written yet
        self.progress = time.monotonic()  # when a byte was last written to it
        self.events = selectors.EVENT_READ


class EventServer:
    """Events to subscribers of a Unix socket; see the module's docstring. start(), offer()..., close()."""

    def __init__(
        self,
        path: str,
        *,
        group: str | None = None,
        mode: int = 0o660,
        max_subscribers: int = 32,
        queue: int = 4096,
        stall: float = 10.0,
        report: Callable[[str], None] = _stderr,
    ) -> None:
        if queue < 1 or max_subscribers < 0 or stall <= 0:
            raise ValueError(f"queue {queue}, max_subscribers {max_subscribers}, stall {stall}: out of range")
        self.path = path
        self.group = group
        self.mode = mode & 0o7777
        self.max_subscribers = max_subscribers
        self.queue = queue
        self.stall = stall
        self._report = report
        self._shown = printable(path)
        self._lock = threading.Lock()
        self._subs: list[_Subscriber] = []  # changed by the loop's thread only, under the lock
        self._stats = ServerStats()
        self._listener: socket.socket | None = None
        self._made: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file bound
        self._wake_fd = -1
        self._wake_pending = False
        self._closing = False
        self._refusing = False  # a burst of refusals was reported; reset when a subscriber leaves
        self._accept_paused = 0.0  # monotonic: accepting again after a failing accept() (EMFILE)
        self._accept_said: set[int | None] = set()
        self._thread: threading.Thread | None = None

    # The daemon's side.

    def start(self) -> None:
        if self._thread is not None or self._closing:
            raise RuntimeError("an EventServer starts once")
        if len(os.fsencode(self.path)) > SUN_PATH_MAX:
            raise ServerError(f"{self._shown}: too long for a Unix socket (at most {SUN_PATH_MAX} bytes)")
        gid = self._gid()
        try:
            self._make_parent()
            self._clear_path()
            self._listener = self._bind(gid)
            self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError as e:
            if self._listener is not None:
                self._listener.close()
            self._unlink()
            if e.errno == errno.EADDRINUSE:  # bound since _clear_path() looked
                raise ServerError(f"{self._shown} is in use by another process: stop it or {ELSEWHERE}") from None
            where = f" ({printable(str(e.filename))})" if e.filename not in (None, self.path) else ""
            raise ServerError(f"{self._shown}: cannot make the socket: {e.strerror or e}{where}") from None
        self._thread = threading.Thread(target=self._run, name="sockscope-events", daemon=True)
        self._thread.start()

    def offer(self, line: bytes) -> None:
        """One event (JSON and b"\\n") to every subscriber. Never waits: a full queue drops and counts."""
        with self._lock:
            wake = False
            for sub in self._subs:
                q = sub.queue
                if sub.lost or len(q) >= self.queue:
                    if not sub.lost:
                        sub.full_since = time.monotonic()
                        wake = True  # the loop keeps the stall deadline
                    sub.lost += 1
                    sub.lost_all += 1
                    self._stats.dropped_events += 1
                else:
                    # A queue already holding lines is being written, or waits for the socket:
                    # only one that was empty needs the loop woken (no syscall per line).
                    wake = wake or not q
                    q.append(line)
            if wake:
                self._wake()

    @property
    def stats(self) -> ServerStats:
        with self._lock:
            return replace(self._stats, subscribers=len(self._subs))

    def close(self) -> None:
        """Disconnect the subscribers and remove the socket file made (if it is still the one made)."""
        with self._lock:
            self._closing = True
            self._wake()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._unlink()

    # Setting up.

    def _gid(self) -> int | None:
        if self.group is None:
            return None
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            name = printable(self.group)
            raise ServerError(
                f"the event socket's group '{name}' does not exist: create it (groupadd --system {name}) "
                "or set events.group"
            ) from None

    def _make_parent(self) -> None:
        missing: list[Path] = []
        parent = Path(self.path).parent
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):
                d.mkdir()
                d.chmod(0o755)  # explicitly: mkdir's mode is cut by the umask

    def _clear_path(self) -> None:
        """Make room at the path: only a socket nobody listens on is removed."""
        try:
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise ServerError(f"{self._shown} exists and is not a socket: left alone ({ELSEWHERE})")
        except FileNotFoundError:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(self.path)
            except ConnectionRefusedError:  # left by a daemon that was killed: replaced
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                return
            except TimeoutError:
                raise ServerError(
                    f"{self._shown} is in use, not accepting connections: stop it or {ELSEWHERE}"
                ) from None
            pid = peer_pid(probe)  # of the process that listens
        raise ServerError(
            f"{self._shown} is in use by another sockscope (pid {pid or 'unknown'}): stop it or {ELSEWHERE}"
        )

    def _bind(self, gid: int | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Not os.umask(): it is the whole process's, and a file another thread of the daemon
            # created meanwhile would get it. Linux gives the socket file the mode of the socket's
            # inode (less the umask): owner only, until the group and mode below are in place.
            os.fchmod(sock.fileno(), 0o600)
            sock.bind(self.path)
            st = os.lstat(self.path)
            self._made = (st.st_dev, st.st_ino)
            if gid is not None:
                os.chown(self.path, -1, gid)  # before chmod: the group's bits are for this group only
            os.chmod(self.path, self.mode)
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _unlink(self) -> None:
        made, self._made = self._made, None
        with contextlib.suppress(OSError):
            st = os.lstat(self.path)
            if made == (st.st_dev, st.st_ino):  # not a socket another daemon put there since
                os.unlink(self.path)

    def _wake(self) -> None:  # under the lock: the loop closes the eventfd under it too
        if self._wake_fd >= 0 and not self._wake_pending:
            self._wake_pending = True
            os.eventfd_write(self._wake_fd, 1)

    # The loop's thread.

    def _run(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        try:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_fd, selectors.EVENT_READ)
            while not self._closing:
                for key, events in sel.select(self._deadlines(sel)):
                    if key.fileobj is self._listener:
                        self._accept(sel)
                    elif key.fileobj == self._wake_fd:
                        self._woken(sel)
                    else:
                        sub: _Subscriber = key.data
                        if events & selectors.EVENT_READ:
                            self._incoming(sel, sub)
                        if events & selectors.EVENT_WRITE and sub.alive:
                            self._write(sel, sub)
        except Exception as e:  # a bug: said, and the subscribers told by their connections ending
            self._report(f"the event socket stopped: {e!r}")
        finally:
            with self._lock:
                subs, self._subs = self._subs, []
                os.close(self._wake_fd)
                self._wake_fd = -1
            for sub in subs:
                sub.sock.close()
            self._listener.close()
            sel.close()

    def _woken(self, sel: selectors.BaseSelector) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake_fd)
        with self._lock:
            self._wake_pending = False  # before looking at the queues: a line offered now wakes again
        for sub in list(self._subs):
            if sub.alive and not sub.events & selectors.EVENT_WRITE:  # else it waits for its socket
                self._write(sel, sub)

    def _deadlines(self, sel: selectors.BaseSelector) -> float | None:
        """Disconnect the stalled; the seconds until the next deadline (stall, accepting again)."""
        now = time.monotonic()
        stalled: list[_Subscriber] = []
        due: list[float] = []
        with self._lock:
            for sub in self._subs:
                if sub.full_since is not None:
                    at = max(sub.full_since, sub.progress) + self.stall
                    if at <= now:
                        stalled.append(sub)
                    else:
                        due.append(at)
        for sub in stalled:
            self._report(
                f"event socket: subscriber pid {sub.pid or 'unknown'} took nothing for {self.stall:g} s with its "
                f"queue full: disconnected ({sub.lost_all:,} lines lost to it)"
            )
            self._drop(sel, sub)
            self._stats.dropped_subscribers += 1
        if self._accept_paused:
            if self._accept_paused <= now:
                self._accept_paused = 0.0
                assert self._listener is not None
                sel.register(self._listener, selectors.EVENT_READ)
            else:
                due.append(self._accept_paused)
        return max(0.0, min(due) - now) if due else None

    def _accept(self, sel: selectors.BaseSelector) -> None:
        assert self._listener is not None
        for _ in range(ACCEPTS):
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            except OSError as e:
                # Out of file descriptors, say: the connection stays pending and the listener
                # readable; accepting pauses a second instead of spinning. Said once a problem.
                if e.errno not in self._accept_said:
                    self._accept_said.add(e.errno)
                    self._report(f"event socket: cannot accept subscribers: {e.strerror or e}")
                sel.unregister(self._listener)
                self._accept_paused = time.monotonic() + 1.0
                return
            pid = peer_pid(conn)
            with self._lock:
                self._stats.served += 1
                full = len(self._subs) >= self.max_subscribers
                if full:
                    self._stats.refused += 1
            if full:
                conn.close()
                if not self._refusing:
                    self._refusing = True
                    self._report(
                        f"event socket: refused a subscriber (pid {pid or 'unknown'}): {self.max_subscribers} are "
                        "connected, the most allowed; refusals are counted, not said, until one leaves"
                    )
                continue
            conn.setblocking(False)
            sub = _Subscriber(conn, pid)
            sel.register(conn, sub.events, sub)
            with self._lock:
                self._subs.append(sub)

    def _incoming(self, sel: selectors.BaseSelector, sub: _Subscriber) -> None:
        try:
            data = sub.sock.recv(INCOMING)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # closed, or shut its sending side: gone either way
            self._drop(sel, sub)

    def _take(self, sub: _Subscriber) -> bytes:
        """Lines from the queue for one send(); under the lock."""
        q = sub.queue
        parts: list[bytes] = []
        size = 0
        while q and size < BATCH_BYTES:
            line = q.popleft()
            parts.append(line)
            size += len(line)
        if sub.lost and parts:
            # Room again. Every line still queued came before the first one lost (all are dropped
            # from then until here), so the `lost` line goes last: where the lines are missing.
            q.append(encode(lost_event("subscriber_queue", sub.lost)))
            sub.lost = 0
            sub.full_since = None
        return b"".join(parts)

    def _write(self, sel: selectors.BaseSelector, sub: _Subscriber) -> None:
        for _ in range(BATCHES):
            if not sub.out:
                with self._lock:
                    batch = self._take(sub)
                if not batch:
                    self._want_write(sel, sub, False)
                    return
                sub.out = memoryview(batch)
            try:
                sent = sub.sock.send(sub.out, socket.MSG_NOSIGNAL)  # EPIPE, not SIGPIPE, whatever the handler
            except BlockingIOError:
                break
            except OSError:  # EPIPE, ECONNRESET: it went away
                self._drop(sel, sub)
                return
            sub.progress = time.monotonic()
            sub.out = sub.out[sent:]
        self._want_write(sel, sub, True)  # the socket is full, or more is queued: go on when writable

    def _want_write(self, sel: selectors.BaseSelector, sub: _Subscriber, on: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        if events != sub.events:
            sub.events = events
            sel.modify(sub.sock, events, sub)

    def _drop(self, sel: selectors.BaseSelector, sub: _Subscriber) -> None:
        if not sub.alive:
            return
        sub.alive = False
        sel.unregister(sub.sock)
        sub.sock.close()
        with self._lock:
            self._subs.remove(sub)
            sub.queue.clear()
        self._refusing = False
