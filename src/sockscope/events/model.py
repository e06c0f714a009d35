"""The live event, schema v1: one flat JSON object per connection event.

Flat, so that `jq`, a shell script or a SIEM's field mapping needs no paths, and so that the
match syntax (sockscope.events.match) names fields directly. The schema is
schema/event-v1.json (tests validate what is built here against it); a field is added only
with a new version number, and a consumer should ignore fields it does not know.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sockscope.collector.identity import ProcessIdentity

SCHEMA_VERSION = 1
KINDS = ("tcp_listen", "tcp_connect", "tcp_accept", "tcp_close", "udp_start", "udp_end", "lost")
# Why events were lost: the kernel's ring buffer was full; a subscriber of the socket read too
# slowly; a rule's action fell behind (that one only on the daemon's log).
LOST_REASONS = ("ring_buffer", "subscriber_queue", "rule_queue")

Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Endpoints:
    family: int  # 4 or 6: the address family on the wire (an IPv4 peer of an IPv6 socket is 4)
    laddr: str | None
    lport: int | None
    raddr: str | None
    rport: int | None


_NO_PROCESS: dict[str, Any] = {
    "pid": None,
    "comm": None,
    "exe": None,
    "cmdline": None,
    "uid": None,
    "user": None,
    "unit": None,
    "container": None,
    "ppid": None,
    "parent_comm": None,
    "parent_exe": None,
    "alive": False,
}


def process_fields(p: ProcessIdentity | None) -> dict[str, Any]:
    if p is None:
        return dict(_NO_PROCESS)
    return {
        "pid": p.pid,
        "comm": p.comm,
        "exe": p.exe,
        "cmdline": p.cmdline,
        "uid": p.uid,
        "user": p.user,
        "unit": p.unit,
        "container": p.container,
        "ppid": p.ppid,
        "parent_comm": p.parent_comm,
        "parent_exe": p.parent_exe,
        "alive": p.alive,
    }


def connection_event(
    kind: str,
    *,
    when: float,
    ktime_ns: int | None,
    proto: str,
    ends: Endpoints,
    netns: int,
    cookie: int,
    process: ProcessIdentity | None,
    named: tuple[str, tuple[str, ...], str | None] | None = None,
    initiator: str | None = None,
    tx_bytes: int | None = None,
    rx_bytes: int | None = None,
    duration: float | None = None,
    complete: bool | None = None,
    direction: str | None = None,
) -> Event:
    """An event about one connection; every key of the schema is present (null when unknown)."""
    event: Event = {
        "v": SCHEMA_VERSION,
        "kind": kind,
        "time": round(when, 6),
        "ktime_ns": ktime_ns,
        "proto": proto,
        "family": ends.family,
        "laddr": ends.laddr,
        "lport": ends.lport,
        "raddr": ends.raddr,
        "rport": ends.rport,
        "name": named[0] if named else None,
        "cname": list(named[1]) if named else [],
        "name_source": named[2] if named else None,
        "initiator": initiator,
        "netns": netns,
        "cookie": cookie,
    }
    event.update(process_fields(process))
    event.update(
        tx_bytes=tx_bytes,
        rx_bytes=rx_bytes,
        duration=None if duration is None else round(duration, 6),
        complete=complete,
        dir=direction,
    )
    return event


def lost_event(reason: str, count: int, when: float | None = None) -> Event:
    return {"v": SCHEMA_VERSION, "kind": "lost", "time": round(time.time() if when is None else when, 6),
            "reason": reason, "count": count}  # fmt: skip


def encode(event: Event) -> bytes:
    """One JSON line. ASCII only: every control, format or non-ASCII character of a name or a
    command line is a \\u escape, inert in a terminal or a log, exact for a JSON reader."""
    return json.dumps(event, separators=(",", ":")).encode("ascii") + b"\n"
