"""[[rule]] tables and the [events] section of the daemon's configuration: every refusal names file, line, key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from sockscope.config import Config, ConfigError, EventsConfig, dump_defaults, load
from sockscope.events.rules import RuleSpec, parse_rules
from sockscope.events.sinks import ExecOptions, ExecSink, LogOptions, LogSink, NftablesOptions, NftSet
from sockscope.tomlkeys import locate_key

GOOD = """\
[events]
socket = "/run/sockscope/events.sock"
group = "sockscope"
mode = "0660"
max_subscribers = 32
queue = 4096
stall = "10s"
enabled = true

[[rule]]
name = "block-curl"
match = "comm=curl rport=8080 kind=tcp_connect"
action = "nftables"
set4 = "inet sockscope_demo blocked4"
set6 = "inet sockscope_demo blocked6"
timeout = "1h"
netns = "demo"

[[rule]]
name = "notify"
match = "kind=tcp_connect rnet=198.18.0.0/15"
action = "exec"
command = ["/usr/local/bin/handler", "--json"]
mode = "stream"
queue = 1024

[[rule]]
name = "per-event"
match = "kind=tcp_accept"
action = "exec"
command = ["/usr/local/bin/handler"]
mode = "per_event"
timeout = "10s"
max_running = 4

[[rule]]
name = "audit"
match = "kind=tcp_listen"
action = "log"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sockscope.toml"
    p.write_text(text, encoding="utf-8")
    return p


def refused(tmp_path: Path, text: str) -> tuple[Path, ConfigError]:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(p)
    return p, info.value


def test_good_rules(tmp_path: Path) -> None:
    c = load(write(tmp_path, GOOD))
    assert c.events == EventsConfig(
        socket="/run/sockscope/events.sock",
        group="sockscope",
        mode=0o660,
        max_subscribers=32,
        queue=4096,
        stall=10.0,
        enabled=True,
    )
    assert [(r.name, r.match, r.action) for r in c.rules] == [
        ("block-curl", "comm=curl rport=8080 kind=tcp_connect", "nftables"),
        ("notify", "kind=tcp_connect rnet=198.18.0.0/15", "exec"),
        ("per-event", "kind=tcp_accept", "exec"),
        ("audit", "kind=tcp_listen", "log"),
    ]
    block, notify, per_event, audit = c.rules
    assert block.options == NftablesOptions(
        set4=NftSet("inet", "sockscope_demo", "blocked4"),
        set6=NftSet("inet", "sockscope_demo", "blocked6"),
        timeout=3600,
        netns="demo",
    )
    assert notify.options == ExecOptions(command=("/usr/local/bin/handler", "--json"), mode="stream", queue=1024)
    assert per_event.options == ExecOptions(
        command=("/usr/local/bin/handler",), mode="per_event", timeout=10.0, max_running=4
    )
    assert audit.options == LogOptions()
    # The compiled match is the text's.
    curl = {"kind": "tcp_connect", "comm": "curl", "rport": 8080}
    assert block.matcher(curl) and not block.matcher({**curl, "rport": 443})
    assert isinstance(notify.sink(print), ExecSink) and isinstance(audit.sink(print), LogSink)


def test_defaults_have_no_rules_and_a_root_only_socket() -> None:
    c = Config.default()
    assert c.rules == ()
    assert c.events == EventsConfig(
        socket="/run/sockscope/events.sock",
        group=None,
        mode=0o660,
        max_subscribers=32,
        queue=4096,
        stall=10.0,
        enabled=True,
    )


def test_dump_defaults_shows_events_and_example_rules_that_parse(tmp_path: Path) -> None:
    text = dump_defaults()
    assert "\n[events]" in text and '\n# group = "sockscope"' in text
    assert load(write(tmp_path, text)) == Config.default()
    # Uncommented, the example rules are a valid configuration.
    tail = text[text.index("# [[rule]]") :]
    rules = "\n".join(re.sub(r"\s+# .*$", "", ln.removeprefix("# ")) for ln in tail.splitlines())
    c = load(write(tmp_path, rules))
    assert [r.action for r in c.rules] == ["nftables", "exec", "log"]


def test_rules_compare_by_text() -> None:
    def one() -> tuple[RuleSpec, ...]:
        return parse_rules([{"name": "a", "match": "kind=tcp_listen", "action": "log"}], _no_error)

    assert one() == one()


def _no_error(key: str, problem: str) -> ConfigError:
    raise AssertionError((key, problem))


# --- refusals: (text, line, key, problem)

HEAD = '[[rule]]\nname = "r"\nmatch = "kind=tcp_connect"\n'  # lines 1-3
SET = "expected 'FAMILY TABLE SET', e.g. 'inet filter blocked4'"
EXEC_KEYS = "name, match, action, command, mode, queue, timeout, max_running"
NFT_KEYS = "name, match, action, set4, set6, timeout, netns"
ARGV = 'expected the program and its arguments as a list of strings, e.g. ["/usr/local/bin/handler"]'
EVENTS_KEYS = "socket, group, mode, max_subscribers, queue, stall, enabled"

RULE_REFUSALS = [
    (
        '[[rule]]\nname = "a"\nmatch = "kind=tcp_listen"\naction = "log"\n\n[[rule]]\nname = "b"\n'
        'match = "kind=tcp_connect rprt=80"\naction = "log"\n',
        8,
        "rule[2].match",
        'column 18: unknown key "rprt", did you mean rport? (known: kind, proto, family, rnet, rport, lnet, lport, '
        "name, pid, ppid, uid, user, comm, exe, pcomm, pexe, unit, container, netns)",
    ),
    (
        HEAD + 'action = "log"\nmatch2 = 1\n',
        5,
        "rule[1].match2",
        'unknown key, did you mean match? (known with action = "log": name, match, action)',
    ),
    (
        HEAD + 'action = "exec"\ncomand = ["/bin/x"]\n',
        5,
        "rule[1].comand",
        f'unknown key, did you mean command? (known with action = "exec": {EXEC_KEYS})',
    ),
    (
        HEAD + 'action = "exec"\ncommand = ["/bin/x"]\nset4 = "inet t s"\n',
        6,
        "rule[1].set4",
        'an option of action = "nftables", not of action = "exec"',
    ),
    (
        HEAD + 'action = "log"\ntimeout = "1h"\n',
        5,
        "rule[1].timeout",
        'an option of action = "exec" or "nftables", not of action = "log"',
    ),
    (
        '[[rule]]\nmatch = "kind=tcp_listen"\naction = "log"\n',
        1,
        "rule[1]",
        "missing name (every rule needs name, match, action)",
    ),
    ('[[rule]]\nname = "r"\naction = "log"\n', 1, "rule[1]", "missing match (every rule needs name, match, action)"),
    (
        '[events]\nqueue = 64\n\n[[rule]]\nname = "r"\nmatch = "kind=tcp_listen"\n',
        4,
        "rule[1]",
        "missing action (every rule needs name, match, action)",
    ),
    (
        '[[rule]]\nname = "a"\nmatch = "kind=tcp_listen"\naction = "log"\n'
        '[[rule]]\nname = "b"\nmatch = "kind=tcp_listen"\naction = "log"\n'
        '[[rule]]\nname = "a"\nmatch = "kind=tcp_close"\naction = "log"\n',
        10,
        "rule[3].name",
        '"a" is taken by rule[1]; names are unique',
    ),
    (
        '[[rule]]\nname = "block curl"\nmatch = "kind=tcp_listen"\naction = "log"\n',
        2,
        "rule[1].name",
        "expected a name of letters, digits, '_', '.', '-' (at most 64, e.g. \"block-curl\"), got \"block curl\"",
    ),
    (HEAD + "action = 3\n", 4, "rule[1].action", 'expected one of "exec", "nftables", "log", got 3'),
    (
        HEAD + 'action = "nft"\n',
        4,
        "rule[1].action",
        'unknown action "nft", did you mean "nftables"? (known: "exec", "nftables", "log")',
    ),
    (
        HEAD.replace('"kind=tcp_connect"', "5") + 'action = "log"\n',
        3,
        "rule[1].match",
        "expected a match expression (a string), got 5",
    ),
    (HEAD.replace("kind=tcp_connect", "") + 'action = "log"\n', 3, "rule[1].match", "column 1: empty expression"),
    # nftables
    (
        HEAD + 'action = "nftables"\ntimeout = "1h"\n',
        1,
        "rule[1]",
        "needs set4 or set6 (or both): the sets remote addresses are added to",
    ),
    (HEAD + 'action = "nftables"\nset4 = "inet blocked4"\n', 5, "rule[1].set4", f'{SET}, got "inet blocked4"'),
    (HEAD + 'action = "nftables"\nset6 = ["inet", "t", "s"]\n', 5, "rule[1].set6", f'{SET}, got ["inet", "t", "s"]'),
    (
        HEAD + 'action = "nftables"\nset4 = "inet6 filter blocked4"\n',
        5,
        "rule[1].set4",
        'unknown family "inet6"; expected one of ip, ip6, inet, bridge, netdev, arp',
    ),
    (
        HEAD + 'action = "nftables"\nset4 = "inet filter {x}"\n',
        5,
        "rule[1].set4",
        f'set name "{{x}}" is not an nftables name; {SET}',
    ),
    (
        HEAD + 'action = "nftables"\nset4 = "inet t s"\ntimeout = "1 hour"\n',
        6,
        "rule[1].timeout",
        'expected a duration like "2d" or a number of seconds, got "1 hour"',
    ),
    (
        HEAD + 'action = "nftables"\nset4 = "inet t s"\ntimeout = "1.5s"\n',
        6,
        "rule[1].timeout",
        'nft takes whole seconds, got "1.5s"',
    ),
    (HEAD + 'action = "nftables"\nset4 = "inet t s"\ntimeout = 0\n', 6, "rule[1].timeout", "must be > 0, got 0"),
    (
        HEAD + 'action = "nftables"\nset4 = "inet t s"\nnetns = "../x"\n',
        6,
        "rule[1].netns",
        'expected the name of a network namespace (a file in /run/netns), got "../x"',
    ),
    (
        HEAD + 'action = "nftables"\nset4 = "inet t s"\ncommand = ["/bin/x"]\n',
        6,
        "rule[1].command",
        'an option of action = "exec", not of action = "nftables"',
    ),
    (
        HEAD + 'action = "nftables"\nset4 = "inet t s"\nnetsn = "x"\n',
        6,
        "rule[1].netsn",
        f'unknown key, did you mean netns? (known with action = "nftables": {NFT_KEYS})',
    ),
    # exec
    (
        HEAD + 'action = "exec"\n',
        1,
        "rule[1]",
        'needs a command (the program and its arguments, e.g. ["/usr/local/bin/x"])',
    ),
    (
        HEAD + 'action = "exec"\ncommand = []\n',
        5,
        "rule[1].command",
        f"must name a program; {ARGV}",
    ),
    (
        HEAD + 'action = "exec"\ncommand = "/bin/x --json"\n',
        5,
        "rule[1].command",
        f'{ARGV}, got "/bin/x --json"',
    ),
    (
        HEAD + 'action = "exec"\ncommand = [""]\n',
        5,
        "rule[1].command",
        f"must name a program; {ARGV}",
    ),
    (
        HEAD + 'action = "exec"\ncommand = ["/bin/x"]\nmode = "streaming"\n',
        6,
        "rule[1].mode",
        'expected "stream" or "per_event", got "streaming"',
    ),
    (
        HEAD + 'action = "exec"\ncommand = ["/bin/x"]\nqueue = 0\n',
        6,
        "rule[1].queue",
        "must be >= 1 and <= 1000000, got 0",
    ),
    (
        HEAD + 'action = "exec"\ncommand = ["/bin/x"]\ntimeout = "10s"\n',
        6,
        "rule[1].timeout",
        'only for mode = "per_event" (a stream program runs until it exits)',
    ),
    (
        HEAD + 'action = "exec"\ncommand = ["/bin/x"]\nmode = "per_event"\ntimeout = "soon"\n',
        7,
        "rule[1].timeout",
        'expected a duration like "2d" or a number of seconds, got "soon"',
    ),
    (
        HEAD + 'action = "exec"\ncommand = ["/bin/x"]\nmode = "per_event"\nmax_running = 65\n',
        7,
        "rule[1].max_running",
        "must be >= 1 and <= 64, got 65",
    ),
    # the array itself
    ('[rule]\nname = "r"\n', 1, "rule", "expected [[rule]] tables (an array of tables), got a table"),
    ("rule = [1]\n", 1, "rule[1]", "expected a table ([[rule]]), got 1"),  # the line of `rule`
    (
        '[[rules]]\nname = "r"\n',
        1,
        "rules",
        "unknown section, did you mean [[rule]]? (known: daemon, retention, ignore, udp, collector, events, rule)",
    ),
]


@pytest.mark.parametrize(("text", "line", "key", "problem"), RULE_REFUSALS)
def test_rule_refusal(tmp_path: Path, text: str, line: int, key: str, problem: str) -> None:
    p, e = refused(tmp_path, text)
    assert (e.path, e.line, e.key, e.problem) == (str(p), line, key, problem)
    assert str(e) == f"{p}:{line}: {key}: {problem}"


EVENTS_REFUSALS = [
    ('[events]\nsocket = "events.sock"\n', "events.socket", 'expected an absolute path, got "events.sock"'),
    ('[events]\nsocket = ""\n', "events.socket", "must not be empty"),
    (f'[events]\nsocket = "/{"x" * 107}"\n', "events.socket", "a Unix socket's path has at most 107 bytes, got 108"),
    ('[events]\ngroup = ""\n', "events.group", 'expected a group name, got ""'),
    ('[events]\ngroup = "a:b"\n', "events.group", 'expected a group name, got "a:b"'),
    ("[events]\ngroup = 0\n", "events.group", "expected a group name, got 0"),
    (
        '[events]\nmode = "rw-rw----"\n',
        "events.mode",
        'expected permission bits in octal, e.g. "0660" or 0o660, got "rw-rw----"',
    ),
    ('[events]\nmode = "0980"\n', "events.mode", 'expected permission bits in octal, e.g. "0660" or 0o660, got "0980"'),
    (
        '[events]\nmode = "1777"\n',
        "events.mode",
        'expected permission bits in octal, e.g. "0660" or 0o660 (at most 0777), got "1777"',
    ),
    (
        "[events]\nmode = 660\n",
        "events.mode",
        'expected permission bits in octal, e.g. "0660" or 0o660 (at most 0777), got 660',
    ),
    ("[events]\nmode = true\n", "events.mode", 'expected permission bits in octal, e.g. "0660" or 0o660, got true'),
    ("[events]\nmax_subscribers = 0\n", "events.max_subscribers", "must be >= 1 and <= 1024, got 0"),
    ("[events]\nqueue = 1.5\n", "events.queue", "expected a whole number, got 1.5"),
    (
        '[events]\nstall = "forever"\n',
        "events.stall",
        'expected a duration like "2d" or a number of seconds, got "forever"',
    ),
    ('[events]\nenabled = "yes"\n', "events.enabled", 'expected true or false, got "yes"'),
    (
        "[events]\nsubscribers = 3\n",
        "events.subscribers",
        f"unknown key, did you mean max_subscribers? (known in [events]: {EVENTS_KEYS})",
    ),
]


@pytest.mark.parametrize(("text", "key", "problem"), EVENTS_REFUSALS)
def test_events_refusal(tmp_path: Path, text: str, key: str, problem: str) -> None:
    p, e = refused(tmp_path, text)
    assert (e.path, e.line, e.key, e.problem) == (str(p), 2, key, problem)


def test_events_mode_forms(tmp_path: Path) -> None:
    for text, bits in (('"0660"', 0o660), ('"600"', 0o600), ("0o640", 0o640), ("384", 0o600), ('"0"', 0)):
        assert load(write(tmp_path, f"[events]\nmode = {text}\n")).events.mode == bits


def test_events_overrides_and_rules_not_on_the_command_line(tmp_path: Path) -> None:
    absent = str(tmp_path / "absent.toml")
    c = load(None, ["events.queue=100", "events.mode=0600", "events.group=adm", "events.stall=1m"], default_path=absent)
    assert (c.events.queue, c.events.mode, c.events.group, c.events.stall) == (100, 0o600, "adm", 60.0)
    for text in ("rule.name=x", "rule[1].match=kind=tcp_listen"):
        with pytest.raises(ConfigError) as info:
            load(None, [text], default_path=absent)
        assert (info.value.path, info.value.line) == ("<command line>", None)
        assert info.value.problem == "rules cannot be set with -o; write [[rule]] tables in the configuration file"


def test_rules_survive_overrides(tmp_path: Path) -> None:
    c = load(write(tmp_path, GOOD), ["daemon.interval=2"])
    assert [r.name for r in c.rules] == ["block-curl", "notify", "per-event", "audit"]


# --- the line locator and arrays of tables

LOCATOR = """\
[events]
queue = 10
[[rule]]
name = "a"
match = "kind=tcp_listen"
# [[rule]]
note = '''
[[rule]]
match = 1
'''
[[rule]]
name = "b"
[[ rule ]]  # third
name = "c"
  match = "x"
[other]
match = 2
[[rule]]
"""


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("rule", 3),
        ("rule[1]", 3),
        ("rule[1].name", 4),
        ("rule[1].match", 5),
        ("rule.match", 5),  # no index: the first table's
        ("rule[2]", 11),
        ("rule[2].name", 12),
        ("rule[2].match", 11),  # absent: the table's header
        ("rule[3].name", 14),
        ("rule[3].match", 15),
        ("rule[4]", 18),
        ("rule[4].name", 18),
        ("rule[5].name", 3),  # no fifth table: the first header is the best there is
        ("other.match", 17),
        ("events.queue", 2),
    ],
)
def test_locate_key_in_arrays_of_tables(key: str, line: int) -> None:
    assert locate_key(LOCATOR, key) == line


def test_locator_text_is_valid_toml() -> None:
    assert [t.get("name") for t in tomllib.loads(LOCATOR)["rule"]] == ["a", "b", "c", None]
