"""Live events without the kernel: the schema and what is built against it, the readable line
with hostile names, and the pump's hand-over and loss announcements (a fake collector)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sockscope.bpf import abi
from sockscope.collector.identity import ProcessIdentity
from sockscope.collector.lifecycle import LifeEvent
from sockscope.collector.model import ConnEvent, ProcFacts, SockFacts
from sockscope.events.cli import describe
from sockscope.events.live import EventPump, LiveEvents
from sockscope.events.model import KINDS, Endpoints, connection_event, encode, lost_event
from sockscope.names.cache import NameCache

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "src/sockscope/events/schema/event-v1.json").read_text(encoding="utf-8")
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
HOSTILE = "\x1b[31mred\x1b]0;title\x07\u202eevil\r\nnext\\xff\udcff"

V4 = bytes(10) + b"\xff\xff" + bytes([198, 18, 0, 2])
LOCAL = bytes(10) + b"\xff\xff" + bytes([198, 18, 0, 1])


def _identity(comm: str = "curl", **kw: Any) -> ProcessIdentity:
    base: dict[str, Any] = dict(pid=42, start_ns=1, comm=comm, exe="/usr/bin/curl", cmdline="curl x", uid=1000,
                                user="alice", ppid=1, alive=True)  # fmt: skip
    base.update(kw)
    return ProcessIdentity(**base)


def _event(kind: str = "tcp_connect", **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(when=1_800_000_000.5, ktime_ns=123, proto="tcp",
                                ends=Endpoints(4, "198.18.0.1", 40000, "198.18.0.2", 8080), netns=4026531840,
                                cookie=7, process=_identity())  # fmt: skip
    args.update(kw)
    return connection_event(kind, **args)


def roundtrip(event: dict[str, Any]) -> dict[str, Any]:
    line = encode(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    line.decode("ascii")  # ASCII only: nothing raw reaches a terminal or a log
    out: dict[str, Any] = json.loads(line)
    return out


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "lost"])
def test_every_kind_validates(kind: str) -> None:
    VALIDATOR.validate(roundtrip(_event(kind)))


def test_lost_validates_and_unknown_keys_do_not() -> None:
    VALIDATOR.validate(roundtrip(lost_event("ring_buffer", 3)))
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate({**_event(), "extra": 1})
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(lost_event("ring_buffer", 0))  # a loss of nothing is never announced
    bad = _event()
    del bad["pid"]
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(bad)  # every key is always there


def test_hostile_strings_are_exact_in_json_and_inert_in_lines() -> None:
    ev = _event(process=_identity(comm=HOSTILE, user=HOSTILE, unit=HOSTILE, exe=HOSTILE, cmdline=HOSTILE),
                named=(HOSTILE, (HOSTILE,), "process"))  # fmt: skip
    back = roundtrip(ev)
    VALIDATOR.validate(back)
    assert back["comm"] == back["name"] == back["cmdline"] == HOSTILE  # exact
    line = describe(back)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in line), repr(line)
    assert "\\x1b[31mred" in line and "\\u202e" in line


def test_describe_shapes() -> None:
    close = describe(_event("tcp_close", tx_bytes=1000, rx_bytes=77, duration=0.25))
    assert "tcp_close" in close and "198.18.0.1:40000 -> 198.18.0.2:8080" in close and "tx 1000 rx 77" in close
    listen = describe(_event("tcp_listen", ends=Endpoints(6, "fd00::1", 80, None, None)))
    assert "[fd00::1]:80" in listen and "->" not in listen
    assert "lost 5 events (subscriber_queue)" in describe(lost_event("subscriber_queue", 5))


class FakeReads:
    """The collector's side the pump and LiveEvents use."""

    def __init__(self) -> None:
        self.batches: list[list[ConnEvent]] = []
        self.lost = 0
        self.dns_reads = 0
        self.procs: dict[int, ProcFacts] = {}
        self.socks: dict[int, SockFacts] = {}

    def poll_events(self, timeout_ms: int) -> list[ConnEvent]:
        return self.batches.pop(0) if self.batches else []

    def read_dns(self) -> list[Any]:
        self.dns_reads += 1
        return []

    def stat_total(self, stat: abi.Stat) -> int:
        assert stat == abi.Stat.EVENTS_LOST
        return self.lost

    def proc_record(self, tgid: int) -> bytes | None:
        return b"%d" % tgid if tgid in self.procs else None

    def proc_facts(self, tgid: int, raw: bytes | None = None) -> ProcFacts | None:
        return self.procs.get(tgid)

    def sock_facts(self, cookie: int) -> SockFacts | None:
        return self.socks.get(cookie)


def _conn(kind: str, cookie: int, **kw: Any) -> ConnEvent:
    base: dict[str, Any] = dict(kind=kind, ts_ns=2_000_000_000, cookie=cookie, family=2, laddr=LOCAL, lport=40000,
                                raddr=V4, rport=8080, netns=5, tgid=0)  # fmt: skip
    base.update(kw)
    return ConnEvent(**base)


class NoProc:
    def resolve(self, facts: ProcFacts | None, pid: int) -> ProcessIdentity:
        return _identity(pid=pid, comm=f"p{pid}")


def _pump(reads: FakeReads) -> tuple[EventPump, list[dict[str, Any]]]:
    out: list[dict[str, Any]] = []
    live = LiveEvents(reads, NameCache(), NoProc(), to_wall=lambda ns: ns / 1e9)  # type: ignore[arg-type]
    pump = EventPump(reads, live, out.append, names=NameCache())  # type: ignore[arg-type]
    return pump, out


def test_pump_hands_open_close_to_intervals_and_announces_ring_losses() -> None:
    reads = FakeReads()
    pump, out = _pump(reads)
    # The thread is not started: step() is what it runs, one poll at a time.
    reads.batches = [[_conn("open", 1, tgid=9, initiator=1), _conn("close", 1)]]
    reads.lost = 4
    pump.step(0)
    assert [e.kind for e in pump.take()] == ["open", "close"] and pump.take() == []
    assert [e["kind"] for e in out] == ["lost", "tcp_connect"]
    assert out[0]["count"] == 4 and out[1]["pid"] == 9 and out[1]["raddr"] == "198.18.0.2"
    assert reads.dns_reads == 1
    reads.lost = 4
    pump.step(0)
    assert len(out) == 2  # no new loss, nothing announced


def test_end_takes_endpoints_from_its_open_and_totals_from_the_kernel() -> None:
    reads = FakeReads()
    pump, out = _pump(reads)
    zero = bytes(16)
    reads.batches = [[_conn("open", 3, tgid=9, initiator=2)],
                     [_conn("end", 3, ts_ns=5_000_000_000, laddr=zero, raddr=zero, lport=0, rport=0, tgid=11,
                            tx_bytes=10, rx_bytes=20, totals=True, initiator=2)]]  # fmt: skip
    pump.step(0)
    pump.step(0)
    accept, close = out
    assert accept["kind"] == "tcp_accept" and accept["initiator"] == "remote"
    assert close["kind"] == "tcp_close" and (close["laddr"], close["lport"]) == ("198.18.0.1", 40000)
    assert (close["tx_bytes"], close["rx_bytes"], close["complete"], close["pid"]) == (10, 20, True, 11)
    assert close["duration"] == 3.0
    VALIDATOR.validate(roundtrip(close))


def test_udp_end_from_the_lifecycle() -> None:
    reads = FakeReads()
    live = LiveEvents(reads, NameCache(), NoProc())  # type: ignore[arg-type]
    life = LifeEvent(event="udp_end", proto="udp", family=4, laddr="198.18.0.1", lport=5000, raddr="198.18.0.2",
                     rport=53, pid=7, comm="dig", start=100.0, end=160.0, tx_bytes=40, rx_bytes=90, complete=True,
                     netns=5, cookie=8)  # fmt: skip
    ev = live.from_life(life, _identity(pid=7))
    assert ev is not None and ev["kind"] == "udp_end" and ev["duration"] == 60.0 and ev["pid"] == 7
    VALIDATOR.validate(roundtrip(ev))
    assert live.from_life(dataclasses.replace(life, event="tcp_open"), None) is None  # TCP's come from the kernel
