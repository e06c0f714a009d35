"""What every rule action (a sink) shares: the interface the daemon drives, a bounded queue drained by a
worker thread of its own, counters, problems reported once, and the helpers that parse a rule's options.

The daemon's event loop calls offer() for every matching event: it must never wait for a program, a pipe
or nft, so everything slow happens on the worker thread and a full queue drops (and counts) instead.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from typing import ClassVar, Generic, TypeVar

from sockscope.config import parse_duration, show_value

Report = Callable[[str], None]
OptionsT = TypeVar("OptionsT")

POLL = 0.1  # how often an idle worker looks at the stop flag
CLOSE_GRACE = 1.2  # seconds close() lets the worker finish on its own before it kills what holds it up
MAX_PROBLEMS = 64  # distinct problems remembered per sink; a flood of distinct ones must not grow memory


@dataclass(frozen=True)
class SinkStats:
    """`delivered`: events the action took; `dropped`: events lost to a full queue; `failed`: events the
    action refused or could not do (a program's non-zero exit, nft's error); `skipped`: events the action
    had nothing to do with (nftables: no set for the address's family, or no remote address)."""

    delivered: int = 0
    dropped: int = 0
    failed: int = 0
    skipped: int = 0


class RuleProblem(ValueError):
    """A rule's option is wrong. `key` is the option's name inside the rule (None: the rule as a whole);
    rules.py turns it into a ConfigError naming file, line and `rule[N].KEY`."""

    def __init__(self, key: str | None, problem: str) -> None:
        super().__init__(problem if key is None else f"{key}: {problem}")
        self.key = key
        self.problem = problem


class Sink(ABC, Generic[OptionsT]):
    """One rule's action. See the subclasses; `SINKS` in sinks/__init__.py lists them."""

    kind: ClassVar[str]
    option_keys: ClassVar[tuple[str, ...]]  # the keys a rule of this action may have besides name/match/action

    def __init__(self, rule: str, options: OptionsT, report: Report) -> None:
        self.rule = rule
        self.options = options
        self._report = report

    @classmethod
    @abstractmethod
    def parse_options(cls, table: Mapping[str, object]) -> OptionsT:
        """The options from a rule's table (without name, match, action). Raises RuleProblem."""

    @abstractmethod
    def start(self) -> None:
        """Start the worker; an environment problem (a missing program) is reported, never raised."""

    @abstractmethod
    def offer(self, event: Mapping[str, object], line: bytes) -> None:
        """Hand over one matching event and its JSON line. Never blocks: a full queue drops and counts."""

    @abstractmethod
    def close(self) -> None:
        """Stop, in bounded time (about 2 s at most): what is still queued is counted as dropped."""

    @property
    @abstractmethod
    def stats(self) -> SinkStats: ...


Item = tuple[Mapping[str, object], bytes]


class QueuedSink(Sink[OptionsT]):
    """A sink whose work runs on one worker thread fed by a bounded queue of (event, line)."""

    def __init__(self, rule: str, options: OptionsT, report: Report, *, queue_size: int) -> None:
        super().__init__(rule, options, report)
        self._queue: queue.Queue[Item] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._counts = {"delivered": 0, "dropped": 0, "failed": 0, "skipped": 0}
        self._reported: set[str] = set()
        self._thread: threading.Thread | None = None

    # --- the interface

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._work, name=f"sockscope-rule-{self.rule}", daemon=True)
        self._thread.start()

    def offer(self, event: Mapping[str, object], line: bytes) -> None:
        if self._stopping.is_set():  # closed: nothing would take it
            self.count(dropped=1)
            return
        try:
            self._queue.put_nowait((event, line))
        except queue.Full:
            self.count(dropped=1)

    def close(self) -> None:
        self._stopping.set()
        # First a chance to finish what is under way (a stream program gets EOF and a moment to exit), then
        # whatever still holds the worker up (a child that does not read, a wedged nft) is killed.
        if self._thread is not None:
            self._thread.join(timeout=CLOSE_GRACE)
        self._abort()
        if self._thread is not None:
            self._thread.join(timeout=0.5)
        left = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            left += 1
        self.count(dropped=left)

    @property
    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(**self._counts)

    # --- for subclasses

    @abstractmethod
    def _work(self) -> None:
        """The worker thread's body: return once `self._stopping` is set."""

    def _abort(self) -> None:
        """Called by close() once the worker had CLOSE_GRACE to end on its own: kill what may still hold it up."""

    def next_batch(self, limit: int, patience: float = math.inf) -> list[Item] | None:
        """Wait for at least one item, then take whatever else is already queued (up to `limit`): batches
        form from what arrived while the last one was being handled, never by waiting. None: stopping;
        [] after `patience` seconds without an item."""
        deadline = time.monotonic() + patience
        while True:
            if self._stopping.is_set():
                return None
            try:
                first = self._queue.get(timeout=POLL)
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return []
                continue
            break
        batch = [first]
        while len(batch) < limit:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def count(self, *, delivered: int = 0, dropped: int = 0, failed: int = 0, skipped: int = 0) -> None:
        with self._lock:
            self._counts["delivered"] += delivered
            self._counts["dropped"] += dropped
            self._counts["failed"] += failed
            self._counts["skipped"] += skipped

    def problem(self, key: str, message: str) -> None:
        """Report `message` unless a problem with this `key` was reported before (then it is only counted)."""
        with self._lock:
            if key in self._reported:
                return
            if len(self._reported) >= MAX_PROBLEMS:
                if "" in self._reported:
                    return
                key, message = "", f"more than {MAX_PROBLEMS} distinct problems; further ones are only counted"
            self._reported.add(key)
        self._report(f"sockscope rule {self.rule}: {message}")


# --- option parsing helpers: each raises RuleProblem naming the option


COMMON_KEYS = ("name", "match", "action")  # every rule's; the rest are its action's options


def check_keys(table: Mapping[str, object], options: Sequence[str], kind: str) -> None:
    """Refuse a key that is not one of `options` (a rule's table without the common keys)."""
    known = [*COMMON_KEYS, *options]
    for key in table:
        if key not in options:
            close = get_close_matches(key, known, n=1)
            hint = f", did you mean {close[0]}?" if close else ""
            raise RuleProblem(key, f'unknown key{hint} (known with action = "{kind}": {", ".join(known)})')


def whole(table: Mapping[str, object], key: str, default: int, lo: int, hi: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RuleProblem(key, f"expected a whole number, got {show_value(value)}")
    if not lo <= value <= hi:
        raise RuleProblem(key, f"must be >= {lo} and <= {hi}, got {value}")
    return value


def duration(table: Mapping[str, object], key: str) -> float:
    try:
        return parse_duration(table[key], key)
    except ValueError as e:
        # parse_duration says "KEY: PROBLEM"; the caller adds the rule's own prefix to the key.
        raise RuleProblem(key, str(e).removeprefix(f"{key}: ")) from None


def choice(table: Mapping[str, object], key: str, default: str, choices: Sequence[str]) -> str:
    value = table.get(key, default)
    if value not in choices:
        expected = " or ".join(f'"{c}"' for c in choices)
        raise RuleProblem(key, f"expected {expected}, got {show_value(value)}")
    return str(value)
