"""doctor's pure parts: lockdown parsing, one reason per hook group, the concise and verbose text."""

from __future__ import annotations

import errno
from pathlib import Path

from sockscope.bpf import libbpf
from sockscope.bpf.loader import COUNT_GROUPS, HookStatus, _hint, absent_programs, kernel_functions
from sockscope.doctor import DoctorReport, GroupReport, _group_reason, _lockdown, parse_lockdown, render

KPROBE = next(g for g in COUNT_GROUPS if g.name == "kprobe")
FENTRY = next(g for g in COUNT_GROUPS if g.name == "fentry")


def test_parse_lockdown_takes_the_bracketed_mode() -> None:
    assert parse_lockdown("none [integrity] confidentiality\n") == "integrity"
    assert parse_lockdown("[none] integrity confidentiality\n") == "none"
    assert parse_lockdown("odd\n") == "odd"


def test_lockdown_file_that_cannot_be_read_says_why(tmp_path: Path) -> None:
    assert _lockdown(str(tmp_path / "absent")) == (None, f"{tmp_path / 'absent'} does not exist")
    f = tmp_path / "lockdown"
    f.write_text("none integrity [confidentiality]\n")
    assert _lockdown(str(f)) == ("confidentiality", None)


def _kprobe_failures() -> list[HookStatus]:
    out = []
    for prog in KPROBE.programs:
        err = libbpf.LibbpfError(
            "attach", -errno.ENOENT, f"libbpf: prog '{prog}': failed to create kprobe perf event: -2\n"
        )
        out.append(HookStatus("kprobe", prog, "", False, _hint(KPROBE, err, "attach")))
    return out


def test_one_reason_per_group_without_libbpfs_words() -> None:
    reason = _group_reason(_kprobe_failures())
    assert reason.startswith("attach failed: No such file or directory")
    assert f"({len(KPROBE.programs)} programs)" in reason
    assert "libbpf:" not in reason and "--verbose" in reason


def test_a_group_with_optional_programs_left_out_says_which() -> None:
    hooks = [HookStatus("fentry", p, "", p != "ss_fx_inet_sendpage") for p in FENTRY.programs]
    hooks = [
        h if h.attached else HookStatus("fentry", h.program, "", False, absent="inet_sendpage() is not in this kernel")
        for h in hooks
    ]
    assert all(h.ok for h in hooks)
    assert _group_reason(hooks) == "inet_sendpage() is not in this kernel"


def _report(groups: list[GroupReport]) -> DoctorReport:
    return DoctorReport(
        kernel="6.1.0",
        btf=True,
        lockdown=None,
        lockdown_unknown="securityfs is not mounted and could not be mounted (permission denied)",
        euid=0,
        missing_privileges=[],
        libbpf="v1.1",
        bpf_object="x.o",
        bpf_object_present=True,
        cgroup2=None,
        kprobe_support=False,
        groups=groups,
        selected="fentry",
    )


def test_render_is_one_line_per_group_and_verbose_adds_each_program() -> None:
    hooks = _kprobe_failures()
    group = GroupReport("kprobe", KPROBE.what, "count", False, hooks, _group_reason(hooks))
    concise = render(_report([group]))
    verbose = render(_report([group]), verbose=True)
    assert "lockdown    unknown: securityfs is not mounted" in concise
    assert concise.count("attach failed") == 1 and "libbpf:" not in concise
    assert verbose.count("attach failed") == len(KPROBE.programs) + 1
    assert "libbpf: prog 'ss_kp_inet_sendmsg'" in verbose


def test_kernel_functions_and_absent_programs_from_kallsyms(tmp_path: Path) -> None:
    syms = tmp_path / "kallsyms"
    syms.write_text(
        "ffffffff82000000 T inet_sendmsg\n"
        "ffffffff82000100 t packet_sendmsg\t[af_packet]\n"
        "ffffffff82000200 t packet_recvmsg\t[af_packet]\n"
        "ffffffff82000300 T inet_sendpage_locked\n"
    )
    assert kernel_functions(["inet_sendmsg", "packet_sendmsg", "inet_sendpage"], str(syms)) == {
        "inet_sendmsg",
        "packet_sendmsg",
    }
    assert absent_programs(FENTRY, str(syms)) == {
        "ss_fx_inet_sendpage": "inet_sendpage() is not in this kernel (nothing goes through it here)"
    }
    assert set(absent_programs(KPROBE, str(syms))) == {"ss_kp_inet_sendpage", "ss_krp_inet_sendpage"}
    # Unreadable: try everything, a failure then says why.
    assert absent_programs(FENTRY, str(tmp_path / "none")) == {}
