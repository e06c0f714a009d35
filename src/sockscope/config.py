"""The daemon's configuration: a TOML file, then `-o section.key=value` overrides from the command line.

Every key is optional (`dump_defaults()` shows them all). Anything unknown, mistyped or impossible is refused
with a `ConfigError` naming the file, the line and the key: a typo must never quietly fall back to a default.
The file is validated on its own first, so a file that only works together with some command line is refused
too; the overrides are then applied on top of it and validated the same way.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import TYPE_CHECKING, TypeGuard, TypeVar

from sockscope.bpf.loader import COUNT_GROUP_NAMES
from sockscope.tomlkeys import locate_key

if TYPE_CHECKING:
    from sockscope.events.rules import RuleSpec

DEFAULT_PATH = "/etc/sockscope/config.toml"
COMMAND_LINE = "<command line>"  # stands in for file:line in errors about -o overrides

_T = TypeVar("_T")


class ConfigError(Exception):
    """The configuration cannot be used. The message is `FILE[:LINE]: [KEY: ]PROBLEM`."""

    def __init__(self, path: str, line: int | None, key: str | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.problem = problem
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {problem}" if key is None else f"{where}: {key}: {problem}")


@dataclass(frozen=True)
class DaemonConfig:
    """`interval`: seconds between reads/writes; `database`: where the history is stored;
    `backlog`: traffic rows kept in memory while the database cannot be written (see daemon.Backlog)."""

    interval: float
    database: str
    backlog: int = 100_000


@dataclass(frozen=True)
class RetentionConfig:
    """Seconds each resolution is kept."""

    raw: float
    minute: float
    hour: float


@dataclass(frozen=True)
class IgnoreConfig:
    """Traffic that is not stored."""

    processes: frozenset[str]
    ports: frozenset[int]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def matches(self, comm: str, exe: str | None, lport: int | None, rport: int | None, raddr: str | None) -> bool:
        """True if the process (comm, or basename of exe), either port, or the remote address is ignored.

        An unparsable `raddr` matches no network; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is matched as
        the IPv4 address it stands for.
        """
        if comm in self.processes:
            return True
        if exe is not None and self.processes:
            name = exe.rsplit("/", 1)[-1]
            # /proc/PID/exe reads "/usr/sbin/nginx (deleted)" once a package upgrade replaced the binary.
            name = name.removesuffix(" (deleted)")
            if name in self.processes:
                return True
        if self.ports and (lport in self.ports or rport in self.ports):
            return True
        if raddr and self.networks:
            addr = _ip(raddr)
            return addr is not None and any(addr in net for net in self.networks)
        return False


@dataclass(frozen=True)
class UdpConfig:
    """`idle_timeout`: seconds without traffic that end a UDP flow."""

    idle_timeout: float


@dataclass(frozen=True)
class CollectorConfig:
    """`max_flows`: distinct (socket, process, peer) entries per interval before events are dropped;
    `splice`: count TCP receives as advances of copied_seq (exact for splice() reads too);
    `hooks`: the counting hook group, "auto" (the best this kernel allows) or one forced;
    `ptr`: reverse DNS for peers no program resolved (queries of sockscope's own)."""

    max_flows: int
    splice: bool = True
    hooks: str = "auto"
    ptr: bool = False


@dataclass(frozen=True)
class EventsConfig:
    """The live event socket: `socket` its path, `group` its owner group (None: root's), `mode` its permission
    bits, `max_subscribers` at once, `queue` lines waiting per subscriber, `stall` seconds a subscriber's queue
    may stay full before it is disconnected, `enabled` whether it is served."""

    socket: str
    group: str | None
    mode: int
    max_subscribers: int
    queue: int
    stall: float
    enabled: bool


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig
    retention: RetentionConfig
    ignore: IgnoreConfig
    udp: UdpConfig
    collector: CollectorConfig
    # Defaults from _SECTIONS (a factory: evaluated when a Config is made, after this module is loaded).
    events: EventsConfig = field(default_factory=lambda: _events(_Values({}, frozenset(), None)))
    rules: tuple[RuleSpec, ...] = ()  # [[rule]] tables, parsed by sockscope.events.rules

    @classmethod
    def default(cls) -> Config:
        return _build(_Values({}, frozenset(), None))


@functools.lru_cache(maxsize=4096)  # matches() runs for every flow of every interval, with few distinct peers
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


# --- the schema: defaults as written in TOML, so that dump_defaults() and Config.default() cannot drift apart


@dataclass(frozen=True)
class _Key:
    default: object  # None: absent unless set; dump_defaults() shows `example` commented out
    comment: str
    example: object = None


@dataclass(frozen=True)
class _Section:
    comment: str
    keys: dict[str, _Key]


HOOK_CHOICES = ("auto", *COUNT_GROUP_NAMES)
MIN_BACKLOG, MAX_BACKLOG = 100, 100_000_000
_HOOKS_LIST = ", ".join(COUNT_GROUP_NAMES)
_HOOKS_EXPECTED = " or ".join(f'"{g}"' for g in HOOK_CHOICES)

_SECTIONS: dict[str, _Section] = {
    "daemon": _Section(
        "",
        {
            "interval": _Key(1.0, "seconds between reads/writes, > 0 and <= 3600"),
            "database": _Key("/var/lib/sockscope/sockscope.db", "where the history is stored"),
            "backlog": _Key(100_000, "rows held in memory while the database refuses writes (~0.4 KiB each)"),
        },
    ),
    "retention": _Section(
        "how long each resolution is kept",
        {
            "raw": _Key("2d", 'seconds, or a duration: "90s", "10m", "2h", "2d", "1w"'),
            "minute": _Key("14d", "older ranges are answered to the hour"),
            "hour": _Key("730d", "must be raw <= minute <= hour, each > 0"),
        },
    ),
    "ignore": _Section(
        "traffic not stored",
        {
            "processes": _Key([], "comm or executable basename, exact match"),
            "ports": _Key([], "1..65535, local or remote port"),
            "addresses": _Key([], 'remote IP addresses or CIDR networks, e.g. "10.0.0.0/8", "fd00::/8"'),
        },
    ),
    "udp": _Section("", {"idle_timeout": _Key(60, "seconds (or a duration) without traffic that end a flow, > 0")}),
    "collector": _Section(
        "",
        {
            "max_flows": _Key(16384, "distinct (socket, process, peer) entries per interval, >= 16"),
            "splice": _Key(True, "count splice() reads from TCP (TCP receives claimed by copied_seq)"),
            "hooks": _Key("auto", "auto (the best there is), or force one: " + _HOOKS_LIST),
            "ptr": _Key(False, "reverse DNS for peers no program resolved: sends DNS queries"),
        },
    ),
    "events": _Section(
        "live connection events for other programs (sockscope events)",
        {
            "socket": _Key("/run/sockscope/events.sock", "the live event socket (a Unix socket)"),
            "group": _Key(None, "the socket's owner group, must exist (absent: root only)", "sockscope"),
            "mode": _Key("0660", 'the socket\'s permission bits, octal: "0660" or 0o660'),
            "max_subscribers": _Key(32, "subscribers at once, 1..1024"),
            "queue": _Key(4096, "lines waiting per subscriber before it loses some"),
            "stall": _Key("10s", "a subscriber whose queue stays full this long is disconnected"),
            "enabled": _Key(True, "serve the socket ([[rule]]s run either way)"),
        },
    ),
}
RULE = "rule"  # [[rule]] tables: not a section of keys, parsed by sockscope.events.rules

MIN_FLOWS = 16
MAX_FLOWS = 2**32 - 1  # a BPF map's max_entries is a u32


# --- values


class _Problem(ValueError):
    """A value is wrong; whoever catches it knows where the value came from."""

    def __init__(self, problem: str, key: str | None = None) -> None:
        super().__init__(problem if key is None else f"{key}: {problem}")
        self.problem = problem


def _show(value: object) -> str:
    """A value as TOML would spell it, for error messages."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, list):
        text = "[" + ", ".join(_show(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = "a table"
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


show_value = _show  # public: events.rules and the sinks word their option errors the same way


def _is_number(value: object) -> TypeGuard[int | float]:
    # TOML true/false arrive as Python bools, which are ints: a number here means a real number.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # tomllib reads integers of any size
        return math.inf


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_EXPECTED = 'expected a duration like "2d" or a number of seconds'
MAX_DURATION = 36500 * 86400.0
MAX_FILE_BYTES = 1 << 20  # a configuration file is a few KiB; /dev/zero is not one


def _duration(value: object) -> float:
    if isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if m is None:
            raise _Problem(f"{_DURATION_EXPECTED}, got {_show(value)}")
        seconds = float(m[1]) * _UNITS[m[2]]
    elif _is_number(value):
        seconds = _as_float(value)
    else:
        raise _Problem(f"{_DURATION_EXPECTED}, got {_show(value)}")
    if not math.isfinite(seconds):
        raise _Problem(f"must be a finite duration, got {_show(value)}")
    if seconds <= 0:
        raise _Problem(f"must be > 0, got {_show(value)}")
    if seconds > MAX_DURATION:
        # Later arithmetic (milliseconds, dates) overflows far beyond any useful retention.
        raise _Problem(f"must be at most {_fmt_seconds(MAX_DURATION)} (100 years), got {_show(value)}")
    return seconds


def parse_duration(value: object, key: str) -> float:
    """Seconds from a number of seconds (int or float) or a string with a unit: "90s", "10m", "1.5h", "2d", "1w".

    Raises ValueError (message "KEY: PROBLEM") unless the result is finite and > 0; bools are not numbers.
    """
    try:
        return _duration(value)
    except _Problem as e:
        raise _Problem(e.problem, key) from None


def _fmt_seconds(seconds: float) -> str:
    for unit, size in _UNITS.items():
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _interval(value: object) -> float:
    if not _is_number(value):
        raise _Problem(f"expected a number of seconds, got {_show(value)}")
    seconds = _as_float(value)
    if not 0 < seconds <= 3600:
        raise _Problem(f"must be > 0 and <= 3600 seconds, got {_show(value)}")
    return seconds


def _database(value: object) -> str:
    if not isinstance(value, str):
        raise _Problem(f"expected a path (a string), got {_show(value)}")
    if not value:
        raise _Problem("must not be empty")
    if "\0" in value:
        raise _Problem(f"a path cannot contain a NUL character, got {_show(value)}")
    return value


def _items(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise _Problem(f"expected a list of {what}, got {_show(value)}")
    return value


def _processes(value: object) -> frozenset[str]:
    names: set[str] = set()
    for n, item in enumerate(_items(value, "process names (strings)"), 1):
        if not isinstance(item, str) or not item:
            raise _Problem(f"item {n}: expected a process name (a non-empty string), got {_show(item)}")
        names.add(item)
    return frozenset(names)


def _ports(value: object) -> frozenset[int]:
    ports: set[int] = set()
    for n, item in enumerate(_items(value, "port numbers"), 1):
        if not isinstance(item, int) or isinstance(item, bool) or not 1 <= item <= 65535:
            raise _Problem(f"item {n}: expected a port number 1..65535, got {_show(item)}")
        ports.add(item)
    return frozenset(ports)


_NETWORK_EXPECTED = 'expected an IP address or CIDR network like "10.0.0.0/8" or "fd00::/8"'


def _networks(value: object) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, None] = {}
    for n, item in enumerate(_items(value, "IP addresses or networks (strings)"), 1):
        if not isinstance(item, str):  # ip_network() would take an int as an address
            raise _Problem(f"item {n}: {_NETWORK_EXPECTED}, got {_show(item)}")
        try:
            nets[ipaddress.ip_network(item)] = None
        except ValueError:
            try:
                loose = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise _Problem(f"item {n}: {_NETWORK_EXPECTED}, got {_show(item)}") from None
            # 10.0.0.1/8 is more likely a typo than a wish for 10.0.0.0/8: ask rather than guess.
            raise _Problem(f"item {n}: {_show(item)} has host bits set; did you mean {_show(str(loose))}?") from None
    return tuple(nets)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Problem(f"expected true or false, got {_show(value)}")
    return value


def _hooks(value: object) -> str:
    if value not in HOOK_CHOICES:
        raise _Problem(f"expected {_HOOKS_EXPECTED}, got {_show(value)}")
    return str(value)


def _whole(lo: int, hi: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Problem(f"expected a whole number, got {_show(value)}")
        if not lo <= value <= hi:
            raise _Problem(f"must be >= {lo} and <= {hi}, got {value}")
        return value

    return parse


_max_flows = _whole(MIN_FLOWS, MAX_FLOWS)
SUN_PATH_MAX = 107  # bytes of a Unix socket's path (sun_path, 108 with its NUL)


def _socket_path(value: object) -> str:
    path = _database(value)
    if not path.startswith("/"):
        raise _Problem(f"expected an absolute path, got {_show(value)}")
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise _Problem(f"a Unix socket's path has at most {SUN_PATH_MAX} bytes, got {len(os.fsencode(path))}")
    return path


def _group(value: object) -> str | None:
    # Only the shape: the group must exist when the daemon makes the socket, not when the file is read.
    if value is None:
        return None
    if not isinstance(value, str) or not value or re.search(r"[\s:/\x00-\x1f\x7f]", value):
        raise _Problem(f"expected a group name, got {_show(value)}")
    return value


def _mode(value: object) -> int:
    expected = 'expected permission bits in octal, e.g. "0660" or 0o660'
    if isinstance(value, str) and re.fullmatch(r"[0-7]{1,4}", value):
        bits = int(value, 8)
    elif isinstance(value, int) and not isinstance(value, bool):
        bits = value
    else:
        raise _Problem(f"{expected}, got {_show(value)}")
    if not 0 <= bits <= 0o777:
        raise _Problem(f"{expected} (at most 0777), got {_show(value)}")
    return bits


# --- where values come from


@dataclass(frozen=True)
class _File:
    path: str
    text: str

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, locate_key(self.text, key), key, problem)


def _cli_error(key: str, problem: str) -> ConfigError:
    return ConfigError(COMMAND_LINE, None, key, problem)


class _Values:
    """Raw values for one build and where each came from: command line, file, or default."""

    def __init__(self, data: Mapping[str, Mapping[str, object]], from_cli: frozenset[str], file: _File | None) -> None:
        self.data = data
        self.from_cli = from_cli
        self.file = file

    def rank(self, key: str) -> int:
        """2 from the command line, 1 from the file, 0 a default: the later source is the one to blame."""
        if key in self.from_cli:
            return 2
        section, name = key.split(".", 1)
        return 1 if name in self.data.get(section, {}) else 0

    def error(self, key: str, problem: str) -> ConfigError:
        if key in self.from_cli:
            return _cli_error(key, problem)
        if self.file is not None:
            return self.file.error(key, problem)
        return ConfigError("<defaults>", None, key, problem)

    def get(self, key: str, parse: Callable[[object], _T]) -> _T:
        section, name = key.split(".", 1)
        raw = self.data.get(section, {}).get(name, _SECTIONS[section].keys[name].default)
        try:
            return parse(raw)
        except _Problem as e:
            raise self.error(key, e.problem) from None


def _unknown(kind: str, name: str, known: Sequence[str], shown: Callable[[str], str], where: str) -> str:
    close = get_close_matches(name, known, n=1)
    hint = f", did you mean {shown(close[0])}?" if close else ""
    return f"unknown {kind}{hint} (known{where}: {', '.join(known)})"


def _header(section: str) -> str:
    return f"[[{section}]]" if section == RULE else f"[{section}]"


def _check_shape(data: Mapping[str, object], error: Callable[[str, str], ConfigError]) -> dict[str, dict[str, object]]:
    """Only known sections, each a table, holding only known keys."""
    checked: dict[str, dict[str, object]] = {}
    for section, table in data.items():
        if section not in _SECTIONS:
            raise error(section, _unknown("section", section, [*_SECTIONS, RULE], _header, ""))
        if not isinstance(table, dict):
            raise error(section, f"expected a table ([{section}]), got {_show(table)}")
        known = list(_SECTIONS[section].keys)
        for name in table:
            if name not in known:
                raise error(f"{section}.{name}", _unknown("key", name, known, str, f" in [{section}]"))
        checked[section] = table
    return checked


def _events(v: _Values) -> EventsConfig:
    return EventsConfig(
        socket=v.get("events.socket", _socket_path),
        group=v.get("events.group", _group),
        mode=v.get("events.mode", _mode),
        max_subscribers=v.get("events.max_subscribers", _whole(1, 1024)),
        queue=v.get("events.queue", _whole(1, 1_000_000)),
        stall=v.get("events.stall", _duration),
        enabled=v.get("events.enabled", _bool),
    )


def _build(v: _Values, rules: tuple[RuleSpec, ...] = ()) -> Config:
    daemon = DaemonConfig(
        interval=v.get("daemon.interval", _interval),
        database=v.get("daemon.database", _database),
        backlog=v.get("daemon.backlog", _whole(MIN_BACKLOG, MAX_BACKLOG)),
    )
    kept = {name: v.get(f"retention.{name}", _duration) for name in ("raw", "minute", "hour")}
    for finer, coarser in (("raw", "minute"), ("minute", "hour")):
        if kept[coarser] < kept[finer]:
            rule = "must be raw <= minute <= hour"
            short, long = _fmt_seconds(kept[coarser]), _fmt_seconds(kept[finer])
            if v.rank(f"retention.{coarser}") >= v.rank(f"retention.{finer}"):
                problem = f"{short} is shorter than retention.{finer} ({long}); {rule}"
                raise v.error(f"retention.{coarser}", problem)
            raise v.error(f"retention.{finer}", f"{long} is longer than retention.{coarser} ({short}); {rule}")
    return Config(
        daemon=daemon,
        retention=RetentionConfig(**kept),
        ignore=IgnoreConfig(
            processes=v.get("ignore.processes", _processes),
            ports=v.get("ignore.ports", _ports),
            networks=v.get("ignore.addresses", _networks),
        ),
        udp=UdpConfig(idle_timeout=v.get("udp.idle_timeout", _duration)),
        collector=CollectorConfig(
            max_flows=v.get("collector.max_flows", _max_flows),
            splice=v.get("collector.splice", _bool),
            hooks=v.get("collector.hooks", _hooks),
            ptr=v.get("collector.ptr", _bool),
        ),
        events=_events(v),
        rules=rules,
    )


# --- loading


def _read_regular(name: str) -> bytes:
    """A regular file's bytes, up to MAX_FILE_BYTES: a FIFO would hang, /dev/zero never end."""
    # O_NONBLOCK: opening a FIFO without a writer returns at once; it is refused just below.
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        raise OSError(0, f"larger than {MAX_FILE_BYTES // 1024} KiB: not a configuration file")
    return raw


def _read(path: str | os.PathLike[str] | None, default_path: str) -> _File | None:
    name = default_path if path is None else os.fspath(path)
    try:
        raw = _read_regular(name)
    except FileNotFoundError as e:
        if path is None:
            return None
        raise ConfigError(name, None, None, f"cannot read: {e.strerror}") from e
    except OSError as e:
        raise ConfigError(name, None, None, f"cannot read: {e.strerror or e}") from e
    try:
        return _File(name, raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(name, raw.count(b"\n", 0, e.start) + 1, None, "not UTF-8 text") from e


_TOML_AT = re.compile(r" \(at line (\d+), column (\d+)\)$")
_TOML_AT_END = " (at end of document)"


def _parse(file: _File) -> tuple[dict[str, dict[str, object]], tuple[RuleSpec, ...]]:
    """The file's sections, shape-checked, and its [[rule]] tables parsed."""
    try:
        data = tomllib.loads(file.text)
    except tomllib.TOMLDecodeError as e:
        # Python 3.11's TOMLDecodeError has no position attributes, only this suffix on the message.
        message, line = str(e), None
        m = _TOML_AT.search(message)
        if m is not None:
            message, line = f"{message[: m.start()]} (column {m[2]})", int(m[1])
        elif message.endswith(_TOML_AT_END):
            message, line = message.removesuffix(_TOML_AT_END) + " (at end of file)", len(file.text.splitlines())
        raise ConfigError(file.path, line, None, f"invalid TOML: {message}") from e
    # Imported here: events.rules uses this module's duration parser and value display.
    from sockscope.events.rules import parse_rules

    raw_rules = data.pop(RULE, None)
    checked = _check_shape(data, file.error)
    return checked, parse_rules(raw_rules, file.error)


def _override_value(text: str) -> object:
    try:
        parsed = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text  # so that -o daemon.database=/tmp/x.db needs no quotes
    # A newline in the value could smuggle in more keys: then it was not one TOML value.
    return parsed["v"] if parsed.keys() == {"v"} else text


def _parse_override(text: str) -> tuple[str, str, object]:
    key, eq, value = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if section == RULE or section.startswith(f"{RULE}["):
        problem = "rules cannot be set with -o; write [[rule]] tables in the configuration file"
        raise ConfigError(COMMAND_LINE, None, key.strip(), problem)
    if not (eq and dot and section and name):
        expected = f"expected section.key=value, e.g. daemon.interval=2, got {_show(text)}"
        raise ConfigError(COMMAND_LINE, None, key.strip() if eq and key.strip() else None, expected)
    return section, name, _override_value(value.strip())


def load(
    path: str | os.PathLike[str] | None,
    overrides: Sequence[str] = (),
    *,
    default_path: str = DEFAULT_PATH,
) -> Config:
    """The configuration from `path` (None: `default_path`, where a missing file means all defaults), then
    `overrides` ("section.key=value", the value in TOML or else taken as a bare string) on top.

    Raises ConfigError for a file that is given but missing or unreadable, invalid TOML, unknown sections or
    keys, wrong types, and impossible values; nothing is ever partly applied.
    """
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of strings, not one string")
    file = _read(path, default_path)
    data, rules = _parse(file) if file is not None else ({}, ())
    config = _build(_Values(data, frozenset(), file), rules)
    if not overrides:
        return config
    merged = {section: dict(table) for section, table in data.items()}
    from_cli: set[str] = set()
    for text in overrides:
        section, name, value = _parse_override(text)
        _check_shape({section: {name: value}}, _cli_error)
        merged.setdefault(section, {})[name] = value
        from_cli.add(f"{section}.{name}")
    return _build(_Values(merged, frozenset(from_cli), file), rules)


# --- the example file


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are a subset of TOML's basic-string escapes
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def dump_defaults() -> str:
    """The default configuration as a commented TOML file; `load()` of it gives `Config.default()`."""
    rows: list[tuple[str, str]] = []
    for name, section in _SECTIONS.items():
        rows.append(("", ""))
        rows.append((f"[{name}]", section.comment))
        for key, k in section.keys.items():
            if k.default is None:  # absent by default: shown commented out, with an example value
                rows.append((f"# {key} = {_toml_value(k.example)}", k.comment))
            else:
                rows.append((f"{key} = {_toml_value(k.default)}", k.comment))
    from sockscope.events.rules import EXAMPLE  # imported here: events.rules imports this module

    rows.append(("", ""))
    rows.extend((f"# {code}" if code else "", comment) for code, comment in EXAMPLE)  # no rules by default
    width = max(len(code) for code, _ in rows) + 2
    head = [
        f"# sockscope daemon configuration (sockscope daemon --config PATH, default {DEFAULT_PATH}).",
        "# Every key is optional; the values below are the defaults.",
        "# A single run can override any key: -o section.key=value, e.g. -o daemon.interval=2.",
    ]
    body = [f"{code:<{width}}# {comment}" if comment else code for code, comment in rows]
    return "\n".join(head + body) + "\n"
