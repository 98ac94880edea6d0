# shellcheck shell=bash
# apt_install PKG...: Debian packages, quietly, waiting for another apt's lock; the caller's
# `say` and `die` report. Sourced by scripts/check_image/common.sh and
# scripts/check_compose/common.sh.

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then die "need $* (apt-get install $*, as root)"; fi
  say "installing $* (Debian packages)"
  local log
  log="$(mktemp)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends "$@"; } >"$log" 2>&1; then
    cat "$log" >&2
    die "apt-get install $* failed"
  fi
  rm -f "$log"
}
