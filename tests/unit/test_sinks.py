"""Rule actions (sinks): exec with real small programs, log, and nftables' batches without nft."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sockscope.events.sinks import SINKS, ExecSink, LogSink, NftablesSink, NftSet, RuleProblem, SinkStats
from sockscope.events.sinks.exec import ExecOptions
from sockscope.events.sinks.log import LogOptions, log_text
from sockscope.events.sinks.nftables import NftablesOptions, build_batch, nft_argv, route

PY = sys.executable
FAST = (0.05, 0.4)  # restart back-off for tests: 50 ms doubling to 400 ms


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def event(n: int = 1, **kw: object) -> dict[str, object]:
    e: dict[str, object] = {"v": 1, "kind": "tcp_connect", "comm": "curl", "raddr": "198.18.0.2", "n": n}
    e.update(kw)
    return e


def line(e: dict[str, object]) -> bytes:
    return json.dumps(e, separators=(",", ":")).encode() + b"\n"


class Log(list[str]):
    def __call__(self, msg: str) -> None:
        self.append(msg)


@pytest.fixture
def report() -> Log:
    return Log()


Closing = list[ExecSink | LogSink | NftablesSink]


@pytest.fixture
def closing() -> Iterator[Closing]:
    """Sinks to close at the end of a test, whatever happened."""
    sinks: Closing = []
    yield sinks
    for s in sinks:
        s.close()


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


APPEND = "import sys\nf = open(sys.argv[1], 'ab')\nfor ln in sys.stdin.buffer:\n    f.write(ln); f.flush()\n"
APPEND_ONE_AND_EXIT = "import sys\nopen(sys.argv[1], 'ab').write(sys.stdin.buffer.readline())\nsys.exit(3)\n"


def test_registry_is_explicit() -> None:
    assert {"exec": ExecSink, "nftables": NftablesSink, "log": LogSink} == SINKS
    assert {k: s.kind for k, s in SINKS.items()} == {k: k for k in SINKS}


# --- exec, mode = "stream"


def test_stream_delivers_json_lines(tmp_path: Path, report: Log, closing: Closing) -> None:
    out = tmp_path / "out"
    sink = ExecSink("s", ExecOptions(command=(PY, "-c", APPEND, str(out))), report)
    closing.append(sink)
    sink.start()
    events = [event(n) for n in range(3)]
    for e in events:
        sink.offer(e, line(e))
    sink.offer(event(3), line(event(3)).rstrip(b"\n"))  # a line without its newline gets one
    wait_for(lambda: len(lines_of(out)) == 4)
    assert [json.loads(x)["n"] for x in lines_of(out)] == [0, 1, 2, 3]
    assert sink.stats == SinkStats(delivered=4)
    assert report == []


def test_stream_program_is_restarted_with_back_off(tmp_path: Path, report: Log, closing: Closing) -> None:
    out = tmp_path / "out"
    sink = ExecSink("s", ExecOptions(command=(PY, "-c", APPEND_ONE_AND_EXIT, str(out))), report, backoff=FAST)
    closing.append(sink)
    sink.start()
    for n in range(3):
        sink.offer(event(n), line(event(n)))
        wait_for(lambda: len(lines_of(out)) == n + 1)  # noqa: B023 (called at once, in this iteration)
        wait_for(lambda: sink.restarts >= n + 1)  # noqa: B023 (the next program is running or starting)
    assert [json.loads(x)["n"] for x in lines_of(out)] == [0, 1, 2]
    assert sink.stats.delivered == 3
    # Three exits with the same status: one report.
    assert len(report) == 1
    assert report[0].startswith("sockscope rule s: ") and "exited with status 3" in report[0]


def test_stream_back_off_doubles(tmp_path: Path, report: Log, closing: Closing) -> None:
    sink = ExecSink("s", ExecOptions(command=(PY, "-c", "pass")), report, backoff=(0.1, 0.4))
    closing.append(sink)
    start = time.monotonic()
    sink.start()
    wait_for(lambda: sink.restarts >= 4)
    # 0.1 + 0.2 + 0.4 + 0.4 s of back-off at least, plus four interpreter starts
    assert time.monotonic() - start >= 1.1
    assert len(report) == 1 and "exited with status 0" in report[0]


@pytest.mark.wallclock  # a bound in wall-clock time
def test_stream_drops_when_the_program_does_not_read(report: Log, closing: Closing) -> None:
    sink = ExecSink("s", ExecOptions(command=(PY, "-c", "import time; time.sleep(60)"), queue=4), report)
    closing.append(sink)
    sink.start()
    big = event(0, cmdline="x" * 8000)
    data = line(big)
    started = time.monotonic()
    for _ in range(200):  # 1.6 MB: far beyond a pipe's 64 KiB
        sink.offer(big, data)
    assert time.monotonic() - started < 1.0  # offer() never waits for the program
    wait_for(lambda: sink.stats.dropped > 100)
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 2.5  # the writer blocked in write() does not hold close() up
    s = sink.stats
    assert s.delivered + s.dropped + s.failed == 200  # every event is accounted for


def test_stream_program_that_cannot_start_is_reported_once(report: Log, closing: Closing) -> None:
    sink = ExecSink("s", ExecOptions(command=("/nonexistent/handler",)), report, backoff=FAST)
    closing.append(sink)
    sink.start()
    for n in range(3):
        sink.offer(event(n), line(event(n)))
    wait_for(lambda: sink.restarts >= 3)
    assert report == ['sockscope rule s: cannot start "/nonexistent/handler": No such file or directory']


def test_stream_close_ends_the_program(tmp_path: Path, report: Log) -> None:
    pidfile = tmp_path / "pid"
    code = f"import os, sys\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\nsys.stdin.read()\n"
    sink = ExecSink("s", ExecOptions(command=(PY, "-c", code)), report)
    sink.start()
    wait_for(lambda: pidfile.exists() and pidfile.read_text() != "")
    pid = int(pidfile.read_text())
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 2.5
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # EOF on stdin ended it and it was reaped


# --- exec, mode = "per_event"


def per_event(*command: str, **kw: object) -> ExecOptions:
    return ExecOptions(command=command, mode="per_event", **kw)  # type: ignore[arg-type]


def test_per_event_env_and_stdin(tmp_path: Path, report: Log, closing: Closing) -> None:
    code = (
        "import os, sys\n"
        "data = sys.stdin.buffer.read()\n"
        "path = os.path.join(sys.argv[1], str(os.getpid()))\n"
        "env = os.environb\n"
        "open(path, 'wb').write(env[b'SOCKSCOPE_EVENT'] + b'|' + env[b'SOCKSCOPE_RULE'] + b'|' + data)\n"
    )
    sink = ExecSink("notify", per_event(PY, "-c", code, str(tmp_path), max_running=2), report)
    closing.append(sink)
    sink.start()
    for n in range(5):
        sink.offer(event(n), line(event(n)))
    wait_for(lambda: sink.stats.delivered == 5)
    seen = set()
    for f in tmp_path.iterdir():
        env, rule, stdin = f.read_bytes().split(b"|")
        assert rule == b"notify"
        assert stdin == env + b"\n"  # the same JSON: in the environment without its newline
        seen.add(json.loads(env)["n"])
    assert seen == set(range(5))
    assert report == []


def test_per_event_failures_are_counted_and_reported_once(report: Log, closing: Closing) -> None:
    sink = ExecSink("n", per_event(PY, "-c", "import sys; sys.exit(2)"), report)
    closing.append(sink)
    sink.start()
    for n in range(4):
        sink.offer(event(n), line(event(n)))
    wait_for(lambda: sink.stats.failed == 4)
    assert sink.stats == SinkStats(failed=4)
    assert len(report) == 1 and "exited with status 2 (counted as failed)" in report[0]


def test_per_event_timeout_kills(report: Log, closing: Closing) -> None:
    sink = ExecSink("n", per_event(PY, "-c", "import time; time.sleep(30)", timeout=0.3), report)
    closing.append(sink)
    sink.start()
    started = time.monotonic()
    sink.offer(event(), line(event()))
    wait_for(lambda: sink.stats.failed == 1)
    assert time.monotonic() - started < 5
    assert len(report) == 1 and "still running after 0.3 s: killed (counted as failed)" in report[0]


def test_per_event_max_running_queues_the_rest(tmp_path: Path, report: Log, closing: Closing) -> None:
    gate = tmp_path / "go"
    code = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)\n"
    sink = ExecSink("n", per_event(PY, "-c", code, max_running=2, queue=3), report)
    closing.append(sink)
    sink.start()
    for n in range(10):
        sink.offer(event(n), line(event(n)))
    # Two running, one taken by the dispatcher waiting for a slot, three queued: the other four dropped.
    wait_for(lambda: sink.stats.dropped >= 4)
    gate.touch()
    wait_for(lambda: sink.stats.delivered + sink.stats.dropped == 10)
    assert sink.stats.failed == 0


def test_per_event_program_that_cannot_start(report: Log, closing: Closing) -> None:
    sink = ExecSink("n", per_event("/nonexistent/handler"), report)
    closing.append(sink)
    sink.start()
    for n in range(3):
        sink.offer(event(n), line(event(n)))
    wait_for(lambda: sink.stats.failed == 3)
    assert report == ['sockscope rule n: cannot start "/nonexistent/handler": No such file or directory']


def test_exec_options() -> None:
    opts = ExecSink.parse_options({"command": ["/bin/h", "--json"]})
    assert opts == ExecOptions(command=("/bin/h", "--json"))
    opts = ExecSink.parse_options({"command": ["/bin/h"], "mode": "per_event", "timeout": "2s", "max_running": 8})
    assert (opts.mode, opts.timeout, opts.max_running) == ("per_event", 2.0, 8)
    with pytest.raises(RuleProblem) as info:
        ExecSink.parse_options({"command": ["/bin/h"], "max_running": 2})
    assert (info.value.key, info.value.problem) == (
        "max_running",
        'only for mode = "per_event" (a stream program runs until it exits)',
    )


# --- log


def test_log_sink_writes_the_line_as_is(report: Log, closing: Closing) -> None:
    sink = LogSink("audit", LogOptions(), report)
    closing.append(sink)
    sink.start()
    e = event(comm="curl\x1b[31m")
    sink.offer(e, line(e))
    wait_for(lambda: sink.stats.delivered == 1)
    assert report == [f"sockscope rule audit: {line(e).decode().rstrip()}"]
    assert "\x1b" not in report[0] and "\\u001b" in report[0]


@pytest.mark.parametrize("text", ["caf\u00e9", "a\u0085b", "x\u009b31m", "a\u2028b", "\u202eevil"])
def test_log_text_is_one_line_of_printable_ascii(text: str) -> None:
    e = event(comm=text)
    raw = json.dumps(e, ensure_ascii=False).encode() + b"\n"  # a line whose encoder kept non-ASCII
    out = log_text(e, raw)
    assert out.isascii() and out.isprintable()
    assert json.loads(out)["comm"] == text


# --- nftables, without nft


S4 = NftSet("inet", "t", "blocked4")
S6 = NftSet("inet", "t", "blocked6")


@pytest.mark.parametrize(
    ("raddr", "routed"),
    [
        ("198.18.0.2", (4, "198.18.0.2")),
        ("::ffff:198.18.0.2", (4, "198.18.0.2")),
        ("fd00::2", (6, "fd00::2")),
        ("FD00:0::2", (6, "fd00::2")),
        ("fe80::1%eth0", (6, "fe80::1")),
        ("example.com", None),  # nft would resolve a name
        ("1.2.3.4; flush ruleset", None),
        (None, None),
        (3232235521, None),
    ],
)
def test_route(raddr: object, routed: tuple[int, str] | None) -> None:
    assert route(raddr) == routed


def test_build_batch() -> None:
    assert build_batch({S4: ["198.18.0.2", "198.18.0.3"], S6: ["fd00::2"]}, 3600) == {
        "nftables": [
            {
                "add": {
                    "element": {
                        "family": "inet",
                        "table": "t",
                        "name": "blocked4",
                        "elem": [
                            {"elem": {"val": "198.18.0.2", "timeout": 3600}},
                            {"elem": {"val": "198.18.0.3", "timeout": 3600}},
                        ],
                    }
                }
            },
            {
                "add": {
                    "element": {
                        "family": "inet",
                        "table": "t",
                        "name": "blocked6",
                        "elem": [{"elem": {"val": "fd00::2", "timeout": 3600}}],
                    }
                }
            },
        ]
    }
    # Without a timeout of the rule's the set's own applies: plain values.
    plain = build_batch({S4: ["10.0.0.1"]}, None)
    assert plain == {
        "nftables": [{"add": {"element": {"family": "inet", "table": "t", "name": "blocked4", "elem": ["10.0.0.1"]}}}]
    }


def test_nft_argv() -> None:
    assert nft_argv(None)[1:] == ["-j", "-f", "-"]
    argv = nft_argv("demo")
    assert argv[0].endswith("nsenter") and argv[1] == "--net=/run/netns/demo" and argv[2].endswith("nft")


class FakeNft:
    """Stands in for NftablesSink._nft: records batches, fails for the sets in `broken`."""

    def __init__(self) -> None:
        self.batches: list[dict[str, object]] = []
        self.broken: set[str] = set()

    def __call__(self, batch: dict[str, object]) -> str | None:
        self.batches.append(batch)
        names = {c["add"]["element"]["name"] for c in batch["nftables"]}  # type: ignore[attr-defined]
        return "No such file or directory" if names & self.broken else None

    def added(self) -> list[tuple[str, str]]:
        return [
            (c["add"]["element"]["name"], e["elem"]["val"] if isinstance(e, dict) else e)
            for b in self.batches
            for c in b["nftables"]  # type: ignore[attr-defined]
            for e in c["add"]["element"]["elem"]
        ]


def fake_sink(report: Log, options: NftablesOptions) -> tuple[NftablesSink, FakeNft]:
    sink = NftablesSink("block", options, report)
    fake = FakeNft()
    sink._nft = fake  # type: ignore[method-assign]
    return sink, fake


def handle(sink: NftablesSink, *raddrs: object) -> None:
    sink._handle([(event(raddr=a), b"") for a in raddrs])


def test_nftables_routes_batches_and_remembers(report: Log) -> None:
    sink, fake = fake_sink(report, NftablesOptions(set4=S4, set6=S6, timeout=3600))
    handle(sink, "198.18.0.2", "::ffff:198.18.0.3", "fd00::2", "198.18.0.2")
    assert len(fake.batches) == 1  # one nft call for the whole batch
    assert fake.added() == [("blocked4", "198.18.0.2"), ("blocked4", "198.18.0.3"), ("blocked6", "fd00::2")]
    assert sink.stats == SinkStats(delivered=4)
    handle(sink, "198.18.0.2", "fd00::2")  # added less than its timeout ago: not sent again
    assert len(fake.batches) == 1
    assert sink.stats == SinkStats(delivered=6)
    sink._memo[(S4, "198.18.0.2")] -= 1801  # past half its timeout: a re-add would renew nothing before 6.10
    handle(sink, "198.18.0.2")
    assert len(fake.batches) == 1
    sink._memo[(S4, "198.18.0.2")] -= 1800  # now older than its timeout: gone from the set, added afresh
    handle(sink, "198.18.0.2")
    assert len(fake.batches) == 2
    assert fake.added()[-1] == ("blocked4", "198.18.0.2")


def test_nftables_without_a_set_for_the_family_skips(report: Log) -> None:
    sink, fake = fake_sink(report, NftablesOptions(set4=S4, set6=None))
    handle(sink, "fd00::2", "fd00::3", None, "198.18.0.2")
    assert fake.added() == [("blocked4", "198.18.0.2")]
    assert sink.stats == SinkStats(delivered=1, skipped=3)
    assert report == [
        "sockscope rule block: no set6 for IPv6 addresses: fd00::2 and others skipped",
        "sockscope rule block: an event without a remote address (e.g. tcp_listen) was skipped",
    ]


def test_nftables_failure_is_pinned_on_its_set_and_retried(report: Log) -> None:
    sink, fake = fake_sink(report, NftablesOptions(set4=S4, set6=S6, timeout=60))
    fake.broken = {"blocked6"}
    handle(sink, "198.18.0.2", "fd00::2", "fd00::3")
    # The joint batch failed; apart, blocked4 got its address and blocked6 failed.
    assert len(fake.batches) == 3
    assert sink.stats == SinkStats(delivered=1, failed=2)
    handle(sink, "fd00::2")
    assert sink.stats == SinkStats(delivered=1, failed=3)
    expected = (
        "sockscope rule block: could not add to set inet t blocked6: No such file or directory "
        "(counted as failed; tried again on later events)"
    )
    assert report == [expected]  # once
    fake.broken = set()  # the administrator made the set
    handle(sink, "fd00::2")
    assert sink.stats == SinkStats(delivered=2, failed=3)
    assert fake.added()[-1] == ("blocked6", "fd00::2")


def test_nftables_without_nft(monkeypatch: pytest.MonkeyPatch, report: Log) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("sockscope.events.sinks.nftables.SBIN", "/nonexistent")
    sink = NftablesSink("block", NftablesOptions(set4=S4, set6=None, timeout=60), report)
    handle(sink, "198.18.0.2")
    handle(sink, "198.18.0.3")
    assert sink.stats == SinkStats(failed=2)
    assert report == [
        "sockscope rule block: could not add to set inet t blocked4: cannot run nft: No such file or directory "
        "(is nftables installed?) (counted as failed; tried again on later events)"
    ]


@pytest.mark.wallclock  # a bound in wall-clock time
def test_nftables_offer_never_blocks_and_close_is_bounded(report: Log) -> None:
    sink, fake = fake_sink(report, NftablesOptions(set4=S4, set6=None))

    def slow(batch: dict[str, object]) -> str | None:
        time.sleep(0.05)  # an nft call, not a real one: unit tests leave the host's firewall alone
        return fake(batch)

    sink._nft = slow  # type: ignore[method-assign]
    sink.start()
    started = time.monotonic()
    for n in range(10000):
        sink.offer(event(n), b"")
    assert time.monotonic() - started < 1.0
    sink.close()
    assert time.monotonic() - started < 4.0
    s = sink.stats
    assert s.delivered + s.failed + s.dropped + s.skipped == 10000
