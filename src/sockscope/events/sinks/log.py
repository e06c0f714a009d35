"""action = "log": each matching event as one JSON line on the daemon's log ("sockscope rule NAME: {...}")."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from sockscope.events.sinks.base import QueuedSink, Report, check_keys

LOG_QUEUE = 1024  # the log (stderr, journald) can be slow to take lines; beyond this they are dropped
BATCH = 256


@dataclass(frozen=True)
class LogOptions:
    """No options: the rule's name is the line's prefix."""


def log_text(event: Mapping[str, object], line: bytes) -> str:
    """The event as one line of printable ASCII: the hub's line as-is when it already is one, else the
    event encoded again with every non-ASCII character escaped. Names and command lines are the system's
    (untrusted): a JSON encoder that keeps non-ASCII would let C1 controls (U+0085, U+009B) and line
    separators (U+2028) through raw, and those must not reach a log reader's terminal."""
    text = line.removesuffix(b"\n")
    if all(0x20 <= b < 0x7F for b in text):
        return text.decode("ascii")
    return json.dumps(event, ensure_ascii=True, separators=(",", ":"), default=str)


class LogSink(QueuedSink[LogOptions]):
    kind = "log"
    option_keys = ()

    def __init__(self, rule: str, options: LogOptions, report: Report) -> None:
        super().__init__(rule, options, report, queue_size=LOG_QUEUE)

    @classmethod
    def parse_options(cls, table: Mapping[str, object]) -> LogOptions:
        check_keys(table, cls.option_keys, cls.kind)
        return LogOptions()

    def _work(self) -> None:
        while (batch := self.next_batch(BATCH)) is not None:
            for event, line in batch:
                self._report(f"sockscope rule {self.rule}: {log_text(event, line)}")
            self.count(delivered=len(batch))
