#!/usr/bin/env python3
"""The x86 listing of loaded BPF programs, as the JIT emitted them.

This machine's bpftool is built without libbfd (`bpftool prog dump jited` says "No libbfd
support"), so this reads each program's image with BPF_OBJ_GET_INFO_BY_FD through libbpf and
disassembles it with `objdump -b binary`. What the per-call work looks at: which helpers stay
calls, what is spilled to the stack, how many instructions the fast path runs (README, Per call).

    .venv/bin/python bench/jit_listing.py ss_tp_send ss_tp_recv --out /tmp/jit

Programs are found by name among those loaded (start `sockscope top` first); each image is
written as NAME.ID.bin and its listing as NAME.ID.s. A program with BPF-to-BPF calls is one
image: its main function first, the functions it calls after it. Needs root (CAP_SYS_ADMIN).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

# struct bpf_prog_info (linux/bpf.h): the fields read here and their offsets.
INFO_SIZE = 256  # larger than any kernel's struct: the kernel fills what it knows
JITED_LEN_OFF = 16  # __u32 jited_prog_len
JITED_PTR_OFF = 24  # __aligned_u64 jited_prog_insns


class ListingError(Exception):
    pass


def _libbpf() -> ctypes.CDLL:
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    lib.bpf_prog_get_fd_by_id.argtypes = [ctypes.c_uint]
    lib.bpf_prog_get_fd_by_id.restype = ctypes.c_int
    lib.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint)]
    lib.bpf_obj_get_info_by_fd.restype = ctypes.c_int
    return lib


def _info(lib: ctypes.CDLL, fd: int, buf: ctypes.Array[ctypes.c_char]) -> None:
    n = ctypes.c_uint(INFO_SIZE)
    if lib.bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(n)) != 0:
        raise ListingError(f"BPF_OBJ_GET_INFO_BY_FD: errno {ctypes.get_errno()}")


def jited_image(lib: ctypes.CDLL, prog_id: int) -> bytes:
    """The JIT image of program prog_id (its length first, then the bytes)."""
    fd = lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        raise ListingError(f"program {prog_id}: no fd (errno {ctypes.get_errno()}; run as root)")
    try:
        buf = ctypes.create_string_buffer(INFO_SIZE)
        _info(lib, fd, buf)
        length = struct.unpack_from("<I", buf, JITED_LEN_OFF)[0]
        if not length:
            raise ListingError(f"program {prog_id}: no JIT image (net.core.bpf_jit_enable off, or no root)")
        image = ctypes.create_string_buffer(length)
        buf = ctypes.create_string_buffer(INFO_SIZE)
        struct.pack_into("<I", buf, JITED_LEN_OFF, length)
        struct.pack_into("<Q", buf, JITED_PTR_OFF, ctypes.addressof(image))
        _info(lib, fd, buf)
        return image.raw
    finally:
        os.close(fd)


def prog_ids(names: list[str]) -> dict[str, list[int]]:
    """The ids of loaded programs with these names (bpftool's list)."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    ids: dict[str, list[int]] = {n: [] for n in names}
    for p in json.loads(out):
        if p.get("name") in ids:
            ids[str(p["name"])].append(int(p["id"]))
    return ids


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="+", help="program names as bpftool lists them (ss_tp_send, count_recv, ...)")
    p.add_argument("--out", type=Path, default=Path("build/jit"), help="directory for the images and listings")
    a = p.parse_args(argv)
    for tool in ("bpftool", "objdump"):
        if shutil.which(tool) is None:
            print(f"jit_listing: {tool} not found (make setup installs it)", file=sys.stderr)
            return 2
    a.out.mkdir(parents=True, exist_ok=True)
    lib = _libbpf()
    missing = 0
    for name, ids in prog_ids(a.names).items():
        if not ids:
            print(f"jit_listing: no loaded program named {name}", file=sys.stderr)
            missing += 1
        for pid in ids:
            try:
                image = jited_image(lib, pid)
            except ListingError as exc:
                print(f"jit_listing: {name}: {exc}", file=sys.stderr)
                return 1
            bin_path = a.out / f"{name}.{pid}.bin"
            bin_path.write_bytes(image)
            listing = subprocess.run(
                ["objdump", "-b", "binary", "-m", "i386:x86-64", "-D", str(bin_path)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            bin_path.with_suffix(".s").write_text(listing)
            print(f"{name} (id {pid}): {len(image)} bytes -> {bin_path.with_suffix('.s')}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
