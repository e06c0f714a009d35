"""`sockscope opens` (issue 15) against the real programs: short-lived processes, dirfd-relative
opens resolved against the right directory, errors, the filters, hostile names, a storm."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sockscope.opens import abi
from sockscope.opens.cli import READY
from sockscope.opens.collector import OpensCollector, OpensOptions
from tests.kernel.conftest import SOCKSCOPE


@pytest.fixture
def tree() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sockscope-opens-"))
    try:
        (d / "data").mkdir()
        (d / "elsewhere").mkdir()
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Opens:
    """`sockscope opens --json ARGS` running; its objects once it ends."""

    def __init__(self, *args: str) -> None:
        self.out = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in stop): a file, not a pipe, so nothing slows it
        self.proc = subprocess.Popen([SOCKSCOPE, "opens", "--json", *args], stdout=self.out,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        wait_ready(self.proc)

    def stop(self) -> list[dict[str, Any]]:
        self.proc.send_signal(2)
        _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        self.out.seek(0)
        found = [json.loads(line) for line in self.out.read().splitlines()]
        self.out.close()
        return found


COMM = Path("/proc/self/comm").read_text().strip()  # "python" or "pytest", as the suite was started


def wait_ready(proc: subprocess.Popen[str]) -> None:
    """Until `sockscope opens` says it sees every open (a slow guest takes seconds to load)."""
    assert proc.stderr is not None
    said = ""
    while (line := proc.stderr.readline()) and not line.startswith(READY):
        said += line
    assert line, f"sockscope opens ended: {said}{proc.stderr.read()}"


def _fork_openers(n: int, dirfd: int, name: bytes, cwd: Path) -> list[int]:
    """n children, each opening `name` relative to dirfd (from another current directory) and
    exiting at once: gone long before user space could look at them."""
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                os.chdir(cwd)
                os.close(os.open(name, os.O_RDONLY, dir_fd=dirfd))
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    return pids


def test_short_lived_dirfd_relative_opens_get_the_right_path(tree: Path) -> None:
    tagged = tree / "data" / "tagged-file"
    tagged.write_text("x")
    run = Opens(str(tree / "data" / "tagged-*"))
    dirfd = os.open(tree / "data", os.O_RDONLY | os.O_DIRECTORY)
    try:
        pids = _fork_openers(50, dirfd, b"tagged-file", tree / "elsewhere")
        time.sleep(0.5)
    finally:
        os.close(dirfd)
        events = run.stop()
    mine = [e for e in events if e["pid"] in pids]
    assert sorted(e["pid"] for e in mine) == sorted(pids), f"{len(mine)} of 50 reported"
    for e in mine:
        assert e["path"] == str(tagged) and e["given"] == "tagged-file" and e["dirfd"] == dirfd
        assert e["call"] == "openat" and e["fd"] is not None and e["error"] is None and e["complete"]
        assert e["flag_names"].startswith("O_RDONLY") and e["comm"] == COMM  # forked: this process's name
    assert all(e["path"].startswith(str(tree / "data" / "tagged-")) for e in events)  # the glob held


def _attempts(target: Path) -> None:
    """One open that succeeds (creating the file, mode 0600), three that fail."""
    os.close(os.open(target / "exists", os.O_CREAT | os.O_WRONLY, 0o600))
    for name in ("missing-1", "missing-2"):
        with contextlib.suppress(FileNotFoundError):
            os.open(target / name, os.O_RDONLY)
    with contextlib.suppress(NotADirectoryError):
        os.open(target / "exists" / "below", os.O_RDONLY)


def _seen(options: OpensOptions, target: Path) -> list[tuple[str, int]]:
    """What the programs report of _attempts() under the kernel-side filters of options."""
    col = OpensCollector(options)
    col.start()
    try:
        _attempts(target)
        got = col.poll(200)
    finally:
        col.close()
    return sorted((os.fsdecode(o.path or b""), o.ret) for o in got if o.path and o.path.startswith(os.fsencode(target)))


def test_failed_opens_and_the_kernel_filters(tree: Path) -> None:
    """--failed, --pid, --uid, --comm are decided in the kernel; errors come as -errno, a
    created file with its mode. (In-process: the command's own part is the other tests'.)"""
    target = tree / "data"
    me, comm = os.getpid(), COMM
    failed = [(str(target / "exists" / "below"), -errno.ENOTDIR), (str(target / "missing-1"), -errno.ENOENT),
              (str(target / "missing-2"), -errno.ENOENT)]  # fmt: skip
    assert _seen(OpensOptions(pid=me, failed_only=True), target) == failed
    everything = _seen(OpensOptions(pid=me), target)
    assert [p for p, r in everything if r >= 0] == [str(target / "exists")] and len(everything) == 4
    assert _seen(OpensOptions(pid=1), target) == []
    assert _seen(OpensOptions(uid=os.getuid(), comm=comm), target) == everything
    assert _seen(OpensOptions(uid=os.getuid() + 4242), target) == []
    assert _seen(OpensOptions(comm="no-such-comm"), target) == []
    col = OpensCollector(OpensOptions(pid=me))
    col.start()
    try:
        os.close(os.open(target / "new", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640))
        [created] = [o for o in col.poll(200) if o.path == os.fsencode(target / "new")]
    finally:
        col.close()
    assert created.mode == 0o640 and created.flags & os.O_CREAT and created.flags & os.O_EXCL and created.uid == 0


def test_hostile_names_are_inert_on_screen_and_exact_in_json(tree: Path) -> None:
    name = b"evil\n\x1b[31mred\x1b]0;t\x07\xff\\x41"
    run = Opens(str(tree / "data" / "evil*"))
    screen = subprocess.Popen([SOCKSCOPE, "opens", str(tree / "data" / "evil*")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_ready(screen)
    fd = os.open(os.fsencode(tree / "data") + b"/" + name, os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    time.sleep(0.3)
    screen.send_signal(2)
    text, _ = screen.communicate(timeout=30)
    [event] = run.stop()
    # JSON: exact (decode_untrusted: invalid UTF-8 as \xNN, a backslash doubled)
    assert event["path"].endswith("/evil\n\x1b[31mred\x1b]0;t\x07\\xff\\\\x41")
    lines = text.splitlines()
    assert len(lines) == 1, lines
    assert not any(ord(c) < 0x20 for c in lines[0]), repr(lines[0])
    assert "evil\\x0a\\x1b[31mred\\x1b]0;t\\x07\\xff" in lines[0]


def test_a_storm_beyond_the_reader_is_counted_and_it_goes_on(tree: Path) -> None:
    """A small ring buffer and a reader that does not read for a while: the opens that did not
    fit are counted in the kernel; afterwards it reads again."""
    col = OpensCollector(OpensOptions(pid=os.getpid(), ring_bytes=64 * 1024))
    col.start()
    try:
        path = tree / "data" / "storm"
        path.write_text("")
        for _ in range(5000):
            os.close(os.open(path, os.O_RDONLY))
        got = col.poll(0)
        lost = col.stats()[abi.Stat.LOST]
        assert lost > 0 and len(got) + lost >= 5000, (len(got), lost)
        stop = threading.Event()
        os.close(os.open(path, os.O_RDONLY))
        again = col.poll(100)
        stop.set()
        assert [o.path for o in again if o.tgid == os.getpid()] == [os.fsencode(path)]
    finally:
        col.close()


def test_io_uring_openat_is_seen(tree: Path) -> None:
    """In-process (the command's own part is the other tests'): io_uring's openat, as it
    succeeds and as it fails, with the call named and the path resolved against dirfd."""
    from tests.kernel.sysio import IoUring

    (tree / "data" / "ring-file").write_text("x")
    col = OpensCollector(OpensOptions(pid=os.getpid()))
    col.start()
    dirfd = os.open(tree / "data", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert col.uring is None, col.uring
        with IoUring() as ring:
            fd = ring.openat(dirfd, b"ring-file", os.O_RDONLY)
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                ring.openat(dirfd, b"ring-missing", os.O_RDONLY)
        got = col.poll(200)
    finally:
        os.close(dirfd)
        col.close()
    mine = sorted((o.call, os.fsdecode(o.path or b""), o.ret >= 0, o.ret) for o in got if o.call == "io_uring")
    assert [m[:3] for m in mine] == [("io_uring", str(tree / "data" / "ring-file"), True),
                                     ("io_uring", str(tree / "data" / "ring-missing"), False)]  # fmt: skip
    assert mine[1][3] == -errno.ENOENT


def test_paths_are_the_callers_own_in_a_chroot(tree: Path) -> None:
    """A process in a chroot (a container's root, a build root) sees its paths from its own root,
    as /proc/PID/fd shows them to it: the walk stops there, not at the mount namespace's root."""
    (tree / "data" / "inside").write_text("x")
    col = OpensCollector(OpensOptions())
    col.start()
    try:
        pid = os.fork()
        if pid == 0:
            try:
                os.chroot(tree)
                os.close(os.open("/data/inside", os.O_RDONLY))
            finally:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        got = col.poll(200)
    finally:
        col.close()
    assert [(o.path, o.given) for o in got if o.tgid == pid and o.given == b"/data/inside"] == [
        (b"/data/inside", b"/data/inside")]  # fmt: skip
