from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockscope.collector import procfs
from sockscope.collector.procfs import (
    ProcRecord,
    StatFields,
    StatusFields,
    parse_cgroup,
    parse_cmdline,
    parse_stat,
    parse_status,
    read_process,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "proc"
STAT_TAIL = "S 1 4343 1 0 -1 4194304 1 0 0 0 5 3 0 0 20 0 1 0 987654 1000 100 18446744073709551615"


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    """A writable copy of the fixture tree (symlinks copied as symlinks)."""
    root = tmp_path / "proc"
    shutil.copytree(FIXTURES, root, symlinks=True)
    return root


@pytest.fixture
def fresh_user_cache() -> Iterator[None]:
    procfs.user_name.cache_clear()
    yield
    procfs.user_name.cache_clear()


# --- parse_stat ---


def test_parse_stat_plain() -> None:
    assert parse_stat(f"4343 (curl) {STAT_TAIL}\n") == StatFields("curl", "S", 1, 987654)


@pytest.mark.parametrize(
    "comm",
    ["a b", "x) y", "((", ")", ") S 9 9", "tab\there", "line\nbreak", "[red]x[/red]", "\x1b[2J"],
)
def test_parse_stat_comm_is_everything_up_to_the_last_paren(comm: str) -> None:
    fields = parse_stat(f"4343 ({comm}) {STAT_TAIL}\n")
    assert fields == StatFields(comm, "S", 1, 987654)


def test_parse_stat_empty_comm() -> None:
    assert parse_stat(f"7 () {STAT_TAIL}").comm == ""


@pytest.mark.parametrize("text", ["", "4343 curl S 1", "4343 (curl) S 1 2 3", f"4343 (curl {STAT_TAIL}"])
def test_parse_stat_malformed_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_stat(text)


# --- parse_status ---


def test_parse_status_reads_real_ids() -> None:
    text = "Name:\tcurl\nTgid:\t4242\nPid:\t4243\nPPid:\t4100\nUid:\t1000\t0\t0\t0\nGid:\t1001\t5\t5\t5\n"
    assert parse_status(text) == StatusFields(uid=1000, gid=1001, ppid=4100, tgid=4242)


def test_parse_status_absent_fields_are_none() -> None:
    assert parse_status("Name:\tx\nState:\tZ (zombie)\n") == StatusFields(None, None, None, None)


def test_parse_status_uid_zero_is_not_none() -> None:
    assert parse_status("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n") == StatusFields(0, 0, None, None)


def test_parse_status_garbage_value_is_none() -> None:
    assert parse_status("Uid:\tnope\nGid:\t\nPPid:\t3\n") == StatusFields(None, None, 3, None)


# --- parse_cmdline ---


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", ()),
        (b"\0", ()),
        (b"curl\0-s\0", ("curl", "-s")),
        (b"curl\0-s", ("curl", "-s")),
        (b"a\0\0b\0", ("a", "", "b")),
        (b"a b\0c\0", ("a b", "c")),
        (b"nginx: worker process", ("nginx: worker process",)),
        (b"nginx: master process\0\0\0\0", ("nginx: master process",)),
    ],
)
def test_parse_cmdline(raw: bytes, expected: tuple[str, ...]) -> None:
    assert parse_cmdline(raw) == expected


def test_parse_cmdline_invalid_utf8_is_escaped_not_raised() -> None:
    assert parse_cmdline(b"\xff\xfe-v\0caf\xc3\xa9\0") == ("\\xff\\xfe-v", "café")


def test_parse_cmdline_markup_and_escapes_are_kept_literally() -> None:
    assert parse_cmdline(b"[red]x[/red]\0\x1b[2J\0") == ("[red]x[/red]", "\x1b[2J")


# --- parse_cgroup ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0::/user.slice/session-3.scope\n", "/user.slice/session-3.scope"),
        ("12:pids:/a\n0::/b\n1:name=systemd:/c\n", "/b"),
        ("12:pids:/system.slice/x.service\n11:memory:/other\n", "/system.slice/x.service"),
        ("0::/\n", "/"),
        ("0::/odd:name\n", "/odd:name"),
        ("", None),
        ("garbage\n", None),
    ],
)
def test_parse_cgroup(text: str, expected: str | None) -> None:
    assert parse_cgroup(text) == expected


# --- read_process ---


def test_read_process_fixture(proc_root: Path) -> None:
    netns = os.stat(proc_root / "4242" / "ns" / "net").st_ino
    assert read_process(4242, str(proc_root)) == ProcRecord(
        pid=4242,
        comm="curl",
        exe="/usr/bin/curl",
        cmdline=("curl", "-s", "https://example.com/a b"),
        uid=1000,
        gid=1001,
        ppid=4100,
        starttime_ticks=123456,
        cgroup="/user.slice/user-1000.slice/session-3.scope",
        netns=netns,
    )


def test_read_process_hostile_names_kept_as_data() -> None:
    # 4343 has no exe link and no ns/net: unreadable, like a kernel thread or another user's process.
    assert read_process(4343, str(FIXTURES)) == ProcRecord(
        pid=4343,
        comm="[red]x) y\n\x1b[2J",
        exe=None,
        cmdline=("[red]x[/red]", "\\xff\\xfe-v", "\x1b[2J"),
        uid=0,
        gid=0,
        ppid=1,
        starttime_ticks=777,
        cgroup="/system.slice/evil.service",
        netns=None,
    )


def test_read_process_missing_pid_is_none(tmp_path: Path) -> None:
    assert read_process(99999, str(tmp_path)) is None


@pytest.mark.parametrize("name", ["stat", "status", "cmdline", "cgroup"])
def test_read_process_file_vanished_is_none(proc_root: Path, name: str) -> None:
    (proc_root / "4242" / name).unlink()
    assert read_process(4242, str(proc_root)) is None


@pytest.mark.parametrize("error", [FileNotFoundError, ProcessLookupError, PermissionError])
def test_read_process_read_error_mid_way_is_none(
    proc_root: Path, monkeypatch: pytest.MonkeyPatch, error: type[OSError]
) -> None:
    real_read = procfs._read

    def failing_read(path: str) -> bytes:
        if path.endswith("cmdline"):
            raise error(3, "gone")
        return real_read(path)

    monkeypatch.setattr(procfs, "_read", failing_read)
    assert read_process(4242, str(proc_root)) is None


def test_read_process_torn_stat_is_none(proc_root: Path) -> None:
    (proc_root / "4242" / "stat").write_text("4242 (cu")
    assert read_process(4242, str(proc_root)) is None


def test_read_process_exe_and_netns_unreadable_are_none(proc_root: Path) -> None:
    (proc_root / "4242" / "exe").unlink()
    (proc_root / "4242" / "ns" / "net").unlink()
    record = read_process(4242, str(proc_root))
    assert record is not None
    assert (record.exe, record.netns, record.comm) == (None, None, "curl")


def test_read_process_exe_with_invalid_utf8_is_escaped(proc_root: Path) -> None:
    exe = proc_root / "4242" / "exe"
    exe.unlink()
    os.symlink(b"/tmp/\xffbin (deleted)", os.fsencode(exe))
    record = read_process(4242, str(proc_root))
    assert record is not None
    assert record.exe == "/tmp/\\xffbin (deleted)"


def test_read_process_self_on_real_proc() -> None:
    record = read_process(os.getpid())
    assert record is not None
    assert (record.pid, record.uid, record.ppid) == (os.getpid(), os.getuid(), os.getppid())
    assert record.netns == os.stat("/proc/self/ns/net").st_ino


# --- clock ticks ---


def test_clock_ticks_is_sysconf() -> None:
    assert procfs.clock_ticks() == os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize(
    ("ns", "hz", "ticks"),
    [
        (0, 100, 0),
        (9_999_999, 100, 0),
        (10_000_000, 100, 1),
        (1_234_567_890_123, 100, 123456),
        (1_234_567_890_123, 250, 308641),
        (1_234_567_890_123, 1000, 1234567),
    ],
)
def test_ns_to_ticks(ns: int, hz: int, ticks: int) -> None:
    assert procfs.ns_to_ticks(ns, hz) == ticks


# --- user_name ---


def test_user_name_known_and_unknown(monkeypatch: pytest.MonkeyPatch, fresh_user_cache: None) -> None:
    calls: list[int] = []

    def getpwuid(uid: int) -> pwd.struct_passwd:
        calls.append(uid)
        if uid == 0:
            return pwd.struct_passwd(("root", "x", 0, 0, "root", "/root", "/bin/sh"))
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", getpwuid)
    assert procfs.user_name(0) == "root"
    assert procfs.user_name(0) == "root"
    assert procfs.user_name(54321) is None
    assert procfs.user_name(54321) is None
    assert calls == [0, 54321]


def test_user_name_out_of_range_uid_is_none(fresh_user_cache: None) -> None:
    assert procfs.user_name(2**40) is None
