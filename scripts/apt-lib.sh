# Sourced by the install-*.sh scripts: find what is missing, install only that (Debian/Ubuntu),
# so a second run is quick and offline.

have_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

# apt_install WHO PACKAGE...: nothing to do without packages; as a user, say what is missing.
apt_install() {
  local who=$1
  shift
  [ $# -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "$who: missing packages: $*; run as root (sudo make setup) or install them" >&2
    return 1
  fi
  echo "$who: installing $*" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends: e.g. bpfcc-tools recommends kernel headers, hundreds of MB.
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
