"""Pure parts of the loader: no root, no kernel."""

from __future__ import annotations

import ctypes
import errno
import struct
from pathlib import Path

import pytest

from sockscope.bpf import libbpf
from sockscope.bpf.loader import COUNT_GROUPS, _hint, cgroup2_root
from sockscope.bpf.reads import _sum_percpu

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


@pytest.mark.parametrize("ncpu", [1, 2, 3, 8])  # written out for 1-2 CPUs, pairwise adds to 4, sums above
def test_drained_flows_are_decoded_with_their_per_cpu_counters_summed(ncpu: int) -> None:
    import struct

    from sockscope.bpf import abi
    from sockscope.bpf.reads import _decode_flows
    from sockscope.collector.model import RawFlow

    entries = [(11, 100, 0, bytes(16)), (2**63 + 1, 4_000_000, 53, bytes(range(16)))]
    keys = b"".join(abi.FLOW_KEY.pack(c, t, p, 0, a) for c, t, p, a in entries)
    # entry e, CPU c: tx = 1000e + c, rx = 10c, tx_calls = 1, rx_calls = c
    values = b"".join(struct.pack("=4Q", 1000 * e + c, 10 * c, 1, c) for e in range(2) for c in range(ncpu))
    cpus = sum(range(ncpu))
    assert _decode_flows(keys, values, 2, ncpu) == [
        RawFlow(11, 100, bytes(16), 0, cpus, 10 * cpus, ncpu, cpus),
        RawFlow(2**63 + 1, 4_000_000, bytes(range(16)), 53, 1000 * ncpu + cpus, 10 * cpus, ncpu, cpus),
    ]
    assert _decode_flows(b"", b"", 0, ncpu) == []


class _StatsMap:
    """ss_stats as the kernel holds it: one struct ss_stats per CPU."""

    def __init__(self, per_cpu: list[list[int]]) -> None:
        self.per_cpu = per_cpu

    def lookup_into(self, key: object, buf: ctypes.Array[ctypes.c_char]) -> bool:
        raw = b"".join(struct.pack(f"={len(v)}Q", *v) for v in self.per_cpu)
        ctypes.memmove(buf, raw, len(raw))
        return True


class _Kretprobes:
    def __init__(self) -> None:
        self.total = 0

    def missed(self) -> int:
        return self.total


def test_missed_calls_add_kretprobe_misses_and_unstashed_entries_once_each() -> None:
    """dropped.missed_calls of the kprobe group: the kernel's kretprobe misses (a running total)
    and entries that found no task storage slot (SS_STAT_CALLS_UNSTASHED), as deltas per read."""
    from sockscope.bpf import abi
    from sockscope.bpf.reads import Reads

    stats = [[0] * abi.SS_STAT_MAX, [0] * abi.SS_STAT_MAX]
    kp = _Kretprobes()
    r = Reads.__new__(Reads)
    r._ncpu, r._prev_stats, r._prev_missed = 2, [0] * abi.SS_STAT_MAX, 0
    r._maps = {"ss_stats": _StatsMap(stats)}  # type: ignore[dict-item]
    r._kretprobes = kp  # type: ignore[assignment]

    stats[0][abi.Stat.CALLS_UNSTASHED], stats[1][abi.Stat.CALLS_UNSTASHED] = 2, 3
    stats[1][abi.Stat.DROPPED_EVENTS] = 7
    kp.total = 4
    c = r._stats_delta()
    assert (c.calls_missed, c.dropped_events) == (9, 16)

    stats[0][abi.Stat.CALLS_UNSTASHED] += 1
    kp.total = 5
    c = r._stats_delta()
    assert (c.calls_missed, c.dropped_events) == (2, 2)
    c = r._stats_delta()
    assert (c.calls_missed, c.dropped_events) == (0, 0)
