"""The daemon's TOML configuration: defaults, a full file, every kind of refusal with file:line:key, overrides."""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from pathlib import Path

import pytest

from sockscope import config
from sockscope.config import (
    CollectorConfig,
    Config,
    ConfigError,
    DaemonConfig,
    IgnoreConfig,
    RetentionConfig,
    UdpConfig,
    dump_defaults,
    load,
    parse_duration,
)
from sockscope.tomlkeys import locate_key

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "config"
DAY = 86400.0


def write(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "config.toml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def load_text(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> Config:
    return load(write(tmp_path, text), overrides)


def refused(tmp_path: Path, text: str | bytes) -> tuple[Path, ConfigError]:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(p)
    return p, info.value


def cli(tmp_path: Path, *overrides: str) -> Config:
    """Overrides only: the default file does not exist."""
    return load(None, overrides, default_path=str(tmp_path / "absent.toml"))


# --- defaults and a full file


def test_default_values() -> None:
    assert Config.default() == Config(
        daemon=DaemonConfig(interval=1.0, database="/var/lib/sockscope/sockscope.db"),
        retention=RetentionConfig(raw=2 * DAY, minute=14 * DAY, hour=730 * DAY),
        ignore=IgnoreConfig(processes=frozenset(), ports=frozenset(), networks=()),
        udp=UdpConfig(idle_timeout=60.0),
        collector=CollectorConfig(max_flows=16384),
    )


def test_absent_default_file_gives_defaults(tmp_path: Path) -> None:
    assert load(None, default_path=str(tmp_path / "absent.toml")) == Config.default()


def test_default_file_is_read_when_present() -> None:
    assert load(None, default_path=str(FIX / "full.toml")).daemon.interval == 2.5


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_text(tmp_path, "# nothing set\n") == Config.default()


def test_full_file() -> None:
    assert load(FIX / "full.toml") == Config(
        daemon=DaemonConfig(interval=2.5, database="/srv/sockscope/history.db"),
        retention=RetentionConfig(raw=36 * 3600.0, minute=14 * DAY, hour=52 * 7 * DAY),
        ignore=IgnoreConfig(
            processes=frozenset({"sshd", "chronyd"}),
            ports=frozenset({53, 853}),
            networks=(
                ipaddress.ip_network("10.0.0.0/8"),
                ipaddress.ip_network("192.168.1.7/32"),
                ipaddress.ip_network("fd00::/8"),
                ipaddress.ip_network("::1/128"),
            ),
        ),
        udp=UdpConfig(idle_timeout=120.0),
        collector=CollectorConfig(max_flows=4096),
    )


def test_edge_values_are_accepted(tmp_path: Path) -> None:
    text = '[daemon]\ninterval = 3600\n[retention]\nraw = "30d"\nminute = "30d"\nhour = "30d"\n'
    text += "[ignore]\nports = [1, 65535]\n[collector]\nmax_flows = 16\n"
    c = load_text(tmp_path, text)
    assert c.daemon.interval == 3600.0 and isinstance(c.daemon.interval, float)
    assert c.retention == RetentionConfig(raw=30 * DAY, minute=30 * DAY, hour=30 * DAY)
    assert c.ignore.ports == {1, 65535}
    assert c.collector.max_flows == 16


def test_dump_defaults_loads_as_the_defaults(tmp_path: Path) -> None:
    text = dump_defaults()
    assert load_text(tmp_path, text) == Config.default()
    assert {s: set(t) for s, t in tomllib.loads(text).items()} == {
        "daemon": {"interval", "database", "backlog"},
        "retention": {"raw", "minute", "hour"},
        "ignore": {"processes", "ports", "addresses"},
        "udp": {"idle_timeout"},
        "collector": {"max_flows", "splice", "hooks", "ptr"},
        "events": {"socket", "mode", "max_subscribers", "queue", "stall", "enabled"},  # group: absent by default
    }
    assert all(len(line) <= 120 for line in text.splitlines())


# --- reading the file


def test_explicit_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(p)
    assert str(info.value) == f"{p}: cannot read: No such file or directory"
    assert (info.value.path, info.value.line, info.value.key) == (str(p), None, None)


def test_explicit_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot read: Is a directory"


def test_default_file_present_but_unreadable_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read: Is a directory"):
        load(None, default_path=str(tmp_path))


def test_not_utf8(tmp_path: Path) -> None:
    p, e = refused(tmp_path, b"[daemon]\ninterval = 1\n# caf\xe9\n")
    assert str(e) == f"{p}:3: not UTF-8 text"


# --- refusals: file:line: key: problem


def test_the_example_message_in_full() -> None:
    p = FIX / "bad-duration.toml"
    with pytest.raises(ConfigError) as info:
        load(p)
    e = info.value
    assert str(e) == f'{p}:7: retention.raw: expected a duration like "2d" or a number of seconds, got "two days"'
    assert (e.path, e.line, e.key) == (str(p), 7, "retention.raw")
    assert e.problem == 'expected a duration like "2d" or a number of seconds, got "two days"'


def test_syntax_error_in_full() -> None:
    p = FIX / "syntax-error.toml"
    with pytest.raises(ConfigError) as info:
        load(p)
    assert str(info.value) == f"{p}:5: invalid TOML: Expected '=' after a key in a key/value pair (column 14)"
    assert (info.value.line, info.value.key) == (5, None)


def test_syntax_error_at_end_of_file(tmp_path: Path) -> None:
    p, e = refused(tmp_path, "[ignore]\nports = [53,\n")
    assert str(e) == f"{p}:2: invalid TOML: Invalid value (at end of file)"


def test_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    _, e = refused(tmp_path, "[daemon]\ninterval = 1\ninterval = 2\n")
    assert (e.line, e.key) == (3, None)
    assert e.problem.startswith("invalid TOML: Cannot overwrite a value")


def test_retention_order_in_full_past_decoys() -> None:
    # Comments, strings, a multi-line string and a multi-line array all mention minute/[retention] first.
    p = FIX / "decoys.toml"
    with pytest.raises(ConfigError) as info:
        load(p)
    assert str(info.value) == (
        f"{p}:20: retention.minute: 1d is shorter than retention.raw (2d); must be raw <= minute <= hour"
    )


KNOWN_SECTIONS = "daemon, retention, ignore, udp, collector, events, rule"
NET = 'expected an IP address or CIDR network like "10.0.0.0/8" or "fd00::/8"'
DUR = 'expected a duration like "2d" or a number of seconds'
ORDER = "must be raw <= minute <= hour"
PROC = "expected a process name (a non-empty string)"
PORT = "expected a port number 1..65535"
FLOWS = "must be >= 16 and <= 4294967295"

REFUSALS = [
    # unknown sections and keys
    (
        "[daemon]\ninterval = 1\n\n[deamon]\n",
        4,
        "deamon",
        f"unknown section, did you mean [daemon]? (known: {KNOWN_SECTIONS})",
    ),
    ("[metrics]\nport = 9100\n", 1, "metrics", f"unknown section (known: {KNOWN_SECTIONS})"),
    ("metrics.port = 9100\n", 1, "metrics", f"unknown section (known: {KNOWN_SECTIONS})"),
    (
        "[daemon]\nintervall = 2\n",
        2,
        "daemon.intervall",
        "unknown key, did you mean interval? (known in [daemon]: interval, database, backlog)",
    ),
    ("[udp]\nidle_timeout = 5\nmax_flows = 100\n", 3, "udp.max_flows", "unknown key (known in [udp]: idle_timeout)"),
    ("daemon = 5\n", 1, "daemon", "expected a table ([daemon]), got 5"),
    # [daemon]
    ("[daemon]\ninterval = true\n", 2, "daemon.interval", "expected a number of seconds, got true"),
    ('[daemon]\ninterval = "2s"\n', 2, "daemon.interval", 'expected a number of seconds, got "2s"'),
    ("[daemon]\ninterval = 0\n", 2, "daemon.interval", "must be > 0 and <= 3600 seconds, got 0"),
    ("[daemon]\ninterval = -1.5\n", 2, "daemon.interval", "must be > 0 and <= 3600 seconds, got -1.5"),
    ("[daemon]\ninterval = 3600.5\n", 2, "daemon.interval", "must be > 0 and <= 3600 seconds, got 3600.5"),
    ("[daemon]\ninterval = nan\n", 2, "daemon.interval", "must be > 0 and <= 3600 seconds, got nan"),
    ("[daemon]\ninterval = 1\ndatabase = 5\n", 3, "daemon.database", "expected a path (a string), got 5"),
    ('[daemon]\ndatabase = ""\n', 2, "daemon.database", "must not be empty"),
    # [retention]
    ('[retention]\nraw = "2 days"\n', 2, "retention.raw", f'{DUR}, got "2 days"'),
    ("[retention]\nraw = false\n", 2, "retention.raw", f"{DUR}, got false"),
    ('[retention]\nminute = "0m"\n', 2, "retention.minute", 'must be > 0, got "0m"'),
    ("[retention]\nhour = -1\n", 2, "retention.hour", "must be > 0, got -1"),
    ("[retention]\nhour = inf\n", 2, "retention.hour", "must be a finite duration, got inf"),
    ('[retention]\nminute = "1d"\n', 2, "retention.minute", f"1d is shorter than retention.raw (2d); {ORDER}"),
    ('[retention]\nraw = "40d"\n', 2, "retention.raw", f"40d is longer than retention.minute (2w); {ORDER}"),
    ('[retention]\nhour = "1w"\n', 2, "retention.hour", f"1w is shorter than retention.minute (2w); {ORDER}"),
    (
        '[retention]\nraw = "1d"\nminute = 3600\n',
        3,
        "retention.minute",
        f"1h is shorter than retention.raw (1d); {ORDER}",
    ),
    # [ignore]
    ('[ignore]\nprocesses = "sshd"\n', 2, "ignore.processes", 'expected a list of process names (strings), got "sshd"'),
    ('[ignore]\nprocesses = ["sshd", 22]\n', 2, "ignore.processes", f"item 2: {PROC}, got 22"),
    ('[ignore]\nprocesses = [""]\n', 2, "ignore.processes", f'item 1: {PROC}, got ""'),
    ("[ignore]\nports = 53\n", 2, "ignore.ports", "expected a list of port numbers, got 53"),
    ("[ignore]\nports = [53, 0]\n", 2, "ignore.ports", f"item 2: {PORT}, got 0"),
    ("[ignore]\nports = [65536]\n", 2, "ignore.ports", f"item 1: {PORT}, got 65536"),
    ("[ignore]\nports = [true]\n", 2, "ignore.ports", f"item 1: {PORT}, got true"),
    ('[ignore]\nports = ["53"]\n', 2, "ignore.ports", f'item 1: {PORT}, got "53"'),
    ("[ignore]\nports = [53.0]\n", 2, "ignore.ports", f"item 1: {PORT}, got 53.0"),
    ("[ignore]\nports = [\n  53,\n  99999,\n]\n", 2, "ignore.ports", f"item 2: {PORT}, got 99999"),
    ('[ignore]\naddresses = ["10.0.0.0/33"]\n', 2, "ignore.addresses", f'item 1: {NET}, got "10.0.0.0/33"'),
    ('[ignore]\naddresses = ["::1", "fd00::/129"]\n', 2, "ignore.addresses", f'item 2: {NET}, got "fd00::/129"'),
    ('[ignore]\naddresses = ["example.com"]\n', 2, "ignore.addresses", f'item 1: {NET}, got "example.com"'),
    ("[ignore]\naddresses = [167772160]\n", 2, "ignore.addresses", f"item 1: {NET}, got 167772160"),
    (
        '[ignore]\naddresses = ["10.0.0.1/8"]\n',
        2,
        "ignore.addresses",
        'item 1: "10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?',
    ),
    (
        '[ignore]\naddresses = "10.0.0.0/8"\n',
        2,
        "ignore.addresses",
        'expected a list of IP addresses or networks (strings), got "10.0.0.0/8"',
    ),
    # [udp], [collector]
    ("[udp]\nidle_timeout = 0\n", 2, "udp.idle_timeout", "must be > 0, got 0"),
    ('[udp]\nidle_timeout = "soon"\n', 2, "udp.idle_timeout", f'{DUR}, got "soon"'),
    ("[collector]\nmax_flows = 15\n", 2, "collector.max_flows", f"{FLOWS}, got 15"),
    ("[collector]\nmax_flows = 4294967296\n", 2, "collector.max_flows", f"{FLOWS}, got 4294967296"),
    ("[collector]\nmax_flows = 16384.0\n", 2, "collector.max_flows", "expected a whole number, got 16384.0"),
    ("[collector]\nmax_flows = true\n", 2, "collector.max_flows", "expected a whole number, got true"),
    ("[daemon]\nbacklog = 99\n", 2, "daemon.backlog", "must be >= 100 and <= 100000000, got 99"),
    ("[daemon]\nbacklog = 1e9\n", 2, "daemon.backlog", "expected a whole number, got 1000000000.0"),
]


@pytest.mark.parametrize(("text", "line", "key", "problem"), REFUSALS)
def test_refusal(tmp_path: Path, text: str, line: int, key: str, problem: str) -> None:
    p, e = refused(tmp_path, text)
    assert (e.path, e.line, e.key, e.problem) == (str(p), line, key, problem)
    assert str(e) == f"{p}:{line}: {key}: {problem}"


def test_inline_tables_and_dotted_keys(tmp_path: Path) -> None:
    p = FIX / "inline-table.toml"
    with pytest.raises(ConfigError) as info:
        load(p)
    # The key sits inside an inline table: the line of the table's name.
    assert str(info.value) == f'{p}:4: udp.idle_timeout: {DUR}, got "never"'
    q, e = refused(tmp_path, '# dotted\nretention.raw = "1x"\n')
    assert str(e) == f'{q}:2: retention.raw: {DUR}, got "1x"'
    good = load_text(tmp_path, 'daemon = { interval = 2 }\nretention.raw = "1d"\n')
    assert (good.daemon.interval, good.retention.raw) == (2.0, DAY)


def test_error_message_without_line_or_key() -> None:
    assert str(ConfigError("/x.toml", None, "daemon.interval", "bad")) == "/x.toml: daemon.interval: bad"
    assert str(ConfigError("/x.toml", 3, None, "bad")) == "/x.toml:3: bad"


# --- the line locator


LOCATOR_TEXT = """\
top = 1
# [daemon]
[daemon]  # interval = 1
database = "a # interval = 2 \\" interval = 3"
note = '''
interval = 4
[retention]
'''
list = [
  "interval = 5",
  { interval = 6 },
]
interval = 7
"retention" . 'raw' = 8
[[hooks]]
name = "x"
[ "quoted" . plain ]
k = 1
inline = { a = 1 }
"""


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("top", 1),
        ("daemon", 3),
        ("daemon.database", 4),
        ("daemon.interval", 13),
        ("daemon.retention.raw", 14),
        ("daemon.retention", 14),
        ("hooks", 15),
        ("hooks.name", 16),
        ("quoted.plain", 17),
        ("quoted.plain.k", 18),
        ("quoted.plain.inline.a", 19),  # inside an inline table: the table's own line
        ("daemon.absent", 3),  # absent: the section's header
        ("retention", None),
        ("retention.raw", None),
    ],
)
def test_locate_key(key: str, line: int | None) -> None:
    assert locate_key(LOCATOR_TEXT, key) == line


def test_locate_key_text_is_valid_toml() -> None:
    # The decoys must be real TOML, or the test would only show the locator copes with broken files.
    assert tomllib.loads(LOCATOR_TEXT)["daemon"]["interval"] == 7


# --- overrides


def test_overrides_valid(tmp_path: Path) -> None:
    c = cli(tmp_path, "daemon.interval=2", "ignore.ports=[53,853]", 'retention.raw="1d"', "udp.idle_timeout=90s")
    assert c.daemon.interval == 2.0
    assert c.ignore.ports == {53, 853}
    assert c.retention.raw == DAY
    assert c.udp.idle_timeout == 90.0
    assert c.collector == Config.default().collector


def test_override_bare_string_fallback(tmp_path: Path) -> None:
    assert cli(tmp_path, "daemon.database=/tmp/x.db").daemon.database == "/tmp/x.db"
    assert cli(tmp_path, " retention.minute = 3d ").retention.minute == 3 * DAY


def test_overrides_take_precedence_over_the_file() -> None:
    c = load(FIX / "full.toml", ["daemon.interval=0.5", "ignore.processes=[]"])
    assert c.daemon.interval == 0.5
    assert c.ignore.processes == frozenset()
    assert c.daemon.database == "/srv/sockscope/history.db"  # the file's, untouched
    assert c.collector.max_flows == 4096


def test_last_override_wins(tmp_path: Path) -> None:
    assert cli(tmp_path, "daemon.interval=2", "daemon.interval=3").daemon.interval == 3.0


def cli_error(tmp_path: Path, *overrides: str, path: Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        if path is None:
            cli(tmp_path, *overrides)
        else:
            load(path, overrides)
    assert (info.value.path, info.value.line) == ("<command line>", None)
    return info.value


def test_override_invalid_value(tmp_path: Path) -> None:
    e = cli_error(tmp_path, "daemon.interval=0")
    assert str(e) == "<command line>: daemon.interval: must be > 0 and <= 3600 seconds, got 0"
    e = cli_error(tmp_path, "daemon.interval=true")
    assert str(e) == "<command line>: daemon.interval: expected a number of seconds, got true"
    e = cli_error(tmp_path, "ignore.ports=53")
    assert str(e) == "<command line>: ignore.ports: expected a list of port numbers, got 53"


def test_override_unknown_section_and_key(tmp_path: Path) -> None:
    e = cli_error(tmp_path, "daemon.speed=1")
    assert str(e) == "<command line>: daemon.speed: unknown key (known in [daemon]: interval, database, backlog)"
    e = cli_error(tmp_path, "deamon.interval=1")
    assert str(e) == f"<command line>: deamon: unknown section, did you mean [daemon]? (known: {KNOWN_SECTIONS})"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "daemon.interval",
            '<command line>: expected section.key=value, e.g. daemon.interval=2, got "daemon.interval"',
        ),
        (
            "interval=2",
            '<command line>: interval: expected section.key=value, e.g. daemon.interval=2, got "interval=2"',
        ),
        ("=2", '<command line>: expected section.key=value, e.g. daemon.interval=2, got "=2"'),
        ("daemon.=2", '<command line>: daemon.: expected section.key=value, e.g. daemon.interval=2, got "daemon.=2"'),
    ],
)
def test_override_syntax(tmp_path: Path, text: str, message: str) -> None:
    assert str(cli_error(tmp_path, text)) == message


def test_override_cannot_smuggle_in_other_keys(tmp_path: Path) -> None:
    e = cli_error(tmp_path, "daemon.interval=2\nmax_flows = 16")
    assert e.key == "daemon.interval"
    assert e.problem == 'expected a number of seconds, got "2\\nmax_flows = 16"'


def test_override_breaking_the_file_order_is_blamed_on_the_command_line() -> None:
    # The file keeps raw (36h) <= minute (14d): raising raw past minute is the override's fault.
    e = cli_error(Path(), "retention.raw=20d", path=FIX / "full.toml")
    assert str(e) == f"<command line>: retention.raw: 20d is longer than retention.minute (2w); {ORDER}"
    e = cli_error(Path(), "retention.minute=1d", path=FIX / "full.toml")
    assert str(e) == f"<command line>: retention.minute: 1d is shorter than retention.raw (36h); {ORDER}"


def test_file_must_be_valid_on_its_own(tmp_path: Path) -> None:
    p = write(tmp_path, '[retention]\nraw = "40d"\n')
    with pytest.raises(ConfigError) as info:
        load(p, ["retention.minute=50d"])
    assert (info.value.path, info.value.line, info.value.key) == (str(p), 2, "retention.raw")


def test_overrides_must_be_a_sequence_not_one_string(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        load(None, "daemon.interval=2", default_path=str(tmp_path / "absent.toml"))


# --- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90s", 90.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("0.5s", 0.5),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    result = parse_duration(value, "k")
    assert result == seconds and isinstance(result, float)


@pytest.mark.parametrize(
    "value",
    [
        "two days",
        "2",
        "2 d",
        "2D",
        "d",
        "",
        "-1s",
        "0s",
        "1.5.2h",
        "1e3s",
        ".5h",
        0,
        -3,
        0.0,
        True,
        None,
        [1],
        math.inf,
        math.nan,
    ],
)
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match=r"^retention\.raw: "):
        parse_duration(value, "retention.raw")


def test_parse_duration_message() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("two days", "retention.raw")
    assert str(info.value) == 'retention.raw: expected a duration like "2d" or a number of seconds, got "two days"'
    with pytest.raises(ValueError) as info:
        parse_duration(0, "udp.idle_timeout")
    assert str(info.value) == "udp.idle_timeout: must be > 0, got 0"


# --- what is ignored


@pytest.fixture
def ignore(tmp_path: Path) -> IgnoreConfig:
    return cli(
        tmp_path,
        'ignore.processes=["nginx", "kworker/0:1"]',
        "ignore.ports=[53]",
        'ignore.addresses=["10.0.0.0/8", "192.0.2.7", "fd00::/8"]',
    ).ignore


@pytest.mark.parametrize(
    ("comm", "exe", "lport", "rport", "raddr", "expected"),
    [
        ("nginx", None, None, None, None, True),  # comm
        ("kworker/0:1", None, None, None, None, True),
        ("worker-1", "/usr/sbin/nginx", None, None, None, True),  # exe basename
        ("worker-1", "/usr/sbin/nginx (deleted)", None, None, None, True),  # replaced by an upgrade
        ("ngin", "/usr/sbin/nginx-debug", None, None, None, False),  # exact match only
        ("curl", "/opt/nginx/curl", None, None, None, False),  # a directory is not the name
        ("curl", "/usr/bin/curl", 40000, 443, "93.184.216.34", False),
        ("curl", None, 53, 40000, None, True),  # local port
        ("curl", None, 40000, 53, None, True),  # remote port
        ("curl", None, 5353, 40000, None, False),
        ("curl", None, None, None, "10.1.2.3", True),  # IPv4 network
        ("curl", None, None, None, "11.0.0.1", False),
        ("curl", None, None, None, "192.0.2.7", True),  # single address
        ("curl", None, None, None, "192.0.2.8", False),
        ("curl", None, None, None, "fd12:3456::1", True),  # IPv6 network
        ("curl", None, None, None, "fe80::1", False),
        ("curl", None, None, None, "::ffff:10.0.0.1", True),  # v4-mapped is the IPv4 host
        ("curl", None, None, None, "not-an-address", False),
        ("curl", None, None, None, "", False),
    ],
)
def test_ignore_matches(
    ignore: IgnoreConfig,
    comm: str,
    exe: str | None,
    lport: int | None,
    rport: int | None,
    raddr: str | None,
    expected: bool,
) -> None:
    assert ignore.matches(comm, exe, lport, rport, raddr) is expected


def test_ipv4_address_does_not_match_an_ipv6_network() -> None:
    # ::/96 holds the same integers as all of IPv4: only a version check keeps 10.0.0.1 out.
    ig = IgnoreConfig(processes=frozenset(), ports=frozenset(), networks=(ipaddress.ip_network("::/96"),))
    assert ig.matches("curl", None, None, None, "::a00:1") is True
    assert ig.matches("curl", None, None, None, "10.0.0.1") is False
    v4_all = IgnoreConfig(processes=frozenset(), ports=frozenset(), networks=(ipaddress.ip_network("0.0.0.0/0"),))
    assert v4_all.matches("curl", None, None, None, "::1") is False
    assert v4_all.matches("curl", None, None, None, "8.8.8.8") is True


def test_nothing_configured_matches_nothing() -> None:
    ig = Config.default().ignore
    assert not ig.matches("nginx", "/usr/sbin/nginx", 53, 53, "10.0.0.1")


def test_module_default_path() -> None:
    assert config.DEFAULT_PATH == "/etc/sockscope/config.toml"


def test_collector_splice_is_a_boolean(tmp_path: Path) -> None:
    assert (
        config.load(None, ["collector.splice=false"], default_path=str(tmp_path / "none.toml")).collector.splice
        is False
    )
    with pytest.raises(config.ConfigError) as exc:
        config.load(None, ['collector.splice="no"'], default_path=str(tmp_path / "none.toml"))
    assert str(exc.value) == '<command line>: collector.splice: expected true or false, got "no"'


def test_collector_hooks_auto_or_one_group(tmp_path: Path) -> None:
    assert Config.default().collector.hooks == "auto"
    assert load_text(tmp_path, '[collector]\nhooks = "kprobe"\n').collector.hooks == "kprobe"
    p, err = refused(tmp_path, '[collector]\nmax_flows = 64\nhooks = "kprobes"\n')
    assert str(err) == (
        f'{p}:3: collector.hooks: expected "auto" or "tracepoint" or "fentry" or "kprobe", got "kprobes"'
    )


def test_a_duration_beyond_a_century_is_refused(tmp_path: Path) -> None:
    # Issue 11: "20000000000w" was accepted, then the daemon died with an OverflowError.
    p, err = refused(tmp_path, '[retention]\nhour = "20000000000w"\n')
    assert str(err) == f'{p}:2: retention.hour: must be at most 36500d (100 years), got "20000000000w"'
    assert load_text(tmp_path, '[retention]\nhour = "36500d"\n').retention.hour == 36500 * 86400


def test_only_a_regular_file_of_sane_size_is_read(tmp_path: Path) -> None:
    # Issue 11: /dev/zero read without bound, a FIFO hung.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        with pytest.raises(ConfigError) as exc:
            load(path)
        assert str(exc.value) == f"{path}: cannot read: not a regular file"
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
    with pytest.raises(ConfigError) as exc:
        load(big)
    assert str(exc.value) == f"{big}: cannot read: larger than 1024 KiB: not a configuration file"
