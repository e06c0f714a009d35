"""The real commands: doctor on this kernel, --count, and a missing privilege."""

from __future__ import annotations

import json
import subprocess

from sockscope.bpf.loader import COUNT_GROUP_NAMES, COUNT_GROUPS
from tests.kernel.conftest import ALLOWED, GROUP, HOOKS, SOCKSCOPE, Netns, Traffic
from tests.kernel.test_collector import REFUSALS

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]


def test_doctor_reports_each_hook_and_why() -> None:
    res = subprocess.run([SOCKSCOPE, "doctor", "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] is True
    assert report["selected"] == GROUP
    assert report["forced"] == (None if HOOKS == "auto" else HOOKS)
    assert report["lockdown"] or report["lockdown_unknown"]
    groups = {g["name"]: g for g in report["groups"]}
    assert set(groups) == {"tracepoint", "fentry", "kprobe", "tcp_state", "udp_peers"}
    assert {g for g in COUNT_GROUP_NAMES if groups[g]["attached"]} == set(ALLOWED)
    if "tracepoint" in ALLOWED:
        assert {h["target"] for h in groups["tracepoint"]["hooks"]} == {
            "tp_btf/task_newtask",
            "tp_btf/sock_send_length",
            "tp_btf/sock_recv_length",
            "tp_btf/tcp_destroy_sock",
            "iter/tcp",
        }
    assert groups["tcp_state"]["attached"] and groups["udp_peers"]["attached"]
    for g in set(COUNT_GROUP_NAMES) - set(ALLOWED):
        assert REFUSALS[g] in groups[g]["reason"]
    # Optional programs: present before 6.5 (inet_sendpage), left out with a reason after.
    for g in {"fentry", "kprobe"} & set(ALLOWED):
        absent = {h["program"] for h in groups[g]["hooks"] if h["absent"]}
        assert absent <= {p for p, _ in next(x for x in COUNT_GROUPS if x.name == g).optional}
        assert all(h["attached"] for h in groups[g]["hooks"] if not h["absent"])


def test_doctor_text_says_which_hooks_count_and_why_not() -> None:
    # The same probes as --json, rendered: the host's run says it (FAIL rows included, since
    # this host refuses fentry and has no kprobes); the matrix's guests deselect it (two more
    # doctor runs under TCG, and the rendering is user space's alone).
    text = subprocess.run([SOCKSCOPE, "doctor"], capture_output=True, text=True, timeout=120)
    assert text.returncode == 0
    assert f"counting with the '{GROUP}' hooks" in text.stdout
    for g in COUNT_GROUP_NAMES:
        assert f"[{'ok  ' if g in ALLOWED else 'FAIL'}] {g}" in text.stdout
    # Concise: one reason line per group; each program's words only with --verbose.
    assert "libbpf: " not in text.stdout
    verbose = subprocess.run([SOCKSCOPE, "doctor", "-v"], capture_output=True, text=True, timeout=120)
    assert verbose.returncode == 0
    assert len(verbose.stdout.splitlines()) > len(text.stdout.splitlines())


def test_doctor_with_a_forced_group_that_cannot_count_exits_1() -> None:
    refused = [g for g in COUNT_GROUP_NAMES if g not in ALLOWED]
    for g in refused:
        res = subprocess.run([SOCKSCOPE, "doctor", "--hooks", g], capture_output=True, text=True, timeout=120)
        assert res.returncode == 1
        assert f"NOT OK: the forced '{g}' hooks cannot count here (--hooks)" in res.stdout
        top = subprocess.run(
            [SOCKSCOPE, "top", "--json", "--count", "1", "--hooks", g], capture_output=True, text=True, timeout=120
        )
        assert top.returncode == 1 and top.stdout == ""
        assert f"The '{g}' hooks were asked for" in top.stderr and "Traceback" not in top.stderr
    # The others allowed here are forced in their own runs of the kernel matrix.
    res = subprocess.run([SOCKSCOPE, "doctor", "--hooks", GROUP], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout
    assert f"counting with the '{GROUP}' hooks" in res.stdout


def test_top_count_prints_exactly_n_lines() -> None:
    res = subprocess.run(
        [SOCKSCOPE, "top", "--json", "--interval", "0.2", "--count", "3"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(lines) == 3
    intervals = [d["interval"] for d in lines]
    # Measured, not requested: a read waits for RCU grace periods, so allow slack, not zero.
    assert all(0.1 < i < 2.0 for i in intervals), intervals


def test_without_privileges_one_paragraph_no_traceback() -> None:
    for cmd in (["top", "--json", "--count", "1"], ["doctor"]):
        res = subprocess.run([*NOBODY, SOCKSCOPE, *cmd], capture_output=True, text=True, timeout=60)
        assert res.returncode == 1, (cmd, res.stdout, res.stderr)
        out = res.stderr + res.stdout
        assert "Traceback" not in out
        assert "CAP_BPF" in out and "root" in out


def test_doctor_check_reconciles_with_the_interfaces(netns: Netns) -> None:
    doctor = subprocess.Popen(
        [SOCKSCOPE, "doctor", "--json", "--check", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert doctor.stderr is not None
    assert doctor.stderr.readline() == "sockscope doctor: counting for 5 s\n"  # loaded and counting now
    srv = Traffic("ss-chk-srv", "tcp-server", "--bind", netns.peer4, prefix=netns.exec_prefix())
    try:
        port = srv.line()["port"]
        Traffic("ss-chk-cli", "tcp-client", "--host", netns.peer4, "--port", str(port), "--send", "3000000").wait()
        srv.wait()
    finally:
        srv.kill()
    out, _ = doctor.communicate(timeout=60)
    assert doctor.returncode == 0
    check = json.loads(out)["check"]
    veth = check["interfaces"][netns.host_if]
    # Over the veth: at least the payload, plus headers; sockscope attributed at least the payload.
    assert 3_000_000 <= veth["tx_bytes"] < 3_000_000 * 1.2
    assert check["attributed_tx"] >= 3_000_000
    assert check["dropped_events"] == 0
