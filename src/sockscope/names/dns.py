"""DNS answers as processes read them: parsed with dnspython, never by hand.

Everything here comes from packets anybody can send: a parse that fails for any reason is a
malformed answer (counted), never an exception for the caller, and never a name."""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype

from sockscope.collector.addresses import V4MAPPED_PREFIX
from sockscope.lru import LruDict

MAX_CHAIN = 16  # CNAME hops followed: a loop or a longer chain stops there
N = TypeVar("N", bound=Hashable)  # a name: dnspython's, or text


@dataclass(frozen=True, slots=True)
class Resolved:
    """One address of an answer: the name the program asked for and the CNAME chain to it."""

    addr: bytes  # 16 bytes, IPv4 v4-mapped (as the kernel side keys peers)
    name: str
    chain: tuple[str, ...]  # CNAME targets from the name asked for to the address's owner
    ttl: int


def _text(name: dns.name.Name) -> str:
    # dnspython escapes what is not printable ASCII in a label (\\DDD): text, never raw bytes.
    return name.to_text(omit_final_dot=True)


def _addr16(rdtype: int, address: str) -> bytes:
    ip = ipaddress.ip_address(address)
    return V4MAPPED_PREFIX + ip.packed if rdtype == dns.rdatatype.A else ip.packed


def cname_chain(asked: N, cnames: Mapping[N, N]) -> tuple[N, list[N]]:
    """Follow CNAMEs from the name asked for: (the owner the addresses must have, the chain to
    it). A loop, or a chain longer than MAX_CHAIN, stops where it stops."""
    chain: list[N] = []
    owner = asked
    while owner in cnames and len(chain) < MAX_CHAIN:
        owner = cnames[owner]
        if owner in chain or owner == asked:
            break
        chain.append(owner)
    return owner, chain


def parse_answer(wire: bytes) -> list[Resolved] | None:
    """The addresses an answer gives for its question, or None when it is not a well-formed
    response. An answer with no address (NXDOMAIN, only a CNAME, a query) gives []."""
    try:
        msg = dns.message.from_wire(wire, ignore_trailing=True, raise_on_truncation=False)
        if not msg.flags & dns.flags.QR or len(msg.question) != 1:
            return None if not msg.flags & dns.flags.QR else []
        asked = msg.question[0].name
        cnames: dict[dns.name.Name, dns.name.Name] = {}
        for rrset in msg.answer:
            if rrset.rdtype == dns.rdatatype.CNAME and len(rrset):
                cnames.setdefault(rrset.name, rrset[0].target)
        owner, chain = cname_chain(asked, cnames)
        out = []
        for rrset in msg.answer:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and rrset.name == owner:
                for rd in rrset:
                    out.append(Resolved(_addr16(rrset.rdtype, rd.address), _text(asked),
                                        tuple(_text(c) for c in chain), int(rrset.ttl)))  # fmt: skip
        return out
    except Exception:  # hostile input: any failure of the parser is a malformed answer
        return None


class TcpStreams:
    """DNS over TCP: each message comes with a 2-byte length, and a program may read it in
    pieces (glibc reads the length, then the message). Per socket, the bytes read so far;
    at most `limit` sockets and `max_bytes` each (a stream that overflows is dropped)."""

    def __init__(self, limit: int = 256, max_bytes: int = 2 + 65535) -> None:
        self._bufs: LruDict[int, bytearray] = LruDict(limit)
        self.max_bytes = max_bytes
        self.broken = 0  # streams given up: a piece not captured whole, or too long

    def feed(self, cookie: int, data: bytes, whole: bool) -> Iterator[bytes]:
        """Messages completed by this piece of the stream."""
        if not whole:  # a read longer than the kernel copies: the stream cannot be followed
            if self._bufs.pop(cookie, None) is not None or data:
                self.broken += 1
            return
        buf = self._bufs.get(cookie)
        if buf is None:
            buf = bytearray()
        buf += data
        while len(buf) >= 2:
            n = int.from_bytes(buf[:2], "big")
            if len(buf) < 2 + n:
                break
            yield bytes(buf[2 : 2 + n])
            del buf[: 2 + n]
        if not buf:
            self._bufs.pop(cookie, None)
        elif len(buf) > self.max_bytes:
            self._bufs.pop(cookie, None)
            self.broken += 1
        else:
            self._bufs[cookie] = buf
