"""The collector's read path: once per interval, the flows drained (their maps swapped first), the
ring buffer's TCP open/close events, the kernel's counters; socket and process facts on demand.
A mixin of Collector (loader.py), which loads and attaches."""

from __future__ import annotations

import ctypes
import ipaddress
import struct
import time
from collections.abc import Iterator
from operator import add

from sockscope.bpf import abi, libbpf
from sockscope.bpf.kretprobes import Kretprobes
from sockscope.bpf.splice import SpliceClaims
from sockscope.collector.addresses import V4MAPPED_PREFIX
from sockscope.collector.model import (
    NO_ADDR,
    ConnEvent,
    Counters,
    DnsCapture,
    FlowRow,
    ProcFacts,
    RawFlow,
    SockFacts,
)
from sockscope.output.safe import decode_untrusted


class CollectorError(RuntimeError):
    """Monitoring cannot start; the message says what is missing and what to do."""


def _sum_percpu(raw: bytes, nfields: int, ncpu: int) -> list[int]:
    words = memoryview(raw).cast("Q")
    stride = len(words) // ncpu
    return [sum(words[i::stride][:ncpu]) for i in range(nfields)]


_VALS1 = struct.Struct("=4Q")  # a flow's counters on one CPU: tx_bytes, rx_bytes, tx_calls, rx_calls
_VALS2 = struct.Struct("=8Q")  # on two


def _decode_flows(keys: bytes, values: bytes, count: int, ncpu: int) -> list[FlowRow]:
    """Drained flow entries, their per-CPU counters summed: column by column, in C where it can
    (tens of thousands of entries a second on a busy host)."""
    if not count:
        return []
    if ncpu <= 2:
        # One struct per entry, sums written out: half the time of the columns below here.
        pairs = zip(abi.FLOW_KEY.iter_unpack(keys), (_VALS1 if ncpu == 1 else _VALS2).iter_unpack(values), strict=True)
        if ncpu == 1:
            return [(c, t, ra, rp, a, b, d, e) for (c, t, rp, _, ra), (a, b, d, e) in pairs]
        return [
            (c, t, ra, rp, a0 + a1, b0 + b1, c0 + c1, d0 + d1)
            for (c, t, rp, _, ra), (a0, b0, c0, d0, a1, b1, c1, d1) in pairs
        ]
    w = memoryview(values).cast("Q")  # per entry, per CPU: tx_bytes, rx_bytes, tx_calls, rx_calls
    stride = 4 * ncpu
    cols: list[list[int]] = []
    for f in range(4):
        if ncpu <= 4:  # pairwise adds, with no tuple per entry: faster for a few CPUs
            col: Iterator[int] = iter(w[f::stride])
            for c in range(1, ncpu):
                col = map(add, col, w[f + 4 * c :: stride])
            cols.append(list(col))
        else:
            cols.append(list(map(sum, zip(*(w[f + 4 * c :: stride] for c in range(ncpu)), strict=True))))
    cookies, tgids, rports, _, raddrs = zip(*abi.FLOW_KEY.iter_unpack(keys), strict=True)
    return list(zip(cookies, tgids, raddrs, rports, *cols, strict=True))


def _cstr(raw: bytes) -> str:
    return decode_untrusted(raw.split(b"\0", 1)[0])


_EVENT_KINDS = {
    abi.EventType.TCP_OPEN: "open",
    abi.EventType.TCP_CLOSE: "close",
    abi.EventType.TCP_LISTEN: "listen",
    abi.EventType.TCP_END: "end",
    abi.EventType.UDP_START: "udp_start",
}
_INTERVAL_KINDS = frozenset({"open", "close"})  # what the lifecycle tracker takes
_TOTALS, _RX = int(abi.EventFlags.TOTALS), int(abi.EventFlags.RX)


class Reads:
    """What Collector.start() sets up, read each interval."""

    _obj: libbpf.Object | None
    _maps: dict[str, libbpf.Map]
    _ncpu: int
    _active: int
    _prev_stats: list[int]
    _last_read: float
    _events: libbpf.RingBuffer | None
    _dns_events: libbpf.RingBuffer | None
    _kretprobes: Kretprobes | None
    _prev_missed: int
    splice: SpliceClaims | None

    @property
    def obj(self) -> libbpf.Object:
        if self._obj is None:
            raise CollectorError("collector is not started")
        return self._obj

    def _map(self, name: str) -> libbpf.Map:
        """A map of the loaded object, looked up by name once (the read path asks per socket)."""
        found = self._maps.get(name)
        if found is None:
            found = self._maps[name] = self.obj.map(name)
        return found

    def read_events(self) -> list[ConnEvent]:
        """Open/close events waiting in the ring buffer. Read them before read_flows():
        the bytes of a connection closed before this call are then in that drain."""
        if self._events is None:
            return []
        events = [e for e in map(self._decode_event, self._events.consume()) if e.kind in _INTERVAL_KINDS]
        self.note_opens(events)
        return events

    def note_opens(self, events: list[ConnEvent]) -> None:
        """A splice()-only reader moves no bytes by calls: walk the namespace of each connection
        opened. In the interval path's thread only (SpliceClaims is not for two threads)."""
        if self.splice is not None:
            for e in events:
                if e.kind == "open":
                    self.splice.note(e.netns, e.owner_tgid)

    def poll_events(self, timeout_ms: int) -> list[ConnEvent]:
        """All events, waiting up to timeout_ms for the first (the live pump's thread only)."""
        if self._events is None:
            return []
        return [self._decode_event(raw) for raw in self._events.poll(timeout_ms)]

    def _decode_event(self, raw: bytes) -> ConnEvent:
        (ts_ns, cookie, open_ns, tx_bytes, rx_bytes, laddr, raddr, netns, owner_tgid, tgid, family, lport, rport,
         type_, initiator, _oldstate, protocol, flags) = abi.EVENT.unpack_from(raw)  # fmt: skip
        kind = _EVENT_KINDS.get(type_, "close")
        return ConnEvent(
            kind, ts_ns, cookie, family, laddr, lport, raddr, rport, netns, owner_tgid, initiator, open_ns, tgid,
            protocol, tx_bytes, rx_bytes, bool(flags & _TOTALS), bool(flags & _RX),
        )  # fmt: skip

    def read_dns(self) -> list[DnsCapture]:
        """DNS answers read by processes since the last call (see ss_dns_event)."""
        if self._dns_events is None:
            return []
        out = []
        for raw in self._dns_events.consume():
            ts_ns, cookie, tgid, netns, length, captured, protocol, _ = abi.DNS_HEAD.unpack_from(raw)
            data = raw[abi.DNS_HEAD.size : abi.DNS_HEAD.size + min(captured, abi.SS_DNS_MAX)]
            out.append(DnsCapture(ts_ns, cookie, tgid, netns, protocol, length, bytes(data)))
        return out

    def read_flows(self) -> tuple[float, list[FlowRow], Counters]:
        """Swap the active counter map and drain the other one.

        Returns (seconds since the previous read, flows, counter deltas).
        The update of the map-in-map slot returns only after every running
        program finished, so the drained map is complete and stays untouched.
        """
        if self._obj is None:
            raise CollectorError("collector is not started")
        idle = 1 - self._active
        if self.splice is not None:
            # TCP bytes read without a receive call (splice) go into the active map, read below.
            self.splice.run()

        # The hot set first: the swap of ss_flows then waits for every running program (an RCU
        # grace period), those that still count into the hot set read below included. A program
        # that sees the new hot set and the old flows, or the reverse, moves counts between two
        # maps that are both read only after that wait.
        self._map(".data.hotset").update(ctypes.c_uint32(0), ctypes.c_uint32(idle * abi.HOT_SLOTS))
        self._map("ss_flows").update(
            ctypes.c_uint32(0), ctypes.c_int32(self._map(("ss_flows_a", "ss_flows_b")[idle]).fd)
        )
        now = time.monotonic()
        value_len = ((ctypes.sizeof(abi.FlowVal) + 7) // 8 * 8) * self._ncpu
        keys, values, count = self._map(("ss_flows_a", "ss_flows_b")[self._active]).drain(value_len)
        flows = _decode_flows(keys, values, count, self._ncpu)
        flows.extend(self._drain_hot(self._active * abi.HOT_SLOTS))
        self._active = idle
        elapsed = now - self._last_read
        self._last_read = now
        return elapsed, flows, self._stats_delta()

    def _hot_slot(self, slot: int) -> list[abi.Hot]:
        """One hot slot on every CPU; empty when no CPU ever used it (all zeros: nothing to read)."""
        size = ctypes.sizeof(abi.Hot)  # a multiple of 8, as per-CPU values are laid out
        buf = ctypes.create_string_buffer(size * self._ncpu)
        if not self._map("ss_hot").lookup_into(ctypes.c_uint32(slot), buf) or not any(buf.raw):
            return []
        return [abi.Hot.from_buffer_copy(buf.raw, cpu * size) for cpu in range(self._ncpu)]

    def _drain_hot(self, first: int) -> list[RawFlow]:
        """What each CPU's hot slots of the set from `first` gathered; then zero them for their next turn."""
        zeros = ctypes.create_string_buffer(ctypes.sizeof(abi.Hot) * self._ncpu)
        out = []
        for slot in range(first, first + abi.HOT_SLOTS):
            hots = self._hot_slot(slot)
            if not hots:
                continue  # an unused slot: nothing to read or zero
            for h in hots:
                v = h.val
                if v.tx_calls or v.rx_calls or v.rx_bytes:  # a slot's key is connected: no datagram peer
                    out.append(RawFlow(h.cookie, h.tgid, NO_ADDR, 0, v.tx_bytes, v.rx_bytes, v.tx_calls, v.rx_calls))
            self._map("ss_hot").update(ctypes.c_uint32(slot), zeros)
        return out

    def hot_slots(self) -> list[abi.Hot]:
        """The occupied hot slots of every CPU, both sets, as they are now (before a read drains
        them): whether the fast path tells threads by their stacks here (Hot.ident) is seen in them."""
        return [h for slot in range(2 * abi.HOT_SLOTS) for h in self._hot_slot(slot) if h.cookie]

    def _stats_delta(self) -> Counters:
        buf = ctypes.create_string_buffer(ctypes.sizeof(abi.Stats) * self._ncpu)
        if not self._map("ss_stats").lookup_into(ctypes.c_uint32(0), buf):
            return Counters()
        total = _sum_percpu(buf.raw, abi.SS_STAT_MAX, self._ncpu)
        d = [t - p for t, p in zip(total, self._prev_stats, strict=True)]
        self._prev_stats = total
        missed = self._kretprobes.missed() if self._kretprobes is not None else 0
        s = abi.Stat
        # Calls the kprobe group could not count: returns the kernel's kretprobe instances ran
        # out for, and entries that found no task storage slot to stash their socket in.
        calls_missed = missed - self._prev_missed + d[s.CALLS_UNSTASHED]
        self._prev_missed = missed
        return Counters(
            dropped_events=d[s.DROPPED_EVENTS] + calls_missed,
            calls_missed=calls_missed,
            dropped_bytes=d[s.DROPPED_BYTES],
            sock_info_full=d[s.SOCK_INFO_FULL],
            proc_info_full=d[s.PROC_INFO_FULL],
            peek_skipped=d[s.PEEK_SKIPPED],
            events_lost=d[s.EVENTS_LOST],
            dns_lost=d[s.DNS_LOST],
            dns_unread=d[s.DNS_UNREAD],
        )

    def forget_udp_flow(self, cookie: int, tgid: int, raddr: str | None, rport: int | None) -> None:
        """A UDP flow ended (user space's idle rule): its next datagram is announced as a new
        udp_start. Its key names the peer for an unconnected socket, none for a connected one."""
        seen = self._map("ss_udp_seen")
        seen.delete(abi.FlowKey(cookie=cookie, tgid=tgid))
        if raddr and rport:
            ip = ipaddress.ip_address(raddr)
            raw = (V4MAPPED_PREFIX + ip.packed) if ip.version == 4 else ip.packed
            seen.delete(abi.FlowKey(cookie=cookie, tgid=tgid, rport=rport, raddr=(ctypes.c_uint8 * 16)(*raw)))

    def stat_total(self, stat: abi.Stat) -> int:
        """One kernel counter's total since load (summed over CPUs); for the live pump, which keeps
        its own previous value (the interval path's deltas are _stats_delta's)."""
        buf = ctypes.create_string_buffer(ctypes.sizeof(abi.Stats) * self._ncpu)
        if not self._map("ss_stats").lookup_into(ctypes.c_uint32(0), buf):
            return 0
        return _sum_percpu(buf.raw, abi.SS_STAT_MAX, self._ncpu)[stat]

    def sock_facts(self, cookie: int) -> SockFacts | None:
        si = abi.SockInfo()
        if not self._map("ss_socks").lookup_into(ctypes.c_uint64(cookie), si):
            return None
        return SockFacts(
            cookie=cookie,
            family=si.family,
            protocol=si.protocol,
            sock_type=si.type,
            laddr=bytes(si.laddr),
            lport=si.lport,
            raddr=bytes(si.raddr),
            rport=si.rport,
            state=si.state,
            netns=si.netns,
            open_ns=si.open_ns,
            initiator=si.initiator,
            owner_tgid=si.owner_tgid,
            ifindex=si.ifindex,
        )

    def proc_record(self, tgid: int) -> bytes | None:
        """The kernel's record of a process as it is stored (see proc_facts): the live pump keeps
        what it decoded per record, so an unchanged one costs one lookup."""
        pi = abi.ProcInfo()
        if not self._map("ss_procs").lookup_into(ctypes.c_uint32(tgid), pi):
            return None
        return bytes(pi)

    def proc_facts(self, tgid: int, raw: bytes | None = None) -> ProcFacts | None:
        if raw is None:
            raw = self.proc_record(tgid)
            if raw is None:
                return None
        pi = abi.ProcInfo.from_buffer_copy(raw)
        raw_args = bytes(pi.args)[: pi.args_len]
        args = tuple(decode_untrusted(a) for a in raw_args.split(b"\0") if a)
        return ProcFacts(
            tgid=tgid,
            start_ns=pi.start_ns,
            comm=_cstr(bytes(pi.comm)),
            exe_name=_cstr(bytes(pi.exe)),
            args=args,
            uid=pi.uid,
            gid=pi.gid,
            ppid=pi.ppid,
            cgroup_id=pi.cgroup_id,
            parent_comm=_cstr(bytes(pi.pcomm)),
            netns=pi.netns,
        )
