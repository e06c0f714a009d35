#!/usr/bin/env bash
# Fetch Debian's own kernels for the qemu kernel matrix, unpacked (never installed on the host).
#
#   fetch-kernels.sh [SERIES...]     SERIES: 6.1 (Debian 12) or 6.12 (bookworm's linux-6.12); default both
#
# Prints one line per series: "SERIES RELEASE DIR", DIR holding boot/vmlinuz-RELEASE and
# lib/modules/RELEASE with a modules.dep (the package ships none: depmod here).
# The newest ABI is resolved at run time from the meta packages' dependencies, so a version
# dropped from the archive is never hard-coded. Pin one with SOCKSCOPE_KERNEL_6_1 /
# SOCKSCOPE_KERNEL_6_12 (a release such as 6.1.0-57-amd64 or 6.12.117+deb12-amd64).
# Cache: $SOCKSCOPE_VMTEST_CACHE (default /var/cache/sockscope-vmtest), kept across clones.
# Generic -amd64 flavour only: the -cloud- flavour has no 9p.
set -euo pipefail

CACHE=${SOCKSCOPE_VMTEST_CACHE:-/var/cache/sockscope-vmtest}
mkdir -p "$CACHE/kernels" "$CACHE/debs"
# Two clones running the matrix at once share the cache: one fetcher at a time.
exec 9>"$CACHE/.lock"
flock 9
updated=0

log() { echo "fetch-kernels: $*" >&2; }

# The meta package whose candidate depends on the current image of a series.
meta_of() {
  case "$1" in
    6.1) echo linux-image-amd64 ;;
    6.12) echo linux-image-6.12-amd64 ;;
    *) log "unknown series '$1' (known: 6.1 6.12)"; exit 2 ;;
  esac
}

pin_of() {
  local var="SOCKSCOPE_KERNEL_${1//./_}"
  echo "${!var:-}"
}

# linux-image-amd64 -> linux-image-6.1.0-56-amd64 -> release 6.1.0-56-amd64
resolve() {
  local meta dep
  meta=$(meta_of "$1")
  dep=$(apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: linux-image-\(.*-amd64\)$/\1/p' | head -n1)
  echo "$dep"
}

newest_cached() {
  # A series' release names start with the series and a separator (6.1.0-… or 6.12.117+…).
  local s=$1
  find "$CACHE/kernels" -mindepth 2 -maxdepth 2 -name .ready 2>/dev/null |
    sed 's#.*/kernels/\([^/]*\)/\.ready#\1#' | grep -E "^${s//./\\.}[.-]" |
    sort -V | tail -n1
}

fetch() {
  local series=$1 release
  release=$(pin_of "$series")
  if [ -z "$release" ]; then
    release=$(resolve "$series")
    if [ -z "$release" ] && [ "$updated" -eq 0 ]; then
      # A fresh machine may have no package lists yet.
      log "resolving $series: apt-get update"
      apt-get update -qq >&2 || true
      updated=1
      release=$(resolve "$series")
    fi
    if [ -z "$release" ]; then
      release=$(newest_cached "$series")
      [ -n "$release" ] || { log "cannot resolve a $series kernel (apt-cache depends $(meta_of "$series"))"; exit 1; }
      log "cannot resolve $series from apt; using cached $release"
    fi
  fi
  # The 6.12 meta package depends on a release within its own series; a pin may not.
  case "$release" in
    "$series".*|"$series"-*) ;;
    *) log "warning: release $release does not look like series $series" ;;
  esac
  local dir="$CACHE/kernels/$release"
  if [ ! -f "$dir/.ready" ]; then
    local pkg="linux-image-$release-unsigned"
    local deb
    deb=$(find "$CACHE/debs" -maxdepth 1 -name "${pkg}_*.deb" | sort -V | tail -n1)
    if [ -z "$deb" ]; then
      log "downloading $pkg"
      (cd "$CACHE/debs" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >&2) || {
        [ "$updated" -eq 1 ] || { apt-get update -qq >&2 || true; updated=1; }
        (cd "$CACHE/debs" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >&2)
      }
      deb=$(find "$CACHE/debs" -maxdepth 1 -name "${pkg}_*.deb" | sort -V | tail -n1)
    fi
    log "unpacking $(basename "$deb")"
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    dpkg -x "$deb" "$dir.tmp"
    depmod -b "$dir.tmp" "$release"
    [ -f "$dir.tmp/boot/vmlinuz-$release" ] || { log "no vmlinuz in $deb"; exit 1; }
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    touch "$dir/.ready"
  fi
  echo "$series $release $dir"
}

series=("$@")
[ ${#series[@]} -gt 0 ] || series=(6.1 6.12)
for s in "${series[@]}"; do
  fetch "$s"
done
