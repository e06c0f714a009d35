"""Subscribing to the daemon's live event socket (sockscope.events.server): its lines, as they come."""

from __future__ import annotations

import errno
import grp
import os
import socket
import time
from collections.abc import Generator

from sockscope.output.safe import printable

MAX_LINE = 1 << 20  # an event is a few hundred bytes: longer is not a sockscope stream
CHUNK = 64 * 1024


class ClientError(Exception):
    """An expected failure (no daemon, no permission, a broken stream): its message is one line."""


def subscribe(path: str, *, timeout: float | None = None, idle: float | None = None) -> Generator[bytes, None, None]:
    """Connect now (a ClientError here, before any line, when that fails), then yield each line the
    daemon sends, without its b"\\n" (json.loads takes it as it is), until the daemon closes the
    connection; a line it was cut off in the middle of then is dropped, like the events it did not
    send. timeout: seconds for connecting, and of silence after which ClientError is raised. idle:
    seconds of silence after which b"" is yielded (never a line: an event is never empty), so that
    a caller can look at a clock or a stop flag; again after each further `idle` seconds."""
    sock = _connect(path, timeout)
    return _lines(sock, path, timeout, idle)


def daemon_listening(path: str, timeout: float = 1.0) -> bool:
    """Whether a daemon accepts subscribers at path: True also for one this user may not connect
    to (subscribe() then says why) and for one too busy to accept in time; False when no socket
    is there, or nothing listens on it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except (PermissionError, TimeoutError):
        return True
    except OSError:
        return False
    finally:
        sock.close()
    return True


def _connect(path: str, timeout: float | None) -> socket.socket:
    shown = printable(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except TimeoutError:
        sock.close()
        raise ClientError(f"{shown}: the daemon did not accept the connection within {timeout:g} s") from None
    except OSError as e:
        sock.close()
        if e.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR):
            raise ClientError(f"no sockscope daemon at {shown}") from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise ClientError(f"{shown}: permission denied: {_who_may(path)}") from None
        raise ClientError(f"{shown}: {e.strerror or e}") from None
    return sock


def _who_may(path: str) -> str:
    try:
        gid = os.stat(path).st_gid
    except OSError:  # a directory on the way this user may not enter
        return "a directory on the way is closed to this user"
    try:
        name = grp.getgrgid(gid).gr_name
    except KeyError:
        name = str(gid)
    return f"be root or a member of group {printable(name)} (the socket's group)"


def _lines(sock: socket.socket, path: str, timeout: float | None, idle: float | None) -> Generator[bytes, None, None]:
    shown = printable(path)
    waits = [t for t in (timeout, idle) if t is not None]
    sock.settimeout(min(waits) if waits else None)
    partial = b""  # the start of a line whose end has not come yet
    heard = time.monotonic()
    try:
        while True:
            try:
                chunk = sock.recv(CHUNK)
            except TimeoutError:
                if timeout is not None and time.monotonic() - heard >= timeout:
                    raise ClientError(f"{shown}: nothing from the daemon for {timeout:g} s") from None
                if idle is not None:
                    yield b""
                continue
            except OSError as e:
                raise ClientError(f"{shown}: the connection to the daemon failed: {e.strerror or e}") from None
            if not chunk:
                return
            heard = time.monotonic()
            if b"\n" not in chunk:
                partial += chunk
            else:
                lines = chunk.split(b"\n")
                lines[0] = partial + lines[0]
                partial = lines.pop()
                for line in lines:
                    if len(line) > MAX_LINE:
                        raise _too_long(shown)
                    yield line
            if len(partial) > MAX_LINE:  # so what is held stays under MAX_LINE + CHUNK, whatever comes
                raise _too_long(shown)
    finally:
        sock.close()


def _too_long(shown: str) -> ClientError:
    return ClientError(f"{shown}: a line of more than {MAX_LINE >> 20} MiB: not a sockscope event stream")
