"""`sockscope daemon`: the collector and the only writer of the history database.

Runs in the foreground (systemd Type=simple, logs to stderr). Every interval it
reads the source and writes what moved; when the database cannot be written
(disk full, read-only, locked) it says so once, keeps the intervals in memory
and writes them when it can. SIGTERM/SIGINT: one last read, everything written,
exit 0; exit 1 with the amount when intervals could not be written. Only one daemon
writes a database (a lock beside it); a database deleted or replaced while it runs
is noticed at the next interval and a new file started.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from sockscope.collector.model import Interval
from sockscope.collector.source import Source
from sockscope.config import Config
from sockscope.events.service import Handoff
from sockscope.gcpace import paced
from sockscope.store.backlog import Backlog
from sockscope.store.base import HistoryWriter, Retention, StoreError, StoreUnavailable
from sockscope.ticks import ticks

MAINTAIN_EVERY = 60.0  # seconds between roll-ups and purges
WRITE_CHUNK = 60  # intervals per transaction when a backlog is written
BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0  # seconds between tries while the database refuses

Log = Callable[[str], None]


def stderr_log(msg: str) -> None:
    print(f"sockscope daemon: {msg}", file=sys.stderr, flush=True)


def apply_ignores(iv: Interval, config: Config) -> Interval:
    """Drop the connections the configuration says not to store, and processes left empty."""
    ig = config.ignore
    if not (ig.processes or ig.ports or ig.networks):
        return iv
    kept = []
    for p in iv.processes:
        conns = [c for c in p.connections if not ig.matches(p.comm, p.exe, c.lport, c.rport, c.raddr)]
        if not conns:
            continue
        if len(conns) != len(p.connections):
            p = replace(
                p,
                connections=conns,
                tx_bytes=sum(c.tx_bytes for c in conns),
                rx_bytes=sum(c.rx_bytes for c in conns),
                tx_calls=sum(c.tx_calls for c in conns),
                rx_calls=sum(c.rx_calls for c in conns),
            )
        kept.append(p)
    return replace(iv, processes=kept)


class Daemon:
    def __init__(
        self,
        config: Config,
        source: Source,
        open_writer: Callable[[], HistoryWriter],
        log: Log = stderr_log,
        clock: Callable[[], float] = time.time,
        handoff: Handoff | None = None,
    ) -> None:
        """`handoff`: the live events' socket and rules (sockscope.events); the source publishes
        to its hub."""
        self.config = config
        self.handoff = handoff
        self.source = source
        self._open_writer = open_writer
        self.log = log
        self.clock = clock
        self.writer: HistoryWriter | None = None
        # What the database has not taken yet, within daemon.backlog rows (merged, then dropped, past it).
        self.backlog = Backlog(config.daemon.backlog)
        self._failing: str | None = None
        self._backoff = BACKOFF_MIN
        self._retry_at = 0.0
        self._last_maintain = 0.0
        r = config.retention
        self.retention = Retention(raw=r.raw, minute=r.minute, hour=r.hour)

    def _flush(self, force: bool = False) -> bool:
        """Write what is pending, oldest first, in chunks; False (and a message, once) when the
        database refuses. After a refusal the next try waits, doubling up to BACKOFF_MAX: a full
        disk retried every interval would burn a core and refill whatever space was freed."""
        now = self.clock()
        if self._failing is not None and now < self._retry_at and not force:
            return False
        gone = self.writer.gone() if self.writer is not None else None
        if gone is not None and self.writer is not None:
            # What it held went with it; what is pending goes to a new file, so say so loudly.
            self.log(f"{gone} while the daemon ran: the history written to it is gone; opening the path anew")
            self.writer.close()
            self.writer = None
        try:
            if self.writer is None:
                self.writer = self._open_writer()
            while self.backlog:
                chunk = self.backlog.head(WRITE_CHUNK)  # one transaction each: bounded work and space
                self.writer.write(chunk)
                self.backlog.written(len(chunk))
        except StoreUnavailable as exc:
            if self._failing is None:
                self.log(f"cannot write the database ({exc}); counting goes on in memory until it can")
                self._backoff = BACKOFF_MIN
            else:
                self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            self._failing = str(exc)
            self._retry_at = now + self._backoff
            return False
        if self._failing is not None:
            self.log("database writable again: everything kept in memory is written")
            self._failing = None
        return True

    @property
    def lost_intervals(self) -> int:
        return self.backlog.lost_intervals

    @property
    def lost_bytes(self) -> int:
        return self.backlog.lost_bytes

    def _maintain(self, force: bool = False) -> None:
        now = self.clock()
        if self.writer is None or (not force and now - self._last_maintain < MAINTAIN_EVERY):
            return
        try:
            self.writer.maintain(now, self.retention)
            self._last_maintain = now
        except StoreUnavailable as exc:
            self.log(f"roll-up and retention postponed: {exc}")

    def step(self) -> None:
        said = self.backlog.append(apply_ignores(self.source.read(), self.config))
        if said is not None:
            self.log(said)
        if self.handoff is not None:
            self.handoff.check()
        if self._flush():
            self._maintain()

    def run(self, stop: threading.Event, duration: float | None = None) -> int:
        interval = self.config.daemon.interval
        # Opens (or creates) the database first: a bad path or another writer shows at once,
        # before anything is loaded into the kernel.
        self._flush()
        if self.handoff is not None:
            self.handoff.start()  # a socket in use by another daemon shows here, before any loading
        try:
            self.source.start()
        except BaseException:
            if self.handoff is not None:
                self.handoff.close()
            raise
        try:
            self._maintain(force=True)
            self.log(f"counting; writing {self.config.daemon.database} every {interval:g} s")
            with paced() as gc_pacer:
                for _ in ticks(interval, stop, duration):
                    self.step()
                    gc_pacer.after_interval()
        finally:
            self.source.close()
            if self.handoff is not None:
                self.handoff.close()
            self._shutdown()
        return 1 if self.lost_intervals else 0

    def _shutdown(self) -> None:
        # Give a refusing database a few more tries: what is still pending now is lost at exit.
        for _ in range(5):
            if self._flush(force=True):
                break
            time.sleep(1.0)
        self.backlog.lose(len(self.backlog))
        if self.lost_intervals:
            self.log(
                f"data lost: {self.lost_intervals} intervals ({self.lost_bytes:,} bytes of traffic) were not "
                f"written to the database: {self._failing}"
            )
        self._maintain(force=True)
        if self.writer is not None:
            try:
                self.writer.close()
            except StoreError as exc:
                self.log(f"closing the database: {exc}")
