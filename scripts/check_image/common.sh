# shellcheck shell=bash
# What every step uses: messages, Debian packages, quiet commands, buildah working
# containers, and the cleanup of what this run made (containers, mounts, folders), also on failure.
# Sourced by scripts/check-image.

say() { printf '[check-image %4ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf '[check-image] FAIL: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"

CONTAINERS=()     # buildah working containers to remove
TMPDIRS=()        # folders to remove
SERVER_PID=""     # aft-serve (buildah: a host pid) while it runs
RUN_PID=""        # the `buildah run` holding it
DOCKER_CTR=""     # the docker container while it exists
BUILD_BEFORE=""   # buildah containers that existed before `buildah bud`, while it runs

cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
  if [ -n "$RUN_PID" ]; then wait "$RUN_PID" 2>/dev/null || true; fi
  if [ -n "$DOCKER_CTR" ]; then docker rm -f "$DOCKER_CTR" >/dev/null 2>&1 || true; fi
  local c d
  if [ -n "$BUILD_BEFORE" ]; then
    # An interrupted `buildah bud` leaves its step containers behind (--force-rm covers failures
    # it sees itself, not a signal): the ones this build added.
    while read -r c; do
      [[ " $BUILD_BEFORE " == *" $c "* ]] || CONTAINERS+=("$c")
    done < <(buildah containers --quiet --filter name=working-container 2>/dev/null)
  fi
  for c in "${CONTAINERS[@]}"; do
    buildah umount "$c" >/dev/null 2>&1 || true
    buildah rm "$c" >/dev/null 2>&1 || true
  done
  for d in "${TMPDIRS[@]}"; do
    # A debootstrap interrupted mid-way can leave proc/sys mounted inside its target.
    while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(awk -v d="$d/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r)
    rm -rf "$d"
  done
  exit "$rc"
}

quietly() { # quietly WHAT CMD...: runs CMD, shows its output only when it fails
  local what="$1" log
  shift
  log="$(mktemp "$CACHE/log.XXXXXX")"
  if ! "$@" >"$log" 2>&1; then
    tail -30 "$log" >&2
    rm -f "$log"
    die "$what failed"
  fi
  rm -f "$log"
}

NEW_CONTAINER=""
new_container() { # new_container IMAGE: a buildah working container in NEW_CONTAINER, removed on exit
  NEW_CONTAINER="$(buildah from --pull=never --quiet "$1")"
  CONTAINERS+=("$NEW_CONTAINER") # (not called in a subshell, so the cleanup sees it)
}

seconds_since() { # seconds_since T0 (date +%s.%N): elapsed seconds, one decimal
  awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'
}

ms() { # ms SECONDS: as whole milliseconds
  awk -v s="$1" 'BEGIN {printf "%.0f", s * 1000}'
}
