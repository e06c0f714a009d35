"""The fork server that starts the traffic generators: what the tests rely on of a Popen."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.kernel.conftest import Netns, Traffic
from tests.kernel.spawner import Spawner


def test_a_generator_is_its_own_named_process_in_the_namespace_asked(netns: Netns) -> None:
    srv = Traffic("ss-sp-srv", "tcp-server", "--bind", netns.peer4, prefix=netns.exec_prefix())
    try:
        port = srv.line()["port"]
        assert srv.pid != os.getpid()
        assert os.stat(f"/proc/{srv.pid}/ns/net").st_ino == netns.inode()
        assert Path(f"/proc/{srv.pid}/comm").read_text().strip() == "ss-sp-srv"
        cli = Traffic("ss-sp-cli", "tcp-client", "--host", netns.peer4, "--port", str(port), "--send", "12345")
        assert os.stat(f"/proc/{cli.pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
        assert (cli.wait()["tx"], srv.wait()["rx"]) == (12345, 12345)
    finally:
        srv.kill()


def test_exit_status_errors_and_kill_are_reported_as_popen_does() -> None:
    spawner = Spawner()
    try:
        bad = spawner.spawn("traffic", ["--name", "ss-sp-bad", "no-such-mode"])
        assert bad.wait(timeout=30) == 2  # argparse's
        assert "invalid choice" in bad.stderr.read()
        hold = spawner.spawn("traffic", ["--name", "ss-sp-hold", "udp-server", "--bind", "127.0.0.1", "--count", "1"])
        assert hold.stdout.readline().startswith("{")
        assert hold.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            hold.wait(timeout=0.2)
        hold.kill()
        assert hold.wait(timeout=30) == -9
        assert not os.path.exists(f"/proc/{hold.pid}")  # reaped by its waiter, not left a zombie
    finally:
        spawner.close()
