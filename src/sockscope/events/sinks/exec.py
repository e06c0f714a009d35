"""action = "exec": hand matching events to a program of the administrator's (argv, never a shell).

mode = "stream": one long-lived program reads the events as JSON lines on its stdin; if it dies it is
started again after a back-off (1 s, doubling to 60 s; back to 1 s once it ran that long). The worker
thread writes to its pipe: a program that stops reading blocks only that thread, the queue fills and
further events are dropped (counted), the daemon goes on.

mode = "per_event": a program per event, the event in $SOCKSCOPE_EVENT and on stdin, at most
`max_running` at once; one still running after `timeout` is killed (with its process group) and, like a
non-zero exit, counted as failed. Both modes set $SOCKSCOPE_RULE to the rule's name. The programs'
stdout and stderr go to the daemon's stderr (the journal under systemd).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

from sockscope.config import show_value
from sockscope.events.sinks.base import Item, QueuedSink, Report, RuleProblem, check_keys, choice, duration, whole

MODES = ("stream", "per_event")
STREAM_ONLY = ("command", "mode", "queue")
BATCH = 256  # lines written to a stream program in one write at most
MAX_QUEUE = 1_000_000
MAX_RUNNING = 64
BACKOFF = (1.0, 60.0)


@dataclass(frozen=True)
class ExecOptions:
    command: tuple[str, ...]
    mode: str = "stream"
    queue: int = 1024
    timeout: float = 10.0  # per_event only
    max_running: int = 4  # per_event only


def _command(value: object) -> tuple[str, ...]:
    expected = 'expected the program and its arguments as a list of strings, e.g. ["/usr/local/bin/handler"]'
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise RuleProblem("command", f"{expected}, got {show_value(value)}")
    if not value or not value[0]:
        raise RuleProblem("command", f"must name a program; {expected}")
    for n, arg in enumerate(value, 1):
        if "\0" in arg:
            raise RuleProblem("command", f"item {n}: an argument cannot contain a NUL character")
    return tuple(value)


def _ended(program: str, status: int) -> str:
    how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
    return f"{show_value(program)} {how}"


def _as_line(line: bytes) -> bytes:
    return line if line.endswith(b"\n") else line + b"\n"


def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    # Each program leads a session of its own (start_new_session): a handler's own children go too.
    with contextlib.suppress(OSError):  # already gone
        os.killpg(proc.pid, sig)


class ExecSink(QueuedSink[ExecOptions]):
    kind = "exec"
    option_keys = ("command", "mode", "queue", "timeout", "max_running")

    def __init__(
        self, rule: str, options: ExecOptions, report: Report, *, backoff: tuple[float, float] = BACKOFF
    ) -> None:
        super().__init__(rule, options, report, queue_size=options.queue)
        self._backoff = backoff  # (first, longest) seconds between restarts; tests shorten it
        self._live: set[subprocess.Popen[bytes]] = set()
        self.restarts = 0  # stream mode: times the program was started again

    @classmethod
    def parse_options(cls, table: Mapping[str, object]) -> ExecOptions:
        check_keys(table, cls.option_keys, cls.kind)
        if "command" not in table:
            raise RuleProblem(None, 'needs a command (the program and its arguments, e.g. ["/usr/local/bin/x"])')
        mode = choice(table, "mode", "stream", MODES)
        if mode == "stream":
            for key in table:
                if key not in STREAM_ONLY:
                    raise RuleProblem(key, 'only for mode = "per_event" (a stream program runs until it exits)')
        return ExecOptions(
            command=_command(table["command"]),
            mode=mode,
            queue=whole(table, "queue", 1024, 1, MAX_QUEUE),
            timeout=duration(table, "timeout") if "timeout" in table else 10.0,
            max_running=whole(table, "max_running", 4, 1, MAX_RUNNING),
        )

    # --- starting programs

    def _spawn(self, line: bytes | None) -> subprocess.Popen[bytes] | None:
        """Start the program (per_event: for this event's line); None if it cannot be (reported once)."""
        env = dict(os.environ, SOCKSCOPE_RULE=self.rule)
        if line is not None:
            env["SOCKSCOPE_EVENT"] = line.rstrip(b"\n").decode("utf-8", "surrogateescape")
        program = self.options.command[0]
        try:
            proc = subprocess.Popen(
                self.options.command,
                stdin=subprocess.PIPE,
                stdout=2,
                bufsize=0,
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            self.problem(f"spawn:{e.errno}", f"cannot start {show_value(program)}: {e.strerror or e}")
            return None
        except ValueError as e:  # an embedded NUL: not from a JSON line, but never let it end the worker
            self.problem("spawn:value", f"cannot start {show_value(program)}: {e}")
            return None
        with self._lock:
            self._live.add(proc)
        return proc

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._live.discard(proc)

    def _abort(self) -> None:
        with self._lock:
            live = list(self._live)
        for proc in live:
            _kill_group(proc)

    def _work(self) -> None:
        if self.options.mode == "stream":
            self._stream()
        else:
            self._per_event()

    # --- mode = "stream"

    def _stream(self) -> None:
        first, longest = self._backoff
        delay = first
        while not self._stopping.is_set():
            proc = self._spawn(None)
            started = time.monotonic()
            if proc is not None:
                status = self._feed(proc)
                if status is None:  # stopping
                    self._finish(proc)
                    return
                self._forget(proc)
                again = f"started again after {first:g} s, doubling up to {longest:g} s"
                self.problem(f"exit:{status}", f"{_ended(self.options.command[0], status)}; {again}")
                if time.monotonic() - started >= longest:
                    delay = first  # it ran a good while: this is a new failure, not the same one again
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, longest)
            self.restarts += 1

    def _feed(self, proc: subprocess.Popen[bytes]) -> int | None:
        """Write queued lines to the program until it exits (its status) or sockscope stops (None)."""
        assert proc.stdin is not None
        while True:
            batch = self.next_batch(BATCH, patience=0.2)
            if batch is None:
                return None
            if not batch:
                if proc.poll() is not None:
                    return proc.returncode
                continue
            try:
                _write_all(proc.stdin, b"".join(_as_line(line) for _, line in batch))
            except OSError:  # EPIPE: it exited, or close() killed it
                self.count(failed=len(batch))
                if self._stopping.is_set():
                    return None
                return proc.wait()
            self.count(delivered=len(batch))

    def _finish(self, proc: subprocess.Popen[bytes]) -> None:
        """End of input, a moment to exit, then SIGTERM and SIGKILL: all within close()'s grace."""
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        for sig, wait in ((None, 0.5), (signal.SIGTERM, 0.3), (signal.SIGKILL, 0.2)):
            if sig is not None:
                _kill_group(proc, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self._forget(proc)

    # --- mode = "per_event"

    def _per_event(self) -> None:
        slots = threading.BoundedSemaphore(self.options.max_running)
        while (batch := self.next_batch(1)) is not None:
            while not slots.acquire(timeout=0.1):
                if self._stopping.is_set():
                    self.count(dropped=1)
                    return
            threading.Thread(target=self._run_one, args=(batch[0], slots), daemon=True).start()

    def _run_one(self, item: Item, slots: threading.BoundedSemaphore) -> None:
        try:
            line = _as_line(item[1])
            proc = self._spawn(line)
            if proc is None:
                self.count(failed=1)
                return
            try:
                proc.communicate(line, timeout=self.options.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait()
                self.count(failed=1)
                message = f"still running after {self.options.timeout:g} s: killed (counted as failed)"
                self.problem("timeout", f"{show_value(self.options.command[0])} {message}")
                return
            finally:
                self._forget(proc)
            if proc.returncode == 0:
                self.count(delivered=1)
            else:
                self.count(failed=1)
                if not self._stopping.is_set():
                    ended = _ended(self.options.command[0], proc.returncode)
                    self.problem(f"exit:{proc.returncode}", f"{ended} (counted as failed)")
        finally:
            slots.release()


def _write_all(pipe: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = pipe.write(view)
        view = view[n or 0 :]
