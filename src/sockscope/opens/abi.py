"""Mirror of bpf/opens.h: the record of one open, the stats, the settings written before load.
tests/unit/test_opens_abi.py checks it against the compiled object's BTF."""

from __future__ import annotations

import ctypes
import struct
from ctypes import c_char, c_int32, c_uint8, c_uint16, c_uint32, c_uint64
from enum import IntEnum, IntFlag

COMM_LEN = 16
NAME_MAX = 256
GIVEN_MAX = 1024
DEPTH = 48
DATA = 8192
AT_FDCWD = -100


class Call(IntEnum):
    OPEN = 0
    OPENAT = 1
    OPENAT2 = 2
    CREAT = 3
    URING = 4


class Base(IntEnum):
    NONE = 0
    FILE = 1
    DIRFD = 2
    CWD = 3


class Cut(IntFlag):
    GIVEN = 1
    DEEP = 2
    NAME = 4


class Stat(IntEnum):
    LOST = 0
    FILTERED = 1
    NOENTRY = 2


STAT_MAX = 3


class OpenEvent(ctypes.Structure):
    _fields_ = [
        ("ts_ns", c_uint64),
        ("cgroup_id", c_uint64),
        ("flags", c_uint64),
        ("tgid", c_uint32),
        ("tid", c_uint32),
        ("uid", c_uint32),
        ("mode", c_uint32),
        ("ret", c_int32),
        ("dirfd", c_int32),
        ("given_len", c_uint16),
        ("data_len", c_uint16),
        ("depth", c_uint8),
        ("call", c_uint8),
        ("base", c_uint8),
        ("cut", c_uint8),
        ("comm", c_char * COMM_LEN),
        ("data", c_char * DATA),
    ]


# The header as one unpack (an open storm is hundreds of thousands a second): the fields of
# OpenEvent before data, in order.
HEAD = struct.Struct("=QQQIIIIiiHHBBBB16s")


class Stats(ctypes.Structure):
    _fields_ = [("v", c_uint64 * STAT_MAX)]


class Config(ctypes.Structure):
    _fields_ = [
        ("tgid", c_uint32),
        ("uid", c_uint32),
        ("failed_only", c_uint32),
        ("filter_uid", c_uint32),
        ("comm", c_char * COMM_LEN),
        ("uring_cqe", c_uint32),
        ("pad", c_uint32),
    ]


MIRRORS: dict[str, type[ctypes.Structure]] = {
    "ss_open_event": OpenEvent,
    "ss_open_stats": Stats,
    "ss_open_config": Config,
}
