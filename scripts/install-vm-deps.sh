#!/usr/bin/env bash
# System packages the qemu kernel matrix (scripts/vmtest/matrix.py) needs: qemu to boot
# Debian's kernels under TCG, a static busybox and cpio for the guest's initramfs, xz to
# unpack 6.12's compressed modules, kmod for depmod. Debian/Ubuntu.
# Installs only what is missing, so a second run is quick and offline.
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

have_cmd qemu-system-x86_64 || need+=(qemu-system-x86)
# The initramfs holds busybox alone, so it must be the static build.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
have_cmd cpio || need+=(cpio)
have_cmd xz || need+=(xz-utils)
have_cmd depmod || need+=(kmod)
have_cmd apt-get || { echo "install-vm-deps: needs a Debian/Ubuntu host (apt-get)" >&2; exit 1; }

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-vm-deps: missing packages: ${need[*]}; run as root or install them" >&2
  exit 1
fi
echo "install-vm-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
