#!/usr/bin/env bash
# System packages the qemu kernel matrix (scripts/vmtest/matrix.py) needs: qemu to boot
# Debian's kernels under TCG, a static busybox and cpio for the guest's initramfs, xz to
# unpack 6.12's compressed modules, kmod for depmod. Debian/Ubuntu.
# Installs only what is missing, so a second run is quick and offline.
set -euo pipefail

need=()
. "$(dirname "$0")/apt-lib.sh"

have_cmd qemu-system-x86_64 || need+=(qemu-system-x86)
# The initramfs holds busybox alone, so it must be the static build.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
have_cmd cpio || need+=(cpio)
have_cmd xz || need+=(xz-utils)
have_cmd depmod || need+=(kmod)
have_cmd apt-get || { echo "install-vm-deps: needs a Debian/Ubuntu host (apt-get)" >&2; exit 1; }

apt_install install-vm-deps "${need[@]}"
