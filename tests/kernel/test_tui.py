"""The real `sockscope top` full screen in tmux, against real loopback traffic: the test process
shows within two intervals, filter, sort and selection work, and the totals match the generator."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from sockscope.collector.rates import human_bytes
from tests.kernel.conftest import REPO, SOCKSCOPE, Traffic

# Latency and pace against the wall clock: run on an otherwise idle machine (scripts/test-all.sh
# runs these before the kernel matrix starts).
pytestmark = pytest.mark.wallclock

INTERVAL = 1.0
SIZE = (160, 45)


class Tmux:
    def __init__(self, command: list[str]) -> None:
        if shutil.which("tmux") is None:
            raise AssertionError("tmux is missing: scripts/install-deps.sh installs it")
        self.name = f"ssk-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "TERM": "xterm-256color"}
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", str(SIZE[0]), "-y", str(SIZE[1]),
             "-c", str(REPO), " ".join(command)],
            check=True, env=env, timeout=30,
        )  # fmt: skip

    def screen(self) -> str:
        out = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True, timeout=10
        )
        return out.stdout

    def keys(self, *keys: str) -> None:
        """All at once, as a paste arrives: keys right after "/" must still land in the filter box."""
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True, timeout=10)

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True, timeout=10).returncode == 0

    def wait_for(self, check: re.Pattern[str] | str, timeout: float) -> tuple[str, float]:
        """The screen once it shows `check`, and how long that took."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            found = check.search(text) if isinstance(check, re.Pattern) else check in text
            if found:
                return text, time.monotonic() - t0
            time.sleep(0.05)
        raise AssertionError(f"screen never showed {check!r} within {timeout} s; last screen:\n{text}")

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True, timeout=10)


@pytest.fixture
def top() -> Iterator[Tmux]:
    t = Tmux([SOCKSCOPE, "top", "--interval", str(INTERVAL), "--source", "collector"])
    try:
        t.wait_for("sockscope live · collector", 30)
        t.wait_for(re.compile(r"q quit"), 30)
        # Counting from here: the programs are attached once "starting…" is gone (traffic
        # started before that is not seen, and the totals below would miss it).
        t.wait_for(re.compile(r"^(?![\s\S]*starting…)"), 30)
        yield t
    finally:
        t.kill()


def _row(screen: str, name: str) -> list[str]:
    """The process table's row for `name`, split into cells."""
    for line in screen.splitlines():
        if f" {name} " in line and re.match(r"^\s*\d+\s", line):
            return line.split()
    raise AssertionError(f"no row for {name} in:\n{screen}")


def test_top_full_screen_shows_real_traffic(top: Tmux) -> None:
    tag = uuid.uuid4().hex[:6]
    server_name, client_name = f"tsrv-{tag}", f"tcli-{tag}"
    server = Traffic(server_name, "tcp-server", "--bind", "127.0.0.1", "--reply", "0")
    client: Traffic | None = None
    try:
        port = server.line()["port"]
        started = time.monotonic()
        # 96 KiB every 0.2 s for 6 s: long enough to watch, a known total at the end
        client = Traffic(client_name, "tcp-client", "--host", "127.0.0.1", "--port", str(port),
                         "--pace", "98304:0.2:6")  # fmt: skip
        screen, _ = top.wait_for(f" {client_name} ", 10)
        shown_after = time.monotonic() - started
        assert shown_after <= 2 * INTERVAL, f"the client showed after {shown_after:.2f} s (> two intervals)"
        assert server_name in screen  # the receiving side is a process of its own

        # filter to the client: the server's row goes, the client is the selection
        top.keys("/", *client_name, "Enter")
        screen, _ = top.wait_for(f"filter: {client_name}", 5)
        screen, _ = top.wait_for(re.compile(rf"{client.pid} {re.escape(client_name)}"), 5)  # the detail line
        assert server_name not in screen
        assert f"127.0.0.1:{port}" in screen  # its connection, in the connections table
        assert "ESTABLISHED" in screen
        peak = re.search(r"send last \S+, peak (\S+ \S+)", screen)
        assert peak is not None and peak.group(1) != "0 B/s", screen

        # sort by PID (first press after the default rate order), shown in the header
        top.keys("s")
        top.wait_for("▲PID", 5)

        done = client.wait()
        assert done["tx"] > 0 and done["tx"] % 98304 == 0
        # totals on screen match the generator's own count once the last interval is read
        screen, _ = top.wait_for(re.compile(rf"\s{re.escape(human_bytes(done['tx']))}\s"), 3 * INTERVAL + 2)
        row = _row(screen, client_name)
        assert row[-5:-3] == human_bytes(done["tx"]).split(), row  # SENT; cells are "<number> <unit>"
        server_done = server.wait()
        assert server_done["rx"] == done["tx"]

        # Esc clears the filter: the server is back
        top.keys("Escape")
        top.wait_for(f" {server_name} ", 5)
        top.keys("q")
        deadline = time.monotonic() + 15
        while top.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not top.alive(), "q did not quit"
    finally:
        if client is not None:
            client.kill()
        server.kill()
