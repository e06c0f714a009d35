from __future__ import annotations

from sockscope.collector.aggregate import Templates, build_processes
from sockscope.collector.model import RawFlow, SockFacts
from tests.samples import ident, tcp_facts, udp_unconnected, v4, v6


def run(flows: list[RawFlow], socks: dict[int, SockFacts]):
    return build_processes(flows, socks.get, ident)


def test_tcp_connection_sums_and_endpoints() -> None:
    procs = run([RawFlow(1, 100, tx_bytes=7, rx_bytes=3, tx_calls=1, rx_calls=2)], {1: tcp_facts(1)})
    assert len(procs) == 1
    p = procs[0]
    assert (p.pid, p.comm, p.tx_bytes, p.rx_bytes, p.tx_calls, p.rx_calls) == (100, "curl", 7, 3, 1, 2)
    c = p.connections[0]
    assert (c.proto, c.family, c.laddr, c.lport, c.raddr, c.rport, c.state) == (
        "tcp",
        4,
        "198.18.0.1",
        40000,
        "198.18.0.2",
        443,
        "ESTABLISHED",
    )
    assert c.netns == 4026531840


def test_unconnected_udp_peers_are_separate_connections() -> None:
    flows = [
        RawFlow(5, 200, v4("198.18.0.53"), 53, tx_bytes=40, tx_calls=1),
        RawFlow(5, 200, v4("198.18.0.54"), 53, tx_bytes=41, tx_calls=1),
        RawFlow(5, 200, v4("198.18.0.53"), 53, rx_bytes=90, rx_calls=1),
    ]
    p = run(flows, {5: udp_unconnected(5)})[0]
    peers = {(c.raddr, c.rport): (c.tx_bytes, c.rx_bytes) for c in p.connections}
    assert peers == {("198.18.0.53", 53): (40, 90), ("198.18.0.54", 53): (41, 0)}
    assert {c.state for c in p.connections} == {"UNCONN"}
    assert p.tx_bytes == 81 and p.rx_bytes == 90


def test_connected_key_and_named_peer_merge_into_one_row() -> None:
    facts = SockFacts(9, 2, 17, 2, v4("198.18.0.1"), 5000, v4("198.18.0.2"), 53, 1)
    flows = [RawFlow(9, 1, tx_bytes=10), RawFlow(9, 1, v4("198.18.0.2"), 53, tx_bytes=5)]
    p = run(flows, {9: facts})[0]
    assert len(p.connections) == 1
    assert p.connections[0].tx_bytes == 15
    assert p.connections[0].state == "ESTABLISHED"


def test_v4_mapped_on_ipv6_socket_is_ipv4_and_flagged() -> None:
    flows = [RawFlow(3, 1, v4("198.18.77.2"), 9, tx_bytes=1), RawFlow(3, 1, v4("198.18.77.2"), 9, rx_bytes=2)]
    p = run(flows, {3: udp_unconnected(3, family=10)})[0]
    assert len(p.connections) == 1
    c = p.connections[0]
    assert (c.family, c.v4mapped, c.raddr, c.tx_bytes, c.rx_bytes) == (4, True, "198.18.77.2", 1, 2)


def test_ipv6_peer() -> None:
    facts = SockFacts(4, 10, 6, 1, v6("fd00::1"), 1234, v6("fd00::2"), 80, 1)
    c = run([RawFlow(4, 1, tx_bytes=1)], {4: facts})[0].connections[0]
    assert (c.family, c.laddr, c.raddr, c.v4mapped) == (6, "fd00::1", "fd00::2", False)


def test_unknown_peer_of_unconnected_socket_is_none() -> None:
    c = run([RawFlow(6, 1, rx_bytes=4)], {6: udp_unconnected(6)})[0].connections[0]
    assert c.raddr is None and c.rport is None
    assert c.laddr == "0.0.0.0"


def test_missing_facts_still_count_bytes() -> None:
    p = run([RawFlow(8, 1, tx_bytes=99)], {})[0]
    assert p.tx_bytes == 99
    assert p.connections[0].proto == "?"


def test_processes_sorted_busiest_first_and_facts_looked_up_once() -> None:
    calls: list[int] = []
    socks = {1: tcp_facts(1), 2: tcp_facts(2, lport=40001)}

    def lookup(cookie: int) -> SockFacts | None:
        calls.append(cookie)
        return socks.get(cookie)

    flows = [RawFlow(1, 10, tx_bytes=5), RawFlow(2, 20, tx_bytes=500), RawFlow(1, 10, rx_bytes=1)]
    procs = build_processes(flows, lookup, ident)
    assert [p.pid for p in procs] == [20, 10]
    assert sorted(calls) == [1, 2]


def test_raw_and_unknown_protocol_names() -> None:
    raw = SockFacts(7, 2, 253, 3, v4("0.0.0.0"), 0, bytes(16), 0, 7)
    icmp = SockFacts(8, 2, 1, 2, v4("0.0.0.0"), 0, bytes(16), 0, 7)
    procs = run([RawFlow(7, 1, tx_bytes=1), RawFlow(8, 1, tx_bytes=2)], {7: raw, 8: icmp})
    assert sorted(c.proto for c in procs[0].connections) == ["icmp", "raw"]


def test_what_a_byte_means_per_socket_kind() -> None:
    ping = SockFacts(11, 2, 1, 2, v4("198.18.0.1"), 77, v4("198.18.0.2"), 0, 1)
    raw = SockFacts(12, 10, 253, 3, bytes(16), 253, bytes(16), 0, 7)
    packet = SockFacts(13, 17, 0x0003, 3, bytes(16), 0, bytes(16), 0, 0, netns=5, ifindex=4)
    procs = run([RawFlow(11, 1, tx_bytes=64), RawFlow(12, 1, tx_bytes=2), RawFlow(13, 1, tx_bytes=60)],
                {11: ping, 12: raw, 13: packet})  # fmt: skip
    by_cookie = {c.cookie: c for c in procs[0].connections}
    p = by_cookie[11]
    assert (p.proto, p.counts, p.lport, p.rport, p.raddr, p.state) == (
        "icmp",
        "icmp-message",
        None,
        None,
        "198.18.0.2",
        "ESTABLISHED",
    )
    r = by_cookie[12]
    assert (r.proto, r.counts, r.lport, r.raddr, r.state) == ("raw", "raw-ip", None, None, None)
    k = by_cookie[13]
    assert (k.proto, k.counts, k.family, k.ifindex, k.netns, k.laddr, k.state) == (
        "packet",
        "frame",
        0,
        4,
        5,
        None,
        None,
    )


def test_templates_give_the_same_connections_and_follow_new_facts() -> None:
    templates = Templates(64, ttl=0.0)  # the facts asked every time
    facts = {1: tcp_facts(1), 2: udp_unconnected(2)}
    flows = [RawFlow(1, 100, tx_bytes=7), RawFlow(2, 100, v4("198.18.0.9"), 53, tx_bytes=5)]
    first = build_processes(flows, facts.get, ident, templates)
    assert len(templates.made) == 2
    again = build_processes(flows, facts.get, ident, templates)  # made from the templates
    assert again == first
    assert again[0].connections[0] is not first[0].connections[0]  # new rows, counters their own
    facts[1] = tcp_facts(1, state=8)  # new facts (CLOSE_WAIT): the template is made again
    changed = build_processes(flows, facts.get, ident, templates)
    by_cookie = {c.cookie: c for c in changed[0].connections}
    assert by_cookie[1].state == "CLOSE_WAIT" and by_cookie[2] == {c.cookie: c for c in first[0].connections}[2]


def test_templates_trust_their_facts_until_due_or_forgotten() -> None:
    templates = Templates(64, ttl=10.0)
    asked: list[int] = []
    facts = {1: tcp_facts(1)}

    def lookup(cookie: int) -> SockFacts | None:
        asked.append(cookie)
        return facts.get(cookie)

    flows = [RawFlow(1, 100, tx_bytes=7)]
    build_processes(flows, lookup, ident, templates, now=0.0)
    facts[1] = tcp_facts(1, state=8)
    again = build_processes(flows, lookup, ident, templates, now=4.9)  # before the earliest due time
    assert asked == [1] and again[0].connections[0].state == "ESTABLISHED"
    templates.forget(1)  # its TCP event came
    changed = build_processes(flows, lookup, ident, templates, now=5.0)
    assert asked == [1, 1] and changed[0].connections[0].state == "CLOSE_WAIT"
    build_processes(flows, lookup, ident, templates, now=5.0 + 15.1)  # past the latest due time
    assert asked == [1, 1, 1]


def test_connections_busiest_first_then_lowest_cookie_whatever_the_cookie() -> None:
    top, low, high = 2**64 - 1, 3, 2**63
    socks = {c: tcp_facts(c) for c in (top, low, high, 9)}
    flows = [
        RawFlow(top, 1, tx_bytes=5),
        RawFlow(high, 1, rx_bytes=5),
        RawFlow(9, 1, tx_bytes=1 << 40),
        RawFlow(low, 1, tx_bytes=2, rx_bytes=3),
    ]
    p = run(flows, socks)[0]
    assert [c.cookie for c in p.connections] == [9, low, high, top]


def test_a_flow_key_naming_no_peer_and_one_naming_a_port_only_are_one_connection() -> None:
    templates = Templates(64)
    flows = [RawFlow(1, 100, tx_bytes=7), RawFlow(1, 100, bytes(16), 5, rx_bytes=2)]
    for _ in range(2):  # made, then from the templates
        (c,) = build_processes(flows, {1: tcp_facts(1)}.get, ident, templates)[0].connections
        assert (c.raddr, c.rport, c.tx_bytes, c.rx_bytes) == ("198.18.0.2", 443, 7, 2)
        assert len(templates.made) == 2


def _named_templates(names: dict[bytes, str], asked: list[bytes], **kw: float) -> Templates:
    def namer(netns: int, tgid: int, addr: bytes, accepted: bool) -> tuple[str, tuple[str, ...], str] | None:
        asked.append(addr)
        name = names.get(addr)
        return None if name is None else (name, (), "process")

    return Templates(64, namer=namer, **kw)


def test_tcp_templates_are_trusted_for_the_tcp_period_and_others_for_the_short_one() -> None:
    asked: list[bytes] = []
    templates = _named_templates({}, asked, ttl=5.0, tcp_ttl=30.0)
    facts = {1: tcp_facts(1), 2: udp_unconnected(2)}
    flows = [RawFlow(1, 100, tx_bytes=1), RawFlow(2, 100, v4("198.18.0.9"), 53, tx_bytes=1)]
    build_processes(flows, facts.get, ident, templates, now=0.0)
    assert asked == [v4("198.18.0.2"), v4("198.18.0.9")]
    build_processes(flows, facts.get, ident, templates, now=7.6)  # past the UDP key's latest due time
    assert asked[2:] == [v4("198.18.0.9")]
    build_processes(flows, facts.get, ident, templates, now=14.9)  # the TCP key's earliest is 15 s
    assert asked[3:] == [v4("198.18.0.9")]
    build_processes(flows, facts.get, ident, templates, now=45.1)
    assert v4("198.18.0.2") in asked[4:]


def test_a_peer_renamed_after_its_template_was_made_shows_its_new_name_at_once() -> None:
    names: dict[bytes, str] = {}
    asked: list[bytes] = []
    templates = _named_templates(names, asked, tcp_ttl=30.0)
    facts = {1: tcp_facts(1), 3: tcp_facts(3, lport=40001)}
    facts[3] = SockFacts(3, 2, 6, 1, v4("198.18.0.1"), 40001, v4("198.18.0.3"), 443, 1, netns=4026531840)
    flows = [RawFlow(1, 100, tx_bytes=1), RawFlow(3, 100, tx_bytes=1)]
    first = build_processes(flows, facts.get, ident, templates, now=0.0)
    assert {c.name for c in first[0].connections} == {None}
    names[v4("198.18.0.2")] = "example.org"
    templates.rename({v4("198.18.0.2")}, now=1.0)
    asked.clear()
    again = build_processes(flows, facts.get, ident, templates, now=1.0)
    assert asked == [v4("198.18.0.2")]  # only the renamed peer's template was made again
    assert {c.cookie: c.name for c in again[0].connections} == {1: "example.org", 3: None}
    asked.clear()
    build_processes(flows, facts.get, ident, templates, now=2.0)  # made after the rename: trusted
    assert asked == []
    templates.rename(None, now=3.0)  # too many to say which: every template goes
    assert len(templates.made) == 0


def test_renamed_peers_are_kept_one_and_a_half_template_periods_and_bounded(monkeypatch) -> None:
    from sockscope.collector import aggregate

    templates = Templates(64, ttl=5.0, tcp_ttl=30.0)
    templates.rename({b"a" * 16}, now=0.0)
    templates.rename({b"b" * 16}, now=40.0)
    templates.rename({b"a" * 16}, now=44.0)  # again: moves to the end, with its new time
    assert list(templates.renamed.items()) == [(b"b" * 16, 40.0), (b"a" * 16, 44.0)]
    templates.rename(set(), now=85.5)  # 45 s (1.5 x 30) after b: it goes, a stays
    assert list(templates.renamed) == [b"a" * 16]
    monkeypatch.setattr(aggregate, "RENAMED_LIMIT", 3)
    templates.made[1] = (0.0, (1, bytes(16), 0), (), None, None, 0.0)
    templates.rename({b"c" * 16, b"d" * 16, b"e" * 16}, now=86.0)
    assert templates.renamed == {} and len(templates.made) == 0
