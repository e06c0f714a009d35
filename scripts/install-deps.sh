#!/usr/bin/env bash
# System packages sockscope needs to build (clang, bpftool, libbpf headers), run (libbpf1)
# and test (iproute2 for network namespaces, iperf3 for the benchmark, tmux for the full-screen test,
# nftables for the nftables rule action).
# Debian/Ubuntu.
# Installs only what is missing, so a second run is quick and offline.
set -euo pipefail

need=()
. "$(dirname "$0")/apt-lib.sh"

have_cmd clang || need+=(clang)
have_cmd llvm-strip || need+=(llvm)
have_cmd bpftool || need+=(bpftool)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
ldconfig -p 2>/dev/null | grep -q 'libbpf\.so\.1 ' || need+=(libbpf1)
have_cmd ip || need+=(iproute2)
have_cmd nft || need+=(nftables)  # action = "nftables" rules and their test (nsenter is util-linux: always there)
have_cmd iperf3 || need+=(iperf3)
have_cmd tmux || need+=(tmux)
have_cmd make || need+=(make)
have_cmd objdump || need+=(binutils)  # bench/jit_listing.py and its test
# The interpreter the venv is made with (the Makefile's PY: Debian's python3 where it is 3.11
# or newer) needs ensurepip, which Debian ships in python3-venv.
"${PY:-python3}" -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)

apt_install install-deps "${need[@]}"
