"""Command line: `sockscope doctor`, `sockscope top`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TextIO

from sockscope import __version__
from sockscope.bpf.libbpf import LibbpfError, LibbpfMissing
from sockscope.bpf.loader import CollectorError, CollectorOptions
from sockscope.collector.model import Interval
from sockscope.collector.source import Source
from sockscope.output import jsonl, table

SourceFactory = Callable[[CollectorOptions], Source]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value > 86400:
        raise argparse.ArgumentTypeError(f"must be > 0 and <= 86400 seconds, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sockscope", description="Which process sends and receives how many bytes, to whom."
    )
    parser.add_argument("--version", action="version", version=f"sockscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    doc = sub.add_parser("doctor", help="what this kernel allows and which hooks attach")
    doc.add_argument("--json", action="store_true", help="machine-readable report")
    doc.add_argument(
        "--check",
        type=_positive_float,
        metavar="SECONDS",
        help="also count for SECONDS and reconcile with the interfaces' own byte counters (/proc/net/dev)",
    )

    top = sub.add_parser("top", help="live traffic per process and connection")
    top.add_argument("--json", action="store_true", help="one JSON object per interval on its own line")
    top.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS", help="default 1")
    top.add_argument("--count", type=_positive_int, default=None, metavar="N", help="stop after N intervals")
    top.add_argument("--bits", action="store_true", help="rates in bits per second (table only)")
    top.add_argument(
        "--no-splice",
        action="store_true",
        help="count TCP receives at sock_recv_length only: one program less per TCP read, splice() reads unseen",
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
        type=_positive_int,
        default=CollectorOptions.max_flows,
        metavar="N",
        help="distinct (socket, process, peer) entries per interval before events are dropped and counted",
    )
    return parser


def _bpf_source(options: CollectorOptions) -> Source:
    from sockscope.collector.bpf_source import BpfSource

    return BpfSource(options)


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
    options = CollectorOptions(max_flows=args.max_flows, udp_idle=args.udp_idle, splice=not args.no_splice)
    source = factory(options)
    stop = stop or _Stop()
    source.start()
    try:
        emitted = 0
        deadline = time.monotonic() + args.interval
        while True:
            stopped = stop.event.wait(max(0.0, deadline - time.monotonic()))
            iv = source.read()
            deadline += args.interval
            if deadline < time.monotonic():  # fell behind (suspend, slow terminal): don't burst
                deadline = time.monotonic() + args.interval
            _emit(iv, args, out)
            emitted += 1
            if stopped or (args.count is not None and emitted >= args.count):
                return 0
    finally:
        source.close()


def _emit(iv: Interval, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        out.write(jsonl.interval_line(iv) + "\n")
    else:
        out.write(table.render(iv, bits=args.bits) + "\n\n")
    out.flush()


def run_doctor(args: argparse.Namespace, out: TextIO, factory: SourceFactory = _bpf_source) -> int:
    from sockscope import doctor

    report = doctor.diagnose()
    check = None
    if args.check and report.ok:
        source = factory(CollectorOptions())
        source.start()
        try:
            check = doctor.reconcile(source, args.check)
        finally:
            source.close()
    if args.json:
        d = report.as_dict()
        if check is not None:
            d["check"] = check.as_dict()
        out.write(json.dumps(d, indent=2) + "\n")
    else:
        out.write(doctor.render(report) + "\n")
        if check is not None:
            out.write("\n" + doctor.render_check(check) + "\n")
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "doctor":
            return run_doctor(args, sys.stdout)
        stop = _Stop()
        stop.install()
        return run_top(args, sys.stdout, stop=stop)
    except (CollectorError, LibbpfMissing) as exc:
        print(f"sockscope: {exc}", file=sys.stderr)
        return 1
    except LibbpfError as exc:
        print(f"sockscope: a BPF operation failed: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Reader went away (`| head`): not an error of ours.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
