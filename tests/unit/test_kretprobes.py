"""kretprobes.py's pure parts: the kernel's profile, our stale events, event names."""

from __future__ import annotations

from sockscope.bpf.kretprobes import MAXACTIVE, event_name, parse_profile, stale_events

PROFILE = """\
  ss4242_inet_recvmsg                                   120                3
  ss4242_inet_sendmsg                                    99                0
  other/p_do_sys_open_0                                   7                1
"""


def test_profile_gives_hits_and_missed_per_event() -> None:
    assert parse_profile(PROFILE) == {
        "ss4242_inet_recvmsg": (120, 3),
        "ss4242_inet_sendmsg": (99, 0),
        "p_do_sys_open_0": (7, 1),
    }
    assert parse_profile("garbage\n\n  a b c\n") == {}


def test_stale_events_are_ours_whose_process_is_gone() -> None:
    events = (
        f"r{MAXACTIVE}:sockscope/ss100_inet_recvmsg inet_recvmsg\n"
        f"r{MAXACTIVE}:sockscope/ss200_inet6_sendmsg inet6_sendmsg\n"
        "r:kprobes/ss300_other other\n"
        "p:sockscope/ss100_entry inet_recvmsg\n"
    )
    assert stale_events(events, alive={200}) == ["ss100_inet_recvmsg"]
    assert stale_events(events, alive={100, 200}) == []


def test_event_names_carry_the_pid() -> None:
    assert event_name("inet6_recvmsg", 77) == "ss77_inet6_recvmsg"


def test_a_second_collector_in_one_process_names_its_events_apart() -> None:
    assert event_name("inet_recvmsg", 77, 2) == "ss77_2_inet_recvmsg"
    # and a dead process's second collector's events are still found stale, by its pid
    events = f"r{MAXACTIVE}:sockscope/ss100_2_inet_recvmsg inet_recvmsg\n"
    assert stale_events(events, alive=set()) == ["ss100_2_inet_recvmsg"]
    assert stale_events(events, alive={100}) == []
