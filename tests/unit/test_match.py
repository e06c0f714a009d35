"""The match expressions of `events --match` and rules: every key, both operators, alternatives, quotes, ranges,
networks (v4, v6, v4-mapped), null fields, hostile values, OR across expressions, and each refusal's column."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from sockscope.events.match import KEYS, Match, MatchError, keys_help, match_any, parse

EVENT: dict[str, object] = {
    "v": 1,
    "kind": "tcp_connect",
    "time": 1_700_000_000.25,
    "ktime_ns": 123_456_789,
    "proto": "tcp",
    "family": 4,
    "laddr": "192.168.1.10",
    "lport": 40112,
    "raddr": "93.184.216.34",
    "rport": 443,
    "name": "Example.COM.",
    "cname": [],
    "name_source": "dns",
    "initiator": "local",
    "netns": 4026531840,
    "cookie": 8812,
    "pid": 4242,
    "comm": "curl",
    "exe": "/usr/bin/curl",
    "cmdline": "curl -s https://example.com/",
    "uid": 1000,
    "user": "alice",
    "unit": "user@1000.service",
    "container": "web-1",
    "ppid": 4200,
    "parent_comm": "bash",
    "parent_exe": "/usr/bin/bash",
    "alive": True,
    "tx_bytes": None,
    "rx_bytes": None,
    "duration": None,
    "complete": None,
    "dir": None,
}


def ev(**changes: object) -> dict[str, object]:
    return {**EVENT, **changes}


def matches(text: str, event: Mapping[str, object] = EVENT) -> bool:
    return parse(text)(event)


# --- every key, both ways: (expression, against EVENT). Each key has a true and a false case.

KEY_CASES = [
    ("kind=tcp_connect", True),
    ("kind=tcp_accept", False),
    ("kind=tcp_*", True),
    ("kind=udp_*", False),
    ("proto=tcp", True),
    ("proto=udp", False),
    ("family=4", True),
    ("family=6", False),
    ("rnet=93.184.216.0/24", True),
    ("rnet=93.184.217.0/24", False),
    ("rport=443", True),
    ("rport=80", False),
    ("lnet=192.168.0.0/16", True),
    ("lnet=10.0.0.0/8", False),
    ("lport=40112", True),
    ("lport=40113", False),
    ("name=example.com", True),
    ("name=example.org", False),
    ("pid=4242", True),
    ("pid=4243", False),
    ("ppid=4200", True),
    ("ppid=4242", False),
    ("uid=1000", True),
    ("uid=0", False),
    ("user=alice", True),
    ("user=bob", False),
    ("comm=curl", True),
    ("comm=wget", False),
    ("exe=/usr/bin/curl", True),
    ("exe=curl", False),  # a glob on the whole path, not on its basename
    ("pcomm=bash", True),
    ("pcomm=curl", False),  # the parent's, not the process's
    ("pexe=/usr/bin/bash", True),
    ("pexe=/usr/bin/curl", False),
    ("unit=user@1000.service", True),
    ("unit=sshd.service", False),
    ("container=web-1", True),
    ("container=web-2", False),
    ("netns=4026531840", True),
    ("netns=4026531841", False),
]


@pytest.mark.parametrize(("text", "expected"), KEY_CASES)
def test_each_key(text: str, expected: bool) -> None:
    assert matches(text) is expected
    # != is exactly the opposite on a present field
    assert matches(text.replace("=", "!=", 1)) is (not expected)


def test_every_key_is_exercised_and_reads_an_event_field() -> None:
    assert {text.split("=")[0] for text, _ in KEY_CASES} == set(KEYS)
    assert {spec.field for spec in KEYS.values()} <= set(EVENT)


# --- alternatives, AND, quotes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("comm=wget,curl", True),
        ("comm=wget,fetch", False),
        ("comm!=wget,curl", False),  # != with alternatives: none of them
        ("comm!=wget,fetch", True),
        ("rport=80,443,8443", True),
        ("rport!=80,443", False),
        ("proto=udp,tcp", True),
        ("rnet=10.0.0.0/8,93.184.216.34", True),
        ("rnet!=10.0.0.0/8,fd00::/8", True),
        # AND across terms, any amount of whitespace between them
        ("comm=curl rport=443", True),
        ("comm=curl rport=80", False),
        ("  comm=curl \t proto=tcp  ", True),
        ("comm=curl user!=alice", False),
    ],
)
def test_alternatives_and_terms(text: str, expected: bool) -> None:
    assert matches(text) is expected


@pytest.mark.parametrize(
    ("text", "field", "value", "expected"),
    [
        ('unit="my unit.service"', "unit", "my unit.service", True),
        ('unit="my unit.service"', "unit", "my", False),
        ('unit="a,b"', "unit", "a,b", True),  # a quoted comma is part of the value
        ('unit="a,b"', "unit", "a", False),
        ('unit="a,b",c', "unit", "c", True),
        ('unit=c,"a b"', "unit", "a b", True),
        ('exe="/opt/my \\"app\\""', "exe", '/opt/my "app"', True),
        ('exe="C:\\\\x"', "exe", "C:\\x", True),
        ('exe="C:\\\\x"', "exe", "C:\\\\x", False),
        ("exe=C:\\x", "exe", "C:\\x", True),  # unquoted, a backslash is itself
        ('comm="cu*"', "comm", "curl", True),  # quoting does not turn a glob into a literal
    ],
)
def test_quoted_values(text: str, field: str, value: str, expected: bool) -> None:
    assert matches(text, ev(**{field: value})) is expected


# --- integers and ranges


@pytest.mark.parametrize(
    ("text", "event", "expected"),
    [
        ("rport=400-500", EVENT, True),
        ("rport=443-443", EVENT, True),
        ("rport=444-500", EVENT, False),
        ("rport=1-442", EVENT, False),
        ("rport!=400-500", EVENT, False),
        ("rport=0", ev(rport=0), True),
        ("rport=65535", ev(rport=65535), True),
        ("rport=0-1023,8000-8999", ev(rport=8080), True),
        ("rport=0-1023,8000-8999", ev(rport=5000), False),
        ("lport=40000-40999", EVENT, True),
        ("uid=0-999", EVENT, False),
        ("uid=1000-1999", EVENT, True),
        ("pid=1-5000 ppid=4200", EVENT, True),
        ("uid=0", ev(uid=0), True),
        ("pid=1", ev(pid=True), False),  # True is an int to Python, never a pid
        ("pid=4242", ev(pid="4242"), False),  # a string is not the number
        ("family=4", ev(family="4"), False),
        ("rport=0443", EVENT, True),  # leading zeros are still decimal
    ],
)
def test_integers_and_ranges(text: str, event: Mapping[str, object], expected: bool) -> None:
    assert matches(text, event) is expected


# --- networks


@pytest.mark.parametrize(
    ("text", "raddr", "expected"),
    [
        ("rnet=10.0.0.0/8", "10.1.2.3", True),
        ("rnet=10.0.0.0/8", "11.1.2.3", False),
        ("rnet=10.1.2.3", "10.1.2.3", True),  # an address is a /32
        ("rnet=10.1.2.3", "10.1.2.4", False),
        ("rnet=0.0.0.0/0", "203.0.113.9", True),
        ("rnet=0.0.0.0/0", "2001:db8::1", False),  # families do not mix
        ("rnet=::/0", "10.1.2.3", False),
        ("rnet=2001:db8::/32", "2001:db8:1::7", True),
        ("rnet=2001:db8::/32", "2001:db9::7", False),
        ("rnet=2001:db8::1", "2001:db8::1", True),  # an address is a /128
        ("rnet=2001:db8::1", "2001:db8::2", False),
        ("rnet=2001:DB8::/32", "2001:db8::5", True),
        # an IPv4 network also matches the v4-mapped form
        ("rnet=10.0.0.0/8", "::ffff:10.9.8.7", True),
        ("rnet=10.0.0.0/8", "::ffff:11.9.8.7", False),
        ("rnet=10.9.8.7", "::ffff:a09:807", True),
        # and a v4-mapped network the plain IPv4 form events show
        ("rnet=::ffff:10.0.0.0/104", "10.9.8.7", True),
        ("rnet=::ffff:10.0.0.0/104", "11.9.8.7", False),
        ("rnet=::ffff:10.0.0.0/104", "::ffff:10.9.8.7", True),
        ("rnet=::ffff:0:0/96", "192.0.2.1", True),
        ("rnet=::/0", "::ffff:10.9.8.7", True),  # a mapped address is an IPv6 address too
        # not an address: never matches, so != holds
        ("rnet=10.0.0.0/8", "not-an-address", False),
        ("rnet!=10.0.0.0/8", "not-an-address", True),
        ("rnet=fe80::/10", "fe80::1%eth0", True),
    ],
)
def test_networks(text: str, raddr: str, expected: bool) -> None:
    assert matches(text, ev(raddr=raddr)) is expected


def test_lnet_reads_laddr_not_raddr() -> None:
    assert matches("lnet=192.168.1.10", ev(raddr="10.0.0.1"))
    assert not matches("lnet=10.0.0.1", ev(raddr="10.0.0.1"))


# --- globs and case


@pytest.mark.parametrize(
    ("text", "event", "expected"),
    [
        ("exe=/usr/bin/*", EVENT, True),
        ("exe=/usr/sbin/*", EVENT, False),
        ("exe=*/curl", EVENT, True),
        ("comm=cu?l", EVENT, True),
        ("comm=cu?", EVENT, False),  # the whole value, not a prefix
        ("comm=ur", EVENT, False),  # nor a substring
        ("comm=[bc]url", EVENT, True),
        ("comm=[!c]url", EVENT, False),
        ("comm=CURL", EVENT, False),  # case-sensitive
        ("user=Alice", EVENT, False),
        ("exe=*", ev(exe="/a\nb"), True),  # * crosses a newline: the whole value is one name
        ("comm=[x", ev(comm="[x"), True),  # an unclosed bracket is literal
        ("kind=tcp_*", ev(kind="lost"), False),
        ("kind=nothing_like_a_kind", EVENT, False),  # allowed, matches nothing
        # name: any case, a trailing dot ignored on either side
        ("name=example.com", EVENT, True),
        ("name=EXAMPLE.com.", EVENT, True),
        ("name=*.COM", EVENT, True),
        ("name=example.com", ev(name="example.com"), True),
        ("name=example.co", EVENT, False),
        ("name=*.example.com", ev(name="WWW.Example.Com"), True),
        ("name=*.example.com", EVENT, False),
        ("name!=example.com", EVENT, False),
    ],
)
def test_globs(text: str, event: Mapping[str, object], expected: bool) -> None:
    assert matches(text, event) is expected


# --- null and absent fields: `=` never, `!=` always

VALUE_FOR = {"glob": "*", "dns": "*", "int": "0-99999999999", "port": "0-65535", "net": "::/0,0.0.0.0/0"}
VALUE_FOR |= {"proto": "tcp,udp", "family": "4,6"}


@pytest.mark.parametrize("key", list(KEYS))
def test_null_field_never_equals_and_always_differs(key: str) -> None:
    spec = KEYS[key]
    text = f"{key}={VALUE_FOR[spec.compare]}"
    assert matches(text)  # the catch-all value does match the field when present
    assert not matches(text, ev(**{spec.field: None}))
    assert matches(f"{key}!={VALUE_FOR[spec.compare]}", ev(**{spec.field: None}))
    absent = {k: v for k, v in EVENT.items() if k != spec.field}
    assert not matches(text, absent)
    assert matches(f"{key}!={VALUE_FOR[spec.compare]}", absent)


def test_lost_events_have_no_process_or_address() -> None:
    lost = {"v": 1, "kind": "lost", "time": 1.0, "reason": "ring_buffer", "count": 3}
    assert matches("kind=lost", lost)
    assert not matches("kind=lost comm=*", lost)
    assert matches("kind=lost rnet!=10.0.0.0/8 pid!=1", lost)


# --- hostile values: compared, never an exception

HOSTILE: list[object] = [
    "\x1b[31mred\x07",
    "\udcff\udcfe",  # a lone surrogate (invalid UTF-8 decoded with surrogateescape)
    "\u202egnp.exe",
    "",
    "x" * 10_000,
    ["a", "b"],  # unhashable
    {"a": 1},
    True,
    3.5,
    -1,
    2**80,
]


@pytest.mark.parametrize("key", list(KEYS))
@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_values_never_raise(key: str, value: object) -> None:
    spec = KEYS[key]
    catch_all = f"{key}={VALUE_FOR[spec.compare]}"
    got = matches(catch_all, ev(**{spec.field: value}))
    # only a string satisfies a glob; nothing here is a number in range, an address or a choice
    assert got is (spec.compare in ("glob", "dns") and isinstance(value, str))
    assert matches(f"{key}!={VALUE_FOR[spec.compare]}", ev(**{spec.field: value})) is (not got)


def test_hostile_glob_values_compare_literally() -> None:
    assert matches('comm="\x1b[31m*"', ev(comm="\x1b[31mred"))  # no closing bracket: "[" is literal
    assert not matches("comm=*evil*", ev(comm="\udcffgood"))
    assert matches("comm=\udcff*", ev(comm="\udcffgood"))


# --- several expressions: ORed


def test_match_any_ors_expressions() -> None:
    either = match_any(["comm=wget", "rport=443"])
    assert either(EVENT)
    assert either(ev(comm="wget", rport=80))
    assert not either(ev(comm="ssh", rport=22))


def test_match_any_of_nothing_matches_everything() -> None:
    everything = match_any([])
    assert everything(EVENT)
    assert everything({})
    assert everything({"kind": "lost"})


def test_match_any_of_one_is_that_expression() -> None:
    one = match_any(("proto=udp",))
    assert not one(EVENT)
    assert one(ev(proto="udp"))


def test_match_any_says_which_expression_failed() -> None:
    with pytest.raises(MatchError) as info:
        match_any(["comm=curl", "rport=443", "rprot=80", "bad"])
    e = info.value
    assert (e.index, e.text, e.column) == (2, "rprot=80", 1)
    assert "did you mean rport?" in e.problem


def test_match_any_refuses_a_lone_string() -> None:
    with pytest.raises(TypeError):
        match_any("comm=curl")


def test_match_keeps_its_text() -> None:
    m = parse("  comm=curl ")
    assert isinstance(m, Match)
    assert m.text == "  comm=curl "
    assert repr(m) == "Match('  comm=curl ')"


# --- refusals: the column of the problem and what it is

KNOWN = "kind, proto, family, rnet, rport, lnet, lport, name, pid, ppid, uid, user, comm, exe, pcomm, pexe, unit, "
KNOWN += "container, netns"

ERRORS = [
    ("", 1, "empty expression"),
    ("   \t ", 1, "empty expression"),
    ("prot=tcp", 1, f'unknown key "prot", did you mean proto? (known: {KNOWN})'),
    ("comm=curl prto=tcp", 11, 'unknown key "prto", did you mean proto?'),
    ("raddr=10.0.0.1", 1, 'unknown key "raddr", did you mean rnet?'),  # the event's field, named by another key
    ("parent_exe=/bin/sh", 1, 'unknown key "parent_exe", did you mean pexe?'),
    ("RPORT=80", 1, 'unknown key "RPORT", did you mean rport?'),
    ("colour=red", 1, f'unknown key "colour" (known: {KNOWN})'),
    ("comm", 5, 'missing operator after "comm": expected = or !='),
    ("comm curl", 5, 'missing operator after "comm": expected = or !='),
    ("proto=tcp comm!curl", 15, 'missing operator after "comm": expected = or !='),
    ("comm:curl", 10, 'missing operator after "comm:curl"'),
    ("=curl", 1, "expected KEY=VALUE or KEY!=VALUE"),
    ("comm=curl !=x", 11, "expected KEY=VALUE or KEY!=VALUE"),
    ('"comm"=curl', 1, "expected KEY=VALUE or KEY!=VALUE"),
    ("comm=", 6, "empty value"),
    ("comm= proto=tcp", 6, "empty value"),
    ("comm=a,,b", 8, "empty value"),
    ("comm=a,", 8, "empty value"),
    ("comm=,a", 6, "empty value"),
    ('comm=""', 6, "empty value"),
    ("comm==curl", 6, 'unexpected "=": the operators are = and !='),
    ('comm="curl', 6, "unterminated quote"),
    ('proto=tcp comm="cu\\"rl', 16, "unterminated quote"),
    ('comm="curl\\', 6, "unterminated quote"),
    ('comm="a\\nb"', 8, 'unknown escape \\n: inside quotes only \\" and \\\\ are escapes'),
    ('comm="a"b', 9, "expected a comma or a space after the closing quote"),
    ('comm=a"b"', 7, "a quote may only start a value"),
    ("pid=12x", 5, 'bad integer "12x": expected N or LO-HI'),
    ("pid=-1", 5, 'bad integer "-1"'),
    ("pid=+1", 5, 'bad integer "+1"'),
    ("uid=\u0663", 5, "bad integer"),  # int() would take an Arabic-Indic 3
    ("pid=1-", 5, 'bad integer "1-"'),
    ("pid=1" + "0" * 5000, 5, "bad integer: too many digits"),
    ("rport=https", 7, 'bad port "https": expected 0-65535 or LO-HI'),
    ("rport=65536", 7, "bad port 65536: ports are 0-65535"),
    ("rport=80,1000-70000", 15, "bad port 70000: ports are 0-65535"),
    ('rport="99999"', 8, "bad port 99999"),
    ("rport=90-80", 7, 'empty range "90-80": LO-HI needs LO <= HI'),
    ("uid=1000-999", 5, 'empty range "1000-999"'),
    ("rnet=10.0.0.1/8", 6, '"10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?'),
    ("rnet=10.0.0.0/33", 6, 'bad network "10.0.0.0/33": expected an address or a CIDR network'),
    ("lnet=fd00::/8,example.com", 15, 'bad network "example.com"'),
    ("rnet=256.1.1.1", 6, "bad network"),
    ("family=5", 8, 'bad family "5": expected 4 or 6'),
    ("family=ipv4", 8, 'bad family "ipv4"'),
    ("proto=sctp", 7, 'bad proto "sctp": expected tcp or udp'),
    ("proto=TCP", 7, 'bad proto "TCP"'),
]


@pytest.mark.parametrize(("text", "column", "problem"), ERRORS)
def test_refusals(text: str, column: int, problem: str) -> None:
    with pytest.raises(MatchError) as info:
        parse(text)
    e = info.value
    assert e.column == column
    assert e.problem.startswith(problem)
    assert e.text == text
    assert e.index is None
    assert str(e) == f"column {column}: {e.problem}"


def test_match_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^column 1: empty expression$"):
        parse("")


def test_the_first_problem_is_reported() -> None:
    with pytest.raises(MatchError) as info:
        parse("rport=99999 prto=tcp")
    assert info.value.column == 7


def test_control_characters_in_a_refused_expression_stay_inert() -> None:
    with pytest.raises(MatchError) as info:
        parse("\x1b[2J=x")
    assert "\x1b" not in str(info.value)
    assert "\\u001b[2J" in str(info.value)


# --- the keys table


def test_keys_help_lists_every_key_aligned() -> None:
    lines = keys_help().splitlines()
    assert lines[0].split() == ["KEY", "FIELD", "VALUE", "MEANING"]
    assert [line.split()[0] for line in lines[1:]] == list(KEYS)
    meaning_at = lines[0].index("MEANING")
    for line, spec in zip(lines[1:], KEYS.values(), strict=True):
        assert line[meaning_at:] == spec.help
        assert line.split()[1] == spec.field
