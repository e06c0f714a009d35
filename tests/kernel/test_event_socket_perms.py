"""The event socket's permissions, for real: root:GROUP 0660, a member of GROUP subscribes and gets the
events, another user is told which group to join. A system group made for the test (groupadd, then
groupdel); the users' identities by setpriv (nobody, with or without the group)."""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockscope.events.server import EventServer

NOBODY = ["setpriv", "--reuid=65534", "--inh-caps=-all", "--bounding-set=-all"]  # and a group: each test's

# Run as the other user: subscribes, prints "connected", then each event's n until n == 2.
SUBSCRIBER = """
import json, sys
from sockscope.events.client import ClientError, daemon_listening, subscribe
print("listening", daemon_listening(sys.argv[1]), flush=True)
try:
    lines = subscribe(sys.argv[1], timeout=20)
    print("connected", flush=True)
    for line in lines:
        n = json.loads(line)["n"]
        print(n, flush=True)
        if n == 2:
            break
except ClientError as e:
    print(f"error: {e}", flush=True)
    sys.exit(3)
"""


@pytest.fixture
def group() -> Iterator[tuple[str, int]]:
    name = f"ssev{uuid.uuid4().hex[:8]}"
    subprocess.run(["groupadd", "--system", name], check=True, capture_output=True, timeout=30)
    try:
        yield name, grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], check=True, capture_output=True, timeout=30)


@pytest.fixture
def served(group: tuple[str, int]) -> Iterator[EventServer]:
    # Not under pytest's tmp_path: its parents are 0700, and nobody must get to the socket.
    top = Path(tempfile.mkdtemp(prefix="ssev-", dir="/tmp"))
    top.chmod(0o755)
    said: list[str] = []
    server = EventServer(str(top / "run" / "events.sock"), group=group[0], report=said.append)
    server.start()
    try:
        yield server
    finally:
        server.close()
        assert not os.path.exists(server.path)
        shutil.rmtree(top)
        assert not said, said


def as_nobody(server: EventServer, *ids: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*NOBODY, *ids, sys.executable, "-c", SUBSCRIBER, server.path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_socket_is_root_group_0660_in_a_0755_directory(served: EventServer, group: tuple[str, int]) -> None:
    st = os.lstat(served.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, group[1], 0o660)
    assert stat.S_IMODE(os.stat(os.path.dirname(served.path)).st_mode) == 0o755


@pytest.mark.parametrize("how", ["supplementary", "primary"])
def test_a_member_of_the_group_gets_the_events(served: EventServer, group: tuple[str, int], how: str) -> None:
    gid = group[1]
    ids = ["--regid=65534", f"--groups={gid}"] if how == "supplementary" else [f"--regid={gid}", "--clear-groups"]
    child = as_nobody(served, *ids)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "listening True\n"
        assert child.stdout.readline() == "connected\n", child.stderr.read() if child.stderr else ""
        end = time.monotonic() + 10
        while (served.stats.served, served.stats.subscribers) != (2, 1):  # daemon_listening()'s probe, gone
            assert time.monotonic() < end, served.stats
            time.sleep(0.01)
        for n in range(3):
            served.offer(json.dumps({"v": 1, "kind": "tcp_connect", "n": n}).encode() + b"\n")
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        assert out == "0\n1\n2\n"
    finally:
        child.kill()
        child.wait(timeout=10)


def test_another_user_is_told_which_group_to_join(served: EventServer, group: tuple[str, int]) -> None:
    child = as_nobody(served, "--regid=65534", "--clear-groups")
    out, err = child.communicate(timeout=30)
    assert child.returncode == 3, (out, err)
    assert out == (
        "listening True\n"
        f"error: {served.path}: permission denied: be root or a member of group {group[0]} (the socket's group)\n"
    )
    assert served.stats.served == 0  # refused by the kernel, never accepted
