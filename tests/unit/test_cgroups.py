from __future__ import annotations

import os
from pathlib import Path

import pytest

from sockscope.collector.cgroups import CgroupPaths, classify

DOCKER = "a" * 60 + "1234"


@pytest.mark.parametrize(
    ("path", "unit", "container"),
    [
        ("/system.slice/nginx.service", "nginx.service", None),
        ("/user.slice/user-1000.slice/user@1000.service/app.slice/x.service", "x.service", None),
        ("/user.slice/user-1000.slice/session-3.scope", "session-3.scope", None),
        (f"/system.slice/docker-{DOCKER}.scope", f"docker-{DOCKER}.scope", DOCKER),
        (f"/kubepods/burstable/pod1234/{DOCKER}", None, DOCKER),
        (f"/machine.slice/libpod-{DOCKER}.scope/container", f"libpod-{DOCKER}.scope", DOCKER),
        ("/", None, None),
        (None, None, None),
        ("/system.slice/not-hex-" + "g" * 64 + ".scope", "not-hex-" + "g" * 64 + ".scope", None),
    ],
)
def test_classify(path: str | None, unit: str | None, container: str | None) -> None:
    assert classify(path) == (unit, container)


def test_ids_to_paths_and_rescan_limit(tmp_path: Path) -> None:
    (tmp_path / "system.slice" / "a.service").mkdir(parents=True)
    now = [0.0]
    paths = CgroupPaths(str(tmp_path), min_rescan=5.0, clock=lambda: now[0])
    ino = os.stat(tmp_path / "system.slice" / "a.service").st_ino
    assert paths.path(ino) == "/system.slice/a.service"
    assert paths.path(os.stat(tmp_path).st_ino) == "/"
    (tmp_path / "b.scope").mkdir()
    new = os.stat(tmp_path / "b.scope").st_ino
    now[0] = 1.0
    assert paths.path(new) is None  # too soon to walk the tree again
    now[0] = 6.0
    assert paths.path(new) == "/b.scope"


def test_no_cgroup2() -> None:
    assert CgroupPaths(None).path(5) is None
