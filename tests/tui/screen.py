"""Helpers for the UI tests: an app fed from the recording, and the screen as text."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from rich.console import Console

from sockscope.collector.model import Interval
from sockscope.collector.source import FakeSource
from sockscope.tui.app import HistoryAccess, TopApp, TopOptions, create_app
from tests.tui.recording import recording

SIZE = (132, 36)


def fixed_clock() -> tuple[float, float]:
    return (1.0, 100.0)  # no CPU time passes: the header's figure is the same in every run


def make_app(intervals: Iterable[Interval] | None = None, history: HistoryAccess | None = None) -> TopApp:
    ivs = list(recording() if intervals is None else intervals)
    return create_app(lambda: FakeSource(ivs), TopOptions(auto_read=False, clock=fixed_clock), history)


def screen_text(app: TopApp) -> str:
    """What the terminal shows, as plain text (styles left out), one line per row."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True, color_system=None)
    console.print(app.screen._compositor.render_update(full=True))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def run(app: TopApp, body: Callable[[Any], Awaitable[None]], size: tuple[int, int] = SIZE) -> None:
    """Run the app headless at `size` and drive it with body(pilot)."""

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await body(pilot)

    asyncio.run(main())
