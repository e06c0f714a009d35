"""The terminal UI driven with Textual's Pilot, fed from the recording through FakeSource: keys,
sorting, filter, selection, pause, help, ranges, hostile names, a small terminal, failing sources.
Snapshots (plain text of the screen) are in snapshots/; SOCKSCOPE_UPDATE_SNAPSHOTS=1 rewrites them."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.widgets import DataTable, Sparkline

from sockscope.collector.model import Interval
from sockscope.collector.source import FakeSource, Source
from sockscope.tui.app import TopApp, TopOptions, create_app
from sockscope.tui.model import TopState
from tests.tui.recording import HOSTILE_CMDLINE, HOSTILE_COMM, T0, recording, step
from tests.tui.screen import fixed_clock, make_app, run, screen_text

SNAPSHOTS = Path(__file__).parent / "snapshots"


def _table(app: TopApp, name: str) -> DataTable[Any]:
    return app.query_one(f"#{name}", DataTable)


def _column(app: TopApp, name: str, col: int) -> list[str]:
    table = _table(app, name)
    return [str(table.get_row_at(i)[col]) for i in range(table.row_count)]


def _sorting(app: TopApp) -> tuple[str, bool]:
    return (app.sort, app.descending)  # read afresh: keys change it under mypy's narrowing


def _range(app: TopApp) -> tuple[float, float] | None:
    return app.range


def _programs(app: TopApp) -> list[str]:
    return _column(app, "procs", 2)


async def _fed(pilot: Any, app: TopApp, n: int = 3) -> None:
    for _ in range(n):
        app.read_once()
    await pilot.pause()


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("SOCKSCOPE_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text + "\n", encoding="utf-8")
    expected = path.read_text(encoding="utf-8").rstrip("\n")
    assert text == expected, f"screen differs from {path} (SOCKSCOPE_UPDATE_SNAPSHOTS=1 rewrites it)"


# ---- snapshots of the main screens ----


def test_snapshot_main_screen() -> None:
    app = make_app()

    async def body(pilot: Any) -> None:
        await _fed(pilot, app)
        check_snapshot("main", screen_text(app))

    run(app, body)


def test_snapshot_closed_connection_selected() -> None:
    app = make_app()

    async def body(pilot: Any) -> None:
        await _fed(pilot, app)
        await pilot.press("down", "down", "down")
        await pilot.pause()
        check_snapshot("rsync_closed", screen_text(app))

    run(app, body)


def test_snapshot_help() -> None:
    app = make_app()

    async def body(pilot: Any) -> None:
        await _fed(pilot, app)
        await pilot.press("question_mark")
        await pilot.pause()
        check_snapshot("help", screen_text(app))
        await pilot.press("escape")
        await pilot.pause()
        assert "this help" not in screen_text(app)

    run(app, body)


def test_snapshot_filtered_in_bits_with_command_lines() -> None:
    app = make_app()

    async def body(pilot: Any) -> None:
        await _fed(pilot, app)
        await pilot.press("b", "c", "slash", *"44")
        await pilot.pause()
        check_snapshot("filter_44_bits_cmdline", screen_text(app))

    run(app, body)


# ---- behaviour ----


def test_traffic_shows_within_the_first_interval() -> None:
    app = make_app()

    async def body(pilot: Any) -> None:
        assert _table(app, "procs").row_count == 0
        assert "no traffic yet" in screen_text(app)
        await _fed(pilot, app, 1)
        assert _programs(app) == ["curl", "rsync", HOSTILE_COMM, "resolved"]
        assert "1.9 MiB/s" in screen_text(app)

    run(app, body)


def test_sort_keys_and_header_click() -> None:
    app = make_app()

    async def body(pilot: Any) -> None:
        await _fed(pilot, app)
        await pilot.press("s")  # next column after the default (rate): PID, ascending
        await pilot.pause()
        assert _sorting(app) == ("pid", False)
        assert _column(app, "procs", 0) == ["53", "999", "4242", "7000"]
        await pilot.press("o")
        await pilot.pause()
        assert _column(app, "procs", 0) == ["7000", "4242", "999", "53"]
        await pilot.press("S")  # back past the first column: CONNS
        await pilot.pause()
        assert _sorting(app)[0] == "conns"
        # a click on a header sorts by it; a second click reverses
        await pilot.click("#procs", offset=(60, 0))
        await pilot.pause()
        assert _sorting(app) == ("send", True)
        assert _programs(app)[-1] == "rsync"
        await pilot.click("#procs", offset=(60, 0))
        await pilot.pause()
        assert _sorting(app) == ("send", False)
        assert _programs(app)[0] == "rsync"

    run(app, body)


def test_filter_box_then_escape() -> None:
    app = make_app()

    async def body(pilot: Any) -> None:
        await _fed(pilot, app)
        await pilot.press("slash", *"mallory")
        await pilot.pause()
        assert _programs(app) == [HOSTILE_COMM]
        assert "filter: mallory" in screen_text(app)
        await pilot.press("enter")  # keeps the filter, back to the table
        await pilot.pause()
        assert _programs(app) == [HOSTILE_COMM]
        await pilot.press("escape")
        await pilot.pause()
        assert len(_programs(app)) == 4
        await pilot.press("slash", "a", "slash", "b")  # "/" inside the box is text
        await pilot.pause()
        assert app.filter_text == "a/b"

    run(app, body)


def test_selection_shows_connections_and_graph() -> None:
    app = make_app()

    async def body(pilot: Any) -> None:
        await _fed(pilot, app, 4)
        assert app.selected is not None and app.selected[0] == 4242  # the busiest, at first
        assert _column(app, "conns", 2) == ["mirror.example.org:443"]  # the name curl resolved
        await pilot.press("n")
        await pilot.pause()
        assert _column(app, "conns", 2) == ["198.18.0.2:443"]
        await pilot.press("n")
        await pilot.pause()
        assert _column(app, "conns", 2) == ["mirror.example.org:443"]
        tx = app.query_one("#graph-tx", Sparkline).data
        rx = app.query_one("#graph-rx", Sparkline).data
        assert tx is not None and rx is not None
        assert list(tx)[-4:] == [1000.0, 1001.0, 1002.0, 1003.0]
        assert list(rx)[-1] == 2_003_000.0
        await pilot.press("down", "down")
        await pilot.pause()
        assert app.selected is not None and app.selected[2] == "resolved"
        assert _column(app, "conns", 2) == ["[fd00::53]:53"]
        # the selection follows the process when the order changes
        await pilot.press("s")
        await pilot.pause()
        assert app.selected is not None and app.selected[2] == "resolved"
        assert _programs(app)[_table(app, "procs").cursor_row] == "resolved"

    run(app, body)


def test_closed_connection_is_dimmed() -> None:
    app = make_app()

    async def body(pilot: Any) -> None:
        await _fed(pilot, app)
        await pilot.press("down", "down", "down")
        await pilot.pause()
        assert app.selected is not None and app.selected[2] == "rsync"
        cells = _table(app, "conns").get_row_at(0)
        assert all(isinstance(c, Text) and c.style == "dim" for c in cells)
        assert str(cells[3]) == "CLOSED"

    run(app, body)


def test_pause_freezes_the_screen_but_not_the_counting() -> None:
    app = make_app(recording(6))

    async def body(pilot: Any) -> None:
        await _fed(pilot, app, 2)
        await pilot.press("p")
        await pilot.pause()
        frozen = _column(app, "procs", 6)
        await _fed(pilot, app, 2)
        assert _column(app, "procs", 6) == frozen
        assert "PAUSED" in screen_text(app)
        await pilot.press("space")
        await pilot.pause()
        assert _column(app, "procs", 6) != frozen
        curl = next(r for r in app.state.procs.values() if r.comm == "curl")
        assert curl.tx_total == 1000 + 1001 + 1002 + 1003

    run(app, body)


def test_hostile_names_are_shown_literally() -> None:
    app = make_app()

    async def body(pilot: Any) -> None:
        await _fed(pilot, app)
        assert HOSTILE_COMM in screen_text(app)  # not interpreted as markup (no red, brackets kept)
        await pilot.press("c")  # command lines
        await pilot.pause()
        text = screen_text(app)
        assert "\\x1b[2J\\x1b[31mRED \\x07bell \\udcff-bytes [bold]b[/bold]" in text
        assert "\x1b" not in text and "\x07" not in text
        row = next(i for i, p in enumerate(_programs(app)) if "evil" in p)
        cell = _table(app, "procs").get_row_at(row)[2]
        assert isinstance(cell, Text) and cell.spans == [] and cell.style == ""
        assert HOSTILE_CMDLINE not in text  # the raw bytes never reach the screen
        await pilot.press("slash", *"irc", "enter")  # a peer's name is filtered on too
        await pilot.pause()
        assert len(_programs(app)) == 1 and "evil" in _programs(app)[0]  # (command lines shown)
        conns = _column(app, "conns", 2)
        assert conns == ["\\x1b]0;pwn\\x07[b]irc[/b].example:6667"] and "\x1b" not in "".join(conns)

    run(app, body)


def test_terminal_too_small_says_so() -> None:
    app = make_app()

    async def body(pilot: Any) -> None:
        await _fed(pilot, app)
        text = screen_text(app)
        assert "terminal too small: sockscope top needs 70 x 16" in text
        assert "PROGRAM" not in text

    run(app, body, size=(60, 12))


class _Failing(Source):
    def __init__(self, on: str) -> None:
        self.on = on

    def start(self) -> None:
        if self.on == "start":
            raise PermissionError("missing CAP_BPF: run as root")

    def read(self) -> Interval:
        raise OSError("database vanished")

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("on", "message"), [("start", "cannot start: missing CAP_BPF: run as root"), ("read", "read failed: database")]
)
def test_failing_source_shows_a_message_not_a_traceback(on: str, message: str) -> None:
    app = create_app(lambda: _Failing(on), TopOptions(interval=0.05, clock=fixed_clock))

    async def body(pilot: Any) -> None:
        for _ in range(40):
            await pilot.pause(0.05)
            if message in screen_text(app):
                break
        assert message in screen_text(app)

    run(app, body)
    assert app.return_code in (None, 0)


class _Unprivileged(_Failing):
    WHY = (
        "Loading the kernel programs needs privileges this process lacks: CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN. "
        "Run sockscope as root (for example `sudo sockscope top`), or grant the capabilities."
    )

    def start(self) -> None:
        raise PermissionError(self.WHY)


def test_a_source_that_cannot_start_shows_its_whole_reason_and_quits_with_1() -> None:
    # Issue 11: the one-paragraph message was cut at the terminal's width and q exited 0.
    app = create_app(lambda: _Unprivileged("start"), TopOptions(interval=0.05, clock=fixed_clock))

    async def body(pilot: Any) -> None:
        for _ in range(40):
            await pilot.pause(0.05)
            if app.start_error:
                break
        await pilot.pause(0.1)
        shown = " ".join(screen_text(app).split())  # wrapped over several lines
        assert f"cannot start: {_Unprivileged.WHY} (q quits)" in shown
        await pilot.press("q")

    run(app, body)
    assert app.return_code == 1 and app.start_error == _Unprivileged.WHY


def test_reader_thread_feeds_the_screen_and_stops_with_the_app() -> None:
    source = FakeSource(recording(50), interval=0.05)
    app = create_app(lambda: source, TopOptions(interval=0.05, clock=fixed_clock))

    async def body(pilot: Any) -> None:
        for _ in range(60):
            await pilot.pause(0.05)
            if _table(app, "procs").row_count:
                break
        assert "curl" in _programs(app)

    run(app, body)
    assert source.closed
    assert not any(t.name == "sockscope-reader" for t in threading.enumerate())


class _History:
    """A stand-in for the daemon's database: one range, one series."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, float]] = []

    def range_interval(self, since: float, until: float) -> Interval:
        self.calls.append(("range", since, until))
        iv = step(0)
        return Interval(ts=until, interval=until - since, processes=iv.processes[:1])

    def process_series(
        self, since: float, until: float, step: float, *, pid: int, start_ns: int, comm: str
    ) -> list[tuple[float, int, int]]:
        self.calls.append(("series", since, until))
        return [(since + i * step, 60 * i, 120 * i) for i in range(3)]


def test_time_range_key_switches_to_past_ranges_and_back() -> None:
    history = _History()
    app = make_app(history=history)

    async def body(pilot: Any) -> None:
        await _fed(pilot, app)
        await pilot.press("t")  # 1 h
        await pilot.pause()
        r = _range(app)
        assert r is not None and r[1] - r[0] == 3600
        assert _programs(app) == ["curl"]
        rx = app.query_one("#graph-rx", Sparkline).data
        assert rx is not None and list(rx) == [0.0, 120 * 1 / 30.0, 120 * 2 / 30.0]  # bytes per 30 s bucket, per s
        assert "live" not in screen_text(app).splitlines()[0]
        await pilot.press("t", "t", "t")  # 24 h, 7 d, typed
        await pilot.pause()
        await pilot.press(*"2d 1d", "enter")
        await pilot.pause()
        r = _range(app)
        assert r is not None and round(r[1] - r[0]) == 86400
        await pilot.press("t")  # back to live
        await pilot.pause()
        assert _range(app) is None and len(_programs(app)) == 4

    run(app, body)


def test_time_range_without_a_database_explains() -> None:
    app = make_app()

    async def body(pilot: Any) -> None:
        await _fed(pilot, app)
        await pilot.press("t")
        await pilot.pause()
        assert app.range is None
        assert "past ranges need the daemon's database" in screen_text(app)

    run(app, body)


def test_state_matches_the_model_alone() -> None:
    """The screen shows the model's numbers: no second accounting in the UI."""
    app = make_app()
    alone = TopState()
    for iv in recording():
        alone.update(iv)

    async def body(pilot: Any) -> None:
        await _fed(pilot, app, 4)
        assert {k: (r.tx_total, r.rx_total) for k, r in app.state.procs.items()} == {
            k: (r.tx_total, r.rx_total) for k, r in alone.procs.items()
        }
        assert app.state.now == T0 + 3

    run(app, body)
