"""sockscope opens without the kernel: the record's mirror against the object's BTF, decoding,
the absolute path, flags and errors as text, path matching, the readable line."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sockscope.opens import abi
from sockscope.opens.cli import PathMatch, describe, to_dict
from sockscope.opens.collector import object_path
from sockscope.opens.model import Open, absolute, creates, decode, flag_names, result_text


def _btf() -> dict[str, dict[str, Any]]:
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    obj = object_path()
    assert obj.exists(), f"{obj} not built: run `make bpf`"
    out = subprocess.run([bpftool, "-j", "btf", "dump", "file", str(obj)], check=True, capture_output=True,
                         text=True).stdout  # fmt: skip
    return {t["name"]: t for t in json.loads(out)["types"] if t["kind"] == "STRUCT" and t.get("name")}


@pytest.mark.parametrize("name", sorted(abi.MIRRORS))
def test_mirror_matches_btf(name: str) -> None:
    c = _btf()[name]
    mirror = abi.MIRRORS[name]
    assert ctypes.sizeof(mirror) == c["size"]
    assert [(m["name"], m["bits_offset"] // 8) for m in c["members"]] == [
        (f[0], getattr(mirror, f[0]).offset) for f in mirror._fields_]  # fmt: skip
    if name == "ss_open_event":
        assert abi.HEAD.size == abi.OpenEvent.data.offset


def _record(given: bytes, components: list[bytes], base: abi.Base, ret: int = 3, dirfd: int = -100,
            flags: int = os.O_RDONLY | os.O_CLOEXEC, cut: int = 0, comm: bytes = b"cat") -> bytes:  # fmt: skip
    data = given + b"".join(c + b"\0" for c in components)
    head = abi.HEAD.pack(123, 9, flags, 42, 43, 1000, 0o644, ret, dirfd, len(given), len(data), len(components),
                         abi.Call.OPENAT, base, cut, comm)  # fmt: skip
    return head + data


def test_decode_a_successful_open_takes_the_walked_path() -> None:
    o = decode(_record(b"../x/./y", [b"y", b"x", b"srv"], abi.Base.FILE, dirfd=7))
    assert (o.path, o.given, o.tgid, o.tid, o.comm, o.call, o.ret, o.dirfd) == (
        b"/srv/x/y", b"../x/./y", 42, 43, b"cat", "openat", 3, 7)  # fmt: skip


@pytest.mark.parametrize(
    ("given", "components", "base", "want"),
    [
        (b"rel/f", [b"d", b"tmp"], abi.Base.DIRFD, b"/tmp/d/rel/f"),
        (b"../f", [b"d", b"tmp"], abi.Base.CWD, b"/tmp/f"),
        (b"/etc//x/../passwd", [], abi.Base.NONE, b"/etc/passwd"),
        (b"rel", [], abi.Base.NONE, None),  # EBADF dirfd: no directory to join with
        (b"f", [], abi.Base.CWD, b"/f"),  # the current directory is /
        (b"", [b"d"], abi.Base.DIRFD, b"/d"),  # AT_EMPTY_PATH-like
    ],
)
def test_absolute(given: bytes, components: list[bytes], base: abi.Base, want: bytes | None) -> None:
    assert absolute(given, base, components) == want


def test_flags_and_results_as_text() -> None:
    assert flag_names(os.O_RDONLY | os.O_CLOEXEC) == "O_RDONLY|O_CLOEXEC"
    assert flag_names(os.O_WRONLY | os.O_CREAT | os.O_TRUNC) == "O_WRONLY|O_CREAT|O_TRUNC"
    assert flag_names(os.O_RDWR | os.O_SYNC) == "O_RDWR|O_SYNC"  # not O_DSYNC|0x100000
    assert flag_names(os.O_RDWR | os.O_TMPFILE) == "O_RDWR|O_TMPFILE"
    assert flag_names(3 | 1 << 40) == f"O_ACCMODE=3|{hex(1 << 40)}"
    assert (result_text(5), result_text(-2), result_text(-13), result_text(-4000)) == ("5", "ENOENT", "EACCES",
                                                                                      "E4000")  # fmt: skip
    assert creates(os.O_CREAT) and creates(os.O_TMPFILE | os.O_RDWR) and not creates(os.O_DIRECTORY)


def test_path_match(tmp_path: Path) -> None:
    exact = PathMatch(["/etc/resolv.conf", "/srv/../etc/hosts"])
    assert exact(b"/etc/resolv.conf") and exact(b"/etc/hosts") and not exact(b"/etc/resolv.conf2")
    assert not exact(None)
    globs = PathMatch(["/etc/ssl/*.pem", "/home/*/.ssh/id_*"])
    assert globs(b"/etc/ssl/a.pem") and globs(b"/home/al/.ssh/id_ed25519") and not globs(b"/etc/ssl/a.key")
    assert globs(b"/etc/ssl/\xff.pem")  # invalid UTF-8 still matches
    assert PathMatch([])(None) and PathMatch([])(b"/anything")
    os.chdir(tmp_path)
    assert PathMatch(["rel.txt"])(os.fsencode(tmp_path / "rel.txt"))  # relative to where it was run


def test_readable_line_is_inert_and_json_exact() -> None:
    hostile = b"evil\n\x1b[31m\xff\\x41"
    o = decode(_record(hostile, [hostile, b"tmp"], abi.Base.FILE, comm=b"\x1b]0;t\x07x"))
    d = to_dict(o, {"exe": None, "user": "root", "unit": None, "container": None})
    assert d["path"] == "/tmp/evil\n\x1b[31m\\xff\\\\x41" and d["given"] == "evil\n\x1b[31m\\xff\\\\x41"
    assert json.loads(json.dumps(d)) == d
    line = describe(d)
    assert "\n" not in line and "\x1b" not in line and "\x07" not in line
    assert "/tmp/evil\\x0a\\x1b[31m\\xff" in line
    failed = to_dict(decode(_record(b"missing", [b"d"], abi.Base.DIRFD, ret=-2, dirfd=5)), {"exe": None})
    assert (failed["error"], failed["fd"], failed["path"]) == ("ENOENT", None, "/d/missing")
    assert "ENOENT" in describe(failed) and "(given missing, dirfd 5)" in describe(failed)


def test_open_is_frozen() -> None:
    o = decode(_record(b"/x", [b"x"], abi.Base.FILE))
    assert isinstance(o, Open) and not o.failed
    with pytest.raises(AttributeError):
        o.ret = 1  # type: ignore[misc]
