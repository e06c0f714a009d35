"""Python mirror of the records in bpf/sockscope.h (the one definition).

tests/unit/test_abi.py checks every size and offset here against the BTF of
the compiled object, so a change on one side without the other fails the suite.
"""

from __future__ import annotations

import ctypes
import struct
from ctypes import c_uint8, c_uint16, c_uint32, c_uint64
from enum import IntEnum, IntFlag

SS_COMM_LEN = 16
SS_EXE_LEN = 64
SS_ARGS_LEN = 256


class Dir(IntEnum):
    TX = 0
    RX = 1


class Initiator(IntEnum):
    UNKNOWN = 0
    LOCAL = 1
    REMOTE = 2


class Stat(IntEnum):
    DROPPED_EVENTS = 0
    DROPPED_BYTES = 1
    SOCK_INFO_FULL = 2
    PROC_INFO_FULL = 3
    PEEK_SKIPPED = 4
    EVENTS_LOST = 5
    DNS_LOST = 6
    DNS_UNREAD = 7
    CALLS_UNSTASHED = 8


class EventType(IntEnum):
    TCP_OPEN = 1
    TCP_CLOSE = 2
    TCP_LISTEN = 3
    TCP_END = 4
    UDP_START = 5


class EventFlags(IntFlag):
    TOTALS = 1
    RX = 2


SS_STAT_MAX = 9
SS_DNS_MAX = 2048
HOT_SLOTS = 64  # SS_HOT_SLOTS: slots per CPU in each of the two sets of the hot-key cache (ss_hot)
IDENT_NONE = 1  # SS_IDENT_NONE: a hot slot whose thread could not be told by its kernel stack


class FlowKey(ctypes.Structure):
    _fields_ = [
        ("cookie", c_uint64),
        ("tgid", c_uint32),
        ("rport", c_uint16),
        ("pad", c_uint16),
        ("raddr", c_uint8 * 16),
    ]


class FlowVal(ctypes.Structure):
    _fields_ = [
        ("tx_bytes", c_uint64),
        ("rx_bytes", c_uint64),
        ("tx_calls", c_uint64),
        ("rx_calls", c_uint64),
    ]


# FlowKey for the read path, which decodes tens of thousands a second: cookie, tgid, rport, pad, raddr.
FLOW_KEY = struct.Struct("=QIHH16s")


class Hot(ctypes.Structure):
    _fields_ = [
        ("cookie", c_uint64),
        ("ident", c_uint64),
        ("tgid", c_uint32),
        ("kind", c_uint32),
        ("scratch", c_uint64),
        ("val", FlowVal),
    ]


class SockInfo(ctypes.Structure):
    _fields_ = [
        ("cookie", c_uint64),
        ("open_ns", c_uint64),
        ("laddr", c_uint8 * 16),
        ("raddr", c_uint8 * 16),
        ("netns", c_uint32),
        ("owner_tgid", c_uint32),
        ("family", c_uint16),
        ("protocol", c_uint16),
        ("type", c_uint16),
        ("lport", c_uint16),
        ("rport", c_uint16),
        ("state", c_uint8),
        ("initiator", c_uint8),
        ("ifindex", c_uint32),
    ]


class ProcInfo(ctypes.Structure):
    _fields_ = [
        ("start_ns", c_uint64),
        ("cgroup_id", c_uint64),
        ("tgid", c_uint32),
        ("ppid", c_uint32),
        ("uid", c_uint32),
        ("gid", c_uint32),
        ("args_len", c_uint32),
        ("netns", c_uint32),
        ("comm", c_uint8 * SS_COMM_LEN),
        ("pcomm", c_uint8 * SS_COMM_LEN),
        ("exe", c_uint8 * SS_EXE_LEN),
        ("args", c_uint8 * SS_ARGS_LEN),
    ]


class Event(ctypes.Structure):
    _fields_ = [
        ("ts_ns", c_uint64),
        ("cookie", c_uint64),
        ("open_ns", c_uint64),
        ("tx_bytes", c_uint64),
        ("rx_bytes", c_uint64),
        ("laddr", c_uint8 * 16),
        ("raddr", c_uint8 * 16),
        ("netns", c_uint32),
        ("owner_tgid", c_uint32),
        ("tgid", c_uint32),
        ("family", c_uint16),
        ("lport", c_uint16),
        ("rport", c_uint16),
        ("type", c_uint8),
        ("initiator", c_uint8),
        ("oldstate", c_uint8),
        ("protocol", c_uint8),
        ("flags", c_uint8),
        ("pad", c_uint8 * 1),
    ]


class Stats(ctypes.Structure):
    _fields_ = [("v", c_uint64 * SS_STAT_MAX)]


class Config(ctypes.Structure):
    _fields_ = [
        ("capture_args", c_uint32),
        ("tcp_rx_by_seq", c_uint32),
        ("dns", c_uint32),
        ("live", c_uint32),
        ("claim_mask", c_uint32),
    ]


class DnsEvent(ctypes.Structure):
    _fields_ = [
        ("ts_ns", c_uint64),
        ("cookie", c_uint64),
        ("tgid", c_uint32),
        ("netns", c_uint32),
        ("len", c_uint32),
        ("captured", c_uint16),
        ("protocol", c_uint8),
        ("pad", c_uint8),
        ("data", c_uint8 * SS_DNS_MAX),
    ]


# The fields before data, unpacked from each record without copying its data twice.
DNS_HEAD = struct.Struct("=QQIIIHBB")
# struct ss_event as one unpack (the live pump decodes thousands a second): the fields of Event, in
# order, padding skipped. tests/unit/test_abi.py checks it against Event.
EVENT = struct.Struct("=QQQQQ16s16sIIIHHHBBBBBx")


# C struct name -> mirror, for the layout test.
MIRRORS: dict[str, type[ctypes.Structure]] = {
    "ss_flow_key": FlowKey,
    "ss_flow_val": FlowVal,
    "ss_hot": Hot,
    "ss_sock_info": SockInfo,
    "ss_proc_info": ProcInfo,
    "ss_stats": Stats,
    "ss_event": Event,
    "ss_config": Config,
    "ss_dns_event": DnsEvent,
}
