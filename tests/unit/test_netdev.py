from __future__ import annotations

from pathlib import Path

import pytest

from sockscope.collector.netdev import IfaceCounters, delta, parse_net_dev, read_net_dev

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "net" / "dev"


def test_parse_fixture() -> None:
    got = read_net_dev(str(FIX))
    assert got == {
        "lo": IfaceCounters(7_340_033, 120, 7_340_033, 120),
        "eth0": IfaceCounters(123_456_789, 98_765, 2_222_222, 3_333),
    }


def test_short_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="eth9"):
        parse_net_dev("h1\nh2\n eth9: 1 2 3\n")


def test_delta_counts_new_interfaces_from_zero() -> None:
    before = {"lo": IfaceCounters(10, 1, 10, 1)}
    after = {"lo": IfaceCounters(15, 2, 19, 3), "veth0": IfaceCounters(4, 1, 0, 0)}
    assert delta(before, after) == {"lo": IfaceCounters(5, 1, 9, 2), "veth0": IfaceCounters(4, 1, 0, 0)}
