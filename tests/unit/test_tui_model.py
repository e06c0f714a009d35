"""The UI's model without Textual: accumulation, rates, closed connections, sorting, filtering."""

from __future__ import annotations

import dataclasses

import pytest

from sockscope.collector.model import Interval
from sockscope.tui.model import (
    PROC_SORTS,
    TopState,
    connection_rows,
    matches,
    series,
    visible_rows,
)
from tests.tui.recording import HOSTILE_COMM, T0, recording, step


def _state(n: int = 4, *, linger: float = 30.0, forget: float = 300.0) -> TopState:
    st = TopState(linger=linger, forget=forget)
    for iv in recording(n):
        st.update(iv)
    return st


def _by_comm(st: TopState) -> dict[str, object]:
    return {r.comm: r for r in st.procs.values()}


def test_totals_are_the_sum_of_every_interval_and_rates_the_last() -> None:
    st = _state(4)
    curl = next(r for r in st.procs.values() if r.comm == "curl")
    assert curl.tx_total == sum(1_000 + i for i in range(4))
    assert curl.rx_total == sum(2_000_000 + 1000 * i for i in range(4))
    assert (curl.tx_rate, curl.rx_rate) == (1_003.0, 2_003_000.0)
    t = st.totals
    ivs = recording(4)
    assert (t.tx_total, t.rx_total) == (sum(iv.tx_bytes for iv in ivs), sum(iv.rx_bytes for iv in ivs))
    assert t.unattributed_total == 4 * 30 and t.unattributed_rate == 30.0
    assert t.dropped_events == 0 + 0 + 1 + 1
    assert t.intervals == 4


def test_zero_length_interval_gives_zero_rates_not_an_error() -> None:
    st = TopState()
    st.update(dataclasses.replace(step(0), interval=0.0))
    curl = next(r for r in st.procs.values() if r.comm == "curl")
    assert (curl.tx_rate, curl.rx_rate, st.totals.tx_rate) == (0.0, 0.0, 0.0)
    assert curl.tx_total == 1_000  # the bytes still count


def test_a_process_that_stops_moving_has_zero_rate_but_keeps_its_totals() -> None:
    st = _state(4)
    rsync = next(r for r in st.procs.values() if r.comm == "rsync")
    assert (rsync.tx_rate, rsync.rx_rate) == (0.0, 0.0)
    assert (rsync.tx_total, rsync.rx_total) == (1_000_000, 2_000)
    assert [tx for _, tx, _ in rsync.history] == [500_000.0, 500_000.0, 0.0, 0.0]


def test_closed_connection_is_kept_dimmed_then_dropped_after_linger() -> None:
    st = _state(3, linger=2.0)
    rsync = next(r for r in st.procs.values() if r.comm == "rsync")
    [conn] = connection_rows(rsync)
    assert conn.closed and conn.closed_at == T0 + 1.5 and conn.state == "CLOSED"
    assert conn.age(st.now) == pytest.approx(6.5)  # from the close event's start
    assert rsync.open_connections == 0
    st.update(step(3))  # T0 + 3: 1.5 s after the close, inside the linger
    assert len(rsync.connections) == 1
    st.update(dataclasses.replace(step(4), ts=T0 + 4))  # 2.5 s after: gone
    assert rsync.connections == {}


def test_processes_quiet_longer_than_forget_leave_the_table() -> None:
    st = _state(2, forget=10.0)
    assert "rsync" in _by_comm(st)
    st.update(Interval(ts=T0 + 20, interval=1.0, processes=[]))
    assert _by_comm(st) == {}


def test_history_is_bounded() -> None:
    st = TopState(history=3)
    for i in range(10):
        st.update(dataclasses.replace(step(3), ts=T0 + i))
    curl = next(r for r in st.procs.values() if r.comm == "curl")
    tx, rx = series(curl)
    assert len(tx) == len(rx) == 3


@pytest.mark.parametrize("sort", sorted(PROC_SORTS))
def test_every_sort_orders_by_its_key(sort: str) -> None:
    st = _state(4)
    key = PROC_SORTS[sort]
    down = [key(r) for r in visible_rows(st, sort=sort, descending=True)]
    up = [key(r) for r in visible_rows(st, sort=sort, descending=False)]
    assert down == sorted(down, reverse=True)  # type: ignore[type-var]
    assert up == sorted(up)  # type: ignore[type-var]
    assert len(down) == 4


def test_default_sort_is_busiest_first() -> None:
    assert [r.comm for r in visible_rows(_state(4))] == ["curl", HOSTILE_COMM, "resolved", "rsync"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"curl", "resolved", "rsync", HOSTILE_COMM}),
        ("CURL", {"curl"}),  # case-insensitive
        ("mallory", {HOSTILE_COMM}),  # user
        ("backup.service", {"rsync"}),  # unit
        ("big.iso", {"curl"}),  # command line
        ("fd00::53", {"resolved"}),  # an address
        ("873", {"rsync"}),  # a port
        (":6667", {HOSTILE_COMM}),  # ":port"
        ("[red]", {HOSTILE_COMM}),  # markup is just text
        ("nothing-matches", set()),
    ],
)
def test_filter(query: str, expected: set[str]) -> None:
    st = _state(3)
    assert {r.comm for r in visible_rows(st, query=query)} == expected
    assert all(matches(r, query) for r in visible_rows(st, query=query))
