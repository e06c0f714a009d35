"""bench/jit_listing.py against sockscope's own loaded programs (the host's kernel only)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import jit_listing
from sockscope.collector.bpf_source import BpfSource


def test_jit_listing_of_the_loaded_fast_path(
    source: BpfSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("objdump") is None:
        pytest.fail("objdump missing: make setup installs binutils (scripts/install-deps.sh)")
    rc = jit_listing.main(["ss_tp_send", "ss_tp_recv", "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    for name in ("ss_tp_send", "ss_tp_recv"):
        images = sorted(tmp_path.glob(f"{name}.*.bin"))
        assert images, name
        image = images[-1]
        listing = image.with_suffix(".s").read_text()
        # The JIT's prologue (push %rbp; mov %rsp,%rbp) opens every x86-64 BPF program, and the
        # image holds at least the fast path's few dozen instructions.
        assert "push   %rbp" in listing and "mov    %rsp,%rbp" in listing, listing[:400]
        assert image.stat().st_size > 200, image.stat().st_size


def test_jit_listing_names_a_program_not_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = jit_listing.main(["no_such_program_xyz", "--out", str(tmp_path)])
    assert rc == 1
    assert "no loaded program named no_such_program_xyz" in capsys.readouterr().err
