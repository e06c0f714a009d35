"""The history daemon against the real kernel and a real SQLite file: exact totals,
signals, a full disk, a read-only file system, a corrupt file, a bad config, readers
without root."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sockscope.store.sqlite import SCHEMA_VERSION
from tests.kernel.conftest import SOCKSCOPE, Netns, Traffic

NOBODY = ["setpriv", "--reuid=65534", "--clear-groups"]


class Daemon:
    """`sockscope daemon` running; `head` holds what it said before it was counting."""

    def __init__(self, db: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [SOCKSCOPE, "daemon", "--db", str(db), "--interval", "0.5", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self.head = ""
        while not (line := self.proc.stderr.readline()).startswith("sockscope daemon: counting;"):
            assert line, self.head + self.proc.stderr.read()
            self.head += line

    def wait(self) -> str:
        err = self.head + self.proc.communicate(timeout=60)[1]
        assert self.proc.returncode == 0, err
        return err

    def stop(self, sig: int = signal.SIGTERM) -> str:
        self.proc.send_signal(sig)
        return self.wait()


def report(db: Path, *args: str, user: list[str] | None = None) -> list[dict[str, Any]]:
    res = subprocess.run(
        [*(user or []), SOCKSCOPE, "report", "--db", str(db), "--since", "1h", "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return list(json.loads(res.stdout))


def transfer(netns: Netns, up: int, down: int) -> tuple[Traffic, Traffic, dict[str, Any], dict[str, Any]]:
    srv = Traffic("ss-h-srv", "tcp-server", "--bind", netns.peer4, "--reply", str(down), prefix=netns.exec_prefix())
    try:
        port = srv.line()["port"]
        cli = Traffic("ss-h-cli", "tcp-client", "--host", netns.peer4, "--port", str(port), "--send", str(up))
        return cli, srv, cli.wait(), srv.wait()
    finally:
        srv.kill()


def by_pid(rows: list[dict[str, Any]]) -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    for r in rows:
        tx, rx = out.get(r["pid"], (0, 0))
        out[r["pid"]] = (tx + r["tx_bytes"], rx + r["rx_bytes"])
    return out


@pytest.fixture
def dbdir() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are 0700, and a reader without root must get in.
    path = Path(tempfile.mkdtemp(prefix="sockscope-db-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_transfer_is_exact_by_process_and_connection_while_running_and_after(dbdir: Path, netns: Netns) -> None:
    db = dbdir / "h.db"
    d = Daemon(db, "--duration", "6")
    cli, srv, _, s_done = transfer(netns, 3_000_017, 1_000_003)
    time.sleep(1.5)  # two intervals: written
    live = by_pid(report(db))
    d.wait()
    after = by_pid(report(db))
    for view in (live, after):
        assert view[cli.pid] == (3_000_017, 1_000_003)
        assert view[srv.pid] == (1_000_003, 3_000_017)
    conns = [r for r in report(db, "--by", "connection") if r["pid"] == cli.pid]
    assert len(conns) == 1
    c = conns[0]
    assert (c["proto"], c["raddr"], c["rport"], c["tx_bytes"], c["rx_bytes"]) == (
        "tcp",
        netns.peer4,
        s_done["local"][1],
        3_000_017,
        1_000_003,
    )
    assert c["start"] is not None and c["end"] is not None and c["duration"] >= 0
    assert (db.stat().st_mode & 0o777) == 0o640


def test_sigterm_writes_everything(dbdir: Path, netns: Netns) -> None:
    db = dbdir / "t.db"
    d = Daemon(db, "--interval", "30")  # nothing written by the clock: only the shutdown writes
    cli, _, _, _ = transfer(netns, 777_777, 55_555)
    d.stop(signal.SIGTERM)
    assert by_pid(report(db))[cli.pid] == (777_777, 55_555)


def test_a_second_daemon_on_the_same_database_is_refused_naming_the_first(dbdir: Path, netns: Netns) -> None:
    # Issue 11: two daemons on one database both ran, and every byte was reported twice.
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
    assert by_pid(report(db))[cli.pid] == (500_001, 20_003)  # once, not twice


def test_a_database_deleted_while_running_is_noticed_and_a_new_one_started(dbdir: Path, netns: Netns) -> None:
    # Issue 11: after the file was deleted everything was lost, silently, exit 0.
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


def test_intervals_that_cannot_be_written_mean_exit_1_with_the_amount(dbdir: Path) -> None:
    # Issue 11: --db /proc/x.db --duration 2 lost everything and exited 0.
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


def test_sigkill_loses_at_most_the_last_interval_and_reopens_cleanly(dbdir: Path, netns: Netns) -> None:
    db = dbdir / "k.db"
    d = Daemon(db)
    cli, _, _, _ = transfer(netns, 444_444, 3_333)
    time.sleep(1.5)  # the transfer's intervals are written
    d.proc.kill()
    d.proc.communicate(timeout=60)
    assert by_pid(report(db))[cli.pid] == (444_444, 3_333)
    err = Daemon(db, "--duration", "1").wait()
    assert "corrupt" not in err
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.fixture
def small_fs() -> Iterator[Path]:
    mnt = Path(f"/tmp/sockscope-fs-{uuid.uuid4().hex[:8]}")
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        mnt.rmdir()


def test_full_disk_keeps_counting_in_memory_then_writes(small_fs: Path, netns: Netns) -> None:
    db = small_fs / "f.db"
    d = Daemon(db)
    time.sleep(1.0)
    filler = small_fs / "filler"
    with filler.open("wb") as f:  # fill the file system to the last block
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    try:
        cli, srv, _, _ = transfer(netns, 2_222_223, 11_111)
        time.sleep(2.0)
    finally:
        filler.unlink()
    time.sleep(2.0)  # space again: the backlog is written
    err = d.stop()
    assert "cannot write the database" in err and "writable again" in err
    view = by_pid(report(db))
    assert view[cli.pid] == (2_222_223, 11_111)
    assert view[srv.pid] == (11_111, 2_222_223)


def test_read_only_file_system_keeps_counting_then_writes(small_fs: Path, netns: Netns) -> None:
    # Read-only when the daemon starts (a file system cannot turn read-only under an open writer).
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


def test_corrupt_database_is_moved_aside_and_a_new_one_started(dbdir: Path) -> None:
    db = dbdir / "c.db"
    db.write_bytes(b"this is not a database" * 100)
    err = Daemon(db, "--duration", "1").wait()
    aside = [p for p in dbdir.iterdir() if p.name.startswith("c.db.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")
    assert "moved it aside" in err
    version = sqlite3.connect(db).execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),)


def test_bad_config_refused_with_file_line_and_key(dbdir: Path) -> None:
    cfg = dbdir / "bad.toml"
    cfg.write_text('[daemon]\ninterval = 1\n\n[retention]\nraw = "two days"\n')
    db = dbdir / "never.db"
    res = subprocess.run(
        [SOCKSCOPE, "daemon", "--config", str(cfg), "--db", str(db), "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert f"{cfg}:5: retention.raw:" in res.stderr
    assert "Traceback" not in res.stderr
    assert not db.exists()  # not started half-configured


def test_report_without_root_reads_only(dbdir: Path, netns: Netns) -> None:
    db = dbdir / "u.db"
    d = Daemon(db, "--duration", "3")
    cli, _, _, _ = transfer(netns, 99_999, 1_111)
    d.wait()
    for f in dbdir.iterdir():
        os.chown(f, 0, 65534)  # group nogroup may read (mode 0640)
    assert by_pid(report(db, user=[*NOBODY, "--regid=65534"]))[cli.pid] == (99_999, 1_111)
    denied = subprocess.run(
        [*NOBODY, "--regid=65533", SOCKSCOPE, "report", "--db", str(db)], capture_output=True, text=True, timeout=60
    )
    assert denied.returncode == 1 and "Traceback" not in denied.stderr
    # Issue 11: it said "unable to open database file"; now which problem, and what to do.
    assert denied.stderr.startswith(f"sockscope: {db}: permission denied: this user may not read the history")
    assert "chgrp GROUP" in denied.stderr
    dbdir.chmod(0o700)  # a directory on the way that this user cannot search
    hidden = subprocess.run(
        [*NOBODY, "--regid=65534", SOCKSCOPE, "report", "--db", str(db)], capture_output=True, text=True, timeout=60
    )
    assert hidden.returncode == 1
    assert hidden.stderr.startswith(f"sockscope: {db}: permission denied"), hidden.stderr
