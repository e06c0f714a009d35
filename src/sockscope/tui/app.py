"""`sockscope top`: the full-screen view (Textual).

One factory, `create_app`, builds the app for the command line and for the tests; the data comes
from a `Source` (the kernel collector, the daemon's database, or a FakeSource in tests) and, for
past ranges, from a `HistoryAccess`. Everything the system names (process names, command lines,
addresses) goes on screen as `rich.text.Text` after `printable()`: data, never markup or control
sequences.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Sparkline, Static

from sockscope.collector.model import Interval
from sockscope.collector.rates import human_bytes
from sockscope.collector.source import Source
from sockscope.output.safe import printable
from sockscope.report_format import human_duration, parse_when
from sockscope.ticks import ticks
from sockscope.tui.model import (
    DESCENDING_FIRST,
    HISTORY_POINTS,
    ConnRow,
    ProcKey,
    ProcRow,
    TopState,
    connection_rows,
    series,
    visible_rows,
)

MIN_WIDTH, MIN_HEIGHT = 70, 16

# (column key, title, numeric): the process table, in order; keys are PROC_SORTS names.
PROC_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("pid", "PID", True),
    ("user", "USER", False),
    ("program", "PROGRAM", False),
    ("unit", "UNIT", False),
    ("send", "SEND/s", True),
    ("receive", "RECV/s", True),
    ("sent", "SENT", True),
    ("received", "RECEIVED", True),
    ("conns", "CONNS", True),
)
CONN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("proto", "PROTO"),
    ("local", "LOCAL"),
    ("remote", "REMOTE"),
    ("state", "STATE"),
    ("sent", "SENT"),
    ("received", "RECEIVED"),
    ("age", "AGE"),
)
RANGES: tuple[tuple[str, float | None], ...] = (("live", None), ("1h", 3600.0), ("24h", 86400.0), ("7d", 7 * 86400.0))
GRAPH_POINTS = 120  # buckets of a past range's graph

HELP = """\
sockscope top: who uses the network, live

  ↑ ↓ PgUp PgDn   select a process: its connections and graph below
  Tab             move between the process and connection tables
  s / S           sort by the next / previous column (click a header too)
  o               reverse the order
  /               filter: program, command line, user, unit, name, address or port
  Esc             clear the filter
  p  Space        pause the display (counting goes on)
  b               bytes or bits per second
  c               program name or full command line
  n               peers by name (as the program resolved it) or by address
  t               time range: live, 1 h, 24 h, 7 d, typed (from the daemon's database)
  ?               this help
  q               quit

Rates are per second over the last interval (over a past range: its average);
SENT / RECEIVED since sockscope started, or over the range. Closed connections
stay listed, dimmed, for 30 s. The header shows traffic no process could be
charged with (unattributed), events the kernel side had to drop, and the CPU
time of this sockscope process.
"""


class HistoryAccess(Protocol):
    """Past ranges, from the daemon's database (store/follow.py)."""

    def range_interval(self, since: float, until: float) -> Interval: ...

    def process_series(
        self, since: float, until: float, step: float, *, pid: int, start_ns: int, comm: str
    ) -> list[tuple[float, int, int]]: ...


@dataclass(frozen=True, slots=True)
class TopOptions:
    interval: float = 1.0
    bits: bool = False
    origin: str = "collector"  # what the header says the data is: "collector" or "database <path>"
    auto_read: bool = True  # False in tests: they call read_once() themselves
    # (CPU seconds of this process, monotonic seconds): the header's "monitor CPU"; tests fix it
    clock: Callable[[], tuple[float, float]] = lambda: (time.process_time(), time.monotonic())


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "close", show=False)]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Static { width: auto; max-width: 90; height: auto; border: round $accent; padding: 0 1;
                          background: $surface; }
    """

    def compose(self) -> ComposeResult:
        yield Static(Text(HELP), id="help")


class TopApp(App[int]):
    TITLE = "sockscope"
    CSS = """
    #summary { height: 2; padding: 0 1; background: $boost; }
    #filter, #range-input { display: none; height: 3; }
    #procs { height: 1fr; min-height: 5; }
    #detail { height: 1; padding: 0 1; background: $boost; }
    #lower { height: 12; }
    #conns { width: 2fr; }
    #graph { width: 1fr; min-width: 24; padding: 0 1; }
    #graph Sparkline { height: 4; }
    #tx-label, #rx-label { height: 1; }
    #status { height: auto; max-height: 8; padding: 0 1; color: $warning; }
    #toosmall { display: none; width: 100%; height: 100%; content-align: center middle; }
    TopApp.toosmall #main { display: none; }
    TopApp.toosmall #toosmall { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help"),
        # priority: handled as it arrives, before the keys behind it are passed on to the focused table
        Binding("slash", "filter", "filter", priority=True),
        Binding("escape", "clear_filter", "clear", show=False),
        Binding("s", "sort(1)", "sort"),
        Binding("S", "sort(-1)", "sort back", show=False),
        Binding("o", "reverse", "order", show=False),
        Binding("p,space", "pause", "pause"),
        Binding("b", "bits", "bits"),
        Binding("c", "cmdline", "cmdline"),
        Binding("n", "names", "names"),
        Binding("t", "range", "range"),
    ]

    def __init__(
        self, source_factory: Callable[[], Source], options: TopOptions, history: HistoryAccess | None = None
    ) -> None:
        super().__init__()
        self._source_factory = source_factory
        self.source: Source | None = None
        self.options = options
        self.history = history
        self.state = TopState()
        self.live_state = self.state
        self.sort = "rate"
        self.descending = True
        self.filter_text = ""
        self.paused = False
        self.bits = options.bits
        self.show_cmdline = False
        self.show_names = True  # a peer's name (from DNS) instead of its address, where known
        self.range_index = 0
        self.range: tuple[float, float] | None = None  # a past range on screen, else live
        self.selected: ProcKey | None = None
        self.message = ""
        self.start_error: str | None = None  # the source could not start: exit 1 and say it again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cpu0 = options.clock()
        self.cpu_percent = 0.0

    # ---- layout ----

    def compose(self) -> ComposeResult:
        with Vertical(id="main"):
            yield Static(id="summary")
            yield Input(placeholder="filter: program, user, unit, address or port (Esc clears)", id="filter")
            yield Input(placeholder="range: SINCE [UNTIL], e.g. 3d 1d or 2026-11-20 2026-11-21T12:00", id="range-input")
            yield DataTable(id="procs", cursor_type="row", zebra_stripes=True)
            yield Static(id="detail")
            with Horizontal(id="lower"):
                yield DataTable(id="conns", cursor_type="row")
                with Vertical(id="graph"):
                    yield Static(id="tx-label")
                    yield Sparkline([], id="graph-tx", summary_function=max)
                    yield Static(id="rx-label")
                    yield Sparkline([], id="graph-rx", summary_function=max)
            yield Static(id="status")
        yield Static(Text(f"terminal too small: sockscope top needs {MIN_WIDTH} x {MIN_HEIGHT}"), id="toosmall")
        yield Footer()

    def on_mount(self) -> None:
        procs = self.query_one("#procs", DataTable)
        procs.focus()
        conns = self.query_one("#conns", DataTable)
        for key, title in CONN_COLUMNS:
            conns.add_column(title, key=key)
        self._check_size()
        self.refresh_view()
        self._loop = asyncio.get_running_loop()
        if self.options.auto_read:
            # Said before the first frame: the screen says "starting…" until the programs count.
            self.set_message("starting…")
            self._thread = threading.Thread(target=self._reader, name="sockscope-reader", daemon=True)
            self._thread.start()
        else:
            self.start_source()

    def on_resize(self) -> None:
        self._check_size()

    def _check_size(self) -> None:
        small = self.size.width < MIN_WIDTH or self.size.height < MIN_HEIGHT
        self.set_class(small, "toosmall")

    # ---- data ----

    def start_source(self) -> None:
        self.source = self._source_factory()
        self.source.start()

    def read_once(self) -> None:
        """One interval, read and shown now (the tests' clock)."""
        assert self.source is not None, "start_source() first"
        self.apply(self.source.read())

    def _post(self, fn: Callable[..., None], *args: object) -> None:
        """Run fn on the UI's loop without waiting: the reader never blocks on a UI that is exiting."""
        if self._loop is not None and not self._stop.is_set():
            self._loop.call_soon_threadsafe(fn, *args)

    def _reader(self) -> None:
        """The reader thread: reads block (a map swap waits for an RCU grace period), the screen must not."""
        try:
            self.start_source()
        except Exception as exc:  # shown on screen: a missing privilege, no BPF, no database
            self._post(self._start_failed, str(exc))
            return
        self._post(self.set_message, "")
        for last in ticks(self.options.interval, self._stop):
            if last or self.source is None:
                break
            try:
                iv = self.source.read()
            except Exception as exc:  # a database that went away may come back: keep trying
                self._post(self.set_message, f"read failed: {exc}")
            else:
                self._post(self.apply, iv)

    def apply(self, iv: Interval) -> None:
        if self.message.startswith("read failed"):
            self.message = ""
        self.live_state.update(iv)
        now = self.options.clock()
        wall = now[1] - self._cpu0[1]
        if wall > 0:
            self.cpu_percent = 100.0 * (now[0] - self._cpu0[0]) / wall
        self._cpu0 = now
        if not self.paused and self.range is None:
            self.refresh_view()

    def _start_failed(self, text: str) -> None:
        self.start_error = text
        self.set_message(f"cannot start: {text}  (q quits)")

    async def action_quit(self) -> None:
        # Not counting at all is a failure: the command's status says so (cli prints the reason).
        self.exit(return_code=1 if self.start_error else 0)

    def set_message(self, text: str) -> None:
        self.message = text
        self._render_status()

    def on_unmount(self) -> None:
        self._stop.set()
        # The reader may still be in read(): closing under it would pull the maps away.
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.source is not None:
            source, self.source = self.source, None
            source.close()

    # ---- rendering ----

    def refresh_view(self) -> None:
        self._render_summary()
        self._render_procs()
        self._render_selection()
        self._render_status()

    def _rate(self, value: float) -> str:
        return human_bytes(value, bits=self.bits) + "/s"

    def _render_summary(self) -> None:
        t = self.state.totals
        where = "live" if self.range is None else _range_title(*self.range)
        line1 = Text.assemble(
            ("sockscope ", "bold"),
            (f"{where} · {printable(self.options.origin)}", ""),
            (f"  interval {t.interval:.1f}s" if self.range is None else "", ""),
            ("  PAUSED" if self.paused else "", "bold reverse"),
        )
        line2 = Text.assemble(
            ("send ", "dim"), (self._rate(t.tx_rate), "bold"), ("  receive ", "dim"), (self._rate(t.rx_rate), "bold"),
            ("  total ", "dim"), (f"↑{human_bytes(t.tx_total)} ↓{human_bytes(t.rx_total)}", ""),
            ("  unattributed ", "dim"),
            (f"{self._rate(t.unattributed_rate)} ({human_bytes(t.unattributed_total)})", ""),
            ("  dropped ", "dim"),
            (f"{t.dropped_events}", "bold red" if t.dropped_events or t.lifecycle_dropped else ""),
            ("  monitor CPU ", "dim"), (f"{self.cpu_percent:.1f}%", ""),
        )  # fmt: skip
        self.query_one("#summary", Static).update(Text("\n").join([line1, line2]))

    def rows(self) -> list[ProcRow]:
        return visible_rows(self.state, sort=self.sort, descending=self.descending, query=self.filter_text)

    def _render_procs(self) -> None:
        table: DataTable[Text] = self.query_one("#procs", DataTable)
        rows = self.rows()
        keep = self.selected
        table.clear(columns=True)  # the headers carry the sort arrow
        for key, title, numeric in PROC_COLUMNS:
            sorted_here = key == self.sort or (self.sort == "rate" and key in ("send", "receive"))
            arrow = ("▼" if self.descending else "▲") if sorted_here else ""
            label = arrow + title if numeric else title + arrow
            table.add_column(Text(label, justify="right" if numeric else "left"), key=key)
        for r in rows:
            program = r.cmdline if self.show_cmdline and r.cmdline else r.comm
            table.add_row(
                Text(str(r.pid), justify="right"),
                Text(printable(r.owner, limit=12)),
                Text(printable(program, limit=200 if self.show_cmdline else 24)),
                Text(printable(r.group, limit=28) if r.group else "-"),
                Text(self._rate(r.tx_rate), justify="right"),
                Text(self._rate(r.rx_rate), justify="right"),
                Text(human_bytes(r.tx_total), justify="right"),
                Text(human_bytes(r.rx_total), justify="right"),
                Text(str(r.open_connections), justify="right"),
                key=_row_key(r.key),
            )
        keys = [r.key for r in rows]
        if keep in keys:
            table.move_cursor(row=keys.index(keep), animate=False)
        elif rows:
            self.selected = rows[0].key
            table.move_cursor(row=0, animate=False)
        else:
            self.selected = None

    def selected_row(self) -> ProcRow | None:
        return self.state.procs.get(self.selected) if self.selected is not None else None

    def _render_selection(self) -> None:
        row = self.selected_row()
        detail = self.query_one("#detail", Static)
        conns: DataTable[Text] = self.query_one("#conns", DataTable)
        conns.clear()
        tx_graph = self.query_one("#graph-tx", Sparkline)
        rx_graph = self.query_one("#graph-rx", Sparkline)
        if row is None:
            detail.update(Text("no process selected" if self.state.procs else "no traffic yet", style="dim"))
            tx_graph.data, rx_graph.data = [], []
            self._graph_labels([], [])
            return
        head = f"{row.pid} {printable(row.comm)}"
        if row.exe:
            head += f"  {printable(row.exe)}"
        detail.update(Text.assemble((head, "bold"), ("  " + printable(row.cmdline) if row.cmdline else "", "dim")))
        now = self.state.now
        for c in connection_rows(row):
            style = "dim" if c.closed else ""
            conns.add_row(
                *(Text(v, style=style) for v in _conn_cells(c, now, self.show_names)),
                key=f"{c.key[0]}|{c.key[1]}|{c.key[2]}|{c.key[3]}",
            )
        tx, rx = self._graph_data(row)
        tx_graph.data, rx_graph.data = tx, rx
        self._graph_labels(tx, rx)

    def _graph_data(self, row: ProcRow) -> tuple[list[float], list[float]]:
        if self.range is None or self.history is None:
            tx, rx = series(row)
            pad = [0.0] * (HISTORY_POINTS - len(tx))  # a fixed time axis: the newest point on the right
            return pad + tx, pad + rx
        since, until = self.range
        step = max(1.0, (until - since) / GRAPH_POINTS)
        try:
            points = self.history.process_series(since, until, step, pid=row.pid, start_ns=row.key[1], comm=row.comm)
        except Exception as exc:  # the database went away under us
            self.message = f"graph: {exc}"
            return [], []
        return [tx / step for _, tx, _ in points], [rx / step for _, _, rx in points]

    def _graph_labels(self, tx: list[float], rx: list[float]) -> None:
        span = (
            f"last {human_duration(HISTORY_POINTS * self.options.interval)}"
            if self.range is None
            else _range_title(*self.range)
        )
        self.query_one("#tx-label", Static).update(
            Text.assemble(("send ", "bold green"), f"{span}, peak {self._rate(max(tx, default=0.0))}")
        )
        self.query_one("#rx-label", Static).update(
            Text.assemble(("receive ", "bold blue"), f"peak {self._rate(max(rx, default=0.0))}")
        )

    def _render_status(self) -> None:
        parts = []
        if self.filter_text:
            parts.append(f"filter: {printable(self.filter_text)}")
        if self.message:
            parts.append(printable(self.message))
        self.query_one("#status", Static).update(Text("  ".join(parts)))

    # ---- events and actions ----

    @on(DataTable.RowHighlighted, "#procs")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = _parse_row_key(event.row_key.value)
        if key is not None and key != self.selected:
            self.selected = key
            self._render_selection()

    @on(DataTable.HeaderSelected, "#procs")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key == self.sort:
            self.descending = not self.descending
        else:
            self.sort, self.descending = key, key in DESCENDING_FIRST
        self.refresh_view()

    def action_sort(self, step: int) -> None:
        names = [k for k, _, _ in PROC_COLUMNS]
        i = names.index(self.sort) if self.sort in names else -1
        self.sort = names[(i + step) % len(names)]
        self.descending = self.sort in DESCENDING_FIRST
        self.refresh_view()

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self.refresh_view()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.refresh_view()

    def action_bits(self) -> None:
        self.bits = not self.bits
        self.refresh_view()

    def action_cmdline(self) -> None:
        self.show_cmdline = not self.show_cmdline
        self.refresh_view()

    def action_names(self) -> None:
        self.show_names = not self.show_names
        self.refresh_view()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display and box.has_focus:  # a "/" typed in the filter itself
            box.insert_text_at_cursor("/")
            return
        # Shown and focused at once (focus() waits for the next loop turn): keys typed right after "/"
        # (a paste, a fast typist, tmux send-keys) must land in the box, not trigger the table's keys.
        box.display = True
        box.value = self.filter_text
        self.screen.set_focus(box)

    def action_clear_filter(self) -> None:
        for box in self.query(Input):
            box.display = False
        self.filter_text = ""
        self.query_one("#procs", DataTable).focus()
        self.refresh_view()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self.refresh_view()

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        event.input.display = False
        self.query_one("#procs", DataTable).focus()

    def action_range(self) -> None:
        if self.history is None:
            self.set_message("past ranges need the daemon's database: run `sockscope daemon`, then `sockscope top`")
            return
        self.range_index = (self.range_index + 1) % (len(RANGES) + 1)
        if self.range_index == len(RANGES):  # typed
            box = self.query_one("#range-input", Input)
            box.display = True
            self.screen.set_focus(box)
            return
        _, span = RANGES[self.range_index]
        if span is None:
            self.show_live()
        else:
            now = time.time()
            self.show_range(now - span, now)

    @on(Input.Submitted, "#range-input")
    def _range_typed(self, event: Input.Submitted) -> None:
        words = event.value.split()
        now = time.time()
        try:
            if not 1 <= len(words) <= 2:
                raise ValueError("give SINCE, or SINCE and UNTIL")
            since = parse_when(words[0], now)
            until = parse_when(words[1], now) if len(words) == 2 else now
            if until <= since:
                raise ValueError("UNTIL must be after SINCE")
        except ValueError as exc:
            self.set_message(f"range: {exc}")
            return
        event.input.display = False
        self.query_one("#procs", DataTable).focus()
        self.show_range(since, until)

    def show_range(self, since: float, until: float) -> None:
        assert self.history is not None
        try:
            iv = self.history.range_interval(since, until)
        except Exception as exc:
            self.set_message(f"history: {exc}")
            return
        state = TopState(forget=float("inf"), linger=float("inf"))
        state.update(iv)
        self.state, self.range = state, (since, until)
        self.message = ""
        self.refresh_view()

    def show_live(self) -> None:
        self.state, self.range, self.range_index = self.live_state, None, 0
        self.refresh_view()


def _row_key(key: ProcKey) -> str:
    return f"{key[0]}|{key[1]}|{key[2]}"


def _parse_row_key(value: str | None) -> ProcKey | None:
    if value is None:
        return None
    pid, start, comm = value.split("|", 2)
    return (int(pid), int(start), comm)


def _endpoint(addr: str | None, port: int | None) -> str:
    host = printable(addr) if addr else "*"
    if addr and ":" in addr:
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def _conn_cells(c: ConnRow, now: float, names: bool = True) -> tuple[str, ...]:
    remote = f"{printable(c.name)}:{c.rport}" if names and c.name and c.rport is not None else None
    return (
        c.proto,
        _endpoint(c.laddr, c.lport),
        remote or (printable(c.name) if names and c.name else _endpoint(c.raddr, c.rport)),
        printable(c.state) if c.state else ("closed" if c.closed else "-"),
        human_bytes(c.tx_total),
        human_bytes(c.rx_total),
        human_duration(c.age(now)),
    )


def _range_title(since: float, until: float) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(since))} → {time.strftime('%H:%M', time.localtime(until))}"


def create_app(
    source_factory: Callable[[], Source], options: TopOptions | None = None, history: HistoryAccess | None = None
) -> TopApp:
    """The one way to build the UI: the command line and the tests both come through here."""
    return TopApp(source_factory, options or TopOptions(), history)
