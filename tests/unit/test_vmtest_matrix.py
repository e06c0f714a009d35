"""scripts/vmtest/matrix.py's bookkeeping: the shards, each guest's script, a pair's merged result."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

MATRIX = Path(__file__).resolve().parents[2] / "scripts" / "vmtest" / "matrix.py"


@pytest.fixture(scope="module")
def matrix() -> ModuleType:
    # matrix.py turns bytecode writing off for its own process (the guests' root is this tree);
    # the rest of this run keeps writing it, since the guests read those files.
    before, path = sys.dont_write_bytecode, list(sys.path)
    spec = importlib.util.spec_from_file_location("vmtest_matrix", MATRIX)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode, sys.path[:] = before, path
    return mod


def test_each_guest_test_file_is_in_exactly_one_shard(matrix: ModuleType) -> None:
    files = [t for shard in matrix.SHARDS for t in shard]
    assert len(files) == len(set(files)) == len(matrix.TESTS)
    assert all(shard for shard in matrix.SHARDS)
    root = MATRIX.parents[2]
    assert all((root / t).is_file() for t in files)


def test_each_shard_runs_only_its_files_and_doctor_only_after_a_failure(matrix: ModuleType) -> None:
    a = matrix.test_script("kprobe", matrix.SHARDS[0])
    b = matrix.test_script("kprobe", matrix.SHARDS[1])
    for script, mine, other in ((a, matrix.SHARDS[0], matrix.SHARDS[1]), (b, matrix.SHARDS[1], matrix.SHARDS[0])):
        assert "SOCKSCOPE_HOOKS=kprobe" in script
        assert all(t in script for t in mine) and not any(t in script for t in other)
        # doctor runs after pytest, and only when pytest failed; the script exits with pytest's code.
        lines = script.splitlines()
        at = next(i for i, ln in enumerate(lines) if "doctor.txt" in ln)
        assert any("-m pytest" in ln for ln in lines[:at])
        assert lines[at - 1].strip() == 'if [ "$rc" != 0 ]; then' and lines[-1] == "exit $rc"


def test_a_pairs_result_sums_its_shards_and_names_the_failing_one(matrix: ModuleType) -> None:
    Result = matrix.Result
    one = Result("6.1", "fentry", kernel="6.1.0-57-amd64", passed=30, seconds=300.0, logs="/a")
    two = Result("6.1", "fentry", kernel="6.1.0-57-amd64", passed=28, failed=1, skipped=1, seconds=280.0)
    two.failing.append("test_events::test_x")
    two.problems.append("timed out after 1800 s")
    two.kernel_warnings = 2
    res = matrix.merged("6.1", "fentry", [one, two])
    assert (res.passed, res.failed, res.skipped, res.kernel_warnings) == (58, 1, 1, 2)
    assert res.failing == ["test_events::test_x"]
    assert res.problems == ["shard 2: timed out after 1800 s"]
    assert res.kernel == "6.1.0-57-amd64" and res.seconds == 580.0 and res.logs == "/a"
    assert not res.ok
    assert matrix.merged("6.1", "fentry", [one, Result("6.1", "fentry", passed=1)]).ok


def test_what_no_group_changes_runs_once_per_kernel_in_its_default_group(matrix: ModuleType) -> None:
    opens = "tests/kernel/test_opens.py"
    runs = [
        (s, g)
        for s, g in matrix.DEFAULT_MATRIX
        for n in range(len(matrix.SHARDS))
        if opens in matrix.shard_tests(s, g, n)
    ]
    assert runs == [("6.1", "fentry"), ("6.12", "tracepoint")]
    assert sorted(matrix.DEFAULT_GROUP.items()) == runs
    # Every other file runs in every (kernel, group), in its one shard.
    for s, g in matrix.DEFAULT_MATRIX:
        files = [t for n in range(len(matrix.SHARDS)) for t in matrix.shard_tests(s, g, n)]
        assert sorted(set(matrix.TESTS) - {opens}) == sorted(set(files) - {opens})
    # The tests of the once-per-kernel names are left out elsewhere, by -k.
    once = matrix.test_script("tracepoint", matrix.SHARDS[1], once=True)
    other = matrix.test_script("kprobe", matrix.SHARDS[1], once=False)
    assert matrix.ONCE_PER_KERNEL_TESTS not in once
    assert f"and not ({matrix.ONCE_PER_KERNEL_TESTS})" in other


def test_one_guest_at_a_time_while_the_hold_file_exists(matrix: ModuleType, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    slots = matrix.Slots(2, hold)
    assert slots.limit() == 1
    slots.take()
    assert slots.running == 1 and slots.limit() == 1
    hold.unlink()  # the host's tests are done: the second slot opens
    assert slots.limit() == 2
    slots.take()
    assert slots.running == 2
    slots.give()
    slots.give()
    assert slots.running == 0 and matrix.Slots(3, None).limit() == 3
