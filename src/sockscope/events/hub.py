"""Where live events go: every output (the daemon's socket, `sockscope events`' printer) and the
rules whose match they satisfy. Each event is encoded once; every output and action queues it
and returns at once, so nothing downstream can slow the collector or its intervals."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sockscope.events.model import Event, encode
from sockscope.events.sinks.base import Sink

Output = Callable[[bytes], None]  # takes one encoded line; must not block


@dataclass(frozen=True)
class Rule:
    name: str
    match: Callable[[Mapping[str, object]], bool]
    sink: Sink[object]


class Hub:
    def __init__(
        self,
        rules: Sequence[Rule] = (),
        outputs: Sequence[Output] = (),
        report: Callable[[str], None] = lambda msg: None,
    ) -> None:
        self.rules = tuple(rules)
        self._outputs = list(outputs)
        self._report = report
        self._lock = threading.Lock()  # the pump's thread and the interval path both publish
        self.published = 0
        self.matched: dict[str, int] = {r.name: 0 for r in self.rules}
        self._dropped_said: dict[str, int] = {r.name: 0 for r in self.rules}

    def add_output(self, output: Output) -> None:
        self._outputs.append(output)

    def start(self) -> None:
        for r in self.rules:
            r.sink.start()

    def close(self) -> None:
        for r in self.rules:
            r.sink.close()
        self.check()

    def publish(self, event: Event) -> None:
        line = encode(event)
        with self._lock:
            self.published += 1
            for out in self._outputs:
                out(line)
            for r in self.rules:
                if r.match(event):
                    self.matched[r.name] += 1
                    r.sink.offer(event, line)

    def check(self) -> None:
        """Say on the log what rules lost since the last call (their queues were full): called
        once per interval by the daemon."""
        for r in self.rules:
            dropped = r.sink.stats.dropped
            new = dropped - self._dropped_said[r.name]
            if new > 0:
                self._dropped_said[r.name] = dropped
                self._report(f"rule {r.name}: {new} events lost: its {r.sink.kind} action fell behind (queue full)")
