"""The history daemon against the real kernel and a real SQLite file: exact totals by process and
connection, a bad configuration, readers without root. Faults: tests/kernel/faults/."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.kernel.conftest import SOCKSCOPE, Netns
from tests.kernel.daemon_run import NOBODY, Daemon, by_pid, report, transfer


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
