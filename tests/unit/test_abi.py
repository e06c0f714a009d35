"""The Python mirror (abi.py) against the compiled object's BTF: sizes, names, offsets."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from typing import Any

import pytest

from sockscope.bpf import abi
from sockscope.bpf.loader import default_object_path


def _btf_structs() -> dict[str, dict[str, Any]]:
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    obj = default_object_path()
    assert obj.exists(), f"{obj} not built: run `make bpf`"
    out = subprocess.run(
        [bpftool, "-j", "btf", "dump", "file", str(obj)], check=True, capture_output=True, text=True
    ).stdout
    types = json.loads(out)["types"]
    return {t["name"]: t for t in types if t["kind"] == "STRUCT" and t.get("name", "").startswith("ss_")}


@pytest.fixture(scope="module")
def btf() -> dict[str, dict[str, Any]]:
    return _btf_structs()


@pytest.mark.parametrize("name", sorted(abi.MIRRORS))
def test_layout_matches_btf(btf: dict[str, dict[str, Any]], name: str) -> None:
    mirror = abi.MIRRORS[name]
    assert name in btf, f"struct {name} not in the object's BTF"
    c = btf[name]
    assert ctypes.sizeof(mirror) == c["size"]
    c_fields = [(m["name"], m["bits_offset"] // 8) for m in c["members"]]
    py_fields = [(f[0], getattr(mirror, f[0]).offset) for f in mirror._fields_]
    assert py_fields == c_fields


def test_every_shared_struct_is_mirrored(btf: dict[str, dict[str, Any]]) -> None:
    shared = {
        "ss_flow_key",
        "ss_flow_val",
        "ss_hot",
        "ss_sock_info",
        "ss_proc_info",
        "ss_stats",
        "ss_config",
        "ss_event",
        "ss_dns_event",
    }
    assert shared <= set(btf)
    assert set(abi.MIRRORS) == shared


def test_stat_indexes_fit() -> None:
    assert max(abi.Stat) < abi.SS_STAT_MAX
    assert len(abi.Stats().v) == abi.SS_STAT_MAX


def test_hot_slots_match_the_maps() -> None:
    from sockscope.bpf.libbpf import Object

    obj = Object(str(default_object_path()))  # opened, not loaded: no privileges needed
    try:
        assert obj.map("ss_hot").max_entries == 2 * abi.HOT_SLOTS
        assert obj.map(".data.hotset").value_size == 4  # the set user space writes whole
    finally:
        obj.close()


def test_the_flow_key_struct_matches_the_mirror() -> None:
    k = abi.FlowKey(cookie=2**63 + 5, tgid=4_000_000, rport=53, raddr=(ctypes.c_uint8 * 16)(*range(16)))
    assert abi.FLOW_KEY.size == ctypes.sizeof(abi.FlowKey)
    assert abi.FLOW_KEY.unpack_from(bytes(k)) == (2**63 + 5, 4_000_000, 53, 0, bytes(range(16)))


def test_the_dns_record_head_matches_the_mirror() -> None:
    assert abi.DNS_HEAD.size == abi.DnsEvent.data.offset


def test_the_event_struct_matches_the_mirror() -> None:
    """abi.EVENT (one unpack per ring buffer record) reads every field of abi.Event, in order."""
    names = [field[0] for field in abi.Event._fields_ if field[0] != "pad"]
    e = abi.Event()
    want = []
    for i, name in enumerate(names, 1):
        value: object = bytes(range(i, i + 16)) if name in ("laddr", "raddr") else i * 3
        if isinstance(value, bytes):
            getattr(e, name)[:] = list(value)
        else:
            setattr(e, name, value)
        want.append(value)
    assert abi.EVENT.size == ctypes.sizeof(abi.Event)
    assert list(abi.EVENT.unpack_from(bytes(e))) == want
