"""The `top --json` format: one object per interval. Documented in the README."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sockscope.collector.lifecycle import LifeEvent
from sockscope.collector.model import ConnectionSample, Interval, ProcessSample

FORMAT_VERSION = 1


def connection_dict(c: ConnectionSample) -> dict[str, Any]:
    return {
        "proto": c.proto,
        "family": c.family,
        "laddr": c.laddr,
        "lport": c.lport,
        "raddr": c.raddr,
        "rport": c.rport,
        "state": c.state,
        "tx_bytes": c.tx_bytes,
        "rx_bytes": c.rx_bytes,
        "tx_calls": c.tx_calls,
        "rx_calls": c.rx_calls,
        "counts": c.counts,
        "ifindex": c.ifindex,
        "v4mapped": c.v4mapped,
        "initiator": c.initiator,
        "netns": c.netns,
        "cookie": c.cookie,
    }


def process_dict(p: ProcessSample) -> dict[str, Any]:
    return {
        "pid": p.pid,
        "comm": p.comm,
        "exe": p.exe,
        "cmdline": p.cmdline,
        "uid": p.uid,
        "user": p.user,
        "ppid": p.ppid,
        "parent_comm": p.parent_comm,
        "parent_exe": p.parent_exe,
        "cgroup": p.cgroup,
        "unit": p.unit,
        "container": p.container,
        "netns": p.netns,
        "alive": p.alive,
        "tx_bytes": p.tx_bytes,
        "rx_bytes": p.rx_bytes,
        "tx_calls": p.tx_calls,
        "rx_calls": p.rx_calls,
        "connections": [connection_dict(c) for c in p.connections],
    }


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def life_dict(e: LifeEvent) -> dict[str, Any]:
    duration = e.duration
    return {
        "event": e.event,
        "proto": e.proto,
        "family": e.family,
        "laddr": e.laddr,
        "lport": e.lport,
        "raddr": e.raddr,
        "rport": e.rport,
        "pid": e.pid,
        "comm": e.comm,
        "initiator": e.initiator,
        "start": _iso(e.start),
        "end": _iso(e.end),
        "duration": None if duration is None else round(duration, 6),
        "tx_bytes": e.tx_bytes,
        "rx_bytes": e.rx_bytes,
        "complete": e.complete,
        "netns": e.netns,
        "cookie": e.cookie,
    }


def interval_dict(iv: Interval) -> dict[str, Any]:
    c = iv.counters
    return {
        "version": FORMAT_VERSION,
        "ts": round(iv.ts, 3),
        "time": _iso(iv.ts),
        "interval": round(iv.interval, 6),
        "tx_bytes": iv.tx_bytes,
        "rx_bytes": iv.rx_bytes,
        "unattributed": {"tx_bytes": iv.unattributed_tx, "rx_bytes": iv.unattributed_rx},
        "processes": [process_dict(p) for p in iv.processes],
        "lifecycle": [life_dict(e) for e in iv.lifecycle],
        "dropped": {
            "events": c.dropped_events,
            "bytes": c.dropped_bytes,
            "socket_facts": c.sock_info_full,
            "process_facts": c.proc_info_full,
            "lifecycle_events": c.events_lost,
            "missed_calls": c.calls_missed,
            "lifecycle_records": c.lifecycle_forgotten,
        },
        "peek_skipped": c.peek_skipped,
    }


def interval_line(iv: Interval) -> str:
    # ASCII only: control characters in names arrive escaped (\u001b), never raw.
    return json.dumps(interval_dict(iv), separators=(",", ":"))
