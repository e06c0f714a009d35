from __future__ import annotations

import ipaddress

import pytest

from sockscope.collector.addresses import addr_text, is_unspecified, wire_family


def v4(text: str) -> bytes:
    return ipaddress.IPv6Address("::ffff:" + text).packed


def v6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def test_text() -> None:
    assert addr_text(v4("198.18.0.2")) == "198.18.0.2"
    assert addr_text(v6("fd00::2")) == "fd00::2"
    assert addr_text(bytes(16)) == "::"


def test_wrong_length_rejected() -> None:
    with pytest.raises(ValueError):
        addr_text(b"\x7f\x00\x00\x01")


def test_unspecified() -> None:
    assert is_unspecified(bytes(16))
    assert is_unspecified(v4("0.0.0.0"))
    assert not is_unspecified(v4("127.0.0.1"))


def test_wire_family() -> None:
    assert wire_family(2, v4("127.0.0.1")) == (4, False)
    # IPv6 socket, IPv4 peer: IPv4 on the wire, flagged
    assert wire_family(10, bytes(16), v4("198.18.77.2")) == (4, True)
    assert wire_family(10, v6("fd00::1"), v6("fd00::2")) == (6, False)
    assert wire_family(10, bytes(16), bytes(16)) == (6, False)
