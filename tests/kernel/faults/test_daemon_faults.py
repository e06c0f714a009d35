"""Faults injected into a running daemon: the real daemon, real traffic from generators that count
their own bytes, and what `sockscope report` reads back afterwards. Each test names the loss it
allows ("allowed loss") and asserts that and nothing more: every byte outside it is in the
history exactly once, and any loss is said, with exit status 1."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from sockscope.store.sqlite import SCHEMA_VERSION
from tests.kernel.conftest import SOCKSCOPE, Netns, Traffic
from tests.kernel.daemon_run import Daemon, by_pid, report, transfer
from tests.kernel.faults.conftest import fill

INTERVAL = 0.5  # Daemon's


def test_sigterm_loses_nothing(dbdir: Path, netns: Netns) -> None:
    """Allowed loss: none. Nothing is written by the clock (30 s interval): only the shutdown writes."""
    db = dbdir / "t.db"
    d = Daemon(db, "--interval", "30")
    cli, _, _, _ = transfer(netns, 777_777, 55_555)
    d.stop(signal.SIGTERM)
    assert by_pid(report(db))[cli.pid] == (777_777, 55_555)


def test_sigkill_mid_write_loses_at_most_the_intervals_in_flight(dbdir: Path, netns: Netns) -> None:
    """Allowed loss: what moved in the interval being counted and the one being written when the
    daemon was killed (2 intervals, with 0.5 s of slack); nothing counted twice; the file opens
    cleanly afterwards."""
    db = dbdir / "k.db"
    d = Daemon(db)
    srv = Traffic("ss-k-srv", "tcp-server", "--bind", netns.peer4, "--accept", "40", prefix=netns.exec_prefix())
    port = str(srv.line()["port"])
    done: list[tuple[int, float, int]] = []  # (pid, when it ended, bytes sent)
    killed_at = None
    try:
        for k in range(40):
            sent = 100_000 + k
            cli = Traffic(f"ss-k-{k}", "tcp-client", "--host", netns.peer4, "--port", port, "--send", str(sent))
            assert cli.wait()["tx"] == sent
            done.append((cli.pid, time.monotonic(), sent))
            if k == 25:  # traffic before and after: the kill lands while intervals are being written
                d.proc.kill()
                killed_at = time.monotonic()
                d.proc.communicate(timeout=60)
    finally:
        srv.kill()
    assert killed_at is not None
    seen = by_pid(report(db))
    for pid, ended, sent in done:
        got = seen.get(pid, (0, 0))[0]
        if ended < killed_at - 2 * INTERVAL - 0.5:
            assert got == sent, (pid, got, sent)  # long written
        else:
            assert got in (0, sent), (pid, got, sent)  # whole or not at all (one interval holds it), never twice
    assert all(pid not in seen for pid, ended, _ in done if ended > killed_at)
    err = Daemon(db, "--duration", "1").wait()
    assert "corrupt" not in err
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_second_writer_is_refused_naming_the_first(dbdir: Path, netns: Netns) -> None:
    """Allowed loss: none; counted once, not twice (two daemons both wrote every byte)."""
    db = dbdir / "two.db"
    first = Daemon(db)
    second = subprocess.run(
        [SOCKSCOPE, "daemon", "--db", str(db), "--duration", "2"], capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 1
    assert second.stderr == (
        f"sockscope: another sockscope daemon (pid {first.proc.pid}) is writing {db}: only one may; "
        "stop it first, or give this one another --db\n"
    )
    cli, _, _, _ = transfer(netns, 500_001, 20_003)
    first.stop()
    assert by_pid(report(db))[cli.pid] == (500_001, 20_003)


def test_a_database_deleted_while_running_is_noticed_and_a_new_one_started(dbdir: Path, netns: Netns) -> None:
    """Allowed loss: the deleted file's history (the user deleted it); everything after, none."""
    db = dbdir / "del.db"
    d = Daemon(db)
    time.sleep(1.0)
    db.unlink()
    Path(f"{db}-wal").unlink(missing_ok=True)
    Path(f"{db}-shm").unlink(missing_ok=True)
    deadline = time.monotonic() + 10
    while not db.exists() and time.monotonic() < deadline:  # noticed within an interval or two
        time.sleep(0.1)
    assert db.exists()
    cli, _, _, _ = transfer(netns, 600_007, 30_011)
    err = d.stop()
    assert f"{db} was deleted while the daemon ran: the history written to it is gone; opening the path anew" in err
    assert by_pid(report(db))[cli.pid] == (600_007, 30_011)


def test_a_database_that_cannot_be_written_at_all_means_exit_1_with_the_amount() -> None:
    """Allowed loss: everything (/proc takes no file), but said, with the amount, and exit 1."""
    res = subprocess.run(
        [SOCKSCOPE, "daemon", "--db", "/proc/sockscope-test.db", "--interval", "0.5", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("sockscope daemon: data lost: ") and " intervals (" in last, res.stderr
    assert "bytes of traffic) were not written to the database: " in last


def test_a_full_disk_then_freed_loses_nothing(small_fs: Path, netns: Netns) -> None:
    """Allowed loss: none, within the backlog's bound."""
    db = small_fs / "f.db"
    d = Daemon(db)
    time.sleep(1.0)
    filler = fill(small_fs)
    try:
        cli, srv, _, _ = transfer(netns, 2_222_223, 11_111)
        time.sleep(2.0)
    finally:
        filler.unlink()
    time.sleep(2.0)  # space again: the backlog is written at the next try
    err = d.stop()
    assert "cannot write the database" in err and "writable again" in err
    view = by_pid(report(db))
    assert view[cli.pid] == (2_222_223, 11_111)
    assert view[srv.pid] == (11_111, 2_222_223)


def test_a_full_disk_past_the_backlog_bound_merges_old_intervals_and_loses_nothing(
    small_fs: Path, netns: Netns
) -> None:
    """Allowed loss: none. A backlog of 100 rows, 20 intervals a second, a connection moving bytes
    in each: past the bound, old intervals are merged (into the minute) instead of dropped."""
    db = small_fs / "m.db"
    d = Daemon(db, "--interval", "0.05", "-o", "daemon.backlog=100")
    time.sleep(0.5)
    filler = fill(small_fs)
    try:
        srv = Traffic("ss-m-srv", "tcp-server", "--bind", netns.peer4, "--reply", "0", prefix=netns.exec_prefix())
        try:
            port = str(srv.line()["port"])
            cli = Traffic("ss-m-cli", "tcp-client", "--host", netns.peer4, "--port", port, "--pace", "1000:0.02:6")
            c_done, s_done = cli.wait(), srv.wait()
        finally:
            srv.kill()
    finally:
        filler.unlink()
    time.sleep(3.0)
    err = d.stop()
    assert "the backlog passed 100 rows: its oldest intervals are merged into coarser ones" in err
    assert "dropped" not in err and "data lost" not in err
    view = by_pid(report(db))
    assert view[cli.pid] == (c_done["tx"], 0) and c_done["tx"] >= 100_000
    assert view[srv.pid] == (0, s_done["rx"])


def test_a_read_only_file_system_at_start_loses_nothing_once_writable(small_fs: Path, netns: Netns) -> None:
    """Allowed loss: none, within the backlog's bound (the daemon counts in memory meanwhile)."""
    db = small_fs / "r.db"
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        d = Daemon(db)
        cli, _, _, _ = transfer(netns, 1_234_567, 7_654)
        time.sleep(2.0)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    time.sleep(2.0)
    err = d.stop()
    assert "cannot write the database" in err
    assert by_pid(report(db))[cli.pid] == (1_234_567, 7_654)


def test_an_immutable_shm_file_is_waited_out_not_a_crash(dbdir: Path, netns: Netns) -> None:
    """Allowed loss: none. `chattr +i` on the -shm file killed the daemon with SIGBUS (75 % of the
    traffic lost) and would kill any reader: both now say what is wrong and what to do."""
    db = dbdir / "i.db"
    shm = Path(f"{db}-shm")
    d = Daemon(db)
    time.sleep(1.0)
    subprocess.run(["chattr", "+i", str(shm)], check=True)
    try:
        cli, _, _, _ = transfer(netns, 345_678, 9_876)
        time.sleep(1.5)
        assert d.proc.poll() is None
        res = subprocess.run([SOCKSCOPE, "report", "--db", str(db)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 1 and "Traceback" not in res.stderr
        assert res.stderr == (
            f"sockscope: reading {db}: {shm} is immutable (chattr +i), and SQLite must write to it: "
            f"run `chattr -i {shm}`\n"
        )
    finally:
        subprocess.run(["chattr", "-i", str(shm)], check=True)
    time.sleep(4.5)  # the next try (the wait doubles from 1 s)
    err = d.stop()
    assert f"cannot write the database (writing {db}: {shm} is immutable (chattr +i)" in err
    assert "database writable again" in err
    assert by_pid(report(db))[cli.pid] == (345_678, 9_876)


def test_a_corrupt_file_is_moved_aside_and_a_new_one_started(dbdir: Path, netns: Netns) -> None:
    """Allowed loss: none of what follows; the damaged file is kept beside, not deleted."""
    db = dbdir / "c.db"
    db.write_bytes(b"this is not a database" * 100)
    d = Daemon(db)
    cli, _, _, _ = transfer(netns, 70_001, 3_001)
    err = d.stop()
    aside = [p for p in dbdir.iterdir() if p.name.startswith("c.db.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")
    assert "moved it aside" in err
    version = sqlite3.connect(db).execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),)
    assert by_pid(report(db))[cli.pid] == (70_001, 3_001)


def test_a_truncated_file_is_moved_aside_and_a_new_one_started(dbdir: Path, netns: Netns) -> None:
    """Allowed loss: none of what follows; the truncated file (and its history) is kept beside."""
    db = dbdir / "cut.db"
    d = Daemon(db)
    first, _, _, _ = transfer(netns, 40_000, 400)
    d.stop()
    size = db.stat().st_size
    assert size >= 8192
    with db.open("r+b") as f:  # what a crash of the disk or a copy cut short leaves
        f.truncate(size // 2)
    d = Daemon(db)
    cli, _, _, _ = transfer(netns, 50_003, 5_003)
    err = d.stop()
    assert "moved it aside" in err
    aside = [p for p in dbdir.iterdir() if p.name.startswith("cut.db.corrupt-") and p.name.count("-") == 3]
    assert len(aside) == 1 and aside[0].stat().st_size == size // 2
    view = by_pid(report(db))
    assert view[cli.pid] == (50_003, 5_003) and first.pid not in view


def test_a_newer_schema_is_refused_and_left_untouched(dbdir: Path) -> None:
    """Allowed loss: none; this daemon counts nothing (it cannot store it), says why and exits 1,
    before loading anything into the kernel; the newer file is not changed."""
    db = dbdir / "new.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        c.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION + 1),))
    c.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    res = subprocess.run(
        [SOCKSCOPE, "daemon", "--db", str(db), "--duration", "1"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"{db} has schema {SCHEMA_VERSION + 1}; this sockscope knows up to {SCHEMA_VERSION}" in res.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    rep = subprocess.run([SOCKSCOPE, "report", "--db", str(db)], capture_output=True, text=True, timeout=60)
    assert rep.returncode == 1 and f"has schema {SCHEMA_VERSION + 1}" in rep.stderr
    assert sorted(os.listdir(dbdir)) in (["new.db"], ["new.db", "new.db.lock"])
