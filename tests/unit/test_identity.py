from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from sockscope.collector import procfs
from sockscope.collector.cgroups import CgroupPaths
from sockscope.collector.identity import ProcessIdentity, ProcessResolver
from sockscope.collector.model import ProcFacts

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "proc"
CURL_NETNS = (FIXTURES / "4242" / "ns" / "net").stat().st_ino  # a plain file stands in for the namespace
HZ = 100
CURL_START_NS = 123456 * 10_000_000 + 4_321  # stat field 22 of fixture 4242 is 123456 ticks
USERS = {0: "root", 1000: "alice"}


@pytest.fixture(autouse=True)
def fake_users(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procfs, "user_name", USERS.get)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pids passed to procfs.read_process, in order."""
    seen: list[int] = []
    real = procfs.read_process

    def counting(pid: int, root: str = procfs.PROC) -> procfs.ProcRecord | None:
        seen.append(pid)
        return real(pid, root)

    monkeypatch.setattr(procfs, "read_process", counting)
    return seen


def curl_facts(start_ns: int = CURL_START_NS, uid: int = 1000) -> ProcFacts:
    return ProcFacts(
        tgid=4242,
        start_ns=start_ns,
        comm="curl-kernel",
        exe_name="curl",
        args=("curl", "-s", "https://example.com/a"),
        uid=uid,
        gid=1001,
        ppid=4000,
    )


def resolver(root: Path = FIXTURES) -> ProcessResolver:
    return ProcessResolver(str(root), hz=HZ)


def test_live_process_uses_proc_exe_and_cmdline_and_kernel_comm() -> None:
    assert resolver().resolve(curl_facts(), 4242) == ProcessIdentity(
        pid=4242,
        start_ns=CURL_START_NS,
        comm="curl-kernel",
        exe="/usr/bin/curl",
        cmdline="curl -s https://example.com/a b",
        uid=1000,
        user="alice",
        ppid=4000,
        alive=True,
        cgroup="/user.slice/user-1000.slice/session-3.scope",
        unit="session-3.scope",
        netns=CURL_NETNS,
    )


def test_pid_reused_falls_back_to_kernel_facts() -> None:
    later = CURL_START_NS + 10_000_000  # one tick later: /proc shows a different process
    assert resolver().resolve(curl_facts(start_ns=later), 4242) == ProcessIdentity(
        pid=4242,
        start_ns=later,
        comm="curl-kernel",
        exe="curl",
        cmdline="curl -s https://example.com/a",
        uid=1000,
        user="alice",
        ppid=4000,
        alive=False,
        cgroup=None,
    )


def test_exited_process_uses_kernel_facts(tmp_path: Path) -> None:
    identity = resolver(tmp_path).resolve(curl_facts(), 4242)
    assert (identity.exe, identity.cmdline, identity.alive, identity.cgroup) == (
        "curl",
        "curl -s https://example.com/a",
        False,
        None,
    )


def test_exited_process_with_empty_kernel_names_gives_none(tmp_path: Path) -> None:
    facts = ProcFacts(tgid=7, start_ns=5, comm="kworker/0:1", exe_name="", args=(), uid=0, gid=0, ppid=2)
    assert resolver(tmp_path).resolve(facts, 7) == ProcessIdentity(
        pid=7,
        start_ns=5,
        comm="kworker/0:1",
        exe=None,
        cmdline=None,
        uid=0,
        user="root",
        ppid=2,
        alive=False,
    )


def test_live_process_with_empty_proc_names_keeps_kernel_names(tmp_path: Path) -> None:
    # A zombie: /proc/PID is there with the right start time, but exe and cmdline are empty.
    root = tmp_path / "proc"
    shutil.copytree(FIXTURES, root, symlinks=True)
    (root / "4242" / "exe").unlink()
    (root / "4242" / "cmdline").write_bytes(b"")
    identity = resolver(root).resolve(curl_facts(), 4242)
    assert (identity.exe, identity.cmdline, identity.alive) == ("curl", "curl -s https://example.com/a", True)


def test_hostile_names_are_kept_literally() -> None:
    facts = ProcFacts(
        tgid=4343,
        start_ns=777 * 10_000_000,
        comm="[red]x[/red]",
        exe_name="\x1b[2J",
        args=("[red]x[/red]",),
        uid=0,
        gid=0,
        ppid=1,
    )
    identity = resolver().resolve(facts, 4343)
    assert (identity.comm, identity.exe, identity.cmdline, identity.alive) == (
        "[red]x[/red]",
        "\x1b[2J",  # /proc has no readable exe for 4343, so the kernel's name stays
        "[red]x[/red] \\xff\\xfe-v \x1b[2J",
        True,
    )


def test_uid_zero_is_root_and_unknown_uid_has_no_user() -> None:
    r = resolver()
    root_identity = r.resolve(curl_facts(uid=0), 4242)
    stranger = r.resolve(curl_facts(start_ns=1, uid=54321), 4242)
    assert (root_identity.uid, root_identity.user) == (0, "root")
    assert (stranger.uid, stranger.user) == (54321, None)


def test_proc_read_once_per_pid_and_start(reads: list[int]) -> None:
    r = resolver()
    first = r.resolve(curl_facts(), 4242)
    second = r.resolve(curl_facts(), 4242)
    assert second is first
    assert reads == [4242]
    assert len(r) == 1


def test_reused_pid_is_a_new_cache_entry(reads: list[int]) -> None:
    r = resolver()
    old = r.resolve(curl_facts(), 4242)
    new = r.resolve(curl_facts(start_ns=CURL_START_NS + 10**9), 4242)
    assert (old.alive, new.alive) == (True, False)
    assert reads == [4242, 4242]
    assert len(r) == 2


def test_forget_drops_the_entry_and_rereads(reads: list[int]) -> None:
    r = resolver()
    r.resolve(curl_facts(), 4242)
    r.forget(4242, CURL_START_NS)
    r.forget(4242, CURL_START_NS)  # forgetting twice is harmless
    assert len(r) == 0
    r.resolve(curl_facts(), 4242)
    assert reads == [4242, 4242]


def test_cache_is_bounded_least_recently_used_first(tmp_path: Path, reads: list[int]) -> None:
    r = ProcessResolver(str(tmp_path), hz=HZ, max_cached=2)
    a, b, c = (ProcFacts(pid, pid, "p", "", (), 0, 0, 1) for pid in (1, 2, 3))
    r.resolve(a, 1)
    r.resolve(b, 2)
    r.resolve(a, 1)  # a is now the most recently used: b goes first
    r.resolve(c, 3)
    assert len(r) == 2
    r.resolve(a, 1)
    r.resolve(b, 2)
    assert reads == [1, 2, 3, 2]


def test_default_cache_bound_is_8192(tmp_path: Path) -> None:
    r = ProcessResolver(str(tmp_path), hz=HZ)
    for pid in range(8200):
        r.resolve(ProcFacts(pid, 1, "p", "", (), 0, 0, 1), pid)
    assert len(r) == 8192


def test_no_facts_reads_proc_alone(reads: list[int]) -> None:
    r = resolver()
    expected = ProcessIdentity(
        pid=4242,
        start_ns=0,
        comm="curl",
        exe="/usr/bin/curl",
        cmdline="curl -s https://example.com/a b",
        uid=1000,
        user="alice",
        ppid=4100,
        alive=True,
        cgroup="/user.slice/user-1000.slice/session-3.scope",
        unit="session-3.scope",
        netns=CURL_NETNS,
    )
    assert r.resolve(None, 4242) == expected
    # Without a start time nothing is cached: a later pid reuse must not see this answer.
    assert r.resolve(None, 4242) == expected
    assert reads == [4242, 4242]
    assert len(r) == 0


def test_no_facts_and_no_process_is_unknown(tmp_path: Path) -> None:
    assert resolver(tmp_path).resolve(None, 31337) == ProcessIdentity(
        pid=31337,
        start_ns=0,
        comm="?",
        exe=None,
        cmdline=None,
        uid=None,
        user=None,
        ppid=None,
        alive=False,
        cgroup=None,
    )


def test_default_hz_is_clock_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procfs, "clock_ticks", lambda: 250)
    start_ns = 123456 * 4_000_000  # 123456 ticks at 250 Hz
    identity = ProcessResolver(str(FIXTURES)).resolve(curl_facts(start_ns=start_ns), 4242)
    assert identity.alive is True


class _Paths(CgroupPaths):
    def __init__(self, known: dict[int, str]) -> None:
        super().__init__(None)
        self.known = known

    def path(self, cgroup_id: int) -> str | None:
        return self.known.get(cgroup_id)


def test_exited_process_gets_unit_from_its_cgroup_id_and_parent_from_the_kernel(tmp_path: Path) -> None:
    facts = replace(curl_facts(), cgroup_id=77, parent_comm="backup.sh", netns=4026531840)
    r = ProcessResolver(str(tmp_path), hz=HZ, cgroups=_Paths({77: "/system.slice/backup.service"}))
    ident = r.resolve(facts, 4242)
    assert not ident.alive
    assert (ident.cgroup, ident.unit, ident.container) == ("/system.slice/backup.service", "backup.service", None)
    assert (ident.parent_comm, ident.netns, ident.ppid) == ("backup.sh", 4026531840, 4000)


def test_exec_is_a_new_identity_with_the_same_pid_and_start() -> None:
    r = resolver()
    first = r.resolve(curl_facts(), 4242)
    after_exec = r.resolve(replace(curl_facts(), comm="wget"), 4242)
    assert (first.comm, after_exec.comm) == ("curl-kernel", "wget")
    assert len(r) == 2
    r.forget(4242, CURL_START_NS)
    assert len(r) == 0
