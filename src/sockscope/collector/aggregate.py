"""Join one interval's raw flows with socket and process facts: pure, no I/O.

Several kernel keys can describe one connection (a connected UDP socket that
also names its peer in sendto(), say); they merge here on the endpoint.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable

from sockscope.collector.addresses import addr_text, is_unspecified, wire_family
from sockscope.collector.identity import ProcessIdentity
from sockscope.collector.model import NO_ADDR, ConnectionSample, FlowRow, ProcessSample, SockFacts
from sockscope.lru import FifoDict

IPPROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite", 255: "raw"}
SOCK_DGRAM = 2
SOCK_RAW = 3
AF_PACKET = 17
IPPROTO_TCP = 6

# What one counted byte is, per kind of socket: the figure is what the send/receive call
# returned, and that differs by socket type.
COUNTS = {
    "payload": "application payload (TCP, UDP)",
    "icmp-message": "ICMP header (8 bytes) plus payload (ping sockets)",
    "raw-ip": "sent: what the program wrote; received: the whole IP packet, header included for IPv4",
    "frame": "whole link-layer frames, Ethernet header included (packet sockets)",
}


def counts_kind(facts: SockFacts) -> str:
    if facts.family == AF_PACKET:
        return "frame"
    if facts.sock_type == SOCK_RAW:
        return "raw-ip"
    if facts.protocol in (1, 58) and facts.sock_type == SOCK_DGRAM:
        return "icmp-message"
    return "payload"


TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}
INIT_REMOTE = 2  # SS_INIT_REMOTE: the peer connected to us
INITIATORS = {1: "local", INIT_REMOTE: "remote"}


def is_tcp(facts: SockFacts | None) -> bool:
    """A TCP socket's facts (a packet socket's protocol field is an ethertype: 6 is not TCP there)."""
    return facts is not None and facts.protocol == IPPROTO_TCP and facts.family != AF_PACKET


def proto_name(facts: SockFacts) -> str:
    if facts.family == AF_PACKET:
        return "packet"
    if facts.sock_type == SOCK_RAW:
        return "raw"
    return IPPROTO_NAMES.get(facts.protocol, f"ip{facts.protocol}")


def state_name(facts: SockFacts) -> str | None:
    if facts.family == AF_PACKET or facts.sock_type == SOCK_RAW:
        return None
    if facts.protocol == 6:
        return TCP_STATES.get(facts.state, str(facts.state))
    # Datagram sockets: the kernel marks a connect()ed one ESTABLISHED; `ss` calls the rest UNCONN.
    return "ESTABLISHED" if facts.state == 1 else "UNCONN"


ConnKey = tuple[int, bytes, int]


def _connection(facts: SockFacts | None, cookie: int, raddr: bytes, rport: int) -> ConnectionSample:
    known_peer = not (is_unspecified(raddr) and rport == 0)
    if facts is None:
        # Facts evicted or never stored (counted in sock_info_full): bytes still count.
        return ConnectionSample(
            proto="?",
            family=wire_family(10, raddr)[0] if known_peer else 0,
            laddr=None,
            lport=None,
            raddr=addr_text(raddr) if known_peer else None,
            rport=rport if known_peer else None,
            state=None,
            cookie=cookie,
        )
    if facts.family == AF_PACKET:
        return ConnectionSample(
            proto="packet",
            family=0,
            laddr=None,
            lport=None,
            raddr=None,
            rport=None,
            state=None,
            cookie=cookie,
            netns=facts.netns,
            counts="frame",
            ifindex=facts.ifindex,
        )
    family, mapped = wire_family(facts.family, facts.laddr, raddr)
    raw_or_ping = facts.sock_type == SOCK_RAW or facts.protocol in (1, 58)
    return ConnectionSample(
        proto=proto_name(facts),
        family=family,
        laddr=addr_text(facts.laddr),
        # Ping and raw sockets have no ports (a ping socket's "port" is its ICMP id).
        lport=None if raw_or_ping else facts.lport,
        raddr=addr_text(raddr) if known_peer and not is_unspecified(raddr) else None,
        rport=None if raw_or_ping or not known_peer else rport,
        state=state_name(facts),
        cookie=cookie,
        netns=facts.netns,
        v4mapped=mapped,
        initiator=INITIATORS.get(facts.initiator),
        counts=counts_kind(facts),
    )


def due(now: float, period: float, cookie: int) -> float:
    """When something about a socket is to be looked at again: after `period` on average, at a
    time of its own (0.5 to 1.5 periods), so sockets that appeared together do not all come due
    in the same interval."""
    return now + period * (0.5 + cookie % 997 / 997)


_CONN_FIELDS = tuple(f.name for f in dataclasses.fields(ConnectionSample))
# How long a connection's template is trusted (spread per socket, see `due`). A TCP socket's
# facts change only with the open and close events, which drop its template at once, and a name
# learned for its peer later drops it too (Templates.rename): its period only bounds what
# nothing announces (a name evicted from the caches). A UDP socket may connect() at any time.
TEMPLATE_TTL = 5.0
TEMPLATE_TTL_TCP = 30.0
RENAMED_LIMIT = 65536  # peers renamed within a template period; past it every template is remade

# A peer's name: (the name asked for, its CNAME chain, where it came from).
Named = tuple[str, tuple[str, ...], str]
# (netns, tgid, peer address, accepted: the peer connected to us) -> its name, if resolved
Namer = Callable[[int, int, bytes, bool], Named | None]
# (trusted until, the connection's key, its fields before any byte is added, the facts and the
# name they were made from, when it was made)
Made = tuple[float, ConnKey, tuple[object, ...], SockFacts | None, Named | None, float]
# A flow key as Templates keeps it: the cookie, for one that names no peer; else (cookie, peer, port).
RawKey = int | ConnKey


class Templates:
    """What a flow key (cookie, and the peer as the kernel gave it) makes: the connection's key
    and fields, kept from one interval to the next so that the text of its addresses, its names
    and its family come once per socket, not once per interval. Trusted for about `ttl` seconds
    (spread per socket) without asking for the socket's facts; then made again only if the facts
    are another object (TCP: `tcp_ttl`). At most `limit` kept (oldest first out)."""

    def __init__(
        self, limit: int, ttl: float = TEMPLATE_TTL, namer: Namer | None = None, tcp_ttl: float | None = None
    ) -> None:
        # Keyed by the cookie alone for a flow key that names no peer (a connected socket's, the
        # most of them): an int hashes and compares cheaper than the key's tuple, per flow.
        self.made: FifoDict[RawKey, Made] = FifoDict(limit)
        self.ttl = ttl
        self.tcp_ttl = ttl if tcp_ttl is None else tcp_ttl
        self.namer = namer
        # Peer address -> when its name changed, oldest first; kept a template period (older
        # templates are due by then anyway). build_processes remakes a template made before.
        self.renamed: dict[bytes, float] = {}

    def rename(self, addrs: set[bytes] | None, now: float) -> None:
        """These peers' names may have changed at `now` (None: any peer's): the templates made
        before are made again when next used."""
        renamed = self.renamed
        if addrs is None or len(renamed) + len(addrs) > RENAMED_LIMIT:
            self.made.clear()
            renamed.clear()
            return
        for addr in addrs:
            renamed.pop(addr, None)  # to the end: the dict stays in time order
            renamed[addr] = now
        horizon = now - 1.5 * max(self.ttl, self.tcp_ttl)
        while renamed:
            addr, at = next(iter(renamed.items()))
            if at >= horizon:
                break
            del renamed[addr]

    def forget(self, cookie: int) -> None:
        """The socket's facts changed (a TCP open or close): ask again next time."""
        self.made.pop(cookie, None)

    def make(self, raw: RawKey, facts: SockFacts | None, old: Made | None, now: float, tgid: int) -> Made:
        cookie, raddr, rport = (raw, NO_ADDR, 0) if isinstance(raw, int) else raw
        if raddr == NO_ADDR:  # a connected socket's peer is in its facts
            raddr, rport = (facts.raddr, facts.rport) if facts is not None else (NO_ADDR, 0)
        named = None
        if self.namer is not None and not is_unspecified(raddr):
            accepted = facts is not None and facts.initiator == INIT_REMOTE
            named = self.namer(facts.netns if facts is not None else 0, tgid, raddr, accepted)
        if old is not None and old[3] is facts and old[4] == named:
            key, fields = old[1], old[2]
        else:
            key = (cookie, raddr, rport)
            conn = _connection(facts, cookie, raddr, rport)
            if named is not None:
                conn.name, conn.cname, conn.name_source = named
            fields = tuple(getattr(conn, f) for f in _CONN_FIELDS)
        ttl = self.tcp_ttl if is_tcp(facts) else self.ttl
        made = self.made[raw] = (due(now, ttl, cookie), key, fields, facts, named, now)
        return made


def build_processes(
    flows: Iterable[FlowRow],
    sock_facts: Callable[[int], SockFacts | None],
    identity: Callable[[int], ProcessIdentity],
    templates: Templates | None = None,
    now: float = 0.0,
) -> list[ProcessSample]:
    """Group flows by process, then by connection; busiest first. `templates` (kept by the caller
    from one interval to the next, with `now` on a monotonic clock) saves making each connection
    from its socket's facts every interval; without, the facts are asked once per flow key.

    Runs per flow, tens of thousands a second on a busy host: one pass with local names."""
    if templates is None:
        templates, now = Templates(1 << 62, ttl=math.inf), 0.0
    made_of = templates.made.get
    renamed = templates.renamed
    by_proc: dict[int, dict[ConnKey, ConnectionSample]] = {}
    for cookie, tgid, raddr, rport, tx, rx, txc, rxc in flows:
        raw = cookie if raddr == NO_ADDR and not rport else (cookie, raddr, rport)
        made = made_of(raw)
        if made is None or now >= made[0] or (renamed and renamed.get(made[1][1], -1.0) > made[5]):
            made = templates.make(raw, sock_facts(cookie), made, now, tgid)
        conns = by_proc.get(tgid)
        if conns is None:
            conns = by_proc[tgid] = {}
        conn = conns.get(made[1])
        if conn is None:
            conn = conns[made[1]] = ConnectionSample(*made[2])  # type: ignore[arg-type]
        conn.tx_bytes += tx
        conn.rx_bytes += rx
        conn.tx_calls += txc
        conn.rx_calls += rxc

    out: list[ProcessSample] = []
    for tgid, conns in by_proc.items():
        ident = identity(tgid)
        listed = sorted(conns.values(), key=_busiest)
        tx = rx = txc = rxc = 0
        for c in listed:
            tx += c.tx_bytes
            rx += c.rx_bytes
            txc += c.tx_calls
            rxc += c.rx_calls
        out.append(
            ProcessSample(
                pid=tgid,
                comm=ident.comm,
                exe=ident.exe,
                cmdline=ident.cmdline,
                uid=ident.uid,
                user=ident.user,
                ppid=ident.ppid,
                start_ns=ident.start_ns,
                alive=ident.alive,
                cgroup=ident.cgroup,
                unit=ident.unit,
                container=ident.container,
                netns=ident.netns,
                parent_comm=ident.parent_comm,
                parent_exe=ident.parent_exe,
                tx_bytes=tx,
                rx_bytes=rx,
                tx_calls=txc,
                rx_calls=rxc,
                connections=listed,
            )
        )
    out.sort(key=lambda p: (-(p.tx_bytes + p.rx_bytes), p.pid))
    return out


def _busiest(c: ConnectionSample) -> int:
    """Most bytes first, then the lowest cookie: (-(tx + rx), cookie) as one int, which a cookie
    (64 bits) cannot overflow. Sorting by one int compares at C speed; tuples, mostly tied on
    bytes, cost a generic compare of their cookies each (a tenth of the grouping's time)."""
    return c.cookie - ((c.tx_bytes + c.rx_bytes) << 64)
