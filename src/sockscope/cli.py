"""Command line: `sockscope doctor`, `top`, `daemon`, `report`, `events`, `opens`."""

from __future__ import annotations

import argparse
import faulthandler
import io
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import FrameType
from typing import Any, TextIO

from sockscope import __version__
from sockscope import config as config_mod
from sockscope.bpf.libbpf import LibbpfError, LibbpfMissing
from sockscope.bpf.loader import COUNT_GROUP_NAMES, CollectorError, CollectorOptions, count_groups_for
from sockscope.collector.model import Interval
from sockscope.collector.source import Source
from sockscope.events.server import ServerError
from sockscope.gcpace import paced
from sockscope.output import jsonl, table
from sockscope.store.base import GROUPINGS, StoreError
from sockscope.ticks import ticks

SourceFactory = Callable[[CollectorOptions], Source]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value > 86400:
        raise argparse.ArgumentTypeError(f"must be > 0 and <= 86400 seconds, got {text}")
    return value


def _path(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("an empty path: give a file name")
    if "\0" in text:
        raise argparse.ArgumentTypeError("a path cannot contain a NUL character")
    return text


def _max_flows(text: str) -> int:
    value = _positive_int(text)
    low, high = config_mod.MIN_FLOWS, config_mod.MAX_FLOWS  # the configuration's own bounds
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be >= {low} and <= {high} (a map size), got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


HOOKS_ENV = "SOCKSCOPE_HOOKS"  # the default of --hooks (the kernel-matrix tests force a group with it)


def _hooks_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hooks",
        choices=("auto", *COUNT_GROUP_NAMES),
        default=None,
        metavar="GROUP",
        help="counting hooks: auto (the default: the best this kernel allows), "
        f"or force one of {', '.join(COUNT_GROUP_NAMES)} (an error when it cannot count here); "
        f"default from ${HOOKS_ENV}",
    )


def _hooks(args: argparse.Namespace, configured: str = "auto") -> tuple[str, ...]:
    """--hooks, else $SOCKSCOPE_HOOKS, else the configuration's collector.hooks."""
    env = os.environ.get(HOOKS_ENV, "").strip()
    try:
        return count_groups_for(args.hooks or env or configured)
    except ValueError as exc:
        raise _UsageError(f"${HOOKS_ENV}: {exc}") from None


class _UsageError(Exception):
    """A bad value from outside argparse (the environment): one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sockscope", description="Which process sends and receives how many bytes, to whom."
    )
    parser.add_argument("--version", action="version", version=f"sockscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    doc = sub.add_parser("doctor", help="what this kernel allows and which hooks attach")
    doc.add_argument("--json", action="store_true", help="machine-readable report")
    doc.add_argument("--verbose", "-v", action="store_true", help="each program's attach result and libbpf's words")
    _hooks_arg(doc)
    doc.add_argument(
        "--check",
        type=_positive_float,
        metavar="SECONDS",
        help="also count for SECONDS and reconcile with the interfaces' own byte counters (/proc/net/dev)",
    )

    top = sub.add_parser("top", help="live traffic per process and connection (full screen on a terminal)")
    out = top.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per interval on its own line")
    out.add_argument("--plain", action="store_true", help="a plain table per interval (the default when not a tty)")
    top.add_argument(
        "--source",
        choices=("auto", "collector", "database"),
        default="auto",
        help="where the full screen's data comes from: auto (the daemon's database when a daemon is writing it,"
        " else the collector; needs root), collector, database",
    )
    top.add_argument(
        "--db", type=_path, metavar="PATH", help="the daemon's database (default: daemon.database from --config)"
    )
    top.add_argument("--config", metavar="PATH", help=f"TOML configuration (default {config_mod.DEFAULT_PATH})")
    top.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS", help="default 1")
    top.add_argument("--count", type=_positive_int, default=None, metavar="N", help="stop after N intervals")
    top.add_argument("--bits", action="store_true", help="rates in bits per second (table only)")
    _hooks_arg(top)
    top.add_argument(
        "--no-splice",
        action="store_true",
        help="count TCP receives by the calls' return values only: a little cheaper, splice() reads unseen",
    )
    top.add_argument(
        "--ptr",
        action="store_true",
        help="reverse DNS for peers no program resolved (sends DNS queries; names show as name_source ptr)",
    )
    top.add_argument(
        "--udp-idle",
        type=_positive_float,
        default=CollectorOptions.udp_idle,
        metavar="SECONDS",
        help="a UDP flow ends after this long without traffic (default 60)",
    )
    top.add_argument(
        "--max-flows",
        type=_max_flows,
        default=CollectorOptions.max_flows,
        metavar="N",
        help="distinct (socket, process, peer) entries per interval before events are dropped and counted",
    )
    dmn = sub.add_parser("daemon", help="collect in the foreground and keep history in SQLite")
    dmn.add_argument("--config", metavar="PATH", help=f"TOML configuration (default {config_mod.DEFAULT_PATH})")
    dmn.add_argument("--db", type=_path, metavar="PATH", help="database file (overrides daemon.database)")
    dmn.add_argument("--interval", type=_positive_float, metavar="SECONDS", help="overrides daemon.interval")
    dmn.add_argument("--duration", type=_positive_float, metavar="SECONDS", help="exit by itself after this long")
    _hooks_arg(dmn)
    dmn.add_argument(
        "-o", "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="any configuration key"
    )

    rep = sub.add_parser("report", help="history: who moved how much over a time range")
    rep.add_argument("--db", type=_path, metavar="PATH", help="database file (default: daemon.database from --config)")
    rep.add_argument("--config", metavar="PATH", help=f"TOML configuration (default {config_mod.DEFAULT_PATH})")
    rep.add_argument("--since", default="24h", metavar="WHEN", help="10m, 2h, 3d, an ISO date or time (default 24h)")
    rep.add_argument("--until", default="now", metavar="WHEN", help="same forms (default now)")
    rep.add_argument("--by", choices=GROUPINGS, default="process")
    rep.add_argument("--top", type=_positive_int, metavar="N", help="only the N busiest")
    fmt = rep.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON list of rows")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header line")
    from sockscope.events import cli as events_cli

    events_cli.add_parser(sub, _hooks_arg, config_mod.DEFAULT_PATH)
    from sockscope.opens import cli as opens_cli

    opens_cli.add_parser(sub)
    return parser


def _bpf_source(options: CollectorOptions) -> Source:
    from sockscope.collector.bpf_source import BpfSource

    return BpfSource(options)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _live_source(
    options: CollectorOptions, publish: Callable[[dict[str, Any]], None], report: Callable[[str], None] = _stderr
) -> Source:
    from sockscope.collector.bpf_source import BpfSource

    return BpfSource(options, publish=publish, report=report)


def run_events(args: argparse.Namespace, out: TextIO, stop: _Stop) -> int:
    from sockscope.events import cli as events_cli

    return events_cli.run_events(args, out, _live_source, stop.event, _hooks(args))


class _Stop:
    """SIGINT/SIGTERM end the loop after one last read, so the totals are complete."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()

    def install(self) -> None:
        signal.signal(signal.SIGINT, self)
        signal.signal(signal.SIGTERM, self)


def run_top(
    args: argparse.Namespace,
    out: TextIO,
    factory: SourceFactory = _bpf_source,
    stop: _Stop | None = None,
) -> int:
    options = CollectorOptions(
        max_flows=args.max_flows,
        udp_idle=args.udp_idle,
        splice=not args.no_splice,
        count_groups=_hooks(args),
        ptr=args.ptr,
    )
    source = factory(options)
    stop = stop or _Stop()
    source.start()
    try:
        with paced() as gc_pacer:
            for emitted, last in enumerate(ticks(args.interval, stop.event), 1):
                _emit(source.read(), args, out)
                if last or (args.count is not None and emitted >= args.count):
                    break
                gc_pacer.after_interval()
        return 0
    finally:
        source.close()


def run_top_screen(args: argparse.Namespace, factory: SourceFactory = _bpf_source) -> int:
    """The full-screen UI: the collector, or the daemon's database when a daemon is writing it."""
    from sockscope.store import follow
    from sockscope.tui.app import TopOptions, create_app
    from sockscope.tui.history import DatabaseHistory

    path = _database(args)
    use_db = args.source == "database" or (args.source == "auto" and follow.daemon_database_active(path))
    options = CollectorOptions(
        max_flows=args.max_flows,
        udp_idle=args.udp_idle,
        splice=not args.no_splice,
        count_groups=_hooks(args),
        ptr=args.ptr,
    )
    source_factory: Callable[[], Source]
    if use_db:
        source_factory, origin = (lambda: follow.DatabaseSource(path)), f"database {path}"
    else:
        source_factory, origin = (lambda: factory(options)), "collector"
    history = DatabaseHistory(path) if os.access(path, os.R_OK) else None
    app = create_app(source_factory, TopOptions(interval=args.interval, bits=args.bits, origin=origin), history)
    try:
        app.run()
    finally:
        if history is not None:
            history.close()
    if app.start_error:  # whole, once the screen is gone: on screen it may not fit
        print(f"sockscope: {app.start_error}", file=sys.stderr)
        return 1
    return app.return_code or 0


def _emit(iv: Interval, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        out.writelines(jsonl.interval_chunks(iv))
        out.write("\n")
    else:
        out.write(table.render(iv, bits=args.bits) + "\n\n")
    out.flush()


def run_doctor(args: argparse.Namespace, out: TextIO, factory: SourceFactory = _bpf_source) -> int:
    from sockscope import doctor

    options = CollectorOptions(count_groups=_hooks(args))
    report = doctor.diagnose(options)
    check = None
    if args.check and report.ok:
        source = factory(options)
        source.start()
        try:
            # Said once counting runs, so that whoever makes traffic for the check knows when.
            print(f"sockscope doctor: counting for {args.check:g} s", file=sys.stderr, flush=True)
            check = doctor.reconcile(source, args.check)
        finally:
            source.close()
    if args.json:
        d = report.as_dict()
        if check is not None:
            d["check"] = check.as_dict()
        out.write(json.dumps(d, indent=2) + "\n")
    else:
        out.write(doctor.render(report, verbose=args.verbose) + "\n")
        if check is not None:
            out.write("\n" + doctor.render_check(check) + "\n")
    return 0 if report.ok else 1


def _config(args: argparse.Namespace, overrides: list[str]) -> config_mod.Config:
    return config_mod.load(args.config, overrides)


def _database(args: argparse.Namespace) -> str:
    """--db, else the daemon's database from the configuration (read only when needed)."""
    return str(args.db if args.db is not None else _config(args, []).daemon.database)


def run_daemon(args: argparse.Namespace, factory: SourceFactory | None = None) -> int:
    from sockscope.daemon import Daemon, stderr_log
    from sockscope.events.service import Handoff
    from sockscope.store.sqlite import open_writer

    overrides = list(args.set)
    if args.db:
        overrides.append(f"daemon.database={json.dumps(args.db)}")
    if args.interval:
        overrides.append(f"daemon.interval={args.interval}")
    cfg = _config(args, overrides)
    options = CollectorOptions(
        max_flows=cfg.collector.max_flows,
        udp_idle=cfg.udp.idle_timeout,
        splice=cfg.collector.splice,
        count_groups=_hooks(args, cfg.collector.hooks),
        ptr=cfg.collector.ptr,
    )
    stop = _Stop()
    stop.install()
    # A fault in C code (SQLite, libbpf) would end a service with no word in its journal.
    faulthandler.enable()
    handoff = Handoff(cfg, stderr_log)
    if factory is not None:
        source = factory(options)
    elif handoff.wanted:
        source = _live_source(replace(options, live=True), handoff.hub.publish, stderr_log)
    else:
        source = _bpf_source(options)
    daemon = Daemon(cfg, source, lambda: open_writer(cfg.daemon.database, log=stderr_log),
                    handoff=handoff if handoff.wanted else None)  # fmt: skip
    return daemon.run(stop.event, args.duration)


def run_report(args: argparse.Namespace, out: TextIO) -> int:
    from sockscope import report_format
    from sockscope.store.sqlite import SqliteReader

    path = _database(args)
    now = time.time()
    try:
        since = report_format.parse_when(args.since, now)
        until = report_format.parse_when(args.until, now)
    except ValueError as exc:
        print(f"sockscope report: {exc}", file=sys.stderr)
        return 2
    if until <= since:
        why = f"--until {args.until} is not after --since {args.since}"
        print(f"sockscope report: the range ends before it starts: {why}", file=sys.stderr)
        return 2
    reader = SqliteReader(path)
    try:
        rows = reader.report(since, until, args.by, args.top)
    finally:
        reader.close()
    if args.json:
        out.write(report_format.to_json(rows, args.by) + "\n")
    elif args.csv:
        # To a file, CSV keeps undecodable bytes of names as they were (surrogate escapes): write
        # them back as bytes. To a terminal, names are made inert like the table's.
        terminal = out.isatty()
        if isinstance(out, io.TextIOWrapper) and not terminal:
            out.reconfigure(errors="surrogateescape")
        out.write(report_format.to_csv(rows, args.by, inert=terminal))
    else:
        out.write(report_format.to_table(rows, args.by, since=since, until=until) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "doctor":
            return run_doctor(args, sys.stdout)
        if args.command == "daemon":
            return run_daemon(args)
        if args.command == "report":
            return run_report(args, sys.stdout)
        if args.command == "events":
            stop = _Stop()
            stop.install()
            return run_events(args, sys.stdout, stop)
        if args.command == "opens":
            from sockscope.opens import cli as opens_cli

            stop = _Stop()
            stop.install()
            return opens_cli.run_opens(args, sys.stdout, stop.event)
        if not args.json and not args.plain and sys.stdout.isatty() and sys.stdin.isatty():
            return run_top_screen(args)
        stop = _Stop()
        stop.install()
        return run_top(args, sys.stdout, stop=stop)
    except (CollectorError, LibbpfMissing) as exc:
        print(f"sockscope: {exc}", file=sys.stderr)
        return 1
    except LibbpfError as exc:
        print(f"sockscope: a BPF operation failed: {exc}", file=sys.stderr)
        return 1
    except _UsageError as exc:
        print(f"sockscope: {exc}", file=sys.stderr)
        return 2
    except config_mod.ConfigError as exc:
        print(f"sockscope: configuration refused: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"sockscope: {exc}", file=sys.stderr)
        return 1
    except ServerError as exc:  # the event socket: in use by another daemon, no such group
        print(f"sockscope: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Reader went away (`| head`): not an error of ours.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
