"""A file system of the fault tests' own: small, so that filling it is quick, and theirs to remount."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


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


def fill(fs: Path) -> Path:
    """Fill the file system to its last block; the file returned frees it again."""
    filler = fs / "filler"
    with filler.open("wb", buffering=0) as f:  # unbuffered: no write left over for close() to fail
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler
