"""Addresses as the kernel side stores them (16 bytes, IPv4 as v4-mapped) to text."""

from __future__ import annotations

import functools
from ipaddress import IPv4Address, IPv6Address

V4MAPPED_PREFIX = bytes(10) + b"\xff\xff"
AF_INET = 2
AF_INET6 = 10


def is_v4mapped(raw: bytes) -> bool:
    return raw[:12] == V4MAPPED_PREFIX


_ANY6 = bytes(16)
_ANY4 = V4MAPPED_PREFIX + bytes(4)


def is_unspecified(raw: bytes) -> bool:
    return raw == _ANY6 or raw == _ANY4  # constants: asked per connection made


@functools.lru_cache(maxsize=16384)  # every connection's two addresses, every interval: few distinct ones
def addr_text(raw: bytes) -> str:
    """Dotted quad for IPv4 (mapped or not), compressed form for IPv6."""
    if len(raw) != 16:
        raise ValueError(f"address must be 16 bytes, got {len(raw)}")
    if is_v4mapped(raw):
        return str(IPv4Address(raw[12:]))
    return str(IPv6Address(raw))


def wire_family(sock_family: int, *addrs: bytes) -> tuple[int, bool]:
    """(4 or 6, v4mapped): the family on the wire. An IPv6 socket talking to an
    IPv4 peer uses v4-mapped addresses: it is IPv4 traffic, flagged as mapped."""
    if sock_family == AF_INET:
        return 4, False
    known = [a for a in addrs if not is_unspecified(a)]
    if known and all(is_v4mapped(a) for a in known):
        return 4, True
    return 6, False
