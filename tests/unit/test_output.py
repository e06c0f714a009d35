from __future__ import annotations

import json

from sockscope.collector.model import Interval
from sockscope.output import jsonl, table
from sockscope.output.safe import printable
from tests.samples import interval, process


def test_json_line_shape_and_totals() -> None:
    iv = interval([process(10, "curl", 100, 7), process(11, "dig", 5, 50)])
    line = jsonl.interval_line(iv)
    assert "\n" not in line
    d = json.loads(line)
    assert d["ts"] == 1_700_000_000.0 and d["interval"] == 1.0
    assert d["time"] == "2023-11-14T22:13:20.000+00:00"
    assert (d["tx_bytes"], d["rx_bytes"]) == (105, 57)
    assert d["dropped"] == {
        "events": 2,
        "bytes": 64,
        "socket_facts": 0,
        "process_facts": 0,
        "lifecycle_events": 0,
        "missed_calls": 0,
        "lifecycle_records": 0,
        "dns_answers": 0,
        "dns_unread": 0,
        "dns_malformed": 0,
        "names": 0,
        "ptr_lookups": 0,
    }
    assert d["unattributed"] == {"tx_bytes": 0, "rx_bytes": 0}
    assert d["lifecycle"] == []
    p = d["processes"][0]
    for key in ("pid", "comm", "exe", "cmdline", "uid", "tx_bytes", "rx_bytes", "connections"):
        assert key in p
    c = p["connections"][0]
    assert {k: c[k] for k in ("proto", "family", "laddr", "raddr", "rport", "tx_bytes", "rx_bytes")} == {
        "proto": "tcp",
        "family": 4,
        "laddr": "198.18.0.1",
        "raddr": "198.18.0.2",
        "rport": 443,
        "tx_bytes": 100,
        "rx_bytes": 7,
    }


def test_hostile_names_stay_data_in_json() -> None:
    p = process(1, "\x1b[2J[red]x[/red]", 1, 1)
    p.cmdline = "a\udcffb\x07"
    line = jsonl.interval_line(Interval(ts=0.0, interval=1.0, processes=[p]))
    assert "\x1b" not in line and "\x07" not in line
    assert line.isascii()
    d = json.loads(line)
    assert d["processes"][0]["comm"] == "\x1b[2J[red]x[/red]"


def test_json_line_is_the_interval_dict_whatever_the_fields_hold() -> None:
    p = process(10, "curl", 100, 7)
    c = p.connections[0]
    c.raddr, c.state, c.initiator, c.ifindex, c.v4mapped = '"\\\x1b\u2028', None, "local", 3, True
    c.name, c.cname, c.name_source = "\x1b]0;pwn\x07\udcff[b]", ("<script>\\", "b"), "process"
    q = process(11, "dig", 5, 50)
    q.connections[0].laddr = "fd00::1"
    iv = interval([p, q])
    for _ in range(2):  # the second time from the cached fragments
        assert json.loads(jsonl.interval_line(iv)) == jsonl.interval_dict(iv)
    line = jsonl.interval_line(iv)
    assert line.isascii() and "\x1b" not in line and "\x07" not in line
    assert json.loads(line)["processes"][0]["connections"][0]["cname"] == ["<script>\\", "b"]
    c.tx_bytes += 1  # counters are never cached
    assert json.loads(jsonl.interval_line(iv))["processes"][0]["connections"][0]["tx_bytes"] == 101
    assert json.loads(jsonl.interval_line(interval([]))) == jsonl.interval_dict(interval([]))


def test_printable_escapes_controls() -> None:
    assert printable("\x1b[2Jevil\r\n") == "\\x1b[2Jevil\\x0d\\x0a"
    assert printable("a\u202eb") == "a\\u202eb"
    assert printable("[red]x[/red]") == "[red]x[/red]"
    assert printable(None) == "-"
    assert printable("abcdef", limit=4) == "abc…"


def test_table_has_rates_and_escaped_names() -> None:
    text = table.render(interval([process(10, "\x1b]0;pwn\x07", 2048, 0)], length=2.0))
    assert "\x1b" not in text
    assert "1.0 KiB/s" in text
    assert "\\x1b]0;pwn\\x07" in text


def test_untrusted_bytes_decode_unambiguously() -> None:
    # Issue 11: the byte 0xFF and the four characters \xff printed the same in JSON.
    from sockscope.output.safe import decode_untrusted

    byte, chars = decode_untrusted(b"a\xffb"), decode_untrusted(b"a\\xffb")
    assert (byte, chars) == ("a\\xffb", "a\\\\xffb")
    assert json.dumps(byte) != json.dumps(chars)
    assert decode_untrusted("caf\u00e9 \u2603".encode()) == "caf\u00e9 \u2603"  # valid UTF-8 untouched
    assert decode_untrusted(b"C:\\dir") == "C:\\\\dir"


def test_json_chunks_are_the_line_in_pieces() -> None:
    # `top --json` writes the pieces as they come; together they are the line, processes and
    # their connections whole and comma-separated.
    procs = [process(10, "curl", 100, 7), process(11, "dig", 5, 50), process(12, "ssh", 0, 1)]
    procs[1].connections.append(process(11, "dig", 1, 2).connections[0])
    for iv in (interval(procs), interval(procs[:1]), interval([])):
        chunks = list(jsonl.interval_chunks(iv))
        assert "".join(chunks) == jsonl.interval_line(iv)
        assert json.loads("".join(chunks)) == jsonl.interval_dict(iv)
