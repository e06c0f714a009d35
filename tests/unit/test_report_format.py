from __future__ import annotations

import csv
import io
import json
import time
import unicodedata
from collections.abc import Iterator
from datetime import datetime

import pytest

from sockscope.report_format import (
    GROUP_FIELDS,
    ReportRow,
    human_duration,
    local_time,
    parse_when,
    to_csv,
    to_json,
    to_table,
)

NOW = 1_795_500_000.0
# 2026-11-24T00:00:00Z and 2026-11-24T13:05:00Z, worked out independently with calendar.timegm.
UTC_MIDNIGHT = 1_795_478_400.0
UTC_1305 = 1_795_525_500.0


def _local(*parts: int) -> float:
    return datetime(*parts).timestamp()  # type: ignore[arg-type]


@pytest.fixture
def india_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fixed zone that is not UTC (and has no DST), so local-time handling cannot pass by accident on a UTC box.
    A POSIX TZ string needs no tzdata."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


# --- parse_when ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - 90),
        ("10m", NOW - 600),
        ("2h", NOW - 7200),
        ("1.5h", NOW - 5400),
        ("3d", NOW - 3 * 86400),
        ("1w", NOW - 7 * 86400),
        (" 10m ", NOW - 600),
        ("now", NOW),
        ("NOW", NOW),
        ("1795000000", 1_795_000_000.0),
        ("1795000000.25", 1_795_000_000.25),
        ("2026-11-24T13:05Z", UTC_1305),
        ("2026-11-24T13:05:10Z", UTC_1305 + 10),
        ("2026-11-24 13:05:10+01:00", UTC_1305 + 10 - 3600),
        ("2026-11-24T13:05-05:30", UTC_1305 + 5.5 * 3600),
    ],
)
def test_parse_when_fixed(text: str, expected: float) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("2026-11-24", (2026, 11, 24)),
        ("2026-11-24T13:05", (2026, 11, 24, 13, 5)),
        ("2026-11-24 13:05:10", (2026, 11, 24, 13, 5, 10)),
        ("2026-06-01T08:00", (2026, 6, 1, 8, 0)),
    ],
)
def test_parse_when_naive_is_local_time(text: str, parts: tuple[int, ...]) -> None:
    assert parse_when(text, NOW) == _local(*parts)


@pytest.mark.usefixtures("india_time")
def test_parse_when_naive_in_a_zone_east_of_utc() -> None:
    assert parse_when("2026-11-24", NOW) == UTC_MIDNIGHT - 5.5 * 3600
    assert parse_when("2026-11-24 13:05", NOW) == UTC_1305 - 5.5 * 3600
    # An explicit offset wins over the local zone.
    assert parse_when("2026-11-24T13:05Z", NOW) == UTC_1305


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "yesterday",
        "10x",
        "-10m",
        "10 minutes",
        "1e5",
        "nan",
        "inf",
        "2026-13-01",
        "2026-11-24T25:00",
        "9" * 400,
    ],
)
def test_parse_when_rejects(text: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_when(text, NOW)
    message = str(err.value)
    assert repr(text) in message
    for form in ("10m", "now", "2026-11-24", "2026-11-24T13:05", "+01:00", "Unix seconds"):
        assert form in message


# --- model and JSON -----------------------------------------------------------------------------------------


def test_group_fields() -> None:
    assert GROUP_FIELDS == {
        "process": ("pid", "comm", "exe", "cmdline", "user"),
        "exe": ("exe",),
        "user": ("uid", "user"),
        "unit": ("unit",),
        "remote": ("raddr",),
        "host": ("host",),
        "port": ("proto", "port"),
        "connection": ("pid", "comm", "proto", "laddr", "lport", "raddr", "rport", "name", "start", "end",
                       "duration"),
    }  # fmt: skip


def _conn(**key: object) -> dict[str, object]:
    base: dict[str, object] = {
        "pid": 42,
        "comm": "ssh",
        "proto": "tcp",
        "laddr": "10.0.0.2",
        "lport": 50000,
        "raddr": "2001:db8::1",
        "rport": 22,
        "start": UTC_1305 + 10.123,
        "end": None,
        "duration": 4.25,
    }
    base.update(key)
    return base


def test_json_process_shape() -> None:
    rows = [
        ReportRow({"pid": 1, "comm": "curl", "exe": "/usr/bin/curl", "cmdline": "curl x", "user": "alice"}, 10, 5),
        ReportRow({"pid": 2, "comm": "a\x1b[2J", "exe": None, "cmdline": None, "user": None, "extra": 1}, 0, 7),
    ]
    text = to_json(rows, "process")
    assert text.isascii()
    assert "\\u001b[2J" in text
    data = json.loads(text)
    assert data == [
        {
            "pid": 1,
            "comm": "curl",
            "exe": "/usr/bin/curl",
            "cmdline": "curl x",
            "user": "alice",
            "tx_bytes": 10,
            "rx_bytes": 5,
            "total_bytes": 15,
        },
        {
            "pid": 2,
            "comm": "a\x1b[2J",
            "exe": None,
            "cmdline": None,
            "user": None,
            "tx_bytes": 0,
            "rx_bytes": 7,
            "total_bytes": 7,
        },
    ]
    assert list(data[0]) == ["pid", "comm", "exe", "cmdline", "user", "tx_bytes", "rx_bytes", "total_bytes"]


def test_json_connection_times_are_utc_iso_with_milliseconds() -> None:
    rows = [ReportRow(_conn(end=UTC_1305 + 20), 3, 4), ReportRow(_conn(start=None, duration=None), 0, 0)]
    data = json.loads(to_json(rows, "connection"))
    assert data[0]["start"] == "2026-11-24T13:05:10.123+00:00"
    assert data[0]["end"] == "2026-11-24T13:05:20.000+00:00"
    assert data[0]["duration"] == 4.25
    assert data[0]["raddr"] == "2001:db8::1"
    assert list(data[0]) == [*GROUP_FIELDS["connection"], "tx_bytes", "rx_bytes", "total_bytes"]
    assert data[1]["start"] is None and data[1]["end"] is None and data[1]["duration"] is None


def test_json_exact_text_and_non_ascii() -> None:
    text = to_json([ReportRow({"raddr": "1.2.3.4", "user": "ignored"}, 1, 2)], "remote")
    assert (
        text == '[\n  {\n    "raddr": "1.2.3.4",\n    "tx_bytes": 1,\n    "rx_bytes": 2,\n    "total_bytes": 3\n  }\n]'
    )
    text = to_json([ReportRow({"unit": "caf\u00e9\u202e\udcff.service"}, 0, 0)], "unit")
    assert text.isascii()
    assert '"unit": "caf\\u00e9\\u202e\\udcff.service"' in text


def test_json_empty() -> None:
    assert json.loads(to_json([], "process")) == []


# --- CSV ----------------------------------------------------------------------------------------------------


def test_csv_quoting_exact() -> None:
    rows = [
        ReportRow({"pid": 7, "comm": "a,b", "exe": 'say "hi"', "cmdline": "line1\nline2\rx", "user": None}, 1, 2),
        ReportRow({"pid": 8, "comm": "plain", "exe": "/bin/x", "cmdline": "", "user": "bob"}, 1536, 0),
    ]
    assert to_csv(rows, "process") == (
        '"pid","comm","exe","cmdline","user","tx_bytes","rx_bytes","total_bytes"\n'
        '7,"a,b","say ""hi""","line1\nline2\rx","",1,2,3\n'
        '8,"plain","/bin/x","","bob",1536,0,1536\n'
    )


def test_csv_reads_back() -> None:
    key: dict[str, object] = {"pid": 7, "comm": "a,b", "exe": 'q"q', "cmdline": "x\r\ny", "user": "u"}
    text = to_csv([ReportRow(key, 1, 2)], "process")
    back = list(csv.reader(io.StringIO(text, newline="")))
    assert back == [
        ["pid", "comm", "exe", "cmdline", "user", "tx_bytes", "rx_bytes", "total_bytes"],
        ["7", "a,b", 'q"q', "x\r\ny", "u", "1", "2", "3"],
    ]


@pytest.mark.parametrize(
    ("proto", "cell"),
    [
        ('=HYPERLINK("http://evil")', '"\'=HYPERLINK(""http://evil"")"'),
        ("+cmd|' /C calc'!A0", "\"'+cmd|' /C calc'!A0\""),
        ("-2+3", '"\'-2+3"'),
        ("@SUM(A1)", '"\'@SUM(A1)"'),
        ("\t=1", '"\'\t=1"'),
        ("\r=1", '"\'\r=1"'),
        ("a=b", '"a=b"'),
        ("tcp", '"tcp"'),
    ],
)
def test_csv_formula_injection_guard(proto: str, cell: str) -> None:
    text = to_csv([ReportRow({"proto": proto, "port": -1}, 5, 6)], "port")
    # The negative port is a number, not text, so it is not prefixed and stays unquoted.
    assert text == f'"proto","port","tx_bytes","rx_bytes","total_bytes"\n{cell},-1,5,6,11\n'


def test_csv_connection_times_and_verbatim_bytes() -> None:
    rows = [ReportRow(_conn(comm="\x1b[2J\udcff", duration=4.25), 3, 4)]
    text = to_csv(rows, "connection")
    assert text.splitlines()[1] == (
        '42,"\x1b[2J\udcff","tcp","10.0.0.2",50000,"2001:db8::1",22,"","2026-11-24T13:05:10.123+00:00","",4.25,3,4,7'
    )
    # Undecodable bytes come back as the same bytes when written with surrogateescape.
    assert b'"\x1b[2J\xff"' in text.encode("utf-8", "surrogateescape")


# --- table --------------------------------------------------------------------------------------------------


def test_table_exact_small() -> None:
    rows = [ReportRow({"proto": "tcp", "port": 443}, 1536, 512), ReportRow({"proto": "udp", "port": 53}, 100, 3 << 20)]
    assert to_table(rows, "port") == (
        "PROTO  PORT     SENT  RECEIVED    TOTAL\n"
        "tcp     443  1.5 KiB     512 B  2.0 KiB\n"
        "udp      53    100 B   3.0 MiB  3.0 MiB\n"
        "TOTAL        1.6 KiB   3.0 MiB  3.0 MiB"
    )


def test_table_units_and_total() -> None:
    rows = [ReportRow({"uid": 0, "user": "root"}, 3 << 29, 1023), ReportRow({"uid": 1000, "user": None}, 5, 0)]
    lines = to_table(rows, "user").splitlines()
    assert lines[0].split() == ["UID", "USER", "SENT", "RECEIVED", "TOTAL"]
    assert lines[1].split() == ["0", "root", "1.5", "GiB", "1023", "B", "1.5", "GiB"]
    assert lines[2].split() == ["1000", "-", "5", "B", "0", "B", "5", "B"]
    assert lines[3].split() == ["TOTAL", "1.5", "GiB", "1023", "B", "1.5", "GiB"]
    assert len(lines) == 4


def _inert(text: str) -> bool:
    return all(ch == "\n" or unicodedata.category(ch)[0] != "C" for ch in text)


def test_table_hostile_names_are_inert() -> None:
    rows = [
        ReportRow(
            {
                "pid": 666,
                "comm": "\x1b[2J",
                "exe": "/tmp/\u202eexe.txt",
                "cmdline": "[red]x[/red] \udcff\r\x07 ok",
                "user": "ev\u200bil",
            },
            1,
            1,
        )
    ]
    out = to_table(rows, "process")
    assert _inert(out)
    out.encode("utf-8")  # lone surrogates would make this raise
    assert "\\x1b[2J" in out
    assert "/tmp/\\u202eexe.txt" in out
    assert "[red]x[/red] \\udcff\\x0d\\x07 ok" in out
    assert "ev\\u200bil" in out
    assert len(out.splitlines()) == 3


def test_table_cuts_long_cells_to_width() -> None:
    long = "python3 -m http.server --directory /srv/" + "a" * 300
    rows = [
        ReportRow({"pid": 1, "comm": "python3", "exe": "/usr/bin/python3.11", "cmdline": long, "user": "www"}, 1, 2),
        ReportRow({"pid": 2, "comm": "sh", "exe": "/bin/sh", "cmdline": "sh", "user": "root"}, 3, 4),
    ]
    for width in (120, 80):
        out = to_table(rows, "process", width=width)
        lines = out.splitlines()
        assert max(len(line) for line in lines) == width
        assert "/usr/bin/python3.11" in lines[1]
        assert "  python3 -m " in lines[1]
        assert lines[1].count("…") == 1
        assert lines[2].split() == ["2", "sh", "/bin/sh", "sh", "root", "3", "B", "4", "B", "7", "B"]
    assert "…" not in to_table(rows[1:], "process", width=80)
    # Once the command line is down to its heading, the executable gives way too; headings stay whole.
    lines = to_table(rows, "process", width=72).splitlines()
    assert max(len(line) for line in lines) == 72
    assert lines[0] == "  PID  PROGRAM  EXECUTABLE     COMMAND LINE  USER  SENT  RECEIVED  TOTAL"
    assert lines[1] == "    1  python3  /usr/bin/pyt…  python3 -m …  www    1 B       2 B    3 B"
    # Narrower than the headings allow: the table stops shrinking instead of cutting them.
    lines = to_table(rows, "process", width=40).splitlines()
    assert lines[0] == "  PID  PROGRAM  EXECUTABLE  COMMAND LINE  USER  SENT  RECEIVED  TOTAL"
    assert lines[1] == "    1  python3  /usr/bin/…  python3 -m …  www    1 B       2 B    3 B"


def test_table_cut_counts_wide_characters() -> None:
    rows = [ReportRow({"pid": 1, "comm": "x", "exe": "/x", "cmdline": "漢" * 100, "user": "u"}, 1, 2)]
    line = to_table(rows, "process", width=80).splitlines()[1]
    cells = sum(2 if unicodedata.east_asian_width(ch) == "W" else 1 for ch in line)
    assert cells <= 80
    assert "漢…" in line


def test_table_connection_times_and_durations() -> None:
    start = UTC_1305 + 10.9
    rows = [ReportRow(_conn(start=start, end=start + 3723, duration=3723.0), 1, 2)]
    line = to_table(rows, "connection").splitlines()[1]
    assert datetime.fromtimestamp(start).strftime("%Y-%m-%d %H:%M:%S") in line
    assert datetime.fromtimestamp(start + 3723).strftime("%Y-%m-%d %H:%M:%S") in line
    assert "1h02m03s" in line
    assert " 2001:db8::1 " in line


@pytest.mark.usefixtures("india_time")
def test_table_times_are_local() -> None:
    rows = [ReportRow(_conn(start=UTC_MIDNIGHT, end=None), 1, 2)]
    line = to_table(rows, "connection").splitlines()[1]
    assert "2026-11-24 05:30:00" in line
    assert local_time(UTC_1305) == "2026-11-24 18:35:00"
    assert to_table([], "process", since=UTC_MIDNIGHT, until=UTC_1305) == (
        "no traffic recorded between 2026-11-24 05:30:00 and 2026-11-24 18:35:00"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (4.2, "4.2s"),
        (0.04, "0.0s"),
        (59.9, "59.9s"),
        (59.96, "1m00s"),
        (754, "12m34s"),
        (3723, "1h02m03s"),
        (90000, "25h00m00s"),
        (None, "-"),
        (float("nan"), "-"),
    ],
)
def test_human_duration(seconds: float | None, text: str) -> None:
    assert human_duration(seconds) == text


def test_empty_report_message() -> None:
    since, until = UTC_MIDNIGHT, UTC_1305
    a, b = local_time(since), local_time(until)
    assert a == datetime.fromtimestamp(since).strftime("%Y-%m-%d %H:%M:%S")
    assert to_table([], "process", since=since, until=until) == f"no traffic recorded between {a} and {b}"
    assert to_table([], "exe", since=since) == f"no traffic recorded since {a}"
    assert to_table([], "exe", until=until) == f"no traffic recorded before {b}"
    assert to_table([], "exe") == "no traffic recorded"


@pytest.mark.parametrize("render", [to_json, to_csv, to_table])
def test_unknown_grouping(render: object) -> None:
    with pytest.raises(
        ValueError, match=r"unknown grouping 'pid'.*process, exe, user, unit, remote, host, port, connection"
    ):
        render([ReportRow({}, 0, 0)], "pid")  # type: ignore[operator]


def test_csv_inert_for_a_terminal() -> None:
    rows = [ReportRow(_conn(comm="\x1b]0;PWN\x07\udcff", duration=1.0), 3, 4)]
    line = to_csv(rows, "connection", inert=True).splitlines()[1]
    assert line.startswith('42,"\\x1b]0;PWN\\x07\\udcff","tcp"')
    assert line.isprintable()


def test_hostile_peer_names_are_inert_in_every_report_form() -> None:
    evil = "\x1b]0;pwn\x07[b]x[/b]\u202eevil.example"
    rows = [ReportRow({"host": evil}, 5, 6)]
    conn_rows = [ReportRow(_conn(name=evil), 1, 2)]
    table = to_table(rows, "host") + to_table(conn_rows, "connection")
    assert "\x1b" not in table and "\x07" not in table and "\u202e" not in table
    assert json.loads(to_json(rows, "host"))[0]["host"] == evil  # JSON escapes, the value stays exact
    assert "\x1b" not in to_json(rows, "host")
    text = to_csv(rows, "host", inert=True)
    assert "\x1b" not in text and "\x07" not in text
