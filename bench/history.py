"""History storage benchmark: database size, report latency and the daemon's write cost.

Usage:
    .venv/bin/python bench/history.py [--days 30] [--processes 1000] [--connections-per-day 20000]
                                      [--db PATH] [--json PATH] [--seed N]

1. Fills a fresh database (a temporary directory, removed at the end, unless --db is given) with
   the synthetic history of a busy host over --days days ending now, laid out as the daemon and its
   retention (the defaults of store.base.Retention) leave it: raw `samples` for the last 2 days,
   `minutes` for the last 30, `hours` for the whole period, one `intervals` row per second for the last 2, each
   resolution the exact sum of the finer one. Traffic is generated per second and connection and
   summed in Python, so the three resolutions agree. Processes, executables and connections are
   inserted directly (executemany) into the schema SqliteWriter creates, with the columns it uses.
2. Reports the size on disk (file + -wal after a TRUNCATE checkpoint and VACUUM), the row counts,
   and the bytes per table and index (dbstat, when SQLite has it).
3. Times typical reports with SqliteReader (median of --runs runs after one warm-up).
4. Times the daemon's write: SqliteWriter.write([interval]) with 10,000 active connections over
   1,000 processes, once per simulated second, CPU time (time.process_time) per write; then
   maintain() once per simulated minute, amortised per second. Into the filled database.
5. Prints a markdown report with the targets next to the figures (and where the time and the
   bytes go); --json writes the raw figures.

Deterministic for a given --seed (random.Random), apart from "now". Exit status: 0 measured (also
when a target is missed: the report says by how much), 1 failure, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import random
import shlex
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sockscope.collector.model import ConnectionSample, Interval, ProcessSample
from sockscope.store.base import Retention, plan_segments
from sockscope.store.sqlite import SqliteReader, SqliteWriter, roll_days

DAY = 86_400
HOUR = 3_600
MINUTE = 60

# Targets (see the README's history section).
TARGET_SIZE_MB = 200.0  # database for 30 days of a busy host
TARGET_TOP_MS = 100.0  # 30-day top talkers
TARGET_WRITE_PCT = 5.0  # one write of 10,000 connections, % of one core at a 1 s interval
TARGET_DAYS = 30

BOOT = "5a1e0c1d-0000-4000-8000-b0075b0075b0"  # the synthetic history's boot id
LIVE_BOOT = "5a1e0c1d-0000-4000-8000-11fe11fe11fe"  # the write benchmark's (a later boot)
HOST_NETNS = 4026531840
TABLE_BITS = 12  # traffic size tables hold 2**TABLE_BITS values
LONG_SHARE = 0.05  # connections that live 1-4 hours
LONG_ACTIVE = 0.2  # share of a long-lived connection's seconds that move bytes
SHORT_SECONDS = (1, 5)
LONG_SECONDS = (HOUR, 4 * HOUR)
N_REMOTES = 300
N_PORTS = 200

WELL_KNOWN_PORTS = (
    443, 80, 53, 123, 5432, 6379, 22, 8080, 8000, 9092, 2181, 3306, 25, 587, 993, 8443, 9100, 9090, 9187,
    11211, 27017, 5672, 1883, 2379, 873, 389, 636, 514, 6443, 10250, 8125, 4317, 9200, 9300, 3000, 5000,
)  # fmt: skip


# ---------------------------------------------------------------------------
# The synthetic host (pure: everything from one random.Random)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Template:
    """A kind of process; its processes share the executable (or one of `exes` variants)."""

    exe: str
    user: str
    uid: int
    unit: str  # "{n}": a per-process number
    count: int  # processes of this kind per 1,000
    long_running: bool  # alive the whole period (else: seconds to hours)
    server_ports: tuple[int, ...]  # it listens: most of its connections come from remote peers
    client_ports: tuple[int, ...]  # it connects to these (empty: any of the port pool)
    udp: float  # share of its connections that are UDP
    share: float  # share of all connections (relative)
    scale: float  # bytes per second, relative
    exes: int = 1  # variants of the executable ("{n}" in exe)
    container: bool = False


TEMPLATES: tuple[Template, ...] = (
    Template("/usr/sbin/nginx", "www-data", 33, "nginx.service", 16, True, (443, 80), (8000, 8080), 0.02, 25, 4.0),
    Template("/usr/lib/postgresql/16/bin/postgres", "postgres", 113, "postgresql@16-main.service", 80, True,
             (5432,), (), 0.0, 12, 3.0),
    Template("/usr/bin/redis-server", "redis", 114, "redis-server.service", 2, True, (6379,), (), 0.0, 8, 1.0),
    Template("/usr/bin/python3.11", "app", 1001, "app-worker@{n}.service", 120, True, (8000,), (5432, 6379, 443),
             0.02, 14, 1.0),
    Template("/usr/bin/node", "app", 1001, "frontend@{n}.service", 24, True, (8080,), (443, 8000), 0.0, 6, 1.5),
    Template("/usr/lib/jvm/java-17-openjdk-amd64/bin/java", "kafka", 115, "kafka.service", 8, True, (9092,),
             (2181,), 0.0, 4, 6.0),
    Template("/opt/services/bin/svc-{n}", "svc", 1010, "svc-{n}.service", 60, True, (), (5432, 6379, 9092, 443),
             0.05, 6, 1.0, exes=30),
    Template("/usr/bin/dockerd", "root", 0, "docker.service", 1, True, (), (443,), 0.0, 0.5, 2.0),
    Template("/usr/bin/containerd", "root", 0, "containerd.service", 1, True, (), (443,), 0.0, 0.5, 1.0),
    Template("/usr/local/bin/gunicorn", "10001", 10001, "docker-{n}.scope", 60, True, (8000,), (5432, 443),
             0.0, 5, 1.0, container=True),
    Template("/usr/lib/systemd/systemd-resolved", "systemd-resolve", 101, "systemd-resolved.service", 1, True,
             (), (53,), 1.0, 6, 0.05),
    Template("/usr/sbin/chronyd", "_chrony", 105, "chrony.service", 1, True, (), (123,), 1.0, 0.2, 0.01),
    Template("/usr/local/bin/node_exporter", "prometheus", 116, "node-exporter.service", 1, True, (9100,), (),
             0.0, 1, 0.3),
    Template("/usr/bin/prometheus", "prometheus", 116, "prometheus.service", 1, True, (9090,), (9100, 9187, 8000),
             0.0, 3, 2.0),
    Template("/usr/sbin/sshd", "root", 0, "ssh.service", 40, False, (22,), (), 0.0, 1, 0.5),
    Template("/usr/bin/curl", "root", 0, "cron.service", 200, False, (), (443, 80), 0.0, 2, 0.5),
    Template("/usr/bin/rsync", "backup", 998, "backup.service", 30, False, (), (22, 873), 0.0, 0.3, 40.0),
    Template("/usr/bin/apt-get", "_apt", 42, "apt-daily.service", 20, False, (), (80, 443), 0.0, 0.3, 10.0),
    Template("/usr/bin/git", "alice", 1002, "session-{n}.scope", 80, False, (), (443, 22), 0.0, 1, 2.0),
    Template("/usr/bin/ssh", "bob", 1003, "session-{n}.scope", 50, False, (), (22,), 0.0, 0.3, 0.5),
    Template("/usr/lib/firefox/firefox", "carol", 1004, "session-{n}.scope", 40, False, (), (443, 80), 0.3, 2, 1.5),
    Template("/usr/bin/python3.11", "backup", 998, "backup-verify.service", 50, False, (), (443,), 0.0, 0.5, 5.0),
    Template("/usr/bin/wget", "root", 0, "cron.service", 114, False, (), (443, 80), 0.0, 0.4, 2.0),
)  # fmt: skip


@dataclass(slots=True)
class Proc:
    id: int
    template: Template
    exe: str
    pid: int
    start_ns: int
    comm: str
    cmdline: str
    uid: int
    user: str
    ppid: int
    parent_comm: str
    cgroup: str
    unit: str
    container: str | None
    netns: int
    born: float  # conversations start in [born, died)
    died: float
    weight: float  # relative number of connections
    scale: float  # relative bytes per second

    @property
    def first_seen(self) -> float:
        return self.born


@dataclass(frozen=True, slots=True)
class ConnSpec:
    start: int  # first second (Unix seconds)
    seconds: int  # length in seconds (cut at now when it outlives it)
    proc: int  # index into the process list
    long: bool
    proto: str
    family: int
    laddr: str
    lport: int
    raddr: str
    rport: int
    initiator: str
    scale: float


@dataclass(frozen=True, slots=True)
class Tables:
    """Per-second byte counts to draw from (log-normal, some zero), and binomial CDFs per n."""

    tx_short: list[int]
    rx_short: list[int]
    tx_long: list[int]
    rx_long: list[int]
    binomial: list[list[float]]  # binomial[n]: CDF of Binomial(n, LONG_ACTIVE), k = 0..n


@dataclass(slots=True)
class Traffic:
    """One connection's traffic: per-minute sums, the seconds kept raw, first and last active second."""

    minutes: list[tuple[int, int, int]] = field(default_factory=list)  # (minute start, tx, rx)
    seconds: list[tuple[int, int, int]] = field(default_factory=list)  # (second, tx, rx), second >= raw_lo
    first: int | None = None
    last: int | None = None


def distribute(total: int, weights: Sequence[float]) -> list[int]:
    """Split total into len(weights) integers >= 1 proportional to weights (largest remainder)."""
    if total < len(weights):
        raise ValueError(f"cannot give {len(weights)} parts at least 1 of {total}")
    spare = total - len(weights)
    wsum = sum(weights)
    exact = [spare * w / wsum for w in weights]
    parts = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (parts[i] - exact[i], i))
    for i in order[: spare - sum(parts)]:
        parts[i] += 1
    return [p + 1 for p in parts]


def zipf_weights(n: int, s: float = 1.0) -> list[float]:
    return [1.0 / (rank + 1) ** s for rank in range(n)]


def lognormal_table(rng: random.Random, median: float, sigma: float, zero_share: float) -> list[int]:
    mu = math.log(median)
    return [
        0 if rng.random() < zero_share else max(1, round(rng.lognormvariate(mu, sigma))) for _ in range(1 << TABLE_BITS)
    ]


def binomial_cdf(n: int, p: float) -> list[float]:
    cdf: list[float] = []
    acc = 0.0
    for k in range(n + 1):
        acc += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        cdf.append(acc)
    cdf[-1] = 1.0
    return cdf


def draw_binomial(rng: random.Random, cdf: list[float]) -> int:
    return min(bisect.bisect_right(cdf, rng.random()), len(cdf) - 1)


def make_tables(rng: random.Random) -> Tables:
    return Tables(
        tx_short=lognormal_table(rng, 600, 1.2, 0.1),  # requests
        rx_short=lognormal_table(rng, 6_000, 1.8, 0.1),  # responses
        tx_long=lognormal_table(rng, 300, 1.5, 0.3),
        rx_long=lognormal_table(rng, 1_500, 2.0, 0.3),
        binomial=[binomial_cdf(n, LONG_ACTIVE) for n in range(MINUTE + 1)],
    )


def make_remotes(rng: random.Random, n: int) -> list[tuple[int, str]]:
    """(family, address): public IPv4, private IPv4 (the other tiers) and IPv6; unique."""
    out: list[tuple[int, str]] = []
    seen: set[str] = set()
    while len(out) < n:
        roll = rng.random()
        if roll < 0.55:
            addr = f"{rng.choice((23, 34, 52, 104, 142, 151, 172, 185, 199, 203))}.{rng.randrange(256)}."
            addr += f"{rng.randrange(256)}.{rng.randrange(1, 255)}"
            fam = 2
        elif roll < 0.85:
            addr, fam = f"10.0.{rng.randrange(16)}.{rng.randrange(1, 255)}", 2
        else:
            addr, fam = f"2001:db8:{rng.randrange(1 << 16):x}::{rng.randrange(1, 1 << 16):x}", 10
        if addr not in seen:
            seen.add(addr)
            out.append((fam, addr))
    return out


def make_ports(rng: random.Random, n: int) -> list[int]:
    ports = list(WELL_KNOWN_PORTS[:n])
    while len(ports) < n:
        p = rng.randrange(1024, 32768)
        if p not in ports:
            ports.append(p)
    return ports


def make_processes(rng: random.Random, n: int, start: float, now: float) -> list[Proc]:
    counts = distribute(n, [t.count for t in TEMPLATES])
    boot_time = start - 7 * DAY - rng.uniform(0, DAY)
    pids = rng.sample(range(300, 4_000_000), n)
    procs: list[Proc] = []
    for t, count in zip(TEMPLATES, counts, strict=True):
        for i in range(count):
            if t.long_running:
                born = start - rng.uniform(0, 7 * DAY)
                died = now + HOUR
            else:
                born = rng.uniform(start, now - 10)
                died = min(born + math.exp(rng.uniform(math.log(5), math.log(6 * HOUR))), now - 1)
            exe = t.exe.replace("{n}", str(rng.randrange(t.exes))) if t.exes > 1 else t.exe
            tag = str(rng.randrange(1, 40)) if t.unit.endswith(".scope") and not t.container else str(i)
            container = f"{rng.getrandbits(48):012x}" if t.container else None
            unit = t.unit.replace("{n}", container or tag)
            comm = os.path.basename(exe)[:15]
            pid = pids[len(procs)]
            procs.append(
                Proc(
                    id=len(procs) + 1,
                    template=t,
                    exe=exe,
                    pid=pid,
                    start_ns=int((max(born, boot_time + 1) - boot_time) * 1e9) + rng.randrange(1_000_000),
                    comm=comm,
                    cmdline=f"{exe} --instance {i}" if count > 1 else exe,
                    uid=t.uid,
                    user=t.user,
                    ppid=1 if t.long_running else rng.randrange(300, 4_000_000),
                    parent_comm="systemd" if t.long_running else rng.choice(("bash", "cron", "sshd", "systemd")),
                    cgroup=f"/system.slice/{unit}" if not unit.startswith("session") else f"/user.slice/{unit}",
                    unit=unit,
                    container=container,
                    netns=HOST_NETNS if container is None else HOST_NETNS + 1 + (rng.getrandbits(16)),
                    born=max(born, start),
                    died=died,
                    weight=t.share / count * rng.lognormvariate(0, 0.5),
                    scale=t.scale * rng.lognormvariate(0, 0.5),
                )
            )
    return procs


def exe_rows(procs: Sequence[Proc]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for p in procs:
        ids.setdefault(p.exe, len(ids) + 1)
    return ids


def diurnal(t: float) -> float:
    """Relative load at time t (UTC): a day peak around 14:00, a night trough, from 0.4 to 1.0."""
    return 0.7 + 0.3 * math.sin(2 * math.pi * ((t % DAY) / DAY - 8 / 24))


def conn_start(rng: random.Random, lo: float, hi: float) -> int:
    """A start second in [lo, hi), busier by day (rejection sampling on diurnal())."""
    t = lo
    for _ in range(8):
        t = rng.uniform(lo, hi)
        if rng.random() <= diurnal(t):
            break
    return min(int(t), int(hi) - 1) if hi - lo >= 1 else int(lo)


def make_connections(rng: random.Random, procs: Sequence[Proc], n: int, now: int) -> list[ConnSpec]:
    """n connections, sorted by start; every process gets at least one."""
    remotes = make_remotes(rng, N_REMOTES)
    remote_cum = _cum(zipf_weights(len(remotes), 0.9))
    ports = make_ports(rng, N_PORTS)
    port_cum = _cum(zipf_weights(len(ports), 1.1))
    owners = list(range(len(procs))) + rng.choices(
        range(len(procs)), cum_weights=_cum([p.weight for p in procs]), k=max(0, n - len(procs))
    )
    specs: list[ConnSpec] = []
    for idx in owners:
        p = procs[idx]
        t = p.template
        long = rng.random() < LONG_SHARE
        seconds = rng.randint(*LONG_SECONDS) if long else rng.randint(*SHORT_SECONDS)
        start = conn_start(rng, p.born, min(p.died, now - 1))
        proto = "udp" if rng.random() < t.udp else "tcp"
        fam, raddr = remotes[bisect.bisect_left(remote_cum, rng.random() * remote_cum[-1])]
        laddr = ("10.0.0.5" if raddr.startswith("10.") else "192.0.2.10") if fam == 2 else "2001:db8::10"
        ephemeral = rng.randrange(32768, 61000)
        if t.server_ports and proto == "tcp" and rng.random() < 0.8:
            lport, rport, initiator = rng.choice(t.server_ports), ephemeral, "remote"
        else:
            if t.client_ports and rng.random() < 0.9:
                rport = rng.choice(t.client_ports)
            else:
                rport = ports[bisect.bisect_left(port_cum, rng.random() * port_cum[-1])]
            lport, initiator = ephemeral, "local"
        specs.append(
            ConnSpec(start, seconds, idx, long, proto, fam, laddr, lport, raddr, rport, initiator,
                     p.scale * rng.lognormvariate(0, 0.7))
        )  # fmt: skip
    specs.sort(key=lambda s: (s.start, s.proc))
    return specs


def _cum(weights: Sequence[float]) -> list[float]:
    out: list[float] = []
    acc = 0.0
    for w in weights:
        acc += w
        out.append(acc)
    return out


def conn_traffic(rng: random.Random, spec: ConnSpec, now: int, raw_lo: int, tables: Tables) -> Traffic:
    """Per-second traffic of one connection, summed per minute; the seconds >= raw_lo kept as they are.

    Short connections move bytes in every second; long ones in ~LONG_ACTIVE of them (always in the
    first, and in the last unless it outlives now). Minutes wholly before raw_lo and away from the
    connection's edges draw only the number of active seconds and their sizes: the same
    distribution, without choosing which seconds."""
    out = Traffic()
    end = min(spec.start + spec.seconds, now)
    if end <= spec.start:
        return out
    if spec.long:
        tx_tab, rx_tab = tables.tx_long, tables.rx_long
        forced: tuple[int, ...] = (spec.start,)
        if spec.start + spec.seconds <= now:
            forced += (spec.start + spec.seconds - 1,)
    else:
        tx_tab, rx_tab = tables.tx_short, tables.rx_short
        forced = (spec.start,)
    scale = spec.scale
    bits = rng.getrandbits
    cdfs = tables.binomial
    m = spec.start - spec.start % MINUTE
    while m < end:
        lo, hi = max(m, spec.start), min(m + MINUTE, end)
        mtx = mrx = 0
        if spec.long and lo != spec.start and hi != end and hi <= raw_lo:
            k = draw_binomial(rng, cdfs[hi - lo])
            if k:
                mtx = sum([int(tx_tab[bits(TABLE_BITS)] * scale) for _ in range(k)])
                mrx = sum([int(rx_tab[bits(TABLE_BITS)] * scale) for _ in range(k)])
                if mtx or mrx:
                    out.last = hi - 1  # approximate: which second is not drawn here
        else:
            active: Iterable[int]
            if spec.long:
                cand = [s for s in range(lo, hi) if s not in forced]
                chosen = rng.sample(cand, draw_binomial(rng, cdfs[len(cand)]))
                chosen += [s for s in forced if lo <= s < hi]
                chosen.sort()
                active = chosen
            else:
                active = range(lo, hi)
            for s in active:
                tx = int(tx_tab[bits(TABLE_BITS)] * scale)
                rx = int(rx_tab[bits(TABLE_BITS)] * scale)
                if not (tx or rx):
                    if s not in forced:
                        continue
                    rx = 1
                mtx += tx
                mrx += rx
                if out.first is None:
                    out.first = s
                out.last = s
                if s >= raw_lo:
                    out.seconds.append((s, tx, rx))
        if mtx or mrx:
            out.minutes.append((m, mtx, mrx))
        m += MINUTE
    return out


# ---------------------------------------------------------------------------
# Retention layout (pure)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """What the daemon's roll-ups and purge leave at `now` (see SqliteWriter._roll_up / _purge)."""

    now: int
    start: int
    minutes_to: int  # minutes rolled up: minute rows for ts < minutes_to
    hours_to: int  # hour rows for ts < hours_to
    raw_from: int  # samples kept from here (ts >= raw_from * 1000)
    minutes_from: int  # minute rows kept for ts >= this
    hours_from: int
    intervals_from: int

    @property
    def raw_lo(self) -> int:
        """First second whose sample (ts = its end) is kept."""
        return self.raw_from - 1


def layout(now: int, days: int, r: Retention) -> Layout:
    minutes_to = now // MINUTE * MINUTE
    hours_to = minutes_to // HOUR * HOUR
    raw_from = int(min(now - r.raw, minutes_to))
    return Layout(
        now=now,
        start=now - days * DAY,
        minutes_to=minutes_to,
        hours_to=hours_to,
        raw_from=raw_from,
        minutes_from=int(min(now - r.minute, hours_to)),
        hours_from=int(now - r.hour),
        intervals_from=int(now - r.raw),  # the daemon keeps per-interval counters as long as raw rows
    )


class RollUp:
    """Streams per-connection minute sums into minute and hour rows and samples, in key order.

    Feed connections in start order; after all connections starting before `boundary` (a whole
    hour) are fed, flush(boundary) returns every row that can no longer change."""

    def __init__(self, lay: Layout) -> None:
        self.lay = lay
        self.minutes: dict[int, list[tuple[int, int, int, int, int]]] = defaultdict(list)
        self.hours: dict[int, dict[int, list[int]]] = defaultdict(dict)
        self.samples: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)

    def add(self, cid: int, pid: int, traffic: Traffic) -> None:
        lay = self.lay
        for m, tx, rx in traffic.minutes:
            if m < lay.minutes_to:
                self.minutes[m].append((m, cid, pid, tx, rx))
        for s, tx, rx in traffic.seconds:
            self.samples[s].append(((s + 1) * 1000, cid, tx, rx))

    def flush(self, boundary: float) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]], list[tuple[int, ...]]]:
        """(minute rows, hour rows, samples) final once no connection starts before boundary."""
        lay = self.lay
        minute_rows: list[tuple[int, ...]] = []
        for m in sorted(k for k in self.minutes if k < boundary):
            rows = self.minutes.pop(m)
            rows.sort(key=lambda r: r[1])
            h = m // HOUR * HOUR
            if h < lay.hours_to:
                bucket = self.hours[h]
                for _, cid, pid, tx, rx in rows:
                    acc = bucket.get(cid)
                    if acc is None:
                        bucket[cid] = [pid, tx, rx]
                    else:
                        acc[1] += tx
                        acc[2] += rx
            if m >= lay.minutes_from:
                minute_rows += rows
        hour_rows: list[tuple[int, ...]] = []
        for h in sorted(k for k in self.hours if k + HOUR <= boundary):
            bucket = self.hours.pop(h)
            if h >= lay.hours_from:
                hour_rows += [(h, cid, v[0], v[1], v[2]) for cid, v in sorted(bucket.items())]
        sample_rows: list[tuple[int, ...]] = []
        for s in sorted(k for k in self.samples if k < boundary):
            rows_s = self.samples.pop(s)
            rows_s.sort(key=lambda r: r[1])
            sample_rows += rows_s
        return minute_rows, hour_rows, sample_rows


# ---------------------------------------------------------------------------
# Maths and formatting (pure)
# ---------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def pct_of_core(cpu_s: float, interval_s: float = 1.0) -> float:
    """CPU seconds spent per interval as a percentage of one core."""
    return 100.0 * cpu_s / interval_s


def verdict(measured: float, target: float, unit: str) -> str:
    """'met (x% under)' or 'MISSED by ... (n x the target)' for an upper-bound target."""
    if math.isnan(measured):
        return "not measured"
    if measured < target:
        return f"met ({(target - measured) / target:.0%} under)"
    return f"**MISSED** by {measured - target:,.1f} {unit} ({measured / target:.1f}x the target)"


def mb(n_bytes: float) -> float:
    return n_bytes / 1e6


def fmt_int(n: int) -> str:
    return f"{n:,}"


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


# ---------------------------------------------------------------------------
# Filling the database
# ---------------------------------------------------------------------------

PROC_SQL = (
    "INSERT INTO processes (id, boot, pid, start_ns, comm, exe_id, cmdline, uid, user, ppid, parent_comm, cgroup,"
    " unit, container, netns, first_seen) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
CONN_SQL = (
    "INSERT INTO connections (id, process_id, boot, cookie, proto, family, laddr, lport, raddr, rport, netns,"
    " counts, initiator, first_seen, last_seen, opened, closed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(slots=True)
class FillStats:
    seconds: float = 0.0
    connections: int = 0
    processes: int = 0
    exes: int = 0
    traffic_tx: int = 0
    traffic_rx: int = 0
    check: dict[str, int] = field(default_factory=dict)


def fill(path: str, args: argparse.Namespace, lay: Layout) -> FillStats:
    t0 = time.perf_counter()
    rng = random.Random(args.seed)
    writer = SqliteWriter(path, boot=BOOT)  # creates the file and the schema, as the daemon does
    boot = writer.boot_row
    writer.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -200000")
    stats = FillStats()

    procs = make_processes(rng, args.processes, lay.start, lay.now)
    exes = exe_rows(procs)
    tables = make_tables(rng)
    n_conns = args.days * args.connections_per_day
    log(f"history.py: generating {n_conns:,} connections of {len(procs):,} processes over {args.days} days")
    specs = make_connections(rng, procs, n_conns, lay.now)
    db.execute("BEGIN")
    db.executemany("INSERT INTO exes (id, path) VALUES (?, ?)", [(i, p) for p, i in exes.items()])
    db.executemany(
        PROC_SQL,
        [(p.id, boot, p.pid, p.start_ns, p.comm, exes[p.exe], p.cmdline, p.uid, p.user, p.ppid, p.parent_comm,
          p.cgroup, p.unit, p.container, p.netns, p.first_seen) for p in procs],
    )  # fmt: skip
    db.execute("COMMIT")
    stats.processes, stats.exes = len(procs), len(exes)

    roll = RollUp(lay)
    cookie0 = rng.getrandbits(40)
    counts = {"minutes": 0, "hours": 0, "samples": 0, "intervals": 0, "connections": 0}
    sums = {"minutes": [0, 0], "hours": [0, 0], "samples": [0, 0]}
    first_hour = lay.start // HOUR * HOUR
    next_log = time.perf_counter()
    i = 0
    boundary = first_hour + HOUR
    interval_from = lay.start
    while True:
        conn_rows = []
        while i < len(specs) and specs[i].start < boundary:
            spec = specs[i]
            cid = i + 1
            proc = procs[spec.proc]
            traffic = conn_traffic(rng, spec, lay.now, lay.raw_lo, tables)
            roll.add(cid, proc.id, traffic)
            first = traffic.first if traffic.first is not None else spec.start
            last = traffic.last if traffic.last is not None else first
            tcp = spec.proto == "tcp"
            ended = spec.start + spec.seconds <= lay.now
            conn_rows.append(
                (cid, proc.id, boot, cookie0 + cid, spec.proto, spec.family, spec.laddr, spec.lport, spec.raddr,
                 spec.rport, None, None, spec.initiator, first + 1, last + 1,
                 (spec.start * 1000 + 250) if tcp else None,
                 (spec.start + spec.seconds) * 1000 if tcp and ended else None)
            )  # fmt: skip
            stats.traffic_tx += sum(m[1] for m in traffic.minutes)
            stats.traffic_rx += sum(m[2] for m in traffic.minutes)
            i += 1
        last_chunk = i >= len(specs) and boundary > lay.now
        minute_rows, hour_rows, sample_rows = roll.flush(math.inf if last_chunk else boundary)
        db.execute("BEGIN")
        db.executemany(CONN_SQL, conn_rows)
        # The rows carry the process id for the checks here; the tables do not (schema v2).
        db.executemany(
            "INSERT INTO minutes (ts, conn_id, tx, rx) VALUES (?,?,?,?)", [r[:2] + r[3:] for r in minute_rows]
        )
        db.executemany("INSERT INTO hours (ts, conn_id, tx, rx) VALUES (?,?,?,?)", [r[:2] + r[3:] for r in hour_rows])
        db.executemany("INSERT INTO samples (ts, conn_id, tx, rx) VALUES (?,?,?,?)", sample_rows)
        if not args.no_intervals:
            hi = lay.now if last_chunk else min(boundary, lay.now)
            lo = max(interval_from, lay.intervals_from)
            db.executemany(
                "INSERT INTO intervals (ts, length, unattributed_tx, unattributed_rx, dropped_events, dropped_bytes)"
                " VALUES (?, 1.0, 0, 0, 0, 0)",
                (((s + 1) * 1000,) for s in range(lo, hi)),
            )
            counts["intervals"] += max(0, hi - lo)
            interval_from = hi
        db.execute("COMMIT")
        counts["connections"] += len(conn_rows)
        counts["minutes"] += len(minute_rows)
        counts["hours"] += len(hour_rows)
        counts["samples"] += len(sample_rows)
        for name, rows, tx_col in (("minutes", minute_rows, 3), ("hours", hour_rows, 3), ("samples", sample_rows, 2)):
            sums[name][0] += sum(r[tx_col] for r in rows)
            sums[name][1] += sum(r[tx_col + 1] for r in rows)
        if time.perf_counter() >= next_log or last_chunk:
            day = min(args.days, (boundary - lay.start) // DAY + 1)
            log(
                f"history.py: day {day}/{args.days}: {counts['connections']:,} connections, "
                f"{counts['samples']:,} samples, {counts['minutes']:,} minutes, {counts['hours']:,} hours "
                f"({time.perf_counter() - t0:.0f} s)"
            )
            next_log = time.perf_counter() + 10
        if last_chunk:
            break
        boundary += HOUR

    db.execute("BEGIN")
    for key, value in (("minutes_to", lay.minutes_to), ("hours_to", lay.hours_to), ("raw_from", lay.raw_from)):
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, str(float(value))),
        )
    roll_days(db, lay.hours_to)  # the writer's own daily roll-up, as maintain() would have done it
    db.execute("COMMIT")
    db.close()
    stats.connections = counts["connections"]
    stats.seconds = time.perf_counter() - t0
    stats.check = {f"{k}_{d}": v[j] for k, v in sums.items() for j, d in enumerate(("tx", "rx"))}
    return stats


def check_consistency(path: str, lay: Layout) -> list[str]:
    """Each resolution the exact sum of the finer one, over the range both cover. Problems, if any."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    problems: list[str] = []
    try:
        # hours == sum of minutes over the hours that minute rows cover in full
        lo = max(lay.minutes_from, lay.start) // HOUR * HOUR + HOUR
        a = db.execute("SELECT sum(tx), sum(rx) FROM hours WHERE ts >= ? AND ts < ?", (lo, lay.hours_to)).fetchone()
        b = db.execute("SELECT sum(tx), sum(rx) FROM minutes WHERE ts >= ? AND ts < ?", (lo, lay.hours_to)).fetchone()
        if tuple(a) != tuple(b):
            problems.append(f"hours {a} != minutes {b} over [{lo}, {lay.hours_to})")
        # per (hour, connection) as well, on the last day
        q = (
            "SELECT count(*) FROM (SELECT ts / 3600 * 3600 AS h, conn_id, sum(tx) AS tx, sum(rx) AS rx FROM minutes"
            " WHERE ts >= ? AND ts < ? GROUP BY 1, 2) m LEFT JOIN hours h ON h.ts = m.h AND h.conn_id = m.conn_id"
            " WHERE h.tx IS NOT m.tx OR h.rx IS NOT m.rx"
        )
        bad = db.execute(q, (lay.hours_to - DAY, lay.hours_to)).fetchone()[0]
        if bad:
            problems.append(f"{bad} (hour, connection) rows differ from their minutes on the last day")
        # minutes == sum of samples over the minutes that samples cover in full
        m_lo = (lay.raw_from + MINUTE - 1) // MINUTE * MINUTE
        a = db.execute(
            "SELECT sum(tx), sum(rx) FROM minutes WHERE ts >= ? AND ts < ?", (m_lo, lay.minutes_to)
        ).fetchone()
        b = db.execute(
            "SELECT sum(tx), sum(rx) FROM samples WHERE ts > ? AND ts <= ?", (m_lo * 1000, lay.minutes_to * 1000)
        ).fetchone()
        if tuple(a) != tuple(b):
            problems.append(f"minutes {a} != samples {b} over [{m_lo}, {lay.minutes_to})")
        q = (
            "SELECT count(*) FROM (SELECT (ts - 1) / 60000 * 60 AS m, conn_id, sum(tx) AS tx, sum(rx) AS rx"
            " FROM samples WHERE ts > ? AND ts <= ? GROUP BY 1, 2) s LEFT JOIN minutes n ON n.ts = s.m"
            " AND n.conn_id = s.conn_id WHERE n.tx IS NOT s.tx OR n.rx IS NOT s.rx"
        )
        bad = db.execute(q, (max(m_lo, lay.minutes_to - 6 * HOUR) * 1000, lay.minutes_to * 1000)).fetchone()[0]
        if bad:
            problems.append(f"{bad} (minute, connection) rows differ from their samples in the last 6 hours")
    finally:
        db.close()
    return problems


# ---------------------------------------------------------------------------
# Size
# ---------------------------------------------------------------------------


def file_size(path: str) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += os.path.getsize(path + suffix)
    return total


def compact(path: str) -> dict[str, Any]:
    before = file_size(path)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        checkpointed = file_size(path)
        t0 = time.perf_counter()
        db.execute("VACUUM")
        vacuum_s = time.perf_counter() - t0
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        freelist = db.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        db.close()
    return {
        "bytes_after_fill": before,
        "bytes_checkpointed": checkpointed,
        "bytes": file_size(path),
        "vacuum_s": vacuum_s,
        "page_size": page_size,
        "freelist_pages": freelist,
    }


def row_counts(path: str) -> dict[str, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
        return {n: db.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        db.close()


def btree_sizes(path: str) -> list[dict[str, Any]] | None:
    """Bytes per table and index from the dbstat virtual table (None when SQLite lacks it)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT d.name, coalesce(m.type, 'internal'), coalesce(m.tbl_name, d.name), count(*), sum(d.pgsize),"
            " sum(d.payload), sum(d.unused), sum(d.ncell) FILTER (WHERE d.pagetype = 'leaf')"
            " FROM dbstat d LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY d.name ORDER BY sum(d.pgsize) DESC"
        ).fetchall()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return [
        {"name": r[0], "type": r[1], "table": r[2], "pages": r[3], "bytes": r[4], "payload": r[5], "unused": r[6],
         "entries": r[7] or 0}
        for r in rows
    ]  # fmt: skip


def size_facts(path: str, lay: Layout) -> dict[str, Any]:
    """Figures behind the size: old minute rows, long-lived rows."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        one = db.execute
        minutes = one("SELECT count(*) FROM minutes").fetchone()[0]
        return {
            "connections": one("SELECT count(*) FROM connections").fetchone()[0],
            "minutes": minutes,
            "minutes_older_7d": one("SELECT count(*) FROM minutes WHERE ts < ?", (lay.now - 7 * DAY,)).fetchone()[0],
            "minutes_long_lived": one(
                "SELECT count(*) FROM minutes m JOIN connections c ON c.id = m.conn_id"
                " WHERE c.last_seen - c.first_seen >= 3600"
            ).fetchone()[0],
        }
    finally:
        db.close()


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportSpec:
    key: str
    title: str
    seconds: int
    by: str
    top: int | None


REPORTS: tuple[ReportSpec, ...] = (
    ReportSpec("top_30d_process", "30 d top talkers (by process, top 20)", 30 * DAY, "process", 20),
    ReportSpec("24h_process", "24 h by process", DAY, "process", None),
    ReportSpec("1h_connection", "1 h by connection, top 50", HOUR, "connection", 50),
    ReportSpec("7d_remote", "7 d by remote, top 20", 7 * DAY, "remote", 20),
    ReportSpec("30d_exe", "30 d by exe", 30 * DAY, "exe", None),
    ReportSpec("30d_user", "30 d by user", 30 * DAY, "user", None),
)


def time_reports(path: str, now: float, runs: int) -> list[dict[str, Any]]:
    reader = SqliteReader(path)
    out = []
    try:
        for spec in REPORTS:
            since = now - spec.seconds
            rows = reader.report(since, now, spec.by, spec.top)  # warm-up
            wall: list[float] = []
            cpu: list[float] = []
            for _ in range(runs):
                c0, w0 = time.process_time(), time.perf_counter()
                reader.report(since, now, spec.by, spec.top)
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - w0)
            out.append(
                {"key": spec.key, "title": spec.title, "since": since, "until": now, "by": spec.by, "top": spec.top,
                 "rows": len(rows), "ms": [w * 1000 for w in wall], "median_ms": median(wall) * 1000,
                 "median_cpu_ms": median(cpu) * 1000,
                 "total_bytes": sum(r.tx_bytes + r.rx_bytes for r in rows)}
            )  # fmt: skip
            log(f"history.py: {spec.title}: {out[-1]['median_ms']:.1f} ms ({len(rows)} rows)")
    finally:
        reader.close()
    return out


def captured_sql(path: str, spec: ReportSpec, now: float) -> str | None:
    """The SELECT SqliteReader runs for spec (captured with a trace callback)."""
    reader = SqliteReader(path)
    seen: list[str] = []
    try:
        reader.db.set_trace_callback(seen.append)
        reader.report(now - spec.seconds, now, spec.by, spec.top)
    finally:
        reader.close()
    found = [s for s in seen if s.lstrip().upper().startswith("SELECT") and " FROM (" in s]
    return found[-1] if found else None


def explain_report(path: str, now: float, spec: ReportSpec, runs: int) -> dict[str, Any]:
    """Where a report's time goes: its plan, the rows each resolution feeds it, and the same answer
    with the sums taken per connection before the joins (a what-if, read-only)."""
    sql = captured_sql(path, spec, now)
    out: dict[str, Any] = {"key": spec.key, "sql": sql}
    if sql is None:
        return out
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out["plan"] = _plan_lines(db.execute("EXPLAIN QUERY PLAN " + sql).fetchall())
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        segs = plan_segments(
            now - spec.seconds, now, float(meta["minutes_to"]), float(meta["hours_to"]), float(meta["raw_from"])
        )
        seg_rows = []
        for res, lo, hi in segs:
            if res == "raw":
                q = f"SELECT count(*) FROM samples WHERE ts > {int(lo * 1000)} AND ts <= {int(hi * 1000)}"
            else:
                table = "minutes" if res == "minute" else "hours"
                q = f"SELECT count(*) FROM {table} WHERE ts >= {int(lo)} AND ts < {int(hi)}"
            seg_rows.append({"resolution": res, "from": lo, "to": hi, "rows": db.execute(q).fetchone()[0]})
        out["segments"] = seg_rows
        head, sep, rest = sql.partition(" FROM (")
        inner, sep2, tail = rest.rpartition(") t JOIN ")
        # The what-ifs below rewrite the per-connection query; a report already summed per process
        # (from process_days) has nothing for them to rewrite.
        if sep and sep2 and "process_days" not in sql:
            out["inner_ms"] = _time_sql(db, f"SELECT count(*), sum(tx), sum(rx) FROM ({inner})", runs)
            pushed = (
                f"{head} FROM (SELECT conn_id, sum(tx) AS tx, sum(rx) AS rx FROM ({inner}) GROUP BY conn_id)"
                f" t JOIN {tail}"
            )
            out["pushed_sql"] = pushed
            out["pushed_ms"] = _time_sql(db, pushed, runs)
            out["pushed_same"] = db.execute(pushed).fetchall() == db.execute(sql).fetchall()
        out["full_ms"] = _time_sql(db, sql, runs)
    finally:
        db.close()
    return out


def _plan_lines(rows: Sequence[Sequence[Any]]) -> list[str]:
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + str(detail))
    return lines


def _time_sql(db: sqlite3.Connection, sql: str, runs: int) -> float:
    db.execute(sql).fetchall()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        db.execute(sql).fetchall()
        times.append(time.perf_counter() - t0)
    return median(times) * 1000


# ---------------------------------------------------------------------------
# The daemon's writes
# ---------------------------------------------------------------------------


def make_live_interval(rng: random.Random, n_procs: int, n_conns: int, ts: float) -> Interval:
    """One interval of a busy host: n_conns connections moving bytes, spread over n_procs processes."""
    remotes = make_remotes(rng, N_REMOTES)
    per = distribute(n_conns, [1.0] * n_procs)
    procs: list[ProcessSample] = []
    cookie = rng.getrandbits(40)
    pids = rng.sample(range(300, 4_000_000), n_procs)
    for i, count in enumerate(per):
        t = TEMPLATES[i % len(TEMPLATES)]
        exe = t.exe.replace("{n}", str(i % t.exes))
        conns = []
        for _ in range(count):
            cookie += 1
            fam, raddr = rng.choice(remotes)
            conns.append(
                ConnectionSample(
                    proto="udp" if rng.random() < t.udp else "tcp", family=fam,
                    laddr="192.0.2.10" if fam == 2 else "2001:db8::10", lport=rng.randrange(32768, 61000),
                    raddr=raddr, rport=rng.choice(WELL_KNOWN_PORTS), state="ESTABLISHED",
                    tx_bytes=rng.randrange(1, 20_000), rx_bytes=rng.randrange(1, 200_000), tx_calls=1, rx_calls=1,
                    cookie=cookie, netns=HOST_NETNS, initiator="local",
                )
            )  # fmt: skip
        procs.append(
            ProcessSample(
                pid=pids[i], comm=os.path.basename(exe)[:15], exe=exe, cmdline=f"{exe} --worker {i}", uid=t.uid,
                user=t.user, ppid=1, start_ns=rng.randrange(1, 10**15), unit=t.unit.replace("{n}", str(i)),
                cgroup=f"/system.slice/{t.unit.replace('{n}', str(i))}", netns=HOST_NETNS,
                tx_bytes=sum(c.tx_bytes for c in conns), rx_bytes=sum(c.rx_bytes for c in conns), connections=conns,
            )
        )  # fmt: skip
    return Interval(ts=ts, interval=1.0, processes=procs)


class TimedConnection:
    """Stands in for the writer's sqlite3.Connection and adds up CPU time per statement."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @staticmethod
    def _key(sql: str) -> str:
        text = " ".join(sql.split())
        return text if len(text) <= 70 else text[:67] + "..."

    def _timed(self, sql: str, fn: Callable[[], sqlite3.Cursor]) -> sqlite3.Cursor:
        c0 = time.process_time()
        try:
            return fn()
        finally:
            key = self._key(sql)
            self.cpu[key] += time.process_time() - c0
            self.calls[key] += 1

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._timed(sql, lambda: self._db.execute(sql, params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self._timed(sql, lambda: self._db.executemany(sql, rows))

    def executescript(self, sql: str) -> sqlite3.Cursor:
        return self._db.executescript(sql)

    def close(self) -> None:
        self._db.close()


def time_writes(path: str, now: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed + 1)
    ts = float(now + 1)
    iv = make_live_interval(rng, args.write_processes, args.write_connections, ts)
    retention = Retention()
    writer = SqliteWriter(path, boot=LIVE_BOOT)
    cpu: list[float] = []
    wall: list[float] = []
    try:
        writer.maintain(ts - 1, retention)  # the daemon maintains once at start-up
        for n in range(args.writes):
            iv.ts = ts
            c0, w0 = time.process_time(), time.perf_counter()
            writer.write([iv])
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            ts += 1.0
            if n == 0:
                log(f"history.py: first write (new processes and connections): {cpu[0] * 1000:.0f} ms CPU")
        log(f"history.py: {args.writes} writes of {args.write_connections:,} connections: median "
            f"{median(cpu[1:] or cpu) * 1000:.1f} ms CPU")  # fmt: skip

        # Steady state, a write per second and maintain() per minute, with per-statement CPU.
        timed = TimedConnection(writer.db)
        writer.db = cast(sqlite3.Connection, timed)
        m_cpu: list[float] = []
        m_wall: list[float] = []
        w_cpu: list[float] = []
        last_maintain = ts - 1
        maint_stmt: dict[str, float] = defaultdict(float)
        for _ in range(args.maintain_minutes * MINUTE):
            iv.ts = ts
            c0 = time.process_time()
            writer.write([iv])
            w_cpu.append(time.process_time() - c0)
            if ts - last_maintain >= MINUTE:
                before = dict(timed.cpu)
                c0, w0 = time.process_time(), time.perf_counter()
                writer.maintain(ts, retention)
                m_cpu.append(time.process_time() - c0)
                m_wall.append(time.perf_counter() - w0)
                for k, v in timed.cpu.items():
                    maint_stmt[k] += v - before.get(k, 0.0)
                last_maintain = ts
                log(f"history.py: maintain() after a minute of writes: {m_cpu[-1] * 1000:.0f} ms CPU")
            ts += 1.0
        maint_total = sum(m_cpu)
        write_stmt = {k: v - maint_stmt.get(k, 0.0) for k, v in timed.cpu.items()}
        n_w = len(w_cpu)
        write_breakdown = [
            {"sql": k, "cpu_ms_per_op": v * 1000 / n_w} for k, v in sorted(write_stmt.items(), key=lambda kv: -kv[1])
            if v * 1000 / n_w >= 0.05
        ]  # fmt: skip
        write_breakdown.append(
            {"sql": "(Python in write(): rows, id look-ups, the loop)",
             "cpu_ms_per_op": (sum(w_cpu) - sum(write_stmt.values())) * 1000 / n_w}
        )  # fmt: skip
        n_m = max(1, len(m_cpu))
        maint_breakdown = [
            {"sql": k, "cpu_ms_per_op": v * 1000 / n_m} for k, v in sorted(maint_stmt.items(), key=lambda kv: -kv[1])
            if v * 1000 / n_m >= 0.5
        ]  # fmt: skip
        maint_breakdown.append(
            {"sql": "(other)", "cpu_ms_per_op": (maint_total - sum(maint_stmt.values())) * 1000 / n_m}
        )
    finally:
        writer.close()
    steady = cpu[1:] or cpu
    m_med = median(m_cpu)
    return {
        "connections": args.write_connections,
        "processes": args.write_processes,
        "writes": args.writes,
        "cpu_ms": [c * 1000 for c in cpu],
        "wall_ms": [w * 1000 for w in wall],
        "first_cpu_ms": cpu[0] * 1000,
        "median_cpu_ms": median(cpu) * 1000,
        "median_cpu_ms_steady": median(steady) * 1000,
        "median_wall_ms": median(wall) * 1000,
        "pct_of_core": pct_of_core(median(cpu)),
        "steady_writes": len(w_cpu),
        "steady_median_cpu_ms": median(w_cpu) * 1000,
        "maintain_runs": len(m_cpu),
        "maintain_cpu_ms": [c * 1000 for c in m_cpu],
        "maintain_wall_ms": [w * 1000 for w in m_wall],
        "maintain_median_cpu_ms": m_med * 1000,
        "maintain_pct_of_core": pct_of_core(m_med, MINUTE),
        "write_breakdown": write_breakdown,
        "maintain_breakdown": maint_breakdown,
    }


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def render(res: dict[str, Any]) -> str:
    a = res["args"]
    size = res["size"]
    lines = [
        "# sockscope history storage benchmark",
        "",
        f"- command: `{res['command']}`",
        f"- host: {res['host']['cpus']} CPUs, Linux {res['host']['kernel']}, Python {res['host']['python']},"
        f" SQLite {res['host']['sqlite']}",
        f"- date: {res['date']}",
        f"- synthetic history: {a['days']} days ending now, {res['fill']['processes']:,} processes"
        f" ({res['fill']['exes']} executables), {res['fill']['connections']:,} connections"
        f" ({a['connections_per_day']:,} a day, {LONG_SHARE:.0%} long-lived 1-4 h active in"
        f" ~{LONG_ACTIVE:.0%} of their seconds, the rest 1-5 s), {mb(res['fill']['bytes_moved']) / 1e3:,.1f} GB"
        f" moved; seed {a['seed']}; generated and written in {res['fill']['seconds']:.0f} s",
        f"- layout: raw samples from {_iso(res['layout']['raw_from'])}, minutes from"
        f" {_iso(res['layout']['minutes_from'])} to {_iso(res['layout']['minutes_to'])}, hours to"
        f" {_iso(res['layout']['hours_to'])}; "
        f"{'no intervals rows' if a['no_intervals'] else 'an intervals row per second'}"
        f"; resolutions consistent: {'yes' if not res['consistency'] else 'NO: ' + '; '.join(res['consistency'])}",
        "",
    ]
    top = next(r for r in res["reports"] if r["key"] == "top_30d_process")
    w = res["writes"]
    size_mb = mb(size["bytes"])
    size_verdict = verdict(size_mb, TARGET_SIZE_MB, "MB")
    if a["days"] != TARGET_DAYS:
        size_verdict = f"n/a: the target is for {TARGET_DAYS} d (run with --days {TARGET_DAYS})"
    lines += ["## Summary", ""]
    lines += md_table(
        ("what", "measured", "target", "verdict"),
        [
            (f"database size, {a['days']} d (file + WAL, after VACUUM)", f"{size_mb:.1f} MB",
             f"< {TARGET_SIZE_MB:.0f} MB for {TARGET_DAYS} d", size_verdict),
            ("30-day top talkers (median)", f"{top['median_ms']:.1f} ms", f"< {TARGET_TOP_MS:.0f} ms",
             verdict(top["median_ms"], TARGET_TOP_MS, "ms")),
            (f"write, {w['connections']:,} connections (median CPU)",
             f"{w['median_cpu_ms']:.1f} ms = {w['pct_of_core']:.1f}% of one core at 1 s",
             f"< {TARGET_WRITE_PCT:.0f}%", verdict(w["pct_of_core"], TARGET_WRITE_PCT, "points")),
            ("maintain() once a minute, amortised", f"{w['maintain_pct_of_core']:.2f}% of one core", "(none)", ""),
        ],
    )  # fmt: skip
    lines += ["", "## Database", ""]
    lines.append(
        f"{size_mb:.1f} MB after `PRAGMA wal_checkpoint(TRUNCATE)` and `VACUUM` (as filled, before: file + WAL"
        f" {mb(size['bytes_after_fill']):.1f} MB, checkpointed {mb(size['bytes_checkpointed']):.1f} MB; VACUUM took"
        f" {size['vacuum_s']:.0f} s); page size {size['page_size']}."
    )
    lines.append("")
    btrees = res.get("btrees")
    counts = res["rows"]
    if btrees:
        lines += md_table(
            ("table / index", "rows", "MB", "share", "bytes per row", "payload per row", "unused"),
            [
                (b["name"] if b["type"] == "table" else f"{b['name']} ({b['type']} on {b['table']})",
                 fmt_int(counts.get(b["table"], b["entries"])), f"{mb(b['bytes']):.1f}",
                 f"{b['bytes'] / size['bytes']:.0%}",
                 f"{b['bytes'] / max(1, counts.get(b['table'], b['entries'])):.1f}",
                 f"{b['payload'] / max(1, counts.get(b['table'], b['entries'])):.1f}",
                 f"{b['unused'] / max(1, b['bytes']):.0%}")
                for b in btrees if b["bytes"] >= 64 * 1024
            ],
        )  # fmt: skip
        lines.append("")
        lines.append("(dbstat; trees under 64 kB left out; an index has one entry per row of its table.)")
    else:
        lines += md_table(("table", "rows"), [(k, fmt_int(v)) for k, v in counts.items()])
        lines.append("")
        lines.append("(this SQLite has no dbstat: no per-table bytes)")
    if btrees:
        lines += ["", "Where the bytes go:", "", *size_notes(res)]
    lines += ["", f"## Reports (SqliteReader, median of {a['runs']} after a warm-up)", ""]
    lines += md_table(
        ("report", "rows", "median ms", "min ms", "max ms", "CPU ms"),
        [
            (r["title"], r["rows"], f"{r['median_ms']:.1f}", f"{min(r['ms']):.1f}", f"{max(r['ms']):.1f}",
             f"{r['median_cpu_ms']:.1f}")
            for r in res["reports"]
        ],
    )  # fmt: skip
    lines += ["", "## The daemon's writes", ""]
    lines.append(
        f"`SqliteWriter.write([interval])`, {w['connections']:,} connections over {w['processes']:,} processes, all"
        f" moving bytes, into the filled database; {w['writes']} writes 1 s apart (the first adds the processes and"
        f" connections: {w['first_cpu_ms']:.0f} ms CPU). Median CPU {w['median_cpu_ms']:.1f} ms per write"
        f" ({w['median_cpu_ms_steady']:.1f} ms without the first; wall {w['median_wall_ms']:.1f} ms) ="
        f" **{w['pct_of_core']:.1f}% of one core** at a 1 s interval."
    )
    lines.append("")
    lines.append(
        f"Then {w['steady_writes']} more writes (median {w['steady_median_cpu_ms']:.1f} ms CPU) with `maintain()`"
        f" once per simulated minute ({w['maintain_runs']} runs): median {w['maintain_median_cpu_ms']:.0f} ms CPU"
        f" (runs: {', '.join(f'{c:.0f}' for c in w['maintain_cpu_ms'])} ms) ="
        f" **{w['maintain_pct_of_core']:.2f}% of one core** amortised per second. Together:"
        f" {w['pct_of_core'] + w['maintain_pct_of_core']:.1f}% of one core."
    )
    lines += ["", "CPU per write, by statement (steady state):", ""]
    lines += md_table(("statement", "ms per write"), [(f"`{b['sql']}`", f"{b['cpu_ms_per_op']:.2f}")
                                                     for b in w["write_breakdown"]])  # fmt: skip
    lines += ["", "CPU per maintain(), by statement:", ""]
    lines += md_table(("statement", "ms per run"), [(f"`{b['sql']}`", f"{b['cpu_ms_per_op']:.1f}")
                                                   for b in w["maintain_breakdown"]])  # fmt: skip
    ex = res.get("explain")
    if ex and ex.get("sql"):
        lines += ["", "## Where the 30-day top talkers' time goes", ""]
        lines.append("Rows each resolution feeds the query (plan_segments):")
        lines.append("")
        lines += md_table(
            ("resolution", "from", "to", "rows"),
            [(s["resolution"], _iso(s["from"]), _iso(s["to"]), fmt_int(s["rows"])) for s in ex.get("segments", [])],
        )
        lines += ["", "```", "EXPLAIN QUERY PLAN", *ex.get("plan", []), "```", ""]
        if "inner_ms" in ex:
            lines.append(
                f"The query: {ex['full_ms']:.1f} ms; reading the rows alone (the UNION ALL, summed):"
                f" {ex['inner_ms']:.1f} ms; so joining every row to connections and processes and grouping"
                f" takes the other {ex['full_ms'] - ex['inner_ms']:.1f} ms."
            )
            lines.append(
                f"What-if (read-only, same SQL otherwise): summing per connection before the joins:"
                f" {ex['pushed_ms']:.1f} ms (same answer: {'yes' if ex.get('pushed_same') else 'NO'})."
            )
    return "\n".join(lines) + "\n"


def size_notes(res: dict[str, Any]) -> list[str]:
    """Bullets: what each big item costs and what would shrink it (figures from dbstat and size_facts)."""
    by_name = {b["name"]: b for b in res.get("btrees") or []}
    facts = res["size_facts"]
    days = res["args"]["days"]
    out = []
    conn_trees = [b for b in by_name.values() if b["table"] == "connections"]
    if conn_trees and facts["connections"]:
        conn_bytes = sum(b["bytes"] for b in conn_trees)
        out.append(
            f"- connections and their indexes: {mb(conn_bytes):.1f} MB, {conn_bytes / facts['connections']:.0f} B"
            " per connection."
        )
    if "minutes" in by_name and facts["minutes"]:
        m = by_name["minutes"]
        old = facts["minutes_older_7d"] / facts["minutes"]
        out.append(
            f"- minutes: {mb(m['bytes']):.1f} MB for {fmt_int(facts['minutes'])} rows"
            f" ({m['bytes'] / facts['minutes']:.1f} B each); {facts['minutes_long_lived'] / facts['minutes']:.0%} of"
            f" the rows are long-lived connections' (one row per minute they move bytes in); {old:.0%}"
            f" ({mb(m['bytes'] * old):.1f} MB) are older than 7 days, which hours rows also answer."
        )
    if "samples" in by_name:
        out.append(f"- samples: {mb(by_name['samples']['bytes']):.1f} MB for the 2 days of raw rows.")
    if "intervals" in by_name and days:
        keep = Retention().raw / DAY
        out.append(
            f"- intervals: {mb(by_name['intervals']['bytes']):.1f} MB, one row per second, kept and purged with the"
            f" raw rows ({keep:.0f} d)."
        )
    return out


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench/history.py", description="History storage benchmark: size, report latency, write cost."
    )
    ap.add_argument("--days", type=_positive_int, default=30)
    ap.add_argument("--processes", type=_positive_int, default=1000)
    ap.add_argument("--connections-per-day", type=_positive_int, default=20_000)
    ap.add_argument("--db", type=Path, help="fill this database (must not exist) and keep it")
    ap.add_argument("--json", type=Path, help="write the raw figures here")
    ap.add_argument("--seed", type=int, default=20261124)
    ap.add_argument("--runs", type=_positive_int, default=5, help="timed runs per report (default 5)")
    ap.add_argument("--writes", type=_positive_int, default=30, help="timed writes (default 30)")
    ap.add_argument("--write-connections", type=_positive_int, default=10_000)
    ap.add_argument("--write-processes", type=_positive_int, default=1000)
    ap.add_argument("--maintain-minutes", type=_positive_int, default=3, help="simulated minutes for maintain()")
    ap.add_argument("--no-intervals", action="store_true", help="leave the per-second intervals table empty")
    args = ap.parse_args(argv)
    if args.processes < len(TEMPLATES):
        ap.error(f"--processes must be at least {len(TEMPLATES)}")
    if args.write_connections < args.write_processes:
        ap.error("--write-connections must be at least --write-processes")
    return args


@contextlib.contextmanager
def database_path(db: Path | None) -> Iterator[str]:
    if db is not None:
        yield str(db)
        return
    tmp = tempfile.mkdtemp(prefix="sockscope-history-bench-")
    try:
        yield os.path.join(tmp, "history.db")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    now = int(time.time())
    lay = layout(now, args.days, Retention())
    res: dict[str, Any] = {
        "command": shlex.join([sys.executable, *argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
                 "sqlite": sqlite3.sqlite_version},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "layout": dataclasses.asdict(lay),
        "targets": {"size_mb_30d": TARGET_SIZE_MB, "top_30d_ms": TARGET_TOP_MS, "write_pct_of_core": TARGET_WRITE_PCT},
    }  # fmt: skip
    with database_path(args.db) as path:
        st = fill(path, args, lay)
        res["fill"] = {"seconds": st.seconds, "processes": st.processes, "exes": st.exes,
                       "connections": st.connections, "bytes_moved": st.traffic_tx + st.traffic_rx,
                       "row_sums": st.check}  # fmt: skip
        log("history.py: checking that the resolutions agree")
        res["consistency"] = check_consistency(path, lay)
        for problem in res["consistency"]:
            log(f"history.py: INCONSISTENT: {problem}")
        log("history.py: checkpoint and VACUUM")
        res["size"] = compact(path)
        res["rows"] = row_counts(path)
        res["btrees"] = btree_sizes(path)
        res["size_facts"] = size_facts(path, lay)
        log(f"history.py: {mb(res['size']['bytes']):.1f} MB")
        res["reports"] = time_reports(path, now, args.runs)
        top = next(s for s in REPORTS if s.key == "top_30d_process")
        log("history.py: explaining the 30-day top talkers")
        res["explain"] = explain_report(path, now, top, args.runs)
        log("history.py: timing the daemon's writes")
        res["writes"] = time_writes(path, now, args)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args = parse_args(argv[1:])
    if args.db is not None and (args.db.exists() or Path(str(args.db) + "-wal").exists()):
        print(f"history.py: {args.db} exists; remove it or give another --db (the benchmark fills a fresh one)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        res = run(args, argv)
    except KeyboardInterrupt:
        log("history.py: interrupted")
        return 130
    except (sqlite3.Error, OSError) as exc:
        log(f"history.py: {exc}")
        return 1
    sys.stdout.write(render(res))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
