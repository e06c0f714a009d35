"""A fork server for the traffic generators (traffic.py, dns_tools.py).

Under TCG (the kernel matrix) a fresh Python takes about 1.7 s to start and import a
generator, and a run of the kernel tests starts about a hundred of them; a fork of a process
that has imported them already takes milliseconds. The generators run exactly as before:
their own process, their own name (prctl), stdout and stderr on pipes of the test's, joined to
a network namespace the way `ip netns exec` joins it (setns), their exit status reported.

    python -m tests.kernel.spawner FD     (FD: the control socket; started by Spawner)

Each request on the control socket (SOCK_SEQPACKET) is one JSON message {"tool", "argv",
"netns"} with three descriptors: stdout, stderr and a status socket. The server forks a waiter,
which forks the generator, sends {"pid"} on the status socket, waits, and sends {"status"}
(an exit code, or minus the signal, as subprocess reports it). The server ends at EOF.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, TextIO

TOOLS = ("traffic", "dns_tools")
CLONE_NEWNET = 0x40000000
REPO = Path(__file__).resolve().parents[2]


# The server side.


def _setns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _generator(req: dict[str, Any], out: int, err: int) -> None:
    """The forked generator: never returns."""
    code = 1
    try:
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        if req["netns"]:
            _setns(req["netns"])
        tool = importlib.import_module(f"tests.kernel.{req['tool']}")
        sys.argv = [f"{req['tool']}.py", *req["argv"]]
        tool.main(req["argv"])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                f.flush()
        os._exit(code)


def _waiter(req: dict[str, Any], out: int, err: int, status: int) -> None:
    """Forks the generator, reports its pid, then its exit status: never returns."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the server's SIG_IGN would reap it for us
    pid = os.fork()
    if pid == 0:
        os.close(status)
        _generator(req, out, err)
    os.close(out)
    os.close(err)
    st = socket.socket(fileno=status)
    st.send(json.dumps({"pid": pid}).encode())
    _, wstatus = os.waitpid(pid, 0)
    st.send(json.dumps({"status": os.waitstatus_to_exitcode(wstatus)}).encode())
    os._exit(0)


def serve(ctl: socket.socket) -> None:
    for name in TOOLS:  # what makes a fresh start slow, done once
        importlib.import_module(f"tests.kernel.{name}")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # waiters are reaped by the kernel
    while True:
        msg, fds, _, _ = socket.recv_fds(ctl, 65536, 3)
        if not msg:
            return
        if os.fork() == 0:
            try:
                ctl.close()
                _waiter(json.loads(msg), *fds)
            finally:
                os._exit(70)
        for fd in fds:
            os.close(fd)


# The tests' side.


class Spawned:
    """A generator started by the server, with the part of subprocess.Popen the tests use."""

    def __init__(self, ctl: socket.socket, lock: threading.Lock, tool: str, argv: list[str], netns: str | None):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self._status, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with lock:
                socket.send_fds(ctl, [json.dumps({"tool": tool, "argv": argv, "netns": netns}).encode()],
                                [out_w, err_w, theirs.fileno()])  # fmt: skip
        finally:
            for fd in (out_w, err_w):
                os.close(fd)
            theirs.close()
        self.stdout: TextIO = open(out_r, encoding="utf-8")  # noqa: SIM115 (a pipe, like Popen's)
        self.stderr: TextIO = open(err_r, encoding="utf-8")  # noqa: SIM115
        self.args = [tool, *argv]
        self.returncode: int | None = None
        first = self._status.recv(4096)
        if not first:
            raise RuntimeError(f"the spawner did not start {self.args}")
        self.pid: int = json.loads(first)["pid"]

    def _status_of(self, msg: bytes) -> int:
        self.returncode = json.loads(msg)["status"] if msg else -255  # no status: the waiter died
        self._status.close()
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            self._status.setblocking(False)
            try:
                return self._status_of(self._status.recv(4096))
            except BlockingIOError:
                return None
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._status.settimeout(timeout)
            try:
                return self._status_of(self._status.recv(4096))
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class Spawner:
    """The server, started on first use; it ends when this process closes its socket."""

    def __init__(self) -> None:
        self._ctl: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def spawn(self, tool: str, argv: list[str], netns: str | None = None) -> Spawned:
        with self._lock:
            if self._ctl is None:
                mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                cmd = [sys.executable, "-m", "tests.kernel.spawner", str(theirs.fileno())]
                self._proc = subprocess.Popen(cmd, cwd=REPO, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
                theirs.close()
                self._ctl = mine
        return Spawned(self._ctl, self._lock, tool, argv, netns)

    def close(self) -> None:
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._proc is not None:
            self._proc.wait(timeout=30)
            self._proc = None


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
