"""`sockscope events` with a fake collector behind the same Source interface: the stream printed,
--match applied, --count, losses announced and in the exit status, a bad --match refused."""

from __future__ import annotations

import argparse
import io
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

import sockscope.events.cli as events_cli
from sockscope import cli
from sockscope.bpf.loader import CollectorOptions
from sockscope.collector.model import Interval
from sockscope.collector.source import Source
from sockscope.events.model import Endpoints, connection_event, lost_event


class PublishingSource(Source):
    """Publishes the given events from a thread of its own once started, like the live pump."""

    def __init__(self, publish: Callable[[dict[str, Any]], None], events: list[dict[str, Any]]) -> None:
        self._publish, self._events = publish, events
        self.options: CollectorOptions | None = None

    def start(self) -> None:
        threading.Thread(target=lambda: [self._publish(e) for e in self._events], daemon=True).start()

    def read(self) -> Interval:
        return Interval(ts=0.0, interval=1.0, processes=[])

    def close(self) -> None:
        pass


def _event(kind: str, comm: str, rport: int) -> dict[str, Any]:
    return connection_event(kind, when=1_800_000_000.0, ktime_ns=1, proto="tcp",
                            ends=Endpoints(4, "198.18.0.1", 40000, "198.18.0.2", rport), netns=1, cookie=rport,
                            process=None) | {"comm": comm, "pid": 7}  # fmt: skip


def _run(argv: list[str], events: list[dict[str, Any]]) -> tuple[int, str]:
    args = cli.build_parser().parse_args(["events", "--source", "collector", *argv])
    out = io.StringIO()
    seen: list[CollectorOptions] = []

    def factory(options: CollectorOptions, publish: Callable[[dict[str, Any]], None]) -> Source:
        seen.append(options)
        return PublishingSource(publish, events)

    code = events_cli.run_events(args, out, factory, threading.Event(), ("tracepoint",))
    assert seen and seen[0].live and seen[0].count_groups == ("tracepoint",)
    return code, out.getvalue()


def test_json_stream_with_a_match_and_a_count() -> None:
    events = [_event("tcp_connect", "curl", 443), _event("tcp_connect", "wget", 443), _event("tcp_close", "curl", 80),
              _event("tcp_connect", "curl", 8080)]  # fmt: skip
    code, out = _run(["--json", "--match", "comm=curl", "--count", "2", "--duration", "5"], events)
    assert code == 0
    got = [json.loads(line) for line in out.splitlines()]
    assert [(e["kind"], e["rport"]) for e in got] == [("tcp_connect", 443), ("tcp_close", 80)]


def test_losses_are_shown_and_make_the_exit_status() -> None:
    events = [_event("tcp_connect", "curl", 443), lost_event("ring_buffer", 12), _event("tcp_connect", "curl", 80)]
    code, out = _run(["--count", "2", "--duration", "5"], events)
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 3 and "lost 12 events (ring_buffer)" in lines[1], lines
    assert "198.18.0.2:443" in lines[0] and "198.18.0.2:80" in lines[2]


def test_a_quiet_stream_ends_at_its_duration() -> None:
    code, out = _run(["--duration", "0.3"], [])
    assert (code, out) == (0, "")


def test_a_bad_match_is_refused_with_where(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(match=["rprt=80"], source="collector", socket=None, config=None, json=False,
                              duration=None, count=None)  # fmt: skip
    code = events_cli.run_events(args, io.StringIO(), lambda o, p: pytest.fail("no collector"), threading.Event(), ())
    assert code == 2
    err = capsys.readouterr().err
    assert '--match "rprt=80": column 1' in err and "rport" in err
