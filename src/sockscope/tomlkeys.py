"""Where a key is in TOML text: tomllib reports no positions, and an error in a configuration
file says its file, line and key (sockscope.config, the [[rule]] tables of sockscope.events.rules)."""

from __future__ import annotations

import re

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INDEXED = re.compile(r"(.+)\[\d+\]")


def locate_key(text: str, key: str) -> int | None:
    """The 1-based line of TOML `text` that sets `key` ("section.key"), or of a section's header ("section").
    The N-th table of an array of tables is `name[N]`, 1-based: "rule[2].match" is `match` in the second
    `[[rule]]`; plain "rule.match" is the first one's.

    A line scanner, not a parser: it knows `[section]` and `[[section]]` headers, `key = value` and dotted
    `a.b = value` lines (bare or quoted names, taken as written), and skips comments, the inside of strings
    (also multi-line ones) and continuation lines of multi-line arrays. A key it cannot find is reported at
    the nearest enclosing name it can: a key inside an inline table (`retention = {raw = "2d"}`) at the line
    of `retention = `, a key that is absent at its section's header; None if not even the section is there.
    """
    lines = _key_lines(text)
    parts = key.split(".")
    while parts:
        line = lines.get(".".join(parts))
        if line is not None:
            return line
        m = _INDEXED.fullmatch(parts[-1])
        if m is not None:  # "rule[9]" absent (or an inline array): where "rule" is
            parts[-1] = m[1]
        else:
            parts.pop()
    return None


def _key_lines(text: str) -> dict[str, int]:
    found: dict[str, int] = {}
    table: list[str] = []
    indexed: list[str] = []  # the same with the last part of an [[array]] header as name[N]
    arrays: dict[str, int] = {}  # [[array]] headers seen per name
    depth, multiline = 0, ""  # open brackets and the open multi-line string's quotes, carried across lines
    for lineno, line in enumerate(text.split("\n"), 1):
        if depth or multiline:
            depth, multiline = _scan_value(line, 0, depth, multiline)
            continue
        i = _skip_space(line, 0)
        if i == len(line) or line[i] == "#":
            continue
        if line[i] == "[":
            array = line.startswith("[[", i)
            parts, _ = _read_key(line, i + (2 if array else 1))
            if parts:
                table = indexed = parts
                if array:
                    name = ".".join(parts)
                    arrays[name] = arrays.get(name, 0) + 1
                    indexed = [*parts[:-1], f"{parts[-1]}[{arrays[name]}]"]
                    _record(found, indexed, lineno)
                _record(found, table, lineno)
            continue
        parts, i = _read_key(line, i)
        i = _skip_space(line, i)
        if parts and i < len(line) and line[i] == "=":
            _record(found, table + parts, lineno)
            if indexed is not table:
                _record(found, indexed + parts, lineno)
            depth, multiline = _scan_value(line, i + 1, 0, "")
    return found


def _record(found: dict[str, int], parts: list[str], lineno: int) -> None:
    for n in range(1, len(parts) + 1):
        found.setdefault(".".join(parts[:n]), lineno)


def _skip_space(line: str, i: int) -> int:
    while i < len(line) and line[i] in " \t\r":
        i += 1
    return i


def _end_of_basic_string(line: str, i: int) -> int:
    """Index just after the closing quote of a "..." string whose content starts at i (or the end of line)."""
    while i < len(line):
        if line[i] == "\\":
            i += 2
        elif line[i] == '"':
            return i + 1
        else:
            i += 1
    return len(line)


def _read_key(line: str, i: int) -> tuple[list[str], int]:
    """A bare, quoted or dotted key starting at i: its parts ([] if there is none) and the index after it."""
    parts: list[str] = []
    while True:
        i = _skip_space(line, i)
        if line.startswith('"', i):
            end = _end_of_basic_string(line, i + 1)
            parts.append(line[i + 1 : end - 1])
            i = end
        elif line.startswith("'", i):
            end = line.find("'", i + 1)
            if end < 0:
                return [], i
            parts.append(line[i + 1 : end])
            i = end + 1
        else:
            m = _BARE_KEY.match(line, i)
            if m is None:
                return [], i
            parts.append(m[0])
            i = m.end()
        i = _skip_space(line, i)
        if not line.startswith(".", i):
            return parts, i
        i += 1


def _scan_value(line: str, i: int, depth: int, multiline: str) -> tuple[int, str]:
    """Follow a value from i to the end of the line: the bracket depth and the multi-line string left open."""
    n = len(line)
    while i < n:
        if multiline:
            if multiline == '"""' and line[i] == "\\":
                i += 2
            elif line.startswith(multiline, i):
                i += 3
                # Up to two more quotes right before the closing three belong to the string.
                for _ in range(2):
                    if line.startswith(multiline[0], i):
                        i += 1
                multiline = ""
            else:
                i += 1
            continue
        c = line[i]
        if c == "#":
            break
        if line.startswith('"""', i) or line.startswith("'''", i):
            multiline = line[i : i + 3]
            i += 3
        elif c == '"':
            i = _end_of_basic_string(line, i + 1)
        elif c == "'":
            end = line.find("'", i + 1)
            i = n if end < 0 else end + 1
        else:
            if c in "[{":
                depth += 1
            elif c in "]}":
                depth = max(0, depth - 1)
            i += 1
    return depth, multiline
