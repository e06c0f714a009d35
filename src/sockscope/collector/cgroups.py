"""cgroups as people name them: the systemd unit, or a container id.

The kernel hands over a cgroup id (the inode of the cgroup v2 directory); a live
process's /proc/PID/cgroup gives the path directly. Exited processes are found
by id in a map built by walking the cgroup v2 tree, rebuilt on a miss at most
every few seconds.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

_CONTAINER = re.compile(r"(?:^|[-/:])([0-9a-f]{64})(?:\.scope)?$")
_UNIT_SUFFIXES = (".service", ".scope", ".socket", ".mount", ".timer", ".swap")


def classify(path: str | None) -> tuple[str | None, str | None]:
    """(unit, container id) for a cgroup path; either may be None.

    /system.slice/nginx.service                          -> ("nginx.service", None)
    /user.slice/user-1000.slice/user@1000.service/app.slice/x.service -> ("x.service", None)
    /system.slice/docker-<64 hex>.scope                  -> ("docker-<64 hex>.scope", "<64 hex>")
    /kubepods/burstable/pod.../<64 hex>                  -> (None, "<64 hex>")
    """
    if not path:
        return None, None
    parts = [p for p in path.split("/") if p]
    container = None
    for part in reversed(parts):
        m = _CONTAINER.search(part)
        if m:
            container = m.group(1)
            break
    # The deepest unit: a user's service inside user@UID.service is the one that did it.
    unit = next((p for p in reversed(parts) if p.endswith(_UNIT_SUFFIXES)), None)
    return unit, container


class CgroupPaths:
    """cgroup v2 id -> path, for processes gone from /proc."""

    def __init__(self, root: str | None, min_rescan: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._root = root
        self._min_rescan = min_rescan
        self._clock = clock
        self._paths: dict[int, str] = {}
        self._scanned_at: float | None = None

    def path(self, cgroup_id: int) -> str | None:
        if not self._root or cgroup_id == 0:
            return None
        found = self._paths.get(cgroup_id)
        if found is None and self._may_rescan():
            self._scan()
            found = self._paths.get(cgroup_id)
        return found

    def _may_rescan(self) -> bool:
        return self._scanned_at is None or self._clock() - self._scanned_at >= self._min_rescan

    def _scan(self, limit: int = 100_000) -> None:
        assert self._root is not None
        self._scanned_at = self._clock()
        paths: dict[int, str] = {}
        for dirpath, _dirs, _files in os.walk(self._root):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            rel = "/" + os.path.relpath(dirpath, self._root)
            paths[ino] = "/" if rel == "/." else rel
            if len(paths) >= limit:
                break
        self._paths = paths
