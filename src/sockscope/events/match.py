"""Which events to keep: `events --match` and a rule's `match = "..."`.

One expression is terms separated by spaces, all of which must hold: `KEY=VALUE` or `KEY!=VALUE`, a value being
alternatives separated by commas (`=`: any of them, `!=`: none of them), each alternative bare or double-quoted
(`"a b"`, with `\\"` and `\\\\`). Several expressions are ORed (match_any). A field that is null (unknown) never
satisfies `=` and always satisfies `!=`. Everything is compiled once at parse time: matching runs for every event.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from difflib import get_close_matches
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Final, Literal, NamedTuple

from sockscope.output.safe import printable

Compare = Literal["glob", "dns", "int", "port", "net", "proto", "family"]
Event = Mapping[str, object]
_Test = Callable[[object], bool]  # one term's comparison, given the field's value (None when absent)


class Key(NamedTuple):
    field: str  # the event's key
    compare: Compare
    help: str


KEYS: Final[Mapping[str, Key]] = {
    "kind": Key(
        "kind", "glob", "what happened: tcp_listen, tcp_connect, tcp_accept, tcp_close, udp_start, udp_end, lost"
    ),
    "proto": Key("proto", "proto", "the transport protocol"),
    "family": Key("family", "family", "the address family on the wire (IPv4 peers of IPv6 sockets are 4)"),
    "rnet": Key("raddr", "net", "the remote address (an IPv4 network also matches ::ffff:a.b.c.d)"),
    "rport": Key("rport", "port", "the remote port"),
    "lnet": Key("laddr", "net", "the local address"),
    "lport": Key("lport", "port", "the local port"),
    "name": Key("name", "dns", "the DNS name the process resolved for the remote address"),
    "pid": Key("pid", "int", "the process id"),
    "ppid": Key("ppid", "int", "the parent's process id"),
    "uid": Key("uid", "int", "the process's user id"),
    "user": Key("user", "glob", "the process's user name"),
    "comm": Key("comm", "glob", "the process's name as the kernel keeps it (15 characters at most)"),
    "exe": Key("exe", "glob", "the process's executable, a full path"),
    "pcomm": Key("parent_comm", "glob", "the parent's name as the kernel keeps it"),
    "pexe": Key("parent_exe", "glob", "the parent's executable"),
    "unit": Key("unit", "glob", "the systemd unit"),
    "container": Key("container", "glob", "the container"),
    "netns": Key("netns", "int", "the network namespace (its inode number)"),
}

_VALUES: Final[Mapping[Compare, str]] = {
    "glob": "glob (* ? [...])",
    "dns": "glob, any case",
    "int": "N or LO-HI",
    "port": "0-65535 or LO-HI",
    "net": "address or CIDR",
    "proto": "tcp or udp",
    "family": "4 or 6",
}


def keys_help() -> str:
    """The keys as an aligned table (for --help and the documentation)."""
    rows = [("KEY", "FIELD", "VALUE", "MEANING")]
    rows += [(k, spec.field, _VALUES[spec.compare], spec.help) for k, spec in KEYS.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join([*(row[i].ljust(widths[i]) for i in range(3)), row[3]]) for row in rows)


class MatchError(ValueError):
    """An expression that cannot be used: `column N: PROBLEM`, N 1-based in `text` (the expression).
    `index` is the expression's position among those given to match_any (None from parse)."""

    def __init__(self, text: str, column: int, problem: str) -> None:
        self.text = text
        self.column = column
        self.problem = problem
        self.index: int | None = None
        super().__init__(f"column {column}: {problem}")


class Match:
    """One parsed expression: call it on an event."""

    __slots__ = ("_terms", "text")

    def __init__(self, text: str, terms: Sequence[Callable[[Event], bool]]) -> None:
        self.text = text
        self._terms = tuple(terms)

    def __call__(self, event: Event) -> bool:
        return all(term(event) for term in self._terms)

    def __repr__(self) -> str:
        return f"Match({self.text!r})"


def parse(text: str) -> Match:
    """Parse one expression (terms ANDed); raises MatchError."""
    terms: list[Callable[[Event], bool]] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            break
        term, i = _term(text, i)
        terms.append(term)
    if not terms:
        raise MatchError(text, 1, "empty expression")
    return Match(text, terms)


def match_any(texts: Sequence[str]) -> Callable[[Event], bool]:
    """Several expressions, ORed; none matches every event. A MatchError carries the failing one's `index`."""
    if isinstance(texts, str):  # a lone string would be taken as one expression per character
        raise TypeError("match_any() takes a sequence of expressions, not one string")
    matches: list[Match] = []
    for index, text in enumerate(texts):
        try:
            matches.append(parse(text))
        except MatchError as e:
            e.index = index
            raise
    if not matches:
        return _everything
    if len(matches) == 1:
        return matches[0]
    return lambda event: any(m(event) for m in matches)


def _everything(event: Event) -> bool:
    return True


def _shown(value: str) -> str:
    # A rule file's text ends up on a terminal and in the daemon's log: keep it inert and short.
    return printable(json.dumps(value, ensure_ascii=False), limit=60)


# --- tokens


def _term(text: str, start: int) -> tuple[Callable[[Event], bool], int]:
    """One KEY=VALUE / KEY!=VALUE term from text[start] (not a space); returns it and where it ended."""
    n = len(text)
    j = start
    while j < n and not text[j].isspace() and text[j] not in '=!"':
        j += 1
    key = text[start:j]
    if not key:
        raise MatchError(text, j + 1, "expected KEY=VALUE or KEY!=VALUE")
    if text.startswith("!=", j):
        negate, j = True, j + 2
    elif text.startswith("=", j):
        negate, j = False, j + 1
    else:
        raise MatchError(text, j + 1, f"missing operator after {_shown(key)}: expected = or !=")
    spec = KEYS.get(key)
    if spec is None:
        raise MatchError(text, start + 1, _unknown_key(key))
    values, j = _values(text, j)
    test = _COMPILERS[spec.compare](text, values, spec.compare)
    field = spec.field
    if negate:
        return (lambda event: not test(event.get(field))), j
    return (lambda event: test(event.get(field))), j


def _unknown_key(key: str) -> str:
    # Someone who knows the event's fields will try them (raddr, parent_exe): point at the key that reads them.
    by_field = [k for k, spec in KEYS.items() if spec.field == key]
    close = by_field or get_close_matches(key.lower(), list(KEYS), n=1)
    hint = f", did you mean {close[0]}?" if close else ""
    return f"unknown key {_shown(key)}{hint} (known: {', '.join(KEYS)})"


def _values(text: str, j: int) -> tuple[list[tuple[str, int]], int]:
    """The comma-separated alternatives at text[j]: each with the column of its first character."""
    n = len(text)
    values: list[tuple[str, int]] = []
    while True:
        col = j + 1
        if j < n and text[j] == '"':
            value, j = _quoted(text, j)
            if j < n and not text[j].isspace() and text[j] != ",":
                raise MatchError(text, j + 1, "expected a comma or a space after the closing quote")
            if not value:
                raise MatchError(text, col, "empty value")
            col += 1
        else:
            k = j
            while k < n and not text[k].isspace() and text[k] not in ',"':
                k += 1
            if k < n and text[k] == '"':
                raise MatchError(text, k + 1, 'a quote may only start a value: quote all of it ("a b")')
            value, j = text[j:k], k
            if not value:
                raise MatchError(text, col, "empty value")
            if value.startswith("="):  # `comm==x`: would otherwise quietly look for a name starting with "="
                raise MatchError(text, col, 'unexpected "=": the operators are = and !=')
        values.append((value, col))
        if j < n and text[j] == ",":
            j += 1
            continue
        return values, j


def _quoted(text: str, j: int) -> tuple[str, int]:
    """The double-quoted string opening at text[j]; returns it unescaped and the index after the closing quote."""
    out: list[str] = []
    k = j + 1
    while k < len(text):
        c = text[k]
        if c == '"':
            return "".join(out), k + 1
        if c == "\\" and k + 1 < len(text):
            if text[k + 1] not in '"\\':
                escape = printable(text[k : k + 2])
                raise MatchError(text, k + 1, f'unknown escape {escape}: inside quotes only \\" and \\\\ are escapes')
            c = text[k + 1]
            k += 1
        out.append(c)
        k += 1
    raise MatchError(text, j + 1, "unterminated quote")


# --- comparisons: each compiles the alternatives once into a test of the field's value


def _glob(text: str, values: list[tuple[str, int]], compare: Compare) -> _Test:
    if compare == "dns":
        pattern = re.compile("|".join(fnmatch.translate(_dns(v)) for v, _ in values))
        return lambda value: isinstance(value, str) and pattern.match(_dns(value)) is not None
    pattern = re.compile("|".join(fnmatch.translate(v) for v, _ in values))
    return lambda value: isinstance(value, str) and pattern.match(value) is not None


def _dns(name: str) -> str:
    # DNS names compare without regard to case; "example.com." is the same name as "example.com".
    return name.lower().removesuffix(".")


_NUMBER = re.compile(r"([0-9]+)(?:-([0-9]+))?")  # ASCII digits only: int() would also take "٣" or "+3"


def _numbers(text: str, values: list[tuple[str, int]], compare: Compare) -> _Test:
    exact: set[int] = set()
    ranges: list[tuple[int, int]] = []
    top = 65535 if compare == "port" else None
    what = "port" if compare == "port" else "integer"
    for value, col in values:
        m = _NUMBER.fullmatch(value)
        if m is None:
            raise MatchError(text, col, f"bad {what} {_shown(value)}: expected {_VALUES[compare]}")
        bounds: list[int] = []
        for group in (1, 2):
            if m.group(group) is None:
                continue
            try:
                number = int(m.group(group))
            except ValueError:  # more digits than int() agrees to convert
                raise MatchError(text, col + m.start(group), f"bad {what}: too many digits") from None
            if top is not None and number > top:
                raise MatchError(text, col + m.start(group), f"bad port {number}: ports are 0-65535")
            bounds.append(number)
        if len(bounds) == 1:
            exact.add(bounds[0])
        elif bounds[0] > bounds[1]:
            raise MatchError(text, col, f"empty range {_shown(value)}: LO-HI needs LO <= HI")
        else:
            ranges.append((bounds[0], bounds[1]))
    frozen, spans = frozenset(exact), tuple(ranges)

    def test(value: object) -> bool:
        # bool is an int to Python, but never a count or a port.
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        return value in frozen or any(lo <= value <= hi for lo, hi in spans)

    return test


def _choice(text: str, values: list[tuple[str, int]], compare: Compare) -> _Test:
    allowed: dict[str, object] = {"tcp": "tcp", "udp": "udp"} if compare == "proto" else {"4": 4, "6": 6}
    wanted: set[object] = set()
    for value, col in values:
        if value not in allowed:
            raise MatchError(text, col, f"bad {compare} {_shown(value)}: expected {_VALUES[compare]}")
        wanted.add(allowed[value])
    frozen, kind = frozenset(wanted), (str if compare == "proto" else int)
    # The type check first: an unhashable value (a list) must not reach the set, nor True stand for 1.
    return lambda value: isinstance(value, kind) and not isinstance(value, bool) and value in frozen


_MAPPED = IPv6Network("::ffff:0:0/96")
_NETWORK_EXPECTED = "expected an address or a CIDR network like 10.0.0.0/8 or fd00::/8"


def _networks(text: str, values: list[tuple[str, int]], compare: Compare) -> _Test:
    v4: list[IPv4Network] = []
    v6: list[IPv6Network] = []
    for value, col in values:
        try:
            net = ip_network(value)
        except ValueError:
            try:
                loose = ip_network(value, strict=False)
            except ValueError:
                raise MatchError(text, col, f"bad network {_shown(value)}: {_NETWORK_EXPECTED}") from None
            # 10.0.0.1/8 is more likely a typo than a wish for 10.0.0.0/8: ask rather than guess.
            raise MatchError(text, col, f"{_shown(value)} has host bits set; did you mean {loose}?") from None
        if isinstance(net, IPv4Network):
            v4.append(net)
            continue
        v6.append(net)
        if net.subnet_of(_MAPPED) and (mapped := net.network_address.ipv4_mapped) is not None:
            # ::ffff:10.0.0.0/104 names IPv4 hosts, which events show as plain IPv4: match those too.
            v4.append(IPv4Network((mapped, net.prefixlen - 96)))
    nets4, nets6 = tuple(v4), tuple(v6)

    def test(value: object) -> bool:
        if not isinstance(value, str):
            return False
        a4, a6 = _address(value)
        return (a4 is not None and any(a4 in n for n in nets4)) or (a6 is not None and any(a6 in n for n in nets6))

    return test


@functools.lru_cache(maxsize=4096)  # every event's address, with few distinct peers
def _address(text: str) -> tuple[IPv4Address | None, IPv6Address | None]:
    """(IPv4 form, IPv6 form) of an address: both for ::ffff:a.b.c.d, neither when it is not an address."""
    try:
        addr = ip_address(text)
    except ValueError:
        return None, None
    if isinstance(addr, IPv4Address):
        return addr, None
    return addr.ipv4_mapped, addr


_Compiler = Callable[[str, list[tuple[str, int]], Compare], _Test]
_COMPILERS: Final[Mapping[Compare, _Compiler]] = {
    "glob": _glob,
    "dns": _glob,
    "int": _numbers,
    "port": _numbers,
    "net": _networks,
    "proto": _choice,
    "family": _choice,
}
