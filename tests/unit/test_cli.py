"""The CLI's loop and errors, driven by the fake source (no root)."""

from __future__ import annotations

import io
import json

import pytest

from sockscope import cli
from sockscope.bpf.loader import CollectorError, CollectorOptions, missing_privileges
from sockscope.collector.source import FakeSource, Source
from tests.samples import interval, process


def args(*extra: str):
    return cli.build_parser().parse_args(["top", "--json", "--interval", "0.01", *extra])


def test_count_intervals_then_exit_and_close() -> None:
    recorded = [interval([process(1, "a", 10, 0)]), interval([process(1, "a", 5, 1)])]
    fake = FakeSource(recorded)
    out = io.StringIO()
    assert cli.run_top(args("--count", "3"), out, lambda _: fake) == 0
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(lines) == 3
    assert sum(d["tx_bytes"] for d in lines) == 15
    assert fake.closed and fake.reads == 3


def test_options_reach_the_source() -> None:
    seen: list[CollectorOptions] = []

    def factory(opts: CollectorOptions) -> Source:
        seen.append(opts)
        return FakeSource([])

    cli.run_top(
        args("--count", "1", "--max-flows", "77", "--udp-idle", "5", "--no-splice", "--hooks", "kprobe"),
        io.StringIO(),
        factory,
    )
    assert (seen[0].max_flows, seen[0].udp_idle, seen[0].splice) == (77, 5.0, False)
    assert seen[0].count_groups == ("kprobe",)


def test_stop_signal_emits_a_final_interval() -> None:
    stop = cli._Stop()
    stop.event.set()
    out = io.StringIO()
    assert cli.run_top(args(), out, lambda _: FakeSource([interval([process(1, "a", 3, 0)])]), stop) == 0
    assert len(out.getvalue().splitlines()) == 1


def test_collector_error_is_one_message_no_traceback(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def boom(*_: object, **__: object) -> int:
        raise CollectorError("Loading the kernel programs needs privileges this process lacks: CAP_BPF.")

    monkeypatch.setattr(cli, "run_top", boom)
    assert cli.main(["top", "--json", "--count", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sockscope: Loading the kernel programs needs privileges")
    assert "Traceback" not in err


@pytest.mark.parametrize("bad", ["0", "-1", "abc"])
def test_bad_interval_is_a_usage_error(bad: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["top", "--interval", bad])
    assert exc.value.code == 2
    assert "--interval" in capsys.readouterr().err


def test_missing_privileges() -> None:
    assert missing_privileges(1 << 21) == []  # CAP_SYS_ADMIN covers all
    assert missing_privileges(0) == ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
    assert missing_privileges((1 << 39) | (1 << 38) | (1 << 12)) == []
    assert missing_privileges(1 << 39) == ["CAP_PERFMON", "CAP_NET_ADMIN"]


def test_table_mode(capsys) -> None:
    out = io.StringIO()
    a = cli.build_parser().parse_args(["top", "--interval", "0.01", "--count", "1"])
    cli.run_top(a, out, lambda _: FakeSource([interval([process(1, "nginx", 10, 0)])]))
    assert "nginx" in out.getvalue() and "PID" in out.getvalue()


def test_daemon_command_runs_the_configured_source_and_writes(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(cli._Stop, "install", lambda self: None)  # leave the test runner's signals alone
    monkeypatch.delenv("SOCKSCOPE_HOOKS", raising=False)
    seen: list[CollectorOptions] = []

    def factory(opts: CollectorOptions) -> Source:
        seen.append(opts)
        return FakeSource([interval([process(1, "curl", 10, 3)])])

    db = tmp_path / "h.db"
    a = cli.build_parser().parse_args(
        ["daemon", "--db", str(db), "--interval", "0.01", "--duration", "0.05", "-o", "collector.splice=false",
         "-o", "udp.idle_timeout=5", "-o", 'collector.hooks="fentry"', "-o", "events.enabled=false"]
    )  # fmt: skip
    assert cli.run_daemon(a, factory) == 0
    assert (seen[0].splice, seen[0].udp_idle, seen[0].count_groups) == (False, 5.0, ("fentry",))
    # --hooks wins over the configuration
    a = cli.build_parser().parse_args(
        ["daemon", "--db", str(db), "--interval", "0.01", "--duration", "0.05", "-o", 'collector.hooks="fentry"',
         "--hooks", "auto", "-o", "events.enabled=false"]
    )  # fmt: skip
    assert cli.run_daemon(a, factory) == 0
    assert seen[1].count_groups == ("tracepoint", "fentry", "kprobe")
    assert db.exists() and (db.stat().st_mode & 0o777) == 0o640


def test_hooks_flag_env_and_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    from sockscope.cli import _hooks, build_parser

    monkeypatch.delenv("SOCKSCOPE_HOOKS", raising=False)
    top = build_parser().parse_args(["top"])
    assert _hooks(top) == ("tracepoint", "fentry", "kprobe")
    assert _hooks(top, "fentry") == ("fentry",)
    monkeypatch.setenv("SOCKSCOPE_HOOKS", "kprobe")
    assert _hooks(top, "fentry") == ("kprobe",)
    assert _hooks(build_parser().parse_args(["top", "--hooks", "tracepoint"])) == ("tracepoint",)
    assert _hooks(build_parser().parse_args(["top", "--hooks", "auto"])) == ("tracepoint", "fentry", "kprobe")


def test_bad_hooks_from_the_environment_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOCKSCOPE_HOOKS", "kprobes")
    assert cli.main(["top", "--json", "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "sockscope: $SOCKSCOPE_HOOKS: unknown hook group 'kprobes': use auto, tracepoint, fentry, kprobe\n"


def test_bad_hooks_flag_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["doctor", "--hooks", "kprobes"])
    assert exc.value.code == 2
    assert "invalid choice: 'kprobes'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["top", "--max-flows", "1099511627776"], "argument --max-flows: must be >= 16 and <= 4294967295"),
        (["top", "--max-flows", "8"], "argument --max-flows: must be >= 16"),
        (["daemon", "--db", ""], "argument --db: an empty path: give a file name"),
        (["report", "--db", ""], "argument --db: an empty path: give a file name"),
        (["top", "--db", ""], "argument --db: an empty path: give a file name"),
    ],
)
def test_impossible_values_are_refused_by_the_command_line(argv: list[str], message: str, capsys) -> None:
    # Issue 11: --max-flows beyond a map's size blamed the kernel; --db "" wrote to the default path.
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_report_range_that_ends_before_it_starts_is_an_error(tmp_path, capsys) -> None:
    db = tmp_path / "none.db"
    assert cli.main(["report", "--db", str(db), "--since", "1m", "--until", "10m"]) == 2
    err = capsys.readouterr().err
    assert err == "sockscope report: the range ends before it starts: --until 10m is not after --since 1m\n"
    assert not db.exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_report_csv_to_a_terminal_escapes_control_characters(tmp_path) -> None:
    # Issue 11: a process named "\x1b]0;PWN\x07" retitled the terminal through report --csv.
    import time as _time

    from sockscope.store.sqlite import SqliteWriter
    from tests.store_samples import Conn, Proc, interval_of

    hostile = "\x1b]0;PWN\x07\x1b[2J\r"
    p = Proc(9, hostile, "/usr/bin/x", "x --y", 0, "root", "-")
    conns = {"c": Conn(p, "tcp", "10.0.0.1", 5000, "10.0.0.2", 443, 77, "local")}
    db = str(tmp_path / "h.db")
    writer = SqliteWriter(db, boot="b")
    writer.write([interval_of(conns, _time.time() - 30, {"c": (100, 200)}, length=1.0)])
    writer.close()
    argv = ["report", "--db", db, "--since", "1h", "--csv", "--by", "process"]
    term, file = _Terminal(), io.StringIO()
    assert cli.run_report(cli.build_parser().parse_args(argv), term) == 0
    assert cli.run_report(cli.build_parser().parse_args(argv), file) == 0
    assert "\\x1b]0;PWN\\x07\\x1b[2J\\x0d" in term.getvalue()
    assert not any(c in term.getvalue() for c in "\x1b\x07\r")
    assert hostile in file.getvalue()  # to a file: verbatim (formula-guarded), for the program that reads it


@pytest.mark.parametrize("n", [0, 3, 65535, -4])
def test_claim_slots_must_be_a_power_of_two(n: int) -> None:
    # ss_claims is indexed by cookie & (slots - 1): any other size would leave slots unused or
    # index past the map.
    with pytest.raises(ValueError, match="power of two"):
        CollectorOptions(claim_slots=n)
    assert CollectorOptions(claim_slots=1).claim_slots == 1
