"""Recorded intervals the UI tests replay through FakeSource: a few processes, TCP and UDP, a
connection that closes, and names that try to be markup or terminal control."""

from __future__ import annotations

from sockscope.collector.lifecycle import LifeEvent
from sockscope.collector.model import ConnectionSample, Counters, Interval, ProcessSample

T0 = 1_700_000_000.0

HOSTILE_COMM = "[red]x[/red]"
HOSTILE_CMDLINE = "evil \x1b[2J\x1b[31mRED \x07bell \udcff-bytes [bold]b[/bold]"
HOSTILE_NAME = "\x1b]0;pwn\x07[b]irc[/b].example"


def _conn(
    proto: str,
    lport: int,
    raddr: str,
    rport: int | None,
    tx: int,
    rx: int,
    cookie: int,
    state: str | None,
    name: str | None = None,
) -> ConnectionSample:
    return ConnectionSample(
        proto=proto, family=6 if ":" in raddr else 4, laddr="fd00::1" if ":" in raddr else "198.18.0.1",
        lport=lport, raddr=raddr, rport=rport, state=state, tx_bytes=tx, rx_bytes=rx, cookie=cookie,
        name=name, name_source="process" if name else None,
    )  # fmt: skip


def _proc(
    pid: int, comm: str, cmdline: str, user: str, unit: str | None, conns: list[ConnectionSample]
) -> ProcessSample:
    return ProcessSample(
        pid=pid, comm=comm, exe=f"/usr/bin/{comm}" if comm.isalnum() else None, cmdline=cmdline, uid=1000,
        user=user, start_ns=pid * 1000, unit=unit, tx_bytes=sum(c.tx_bytes for c in conns),
        rx_bytes=sum(c.rx_bytes for c in conns), connections=conns,
    )  # fmt: skip


def step(i: int) -> Interval:
    """Interval i (0-based) of the recording; each is 1 s long."""
    procs = [
        _proc(
            4242, "curl", "curl -O https://198.18.0.2/big.iso", "alice", "session-2.scope",
            [_conn("tcp", 40001, "198.18.0.2", 443, 1_000 + i, 2_000_000 + 1000 * i, 11, "ESTABLISHED",
                   "mirror.example.org")],
        ),
        _proc(
            53, "resolved", "/lib/systemd/systemd-resolved", "systemd-resolve", "systemd-resolved.service",
            [_conn("udp", 5353, "fd00::53", 53, 64, 128, 22, None)],
        ),
        _proc(
            999, HOSTILE_COMM, HOSTILE_CMDLINE, "mallory", None,
            [_conn("tcp", 40002, "198.18.0.66", 6667, 300, 30, 33, "ESTABLISHED", HOSTILE_NAME)],
        ),
    ]  # fmt: skip
    if i < 2:
        rsync = _proc(
            7000, "rsync", "rsync -a /srv 198.18.0.9::backup", "root", "backup.service",
            [_conn("tcp", 40003, "198.18.0.9", 873, 500_000, 1_000, 44, "ESTABLISHED")],
        )  # fmt: skip
        procs.append(rsync)
    life = []
    if i == 2:  # rsync's connection closed between reads 1 and 2
        closed = LifeEvent(
            event="tcp_close", proto="tcp", family=4, laddr="198.18.0.1", lport=40003, raddr="198.18.0.9",
            rport=873, pid=7000, comm="rsync", start=T0 - 5, end=T0 + 1.5, tx_bytes=1_000_000, rx_bytes=2_000,
            complete=True, initiator="local",
        )  # fmt: skip
        life.append(closed)
    return Interval(
        ts=T0 + i, interval=1.0, processes=procs, counters=Counters(dropped_events=i // 2, dropped_bytes=0),
        lifecycle=life, unattributed_tx=10, unattributed_rx=20,
    )  # fmt: skip


def recording(n: int = 4) -> list[Interval]:
    return [step(i) for i in range(n)]
