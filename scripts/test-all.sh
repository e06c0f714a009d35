#!/usr/bin/env bash
# The whole suite, `make test`'s last step: pytest on this kernel and the kernel matrix
# (scripts/vmtest/matrix.py) side by side. The host's tests mostly wait (about a third of a
# CPU over their run); the guests keep both CPUs busy. One after the other they took
# 284 + 1,090 s, side by side 1,007 s. The matrix runs niced, so the host's tests get the CPU
# when they want it; its output is kept in build/vmtest/matrix.log and printed after
# pytest's. Exit status: 1 when either failed. Extra arguments go to pytest.
set -u
cd "$(dirname "$0")/.."
log=build/vmtest/matrix.log
mkdir -p build/vmtest
# A session of its own, so an interrupt stops its guests too (a background job of a
# script ignores SIGINT).
setsid nice -n 10 .venv/bin/python scripts/vmtest/matrix.py >"$log" 2>&1 &
matrix=$!
trap 'kill -TERM -- -"$matrix" 2>/dev/null; wait "$matrix"; exit 130' INT TERM
echo "kernel matrix: running beside the host's tests (pid $matrix); its output follows theirs ($log)"
.venv/bin/pytest "$@"
host=$?
wait "$matrix"
kernels=$?
trap - INT TERM
echo
echo "---- kernel matrix ($log) ----"
cat "$log"
echo
echo "host tests: exit $host; kernel matrix: exit $kernels"
[ "$host" = 0 ] && [ "$kernels" = 0 ]
