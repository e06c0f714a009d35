"""`sockscope events`: the live stream, from the daemon's socket when a daemon runs (no root:
membership of the socket's group), else from a collector of its own (root)."""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

from sockscope.bpf.loader import CollectorError, CollectorOptions
from sockscope.collector.source import Source
from sockscope.events.client import ClientError, daemon_listening, subscribe
from sockscope.events.match import MatchError, keys_help, match_any
from sockscope.events.model import Event, encode, lost_event
from sockscope.output.safe import printable
from sockscope.output.table import clock
from sockscope.ticks import ticks

LiveFactory = Callable[[CollectorOptions, Callable[[Event], None]], Source]
QUEUE = 65536  # events waiting to be printed (own collector) before they are dropped and counted
FLUSH_IDLE = 0.05  # seconds: output is flushed when no event came for this long (one write per burst)


def add_parser(sub: Any, hooks_arg: Callable[[argparse.ArgumentParser], None], default_config: str) -> None:
    ev = sub.add_parser(
        "events",
        help="connections as they open and close, as lines or JSON (for firewalls, alerts, scripts)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="match keys (KEY=VALUE or KEY!=VALUE; terms of one --match are ANDed, several --match ORed):\n"
        + keys_help(),
    )
    ev.add_argument("--json", action="store_true", help="one JSON object per line (schema: README, 'Live events')")
    ev.add_argument("--match", action="append", default=[], metavar="EXPR", help="only events matching EXPR")
    ev.add_argument(
        "--source",
        choices=("auto", "daemon", "collector"),
        default="auto",
        help="auto (the daemon's socket when a daemon serves it, else a collector of its own; needs root), "
        "daemon, collector",
    )
    ev.add_argument("--socket", metavar="PATH", help="the daemon's event socket (default: events.socket from --config)")
    ev.add_argument("--config", metavar="PATH", help=f"TOML configuration (default {default_config})")
    ev.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    ev.add_argument("--count", type=int, metavar="N", help="stop after N events (lost-event notices not counted)")
    hooks_arg(ev)


def describe(e: Mapping[str, Any]) -> str:
    """One readable line; every string from the system made inert (printable)."""
    when = clock(e.get("time") or 0)
    kind = e.get("kind")
    if kind == "lost":
        return f"{when} lost {e.get('count')} events ({printable(str(e.get('reason')))})"
    who = f"{e.get('pid') or '-'} {printable(e.get('comm'), limit=16)}"
    local = _endpoint(e.get("laddr"), e.get("lport"))
    text = f"{when} {printable(str(kind)):<11} {who:<22} {local}"
    if kind != "tcp_listen":
        text += f" -> {_endpoint(e.get('raddr'), e.get('rport'))}"
        if e.get("name"):
            text += f" ({printable(e.get('name'), limit=80)})"
    if kind in ("tcp_close", "udp_end"):
        tx, rx = e.get("tx_bytes"), e.get("rx_bytes")
        text += f" tx {tx if tx is not None else '?'} rx {rx if rx is not None else '?'}"
        if e.get("duration") is not None:
            text += f" {e['duration']:.3f}s"
    elif kind == "udp_start":
        text += f" first datagram {'received' if e.get('dir') == 'rx' else 'sent'}"
    if e.get("user"):
        text += f" user={printable(e.get('user'), limit=32)}"
    if e.get("unit") or e.get("container"):
        text += (
            f" {'unit' if e.get('unit') else 'container'}={printable(e.get('unit') or e.get('container'), limit=64)}"
        )
    return text


def _endpoint(addr: object, port: object) -> str:
    a = printable(str(addr)) if addr is not None else "*"
    if ":" in a:
        a = f"[{a}]"
    return f"{a}:{port if port is not None else '*'}"


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    from sockscope import config as config_mod

    return config_mod.load(args.config).events.socket


def run_events(args: argparse.Namespace, out: TextIO, factory: LiveFactory, stop: threading.Event,
               hooks: tuple[str, ...]) -> int:  # fmt: skip
    try:
        matches = match_any(args.match)
    except MatchError as exc:
        print(f"sockscope events: --match {json.dumps(exc.text)}: {exc}", file=sys.stderr)
        return 2
    path = _socket_path(args)
    if args.source == "daemon" or (args.source == "auto" and daemon_listening(path)):
        try:
            stream = _from_daemon(path, stop)
            return _print(stream, matches, args, out, stop)
        except ClientError as exc:
            print(f"sockscope events: {exc}", file=sys.stderr)
            return 1
    try:
        return _own_collector(args, out, factory, stop, matches, hooks)
    except CollectorError as exc:
        if args.source == "auto":  # say both ways it tried
            raise CollectorError(f"no sockscope daemon serves {printable(path)}, and a collector of its own "
                                 f"could not start: {exc}") from exc  # fmt: skip
        raise


def _from_daemon(path: str, stop: threading.Event) -> Stream:
    # idle: lines are printed in batches, flushed when the daemon goes quiet for this long
    for line in subscribe(path, idle=FLUSH_IDLE):
        if not line:  # quiet: flush, and a chance to look at the clock and the stop flag
            yield None
            continue
        try:
            event = json.loads(line)
        except ValueError:
            raise ClientError(f"{printable(path)}: the daemon sent a line that is not JSON") from None
        if isinstance(event, dict):
            yield event, line


Matcher = Callable[[Mapping[str, object]], bool]
Stream = Iterator[tuple[Event, bytes] | None]  # (event, its JSON line); None: nothing came for a while


def _print(stream: Stream, matches: Matcher, args: argparse.Namespace, out: TextIO, stop: threading.Event) -> int:
    deadline = time.monotonic() + args.duration if args.duration else None
    shown, lost = 0, 0
    for item in stream:
        if item is None:  # nothing came for a while: only the deadline and the stop to look at
            out.flush()
            if stop.is_set() or (deadline and time.monotonic() >= deadline):
                break
            continue
        event, line = item
        if event.get("kind") == "lost":
            lost += int(event.get("count") or 0)
        elif not matches(event):
            continue
        # The JSON line as it came (ASCII, escaped by whoever encoded it): no second encoding.
        out.write(line.decode("ascii", "replace") + "\n" if args.json else describe(event) + "\n")
        if event.get("kind") != "lost":
            shown += 1
        if (args.count and shown >= args.count) or stop.is_set() or (deadline and time.monotonic() >= deadline):
            break
    else:  # the stream ended by itself: the daemon stopped, or dropped this subscriber
        if not stop.is_set():
            out.flush()
            print("sockscope events: the daemon closed the connection (it stopped, or this subscriber read too "
                  "slowly and was disconnected)", file=sys.stderr)  # fmt: skip
            return 1
    out.flush()
    if lost:
        print(f"sockscope events: {lost} events were lost (see the 'lost' lines)", file=sys.stderr)
        return 1
    return 0


def _own_collector(args: argparse.Namespace, out: TextIO, factory: LiveFactory, stop: threading.Event,
                   matches: Matcher, hooks: tuple[str, ...]) -> int:  # fmt: skip
    pending: queue.Queue[Event] = queue.Queue(QUEUE)
    dropped = [0]

    def publish(event: Event) -> None:  # the pump's thread: never wait for the terminal
        if event.get("kind") != "lost" and not matches(event):
            return
        try:
            pending.put_nowait(event)
        except queue.Full:
            dropped[0] += 1

    source = factory(CollectorOptions(count_groups=hooks, live=True), publish)
    done = threading.Event()
    source.start()
    reader_error: list[BaseException] = []

    def intervals() -> None:  # drains the flow maps and ends quiet UDP flows, once a second
        try:
            for _ in ticks(1.0, done):
                source.read()
        except BaseException as exc:
            reader_error.append(exc)
            done.set()

    reader = threading.Thread(target=intervals, name="sockscope-intervals", daemon=True)
    reader.start()

    def stream() -> Stream:
        said = 0
        while not (stop.is_set() or done.is_set()):
            if dropped[0] > said:
                lost = lost_event("subscriber_queue", dropped[0] - said)
                yield lost, encode(lost).rstrip(b"\n")
                said = dropped[0]
            try:
                event = pending.get(timeout=FLUSH_IDLE)
            except queue.Empty:
                yield None
            else:
                yield event, encode(event).rstrip(b"\n")

    try:
        return _print(stream(), matches, args, out, stop)
    finally:
        done.set()
        reader.join(timeout=5)
        source.close()
        if reader_error:
            raise reader_error[0]
