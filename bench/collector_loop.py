"""The collector alone, for bench/percall.py's user-space cost: what `sockscope top --json`
runs each interval (BpfSource.read, with the same options and garbage-collector pacing) without
formatting the interval. Prints "ready" once counting, then one short JSON line per interval:
its time and each process's connection count, for the bench to check what was seen.

Run as root: python -m bench.collector_loop [--interval 1] [--max-flows N]"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from sockscope.bpf.loader import CollectorOptions
from sockscope.collector.bpf_source import BpfSource
from sockscope.gcpace import paced
from sockscope.ticks import ticks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--max-flows", type=int, default=CollectorOptions().max_flows)
    ap.add_argument("--no-splice", action="store_true")
    a = ap.parse_args(argv)  # an option of top's it does not take is an error, not ignored
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    source = BpfSource(CollectorOptions(max_flows=a.max_flows, splice=not a.no_splice))
    source.start()
    try:
        print("ready", flush=True)
        with paced() as pacer:
            for last in ticks(a.interval, stop):
                iv = source.read()
                seen = {p.pid: len(p.connections) for p in iv.processes}
                print(json.dumps({"ts": iv.ts, "conns": seen, "dropped": iv.counters.dropped_events}), flush=True)
                del iv
                if last:
                    break
                pacer.after_interval()
    finally:
        source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
