"""The daemon as the kernel tests run it: a real `sockscope daemon`, real traffic through the test's
network namespace, and `sockscope report` to read back what it wrote."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

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

    def wait(self, status: int = 0) -> str:
        err = self.head + self.proc.communicate(timeout=60)[1]
        assert self.proc.returncode == status, err
        return err

    def stop(self, sig: int = signal.SIGTERM, status: int = 0) -> str:
        self.proc.send_signal(sig)
        return self.wait(status)


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
