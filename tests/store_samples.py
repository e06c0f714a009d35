"""Hand-built intervals for the storage tests (test_store.py, test_follow.py): processes and
connections named in a table, flows as {connection name: (tx, rx)}, as the daemon writes them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from sockscope.collector.lifecycle import LifeEvent
from sockscope.collector.model import ConnectionSample, Counters, Interval, ProcessSample


class Proc(NamedTuple):
    pid: int
    comm: str
    exe: str | None
    cmdline: str
    uid: int
    user: str
    unit: str
    netns: int | None = None


class Conn(NamedTuple):
    proc: Proc
    proto: str
    laddr: str
    lport: int | None
    raddr: str
    rport: int | None
    cookie: int
    initiator: str | None
    netns: int = 0
    counts: str = "payload"
    name: str | None = None  # the peer's name, from DNS


def interval_of(
    conns: Mapping[str, Conn],
    ts: float,
    flows: dict[str, tuple[int, int]],
    length: float = 60.0,
    life: Iterable[LifeEvent] = (),
    unattributed: tuple[int, int] = (0, 0),
    dropped: tuple[int, int] = (0, 0),
    procs_by_name: Mapping[str, Proc] | None = None,
) -> Interval:
    """One interval moving `flows`; procs_by_name puts a connection under another process."""
    procs: dict[int, ProcessSample] = {}
    for name, (tx, rx) in flows.items():
        c = conns[name]
        proc = (procs_by_name or {}).get(name, c.proc)
        p = procs.get(proc.pid)
        if p is None:
            p = procs[proc.pid] = ProcessSample(
                pid=proc.pid,
                comm=proc.comm,
                exe=proc.exe,
                cmdline=proc.cmdline,
                uid=proc.uid,
                user=proc.user,
                ppid=1,
                start_ns=proc.pid * 1000,
                cgroup=f"/system.slice/{proc.unit}",
                unit=proc.unit,
                netns=proc.netns,
                parent_comm="systemd",
            )
        p.tx_bytes += tx
        p.rx_bytes += rx
        p.connections.append(
            ConnectionSample(
                proto=c.proto,
                family=4,
                laddr=c.laddr,
                lport=c.lport,
                raddr=c.raddr,
                rport=c.rport,
                state="ESTABLISHED" if c.proto == "tcp" else None,
                tx_bytes=tx,
                rx_bytes=rx,
                cookie=c.cookie,
                netns=c.netns,
                initiator=c.initiator,
                counts=c.counts,
                name=c.name,
                cname=("edge.example.net",) if c.name else (),
                name_source="process" if c.name else None,
            )
        )
    return Interval(
        ts=float(ts),
        interval=length,
        processes=list(procs.values()),
        counters=Counters(dropped_events=dropped[0], dropped_bytes=dropped[1]),
        lifecycle=list(life),
        unattributed_tx=unattributed[0],
        unattributed_rx=unattributed[1],
    )


def life_of(c: Conn, event: str, start: float | None, end: float | None, initiator: str | None) -> LifeEvent:
    return LifeEvent(
        event=event,
        proto=c.proto,
        family=4,
        laddr=c.laddr,
        lport=c.lport,
        raddr=c.raddr,
        rport=c.rport,
        pid=c.proc.pid,
        comm=c.proc.comm,
        start=start,
        end=end,
        tx_bytes=0,
        rx_bytes=0,
        complete=start is not None,
        initiator=initiator,
        cookie=c.cookie,
    )
