"""Intervals waiting for the database, within a bound of rows.

While the database refuses (a full disk, a read-only mount, an immutable file) the daemon goes on
counting, and this holds what it counted. The bound is in rows, a row being one connection's
traffic in one interval (what the database would store, and what the memory goes to). Past the
bound the oldest intervals are merged into one per minute, then one per hour: every connection's
and process's totals stay exact, only the time within the minute or hour is lost. Only when even
that is not enough are the oldest dropped, and what they held is counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from sockscope.collector.model import ConnectionSample, Counters, Interval, ProcessSample

STEPS = (60, 3600)  # seconds: the coarser intervals old ones are merged into, in turn


def rows(iv: Interval) -> int:
    """What an interval weighs: its connections, its lifecycle events and itself."""
    return 1 + len(iv.lifecycle) + sum(len(p.connections) for p in iv.processes)


def traffic(iv: Interval) -> int:
    return iv.tx_bytes + iv.rx_bytes + iv.unattributed_tx + iv.unattributed_rx


def _sum_counters(all_: Iterable[Counters]) -> Counters:
    totals = dict.fromkeys((f.name for f in dataclasses.fields(Counters)), 0)
    for c in all_:
        for name in totals:
            totals[name] += getattr(c, name)
    return Counters(**totals)


def merge(intervals: Sequence[Interval], reuse_first: bool = False) -> Interval:
    """One interval holding the traffic of consecutive ones: it ends where the last ends and lasts
    as long as all together. Connections are summed per (socket, peer), the key the database
    stores them by; the newest facts of a process or a connection win. The intervals given are
    left as they were, but for the first with reuse_first (one merge() made: its records are
    added to in place, so merging one more interval into a large one costs only the small one)."""
    if len(intervals) == 1:
        return intervals[0]
    procs: dict[tuple[int, int, str], ProcessSample] = {}
    conns: dict[tuple[int, int, str], dict[tuple[int, str | None, int | None], ConnectionSample]] = {}
    for i, iv in enumerate(intervals):
        mine_already = reuse_first and i == 0
        for p in iv.processes:
            key = (p.pid, p.start_ns, p.comm)
            old = procs.get(key)
            if old is None:
                procs[key] = p if mine_already else replace(p, connections=[])
                mine = conns[key] = {}
            else:
                procs[key] = replace(
                    p,
                    tx_bytes=p.tx_bytes + old.tx_bytes,
                    rx_bytes=p.rx_bytes + old.rx_bytes,
                    tx_calls=p.tx_calls + old.tx_calls,
                    rx_calls=p.rx_calls + old.rx_calls,
                    connections=[],
                )
                mine = conns[key]
            for c in p.connections:
                ckey = (c.cookie, c.raddr, c.rport)
                was = mine.get(ckey)
                if was is None:
                    mine[ckey] = c if mine_already else replace(c)
                else:
                    was.tx_bytes += c.tx_bytes
                    was.rx_bytes += c.rx_bytes
                    was.tx_calls += c.tx_calls
                    was.rx_calls += c.rx_calls
    for key, p in procs.items():
        p.connections = list(conns[key].values())
    return Interval(
        ts=intervals[-1].ts,
        interval=sum(iv.interval for iv in intervals),
        processes=list(procs.values()),
        counters=_sum_counters(iv.counters for iv in intervals),
        lifecycle=[e for iv in intervals for e in iv.lifecycle],
        unattributed_tx=sum(iv.unattributed_tx for iv in intervals),
        unattributed_rx=sum(iv.unattributed_rx for iv in intervals),
    )


def buckets(intervals: Sequence[Interval], step: int) -> list[range]:
    """Runs of consecutive intervals that end in the same `step` (an interval covers (ts - length,
    ts]: it belongs to the step holding ts - 1 ms, as the database's roll-ups have it)."""
    runs: list[range] = []
    first, bucket = 0, None
    for i, iv in enumerate(intervals):
        b = int((iv.ts - 0.001) // step)
        if i and b != bucket:
            runs.append(range(first, i))
            first = i
        bucket = b
    if intervals:
        runs.append(range(first, len(intervals)))
    return runs


@dataclass
class Backlog:
    """Intervals not yet written, oldest first, at most `limit` rows (see rows())."""

    limit: int
    intervals: list[Interval] = dataclasses.field(default_factory=list)
    counts: list[int] = dataclasses.field(default_factory=list)  # intervals read that each one holds
    rows: int = 0
    lost_intervals: int = 0
    lost_bytes: int = 0
    _merge_said: bool = False

    def __len__(self) -> int:
        return len(self.intervals)

    def append(self, iv: Interval) -> str | None:
        """Keep iv; past the bound merge, then drop, the oldest. Returns what happened, to be said."""
        self.intervals.append(iv)
        self.counts.append(1)
        self.rows += rows(iv)
        if self.rows <= self.limit:
            return None
        before = len(self.intervals)
        for step, newest in ((STEPS[0], False), (STEPS[1], False), (STEPS[0], True), (STEPS[1], True)):
            self._coarsen(step, newest)
            if self.rows <= self.limit:
                break
        said = None
        # Said once until the backlog is written: a day's outage merges every minute.
        if len(self.intervals) != before and not self._merge_said:
            self._merge_said = True
            said = f"the backlog passed {self.limit:,} rows: its oldest intervals are merged into coarser ones"
        # Dropped down to 90 %: room for the intervals that follow before merging everything again.
        drop, weight = 0, self.rows
        while weight > self.limit * 0.9 and drop < len(self.intervals) - 1 and self.rows > self.limit:
            weight -= rows(self.intervals[drop])
            drop += 1
        if drop:
            self.lose(drop)
            said = (
                f"the backlog passed {self.limit:,} rows even by the hour: its oldest dropped "
                f"({self.lost_intervals} intervals, {self.lost_bytes:,} bytes of traffic lost in all)"
            )
        return said

    def _coarsen(self, step: int, newest: bool) -> None:
        """Merge each complete `step` into one interval; the newest, still filling, only when asked:
        merged, it is merged again with every interval that follows."""
        runs = buckets(self.intervals, step)
        if not newest:
            runs = runs[:-1]
        if all(len(r) == 1 for r in runs):
            return
        tail = runs[-1].stop
        self.intervals = [
            merge(self.intervals[r.start : r.stop], reuse_first=self.counts[r.start] > 1) for r in runs
        ] + self.intervals[tail:]
        self.counts = [sum(self.counts[r.start : r.stop]) for r in runs] + self.counts[tail:]
        self.rows = sum(rows(iv) for iv in self.intervals)

    def head(self, n: int) -> list[Interval]:
        return self.intervals[:n]

    def written(self, n: int) -> None:
        self.rows -= sum(rows(iv) for iv in self.intervals[:n])
        del self.intervals[:n]
        del self.counts[:n]
        if not self.intervals:
            self._merge_said = False

    def lose(self, n: int) -> None:
        """Give up the n oldest, counting the intervals they hold and their bytes."""
        self.lost_intervals += sum(self.counts[:n])
        self.lost_bytes += sum(traffic(iv) for iv in self.intervals[:n])
        self.written(n)
