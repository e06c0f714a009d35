#!/usr/bin/env bash
# What bench/compare.py needs beyond `make setup`: the tools it compares sockscope with
# (nethogs, bpftrace, BCC's tcptop/tcplife from bpfcc-tools), nftables for the wire-byte
# reference, and the `bench` Python extra (matplotlib) in the venv. Debian/Ubuntu, as root.
# Installs only what is missing, so a second run is quick and offline.
set -euo pipefail

VENV=${VENV:-.venv}
need=()
have_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

have_cmd nethogs || need+=(nethogs)
have_cmd bpftrace || need+=(bpftrace)
have_cmd nft || need+=(nftables)
have_cmd iperf3 || need+=(iperf3)
# BCC cannot run on this kernel kind (no headers, no kprobes); it is installed so the report
# can show the error it gives rather than guess it.
have_cmd tcptop-bpfcc || need+=(bpfcc-tools)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-bench-deps: missing packages: ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "install-bench-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends: bpfcc-tools recommends the kernel headers, hundreds of MB that
  # would not make BCC work here anyway.
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
  echo "install-bench-deps: installing the bench extra (matplotlib) into $VENV" >&2
  "$VENV/bin/pip" install --quiet -e '.[bench]'
fi
