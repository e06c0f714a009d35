"""What a rule does with the events it matches: `action = "exec" | "nftables" | "log"`.

The registry is written out: an action is a name in the configuration, and the set of names a
configuration may use is exactly this table (no plug-in discovery, nothing loaded by name).
"""

from __future__ import annotations

from typing import Any

from sockscope.events.sinks.base import RuleProblem, Sink, SinkStats
from sockscope.events.sinks.exec import ExecOptions, ExecSink
from sockscope.events.sinks.log import LogOptions, LogSink
from sockscope.events.sinks.nftables import NftablesOptions, NftablesSink, NftSet

SINKS: dict[str, type[Sink[Any]]] = {"exec": ExecSink, "nftables": NftablesSink, "log": LogSink}

__all__ = [
    "SINKS",
    "ExecOptions",
    "ExecSink",
    "LogOptions",
    "LogSink",
    "NftSet",
    "NftablesOptions",
    "NftablesSink",
    "RuleProblem",
    "Sink",
    "SinkStats",
]
