#!/usr/bin/env bash
# System packages sockscope needs to build (clang, bpftool, libbpf headers), run (libbpf1)
# and test (iproute2 for network namespaces, iperf3 for the benchmark, tmux for the full-screen test).
# Debian/Ubuntu.
# Installs only what is missing, so a second run is quick and offline.
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

have_cmd clang || need+=(clang)
have_cmd llvm-strip || need+=(llvm)
have_cmd bpftool || need+=(bpftool)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
ldconfig -p 2>/dev/null | grep -q 'libbpf\.so\.1 ' || need+=(libbpf1)
have_cmd ip || need+=(iproute2)
have_cmd iperf3 || need+=(iperf3)
have_cmd tmux || need+=(tmux)
have_cmd make || need+=(make)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${need[*]}; run as root (sudo make setup) or install them" >&2
  exit 1
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
