"""Pure parts of the loader: no root, no kernel."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

from sockscope.bpf import libbpf
from sockscope.bpf.loader import COUNT_GROUPS, _hint, _sum_percpu, cgroup2_root

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "mounts"


def test_cgroup2_root_found_where_it_is_mounted() -> None:
    assert cgroup2_root(str(FIX / "cgroup-hybrid")) == "/sys/fs/cgroup/unified"


def test_cgroup2_root_absent() -> None:
    assert cgroup2_root(str(FIX / "cgroup-v1-only")) is None
    assert cgroup2_root(str(FIX / "no-such-file")) is None


def test_sum_percpu_adds_each_field_over_cpus() -> None:
    # two fields, three CPUs: values are laid out CPU by CPU
    raw = struct.pack("<6Q", 1, 10, 2, 20, 3, 30)
    assert _sum_percpu(raw, 2, 3) == [6, 60]


def test_sum_percpu_single_cpu() -> None:
    assert _sum_percpu(struct.pack("<4Q", 5, 6, 7, 8), 4, 1) == [5, 6, 7, 8]


def test_hint_names_the_cause_and_drops_misleading_libbpf_advice() -> None:
    fentry = next(g for g in COUNT_GROUPS if g.name == "fentry")
    err = libbpf.LibbpfError(
        "bpf_object__load",
        -errno.EPERM,
        "libbpf: permission error while running as root; try raising 'ulimit -l'? current value: 8.0 MiB\n"
        "libbpf: prog 'ss_fexit_tcp_sendmsg': failed to load: -1\n",
    )
    text = _hint(fentry, err, "load")
    assert text.startswith("load failed: Operation not permitted; this kernel refuses fentry/fexit")
    assert "ulimit" not in text
    assert "failed to load: -1" in text


def test_libbpf_error_message() -> None:
    err = libbpf.LibbpfError("bpf_map_update_elem(x)", -errno.E2BIG)
    assert err.errno == errno.E2BIG
    assert str(err) == "bpf_map_update_elem(x): Argument list too long (errno 7)"
