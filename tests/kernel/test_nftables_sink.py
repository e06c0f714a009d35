"""action = "nftables" against the real nft and kernel, in a network namespace of the test's own: addresses
reach their sets with their timeout within 200 ms; a missing set is reported once and works once made."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from sockscope.events.sinks import NftablesSink, NftSet, SinkStats
from sockscope.events.sinks.nftables import NftablesOptions

# Latency and pace against the wall clock: run on an otherwise idle machine (scripts/test-all.sh
# runs these before the kernel matrix starts).
pytestmark = pytest.mark.wallclock

TABLE = "sockscope_t"
RULESET = f"""\
table inet {TABLE} {{
    set blocked4 {{ type ipv4_addr; flags timeout; }}
    set blocked6 {{ type ipv6_addr; flags timeout; }}
    set plain4 {{ type ipv4_addr; }}
}}
"""
LATENCY = 0.2  # seconds from offer() to the address being in its set


@pytest.fixture
def ns() -> Iterator[str]:
    """A named network namespace (/run/netns/NAME) holding the test's table; deleted whatever happens."""
    name = f"ssnft-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        nft(name, "-f", "-", input=RULESET)
        yield name
    finally:
        # The table goes with the namespace.
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def nft(ns: str, *args: str, input: str | None = None) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", *args], input=input, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def elements(ns: str, name: str) -> dict[str, dict[str, object]]:
    """The set's elements: address -> {"timeout": ..., "expires": ...} (empty for an element without)."""
    listing = json.loads(nft(ns, "-j", "list", "set", "inet", TABLE, name))
    [found] = [item["set"] for item in listing["nftables"] if "set" in item]
    out: dict[str, dict[str, object]] = {}
    for e in found.get("elem", []):
        if isinstance(e, dict):
            out[e["elem"]["val"]] = {k: v for k, v in e["elem"].items() if k != "val"}
        else:
            out[e] = {}
    return out


def event(raddr: str) -> dict[str, object]:
    return {"v": 1, "kind": "tcp_connect", "comm": "curl", "raddr": raddr, "rport": 8080}


def offer_and_time(sink: NftablesSink, ns: str, raddr: str, set_name: str, shown: str) -> float:
    """Seconds from offer() until `shown` is in the set (fails past 5 s)."""
    started = time.monotonic()
    sink.offer(event(raddr), json.dumps(event(raddr)).encode() + b"\n")
    while shown not in elements(ns, set_name):
        assert time.monotonic() - started < 5, f"{shown} never reached {set_name}"
    return time.monotonic() - started


class Log(list[str]):
    def __call__(self, msg: str) -> None:
        self.append(msg)


def test_addresses_reach_their_sets_with_a_timeout(ns: str) -> None:
    report = Log()
    options = NftablesOptions(
        set4=NftSet("inet", TABLE, "blocked4"), set6=NftSet("inet", TABLE, "blocked6"), timeout=3600, netns=ns
    )
    sink = NftablesSink("block", options, report)
    sink.start()
    try:
        took = {
            "v4": offer_and_time(sink, ns, "198.18.0.2", "blocked4", "198.18.0.2"),
            "v4-mapped": offer_and_time(sink, ns, "::ffff:198.18.0.3", "blocked4", "198.18.0.3"),
            "v6": offer_and_time(sink, ns, "fd00:5353::2", "blocked6", "fd00:5353::2"),
        }
    finally:
        sink.close()
    assert all(t < LATENCY for t in took.values()), took
    v4, v6 = elements(ns, "blocked4"), elements(ns, "blocked6")
    assert set(v4) == {"198.18.0.2", "198.18.0.3"} and set(v6) == {"fd00:5353::2"}
    for attrs in [*v4.values(), *v6.values()]:
        assert attrs["timeout"] == 3600
        assert 3500 < attrs["expires"] <= 3600  # type: ignore[operator]
    assert sink.stats == SinkStats(delivered=3)
    assert report == []


def offer_until_failed(sink: NftablesSink, *addrs: str) -> None:
    """Offer each address, waiting until the sink has counted it failed (within 5 s each)."""
    for n, addr in enumerate(addrs, 1):
        sink.offer(event(addr), b"")
        deadline = time.monotonic() + 5
        while sink.stats.failed < n:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_a_missing_set_is_reported_once_and_used_once_made(ns: str) -> None:
    report = Log()
    options = NftablesOptions(set4=NftSet("inet", TABLE, "later4"), set6=None, timeout=60, netns=ns)
    sink = NftablesSink("block", options, report)
    sink.start()
    try:
        offer_until_failed(sink, "198.18.0.2", "198.18.0.3")
        assert sink.stats == SinkStats(failed=2)
        assert report == [
            f"sockscope rule block: could not add to set inet {TABLE} later4: Error: No such file or directory "
            "(counted as failed; tried again on later events)"
        ]
        # The administrator makes the set: the next event's address goes in.
        nft(ns, "add", "set", "inet", TABLE, "later4", "{ type ipv4_addr; flags timeout; }")
        assert offer_and_time(sink, ns, "198.18.0.3", "later4", "198.18.0.3") < LATENCY
        assert elements(ns, "later4")["198.18.0.3"]["timeout"] == 60
    finally:
        sink.close()
    assert sink.stats == SinkStats(delivered=1, failed=2)
    assert len(report) == 1


def test_a_namespace_that_does_not_exist_is_reported(ns: str) -> None:
    report = Log()
    options = NftablesOptions(set4=NftSet("inet", TABLE, "blocked4"), set6=None, netns=f"{ns}-absent")
    sink = NftablesSink("block", options, report)
    sink.start()
    try:
        sink.offer(event("198.18.0.2"), b"")
        deadline = time.monotonic() + 5
        while sink.stats.failed < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        sink.close()
    assert len(report) == 1 and f"/run/netns/{ns}-absent" in report[0], report


@pytest.mark.parametrize(
    ("set_name", "words"),
    [
        (
            "blocked6",
            "Error: Could not resolve hostname: Address family for hostname not supported; is it of type ipv4_addr?",
        ),
        (
            "plain4",
            "Error: Could not process rule: Invalid argument; an element's timeout needs a set with flags timeout",
        ),
    ],
)
def test_a_set_of_the_wrong_kind_is_reported_with_nfts_words(ns: str, set_name: str, words: str) -> None:
    report = Log()
    sink = NftablesSink(
        "block", NftablesOptions(set4=NftSet("inet", TABLE, set_name), set6=None, timeout=60, netns=ns), report
    )
    sink.start()
    try:
        offer_until_failed(sink, "198.18.0.2", "198.18.0.3")
    finally:
        sink.close()
    assert report == [
        f"sockscope rule block: could not add to set inet {TABLE} {set_name}: {words} "
        "(counted as failed; tried again on later events)"
    ]
    assert elements(ns, set_name) == {}
