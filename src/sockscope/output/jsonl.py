"""The `top --json` format: one object per interval. Documented in the README."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sockscope.collector.lifecycle import LifeEvent
from sockscope.collector.model import ConnectionSample, Interval, ProcessSample
from sockscope.lru import FifoDict

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
        "name": c.name,
        "cname": list(c.cname),
        "name_source": c.name_source,
    }


def process_dict(p: ProcessSample) -> dict[str, Any]:
    return {**_process_head(p), "connections": [connection_dict(c) for c in p.connections]}


def _process_head(p: ProcessSample) -> dict[str, Any]:
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
        "name": e.name,
        "cname": list(e.cname),
        "name_source": e.name_source,
    }


def interval_dict(iv: Interval) -> dict[str, Any]:
    return {**_interval_head(iv), "processes": [process_dict(p) for p in iv.processes]}


def _interval_head(iv: Interval) -> dict[str, Any]:
    c = iv.counters
    return {
        "version": FORMAT_VERSION,
        "ts": round(iv.ts, 3),
        "time": _iso(iv.ts),
        "interval": round(iv.interval, 6),
        "tx_bytes": iv.tx_bytes,
        "rx_bytes": iv.rx_bytes,
        "unattributed": {"tx_bytes": iv.unattributed_tx, "rx_bytes": iv.unattributed_rx},
        "lifecycle": [life_dict(e) for e in iv.lifecycle],
        "dropped": {
            "events": c.dropped_events,
            "bytes": c.dropped_bytes,
            "socket_facts": c.sock_info_full,
            "process_facts": c.proc_info_full,
            "lifecycle_events": c.events_lost,
            "missed_calls": c.calls_missed,
            "lifecycle_records": c.lifecycle_forgotten,
            "dns_answers": c.dns_lost,
            "dns_unread": c.dns_unread,
            "dns_malformed": c.dns_malformed,
            "names": c.names_evicted,
            "ptr_lookups": c.ptr_dropped,
        },
        "peek_skipped": c.peek_skipped,
    }


def _dumps(obj: object) -> str:
    # ASCII only: control characters in names arrive escaped (\u001b), never raw.
    return json.dumps(obj, separators=(",", ":"))


# A connection's fields other than its counters, as JSON, per socket: they change rarely, and
# encoding them was most of the line's cost (tens of thousands of connections a second).
_STATIC = ("proto", "family", "laddr", "lport", "raddr", "rport", "state", "counts", "ifindex", "v4mapped",
           "initiator", "netns", "cookie", "name", "cname", "name_source")  # fmt: skip
_fragments: FifoDict[tuple[object, ...], str] = FifoDict(32768)


def _connection_json(c: ConnectionSample) -> str:
    static = (c.proto, c.family, c.laddr, c.lport, c.raddr, c.rport, c.state, c.counts, c.ifindex, c.v4mapped,
              c.initiator, c.netns, c.cookie, c.name, c.cname, c.name_source)  # fmt: skip
    frag = _fragments.get(static)
    if frag is None:
        d: dict[str, object] = dict(zip(_STATIC, static, strict=True))
        d["cname"] = list(c.cname)
        frag = _fragments[static] = _dumps(d)[1:-1]
    return f'{{{frag},"tx_bytes":{c.tx_bytes},"rx_bytes":{c.rx_bytes},"tx_calls":{c.tx_calls},"rx_calls":{c.rx_calls}}}'


def _head_open(head: dict[str, Any], key: str) -> str:
    """head as JSON, left open for key: [ ... ] to follow (its items, then "]}")."""
    return f'{_dumps(head)[:-1]},"{key}":['


def interval_chunks(iv: Interval) -> Iterator[str]:
    """interval_line(iv) in pieces, for writing as they come: a busy host's line is megabytes,
    and joining it into one string (and that again with its newline) made fresh pages to fault
    in every interval, several copies of the line (a tenth of the collector's CPU)."""
    yield _head_open(_interval_head(iv), "processes")
    for i, p in enumerate(iv.processes):
        yield ("," if i else "") + _head_open(_process_head(p), "connections")
        yield ",".join([_connection_json(c) for c in p.connections])
        yield "]}"
    yield "]}"


def interval_line(iv: Interval) -> str:
    """interval_dict(iv) as one line of JSON: the same object, its keys in another order."""
    return "".join(interval_chunks(iv))
