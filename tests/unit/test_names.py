"""Names from DNS answers: parsing (hostile input included), DNS over TCP in pieces, and which
name a connection gets."""

from __future__ import annotations

import random
import struct

import dns.message
import dns.rrset
import pytest

from sockscope.collector.model import DnsCapture
from sockscope.names.cache import NameCache
from sockscope.names.dns import TcpStreams, parse_answer

V4 = bytes(10) + b"\xff\xff"


def v4(a: str) -> bytes:
    return V4 + bytes(int(x) for x in a.split("."))


def answer(qname: str = "api.example.com", *records: tuple[str, str, str], rtype: str = "A") -> bytes:
    r = dns.message.make_response(dns.message.make_query(qname, rtype))
    for name, kind, value in records:
        r.answer.append(dns.rrset.from_text(name, 300 if kind == "CNAME" else 60, "IN", kind, value))
    return r.to_wire()


CHAIN = answer("api.example.com", ("api.example.com.", "CNAME", "edge.example.net."),
               ("edge.example.net.", "A", "198.18.0.7"), ("edge.example.net.", "A", "198.18.0.8"))  # fmt: skip


def test_addresses_with_the_name_asked_for_and_the_chain() -> None:
    got = parse_answer(CHAIN)
    assert got is not None
    assert [(r.addr, r.name, r.chain, r.ttl) for r in got] == [
        (v4("198.18.0.7"), "api.example.com", ("edge.example.net",), 60),
        (v4("198.18.0.8"), "api.example.com", ("edge.example.net",), 60),
    ]
    six = parse_answer(answer("v6.example.com", ("v6.example.com.", "AAAA", "fd00::7"), rtype="AAAA"))
    assert six is not None and six[0].addr == bytes.fromhex("fd00" + "00" * 13 + "07")


def test_records_off_the_chain_give_no_name() -> None:
    # An address for another owner than the chain's end: an injected extra, not an answer.
    got = parse_answer(answer("api.example.com", ("evil.example.org.", "A", "198.18.0.66")))
    assert got == []


def test_a_cname_loop_stops() -> None:
    loop = [("a.example.com.", "CNAME", "b.example.com."), ("b.example.com.", "CNAME", "a.example.com.")]
    got = parse_answer(answer("a.example.com", *loop, ("a.example.com.", "A", "198.18.0.1")))
    assert got is not None and all(len(r.chain) <= 2 for r in got)


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x12\x34",
        CHAIN[:20],  # truncated
        CHAIN[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, 1, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",  # pointer loop
        CHAIN[:2] + b"\x81\x80" + struct.pack("!HHHH", 0, 65535, 65535, 65535),  # counts with no records
        dns.message.make_query("api.example.com", "A").to_wire(),  # a query, not an answer
    ],
)
def test_malformed_answers_give_no_name(wire: bytes) -> None:
    assert parse_answer(wire) is None


def test_random_bytes_never_raise() -> None:
    rng = random.Random(13)
    for _ in range(2000):
        n = rng.randrange(0, 600)
        wire = bytes(rng.getrandbits(8) for _ in range(n))
        mutated = bytearray(CHAIN)
        for _ in range(rng.randrange(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
        for w in (wire, bytes(mutated)):
            got = parse_answer(w)
            assert got is None or isinstance(got, list)


def test_hostile_labels_come_out_as_escaped_text() -> None:
    import dns.name

    evil = dns.name.Name([b"\x1b[31m<b>evil\xff\x00", b"example", b"com", b""])
    r = dns.message.make_response(dns.message.make_query(evil, "A"))
    r.answer.append(dns.rrset.from_text(evil, 60, "IN", "A", "198.18.0.9"))
    got = parse_answer(r.to_wire())
    assert got is not None and len(got) == 1
    assert got[0].name.isascii() and "\x1b" not in got[0].name and "\x00" not in got[0].name
    assert got[0].name.startswith("\\027[31m")  # dnspython's \DDD escape


def test_tcp_stream_in_pieces() -> None:
    msg = CHAIN
    framed = struct.pack("!H", len(msg)) + msg
    s = TcpStreams()
    assert list(s.feed(1, framed[:2], True)) == []  # the length, read alone (glibc)
    assert list(s.feed(1, framed[2:30], True)) == []
    assert list(s.feed(1, framed[30:], True)) == [msg]
    two = framed + framed
    assert list(s.feed(2, two, True)) == [msg, msg]
    assert list(s.feed(3, framed[:10], False)) == [] and s.broken == 1  # not captured whole


def cap(tgid: int, wire: bytes, netns: int = 7, protocol: int = 17) -> DnsCapture:
    return DnsCapture(0, 99, tgid, netns, protocol, len(wire), wire)


def test_a_connection_takes_its_own_process_name_then_a_parents_then_the_namespaces() -> None:
    c = NameCache()
    other = answer("other.example.com", ("other.example.com.", "A", "198.18.0.7"))
    c.learn([cap(100, CHAIN), cap(200, other)])
    parents = {300: 100, 100: 1}
    addr = v4("198.18.0.7")
    own = c.lookup(7, 200, addr, parents.get)
    assert own is not None and (own.name, own.source) == ("other.example.com", "process")
    child = c.lookup(7, 300, addr, parents.get)  # resolved by its parent before fork
    assert child is not None and (child.name, child.chain, child.source) == (
        "api.example.com",
        ("edge.example.net",),
        "process",
    )
    stranger = c.lookup(7, 400, addr, parents.get)  # the newest in the namespace
    assert stranger is not None and (stranger.name, stranger.source, stranger.tgid) == (
        "other.example.com",
        "namespace",
        200,
    )
    assert c.lookup(8, 400, addr, parents.get) is None  # another namespace
    assert c.lookup(7, 400, addr, parents.get, namespace=False) is None  # an accepted connection
    assert c.stats.answers == 2 and c.stats.malformed == 0


def test_malformed_is_counted_and_the_cache_is_bounded() -> None:
    c = NameCache(limit=4)
    c.learn([cap(1, b"garbage")])
    assert c.stats.malformed == 1
    for i in range(10):
        c.learn([cap(1, answer(f"h{i}.example.com", (f"h{i}.example.com.", "A", f"198.18.1.{i}")))])
    assert c.stats.evicted == 2 * 6  # per process and per namespace, 6 over the bound each
    assert c.lookup(7, 1, v4("198.18.1.9"), lambda pid: None) is not None
    assert c.lookup(7, 1, v4("198.18.1.0"), lambda pid: None) is None


def test_addresses_whose_name_changed_are_taken_once_and_a_repeated_answer_changes_none() -> None:
    from sockscope.names.dns import Resolved

    c = NameCache()
    c.learn([cap(100, CHAIN)])
    assert c.take_fresh() == {v4("198.18.0.7"), v4("198.18.0.8")}
    assert c.take_fresh() == set()
    c.learn([cap(100, CHAIN)])  # the same answer again: no name changed
    assert c.take_fresh() == set()
    c.learn([cap(200, CHAIN)])  # another process got it: its connections' name (own) is new
    assert c.take_fresh() == {v4("198.18.0.7"), v4("198.18.0.8")}
    other = answer("other.example.com", ("other.example.com.", "A", "198.18.0.8"))
    c.learn([cap(100, other)])
    assert c.take_fresh() == {v4("198.18.0.8")}
    c.learn_resolved(7, [Resolved(v4("198.18.0.9"), "r.example", (), 60)])
    c.learn_resolved(7, [Resolved(v4("198.18.0.9"), "r.example", (), 60)])
    assert c.take_fresh() == {v4("198.18.0.9")}


def test_fresh_addresses_past_their_bound_say_any() -> None:
    from sockscope.names.fresh import FreshAddresses

    f = FreshAddresses(limit=2)
    f.add(b"a")
    f.add(b"a")
    f.add(b"b")
    assert f.take() == {b"a", b"b"}
    for a in (b"a", b"b", b"c", b"d"):
        f.add(a)
    assert f.take() is None  # too many to say which
    assert f.take() == set()
