"""bench/percall_toggle.py's arithmetic: the differences to the same repetition's `none`."""

from __future__ import annotations

import pytest

from bench.overhead import BenchError
from bench.percall_parts import Mode
from bench.percall_toggle import (
    AGAIN,
    CONFIGS,
    HOOK_GROUPS,
    TRACEPOINT,
    ToggleSample,
    ToggleStat,
    aa_gaps,
    balanced_orders,
    block_spread,
    blocks_of,
    config_order,
    group_configs,
    hook_set,
    toggled_added,
    toggled_stats_table,
    toggled_table,
)

UDP = Mode("udp", "udp", 1)


def samples(rows: dict[str, list[float]]) -> list[ToggleSample]:
    return [ToggleSample(rep, cfg, "udp", ns, 0) for cfg, values in rows.items() for rep, ns in enumerate(values)]


def test_each_repetition_is_subtracted_from_its_own_none() -> None:
    s = samples({"none": [800.0, 900.0, 1000.0], "floor": [850.0, 960.0, 1040.0]})
    assert toggled_added(s, "floor", "udp") == [50.0, 60.0, 40.0]


def test_a_repetition_without_its_none_is_left_out() -> None:
    s = samples({"none": [800.0], "floor": [850.0, 960.0]})
    assert toggled_added(s, "floor", "udp") == [50.0]


def test_the_table_gives_medians_and_the_ratio_to_the_floor() -> None:
    s = samples(
        {
            "none": [800.0, 800.0, 800.0],
            "floor": [850.0, 860.0, 840.0],
            "sockscope": [870.0, 880.0, 875.0],
        }
    )
    table = toggled_table(s, [UDP])
    lines = table.splitlines()
    assert lines[2].startswith("| none: base ns/round | 800 |")
    assert "+50.0 (1.00x)" in lines[3]
    assert "+75.0 (1.50x)" in lines[4]


@pytest.mark.parametrize("config", ["floor", "sockscope"])
def test_no_samples_no_figure(config: str) -> None:
    assert toggled_added([], config, "udp") == []


@pytest.mark.parametrize(("reps", "blocks"), [(301, 10), (5, 2), (3, 7), (1, 1), (20, 20)])
def test_blocks_cover_every_repetition_once_and_evenly(reps: int, blocks: int) -> None:
    parts = blocks_of(reps, blocks)
    assert [r for part in parts for r in part] == list(range(reps))
    assert len(parts) == min(reps, blocks)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_block_spread_gives_each_blocks_own_median() -> None:
    s = [
        ToggleSample(rep, cfg, "udp", ns, 0, rep // 2)
        for cfg, values in {"none": [800.0] * 4, "floor": [850.0, 852.0, 870.0, 874.0]}.items()
        for rep, ns in enumerate(values)
    ]
    assert "+51..+72" in block_spread(s, [UDP])


def test_stats_table_gives_send_then_receive_per_run_median_of_blocks() -> None:
    stats = [
        ToggleStat(b, "floor", "udp", prog, 1000, ns * 1000)
        for b, (send, recv) in enumerate([(30, 31), (32, 29), (40, 33)])
        for prog, ns in (("floor_recv", recv), ("floor_send", send))
    ]
    assert "| floor | 32.0 + 31.0 = 63.0 |" in toggled_stats_table(stats, [UDP])


def test_stats_table_names_the_programs_of_a_group_with_more_than_two() -> None:
    progs = {"ss_tp_rcvspace": 50, "ss_krp_inet_recvmsg": 40, "ss_kp_inet_sendmsg": 10, "ss_krp_inet_sendmsg": 20}
    stats = [ToggleStat(0, "sockscope", "udp", prog, 10, ns * 10) for prog, ns in progs.items()]
    stats.append(ToggleStat(0, "sockscope", "udp", "ss_kp_inet6_recvmsg", 0, 0))  # never ran: left out
    table = toggled_stats_table(stats, [UDP])
    assert "| sockscope | 10.0 + 20.0 + 40.0 + 50.0 = 120.0 |" in table
    assert "- sockscope: ss_kp_inet_sendmsg + ss_krp_inet_sendmsg + ss_krp_inet_recvmsg + ss_tp_rcvspace" in table


@pytest.mark.parametrize("n", [2, 3, 5, 6, 7, 8])
def test_balanced_orders_put_each_configuration_after_every_other_equally_often(n: int) -> None:
    orders = balanced_orders(n)
    assert all(sorted(o) == list(range(n)) for o in orders)
    follows = [(o[i], o[i + 1]) for o in orders for i in range(n - 1)]
    pairs = {(a, b) for a in range(n) for b in range(n) if a != b}
    assert set(follows) == pairs
    assert all(follows.count(p) == follows.count((0, 1)) for p in pairs)
    firsts = [o[0] for o in orders]  # and each configuration opens as often as any other
    assert all(firsts.count(c) == firsts.count(0) for c in range(n))


def test_one_configuration_has_one_order() -> None:
    assert balanced_orders(1) == [[0]]


def test_the_control_gap_is_the_distance_between_the_two_loads_medians() -> None:
    s = samples({"none": [800.0] * 3, "sockscope": [890.0, 895.0, 900.0], AGAIN: [880.0, 884.0, 900.0]})
    assert aa_gaps(s, [UDP]) == {"udp": 11.0}
    assert aa_gaps(samples({"none": [800.0], "sockscope": [890.0]}), [UDP]) == {}


def test_rows_come_in_the_configurations_own_order_whatever_ran_first() -> None:
    s = samples({"before": [1.0], "counter": [1.0], AGAIN: [1.0], "none": [1.0], "floor": [1.0], "after": [1.0]})
    assert config_order(s) == ["none", "floor", "counter", AGAIN, "before", "after"]


def test_each_hook_group_switches_its_counting_programs_but_the_once_per_socket_ones() -> None:
    from sockscope.bpf.loader import COUNT_GROUPS, NEWTASK, SPLICE_PROGS

    for g in COUNT_GROUPS:
        hs = hook_set(g.name)
        assert set(hs.sockscope) == set(g.programs) - {*SPLICE_PROGS, NEWTASK}
        assert not set(hs.sockscope) & {*SPLICE_PROGS, NEWTASK}
    assert hook_set("tracepoint") == TRACEPOINT
    assert "ss_tp_rcvspace" in hook_set("kprobe").sockscope  # the kprobe group's third program per TCP read
    assert "ss_tp_rcvspace" not in hook_set("fentry").sockscope


def test_the_floor_programs_of_every_group_are_in_the_floor_object() -> None:
    import re

    from bench.percall_parts import FLOOR_SRC

    defined = set(re.findall(r"^int (?:BPF_PROG\()?(\w+)", FLOOR_SRC.read_text(), re.M))
    for group in HOOK_GROUPS:
        hs = hook_set(group)
        assert hs.floor and set(hs.floor) <= defined
        assert set(hs.counter) <= defined


def test_a_group_without_a_counter_runs_every_other_configuration() -> None:
    assert "counter" not in group_configs(hook_set("kprobe"))
    assert group_configs(hook_set("fentry")) == CONFIGS
    assert group_configs(TRACEPOINT) == CONFIGS


def test_an_unknown_group_is_an_error() -> None:
    with pytest.raises(BenchError):
        hook_set("uprobe")
