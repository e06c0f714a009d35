"""[[rule]] tables of the daemon's configuration: which live events to hand to which action.

    [[rule]]
    name = "block-curl"                        # unique; in logs and counters
    match = "comm=curl kind=tcp_connect"       # sockscope.events.match syntax
    action = "nftables"                        # a key of sinks.SINKS; the other keys are its options

Errors are ConfigErrors naming the file, the line and `rule[N].KEY` (N counts [[rule]] tables from 1; the
locate_key (sockscope.tomlkeys) finds that name), like every other key of the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any

from sockscope.config import ConfigError, show_value
from sockscope.events.match import Match, MatchError, parse
from sockscope.events.sinks import SINKS
from sockscope.events.sinks.base import COMMON_KEYS, Report, RuleProblem, Sink

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # goes into log lines and counter labels as it is
NAME_EXPECTED = "expected a name of letters, digits, '_', '.', '-' (at most 64, e.g. \"block-curl\")"
MAX_RULES = 256  # each rule has a worker thread (and maybe programs): a bound, not a budget


# Example rules, (TOML, comment) rows: dump_defaults() shows them commented out.
EXAMPLE: list[tuple[str, str]] = [
    ("[[rule]]", "hand-off rules, none by default; examples:"),
    ('name = "block-curl"', "unique: in logs and counters"),
    ('match = "comm=curl kind=tcp_connect"', "terms that all hold: KEY=VALUE[,VALUE...] or KEY!=VALUE"),
    ('action = "nftables"', '"nftables", "exec" or "log"'),
    ('set4 = "inet filter blocked4"', '"FAMILY TABLE SET", yours; set6 for IPv6 (at least one)'),
    ('timeout = "1h"', "each element's (absent: the set's own; the set needs flags timeout)"),
    ('netns = "demo"', "optional: the sets are in /run/netns/demo"),
    ("", ""),
    ("[[rule]]", ""),
    ('name = "notify"', ""),
    ('match = "kind=tcp_connect rnet=10.0.0.0/8"', ""),
    ('action = "exec"', ""),
    ('command = ["/usr/local/bin/notify"]', "the program and its arguments (no shell)"),
    ('mode = "stream"', 'JSON lines on its stdin; "per_event": a program per event'),
    ("queue = 1024", "events waiting for the program before some are dropped"),
    ("", ""),
    ("[[rule]]", ""),
    ('name = "audit"', ""),
    ('match = "kind=tcp_listen"', ""),
    ('action = "log"', "each event as a JSON line on the daemon's log"),
]


@dataclass(frozen=True)
class RuleSpec:
    """One [[rule]]: `match` is its expression as written, `matcher` that compiled; `options` is the action's
    options dataclass (ExecOptions, NftablesOptions, LogOptions)."""

    name: str
    match: str
    matcher: Match = field(compare=False, repr=False)  # equal texts compile to equal matchers
    action: str
    options: Any

    def sink(self, report: Report) -> Sink[Any]:
        """A new, not yet started sink doing this rule's action."""
        return SINKS[self.action](self.name, self.options, report)


Error = Callable[[str, str], ConfigError]  # (key, problem) -> the error naming file and line


def parse_rules(raw: object, error: Error) -> tuple[RuleSpec, ...]:
    """The [[rule]] tables as tomllib read them (None: there are none)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise error("rule", f"expected [[rule]] tables (an array of tables), got {show_value(raw)}")
    if len(raw) > MAX_RULES:
        raise error(f"rule[{MAX_RULES + 1}]", f"at most {MAX_RULES} rules")
    rules: list[RuleSpec] = []
    seen: dict[str, int] = {}
    for n, table in enumerate(raw, 1):
        if not isinstance(table, dict):
            raise error(f"rule[{n}]", f"expected a table ([[rule]]), got {show_value(table)}")
        rule = _rule(n, table, error)
        if rule.name in seen:
            taken = f"{show_value(rule.name)} is taken by rule[{seen[rule.name]}]; names are unique"
            raise error(f"rule[{n}].name", taken)
        seen[rule.name] = n
        rules.append(rule)
    return tuple(rules)


def _rule(n: int, table: Mapping[str, object], error: Error) -> RuleSpec:
    where = f"rule[{n}]"
    known = ", ".join(f'"{k}"' for k in SINKS)
    for key in COMMON_KEYS:
        if key not in table:
            raise error(where, f"missing {key} (every rule needs {', '.join(COMMON_KEYS)})")
    name = table["name"]
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise error(f"{where}.name", f"{NAME_EXPECTED}, got {show_value(name)}")
    text = table["match"]
    if not isinstance(text, str):
        raise error(f"{where}.match", f"expected a match expression (a string), got {show_value(text)}")
    try:
        matcher = parse(text)
    except MatchError as e:
        raise error(f"{where}.match", str(e)) from None
    action = table["action"]
    if not isinstance(action, str):
        raise error(f"{where}.action", f"expected one of {known}, got {show_value(action)}")
    if action not in SINKS:
        close = [k for k in SINKS if k.startswith(action)] or get_close_matches(action, list(SINKS), n=1)
        hint = f", did you mean {show_value(close[0])}?" if close and action else ""
        raise error(f"{where}.action", f"unknown action {show_value(action)}{hint} (known: {known})")
    sink = SINKS[action]
    options = {k: v for k, v in table.items() if k not in COMMON_KEYS}
    for key in options:
        owners = " or ".join(f'"{k}"' for k, s in SINKS.items() if key in s.option_keys)
        if key not in sink.option_keys and owners:
            # The likely slip: an option of another action (set4 on an exec rule), not a typo.
            raise error(f"{where}.{key}", f'an option of action = {owners}, not of action = "{action}"')
    try:
        parsed = sink.parse_options(options)
    except RuleProblem as e:
        raise error(where if e.key is None else f"{where}.{e.key}", e.problem) from None
    return RuleSpec(name=name, match=text, matcher=matcher, action=action, options=parsed)
