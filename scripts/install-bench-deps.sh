#!/usr/bin/env bash
# What bench/compare.py needs beyond `make setup`: the tools it compares sockscope with
# (nethogs, bpftrace, BCC's tcptop/tcplife from bpfcc-tools), nftables for the wire-byte
# reference, and the `bench` Python extra (matplotlib) in the venv. Debian/Ubuntu, as root.
# Installs only what is missing, so a second run is quick and offline.
set -euo pipefail

VENV=${VENV:-.venv}
need=()
. "$(dirname "$0")/apt-lib.sh"

have_cmd nethogs || need+=(nethogs)
have_cmd bpftrace || need+=(bpftrace)
have_cmd nft || need+=(nftables)
have_cmd iperf3 || need+=(iperf3)
# BCC cannot run on this kernel kind (no headers, no kprobes); it is installed so the report
# can show the error it gives rather than guess it.
have_cmd tcptop-bpfcc || need+=(bpfcc-tools)

apt_install install-bench-deps "${need[@]}"

if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  echo "install-bench-deps: installing the bench extra (matplotlib) into $VENV" >&2
  "$VENV/bin/pip" install --quiet -e '.[bench]'
fi
