# shellcheck shell=bash
# The built image's facts: its files, config, user, entrypoint, HEALTHCHECK and model.
# Sourced by scripts/check-image.

BUILDAH_SMOKE=""   # working container of the image (buildah)
IMG_ROOT=""        # the image's files on the host
IMG_USER=""        # uid:gid the image runs as

prepare_smoke() { # the image's files, config and user
  if [ "$ENGINE" = docker ]; then
    IMG_ROOT="$WORK/rootfs"
    mkdir -p "$IMG_ROOT"
    local c
    c="$(docker create "$TAG")"
    docker export "$c" | tar -C "$IMG_ROOT" -xf - opt/aft-serve etc/passwd etc/group
    docker rm "$c" >/dev/null
    IMG_CONFIG="$(docker image inspect --format '{{json .Config}}' "$TAG")"
  else
    new_container "$TAG"
    BUILDAH_SMOKE="$NEW_CONTAINER"
    IMG_ROOT="$(buildah mount "$BUILDAH_SMOKE")"
    IMG_CONFIG="$(buildah inspect --type image "$TAG" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["Docker"]["config"]))')"
    local f
    for f in bin/sh usr/bin/setpriv; do
      [ -x "$IMG_ROOT/$f" ] || die "the buildah smoke test needs /$f in the image (debian slim has it)"
    done
  fi
  local user
  user="$(python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get("User") or "")' "$IMG_CONFIG")"
  [ -n "$user" ] || die "the image sets no USER (it would run as root)"
  IMG_USER="$(resolve_user "$user")"
  [ "${IMG_USER%%:*}" != 0 ] || die "the image runs as root ($user)"
  [ -z "${DARGS[AFT_UID]:-}" ] || [ "${IMG_USER%%:*}" = "${DARGS[AFT_UID]}" ] \
    || die "image user $IMG_USER is not the Dockerfile's AFT_UID ${DARGS[AFT_UID]}"
  mapfile -t ENTRYPOINT < <(python3 -c 'import json, sys; print(*(json.loads(sys.argv[1]).get("Entrypoint") or []), sep="\n")' "$IMG_CONFIG")
  [ "${#ENTRYPOINT[@]}" -gt 0 ] || die "the image has no ENTRYPOINT"
  # HEALTHCHECK as docker runs it; its absence means the image lost it (OCI format).
  mapfile -t HEALTHCHECK < <(python3 -c '
import json, sys
hc = (json.loads(sys.argv[1]).get("Healthcheck") or {}).get("Test") or []
if hc[:1] == ["CMD"]: print(*hc[1:], sep="\n")
elif hc[:1] == ["CMD-SHELL"]: print("/bin/sh", "-c", hc[1], sep="\n")' "$IMG_CONFIG")
  [ "${#HEALTHCHECK[@]}" -gt 0 ] || die "the image has no HEALTHCHECK (built without --format docker?)"
  MODEL_DIR="$(python3 -c 'import json, sys; print(dict(e.split("=", 1) for e in json.loads(sys.argv[1]).get("Env") or []).get("AFT_MODEL_DIR", ""))' "$IMG_CONFIG")"
  [ -f "$IMG_ROOT$MODEL_DIR/manifest.json" ] || die "AFT_MODEL_DIR=$MODEL_DIR has no manifest.json in the image"
}

resolve_user() { # resolve_user USER[:GROUP] -> uid:gid, names looked up in the image
  local u="${1%%:*}" g="" uid gid
  [[ "$1" == *:* ]] && g="${1#*:}"
  if [[ "$u" =~ ^[0-9]+$ ]]; then uid="$u"; else uid="$(awk -F: -v n="$u" '$1 == n {print $3}' "$IMG_ROOT/etc/passwd")"; fi
  [ -n "$uid" ] || die "user $u is not in the image's /etc/passwd"
  if [ -z "$g" ]; then gid="$(awk -F: -v n="$uid" '$3 == n {print $4}' "$IMG_ROOT/etc/passwd")"; gid="${gid:-$uid}"
  elif [[ "$g" =~ ^[0-9]+$ ]]; then gid="$g"
  else gid="$(awk -F: -v n="$g" '$1 == n {print $3}' "$IMG_ROOT/etc/group")"; fi
  [ -n "$gid" ] || die "group $g is not in the image's /etc/group"
  printf '%s:%s\n' "$uid" "$gid"
}

SHIPPED=() # the libraries the image ships next to the binary
check_contents() { # the binary is stripped; lists what the image holds
  local bin libdir debug_sections
  bin="$IMG_ROOT${ENTRYPOINT[0]}"
  # Debug information sections; .debug_gdb_scripts is not one (34 loaded bytes naming gdb's Rust
  # pretty-printers) and strip keeps it.
  debug_sections="$(readelf -S --wide "$bin" | grep -o ' \.debug_[a-z_]*' | grep -v -x ' .debug_gdb_scripts' | tr -d ' ' | tr '\n' ' ' || true)"
  [ -z "$debug_sections" ] || die "${ENTRYPOINT[0]} ships debug information ($debug_sections): not stripped"
  libdir="$(dirname "$(dirname "$bin")")/lib"
  mapfile -t SHIPPED < <(find "$libdir" -maxdepth 1 -name '*.so*' -printf '%f\n' | sort)
  say "contents: binary $(mb "$bin") (no debug sections), ${#SHIPPED[@]} libraries $(mb "$libdir") [${SHIPPED[*]}], model $(mb "$IMG_ROOT$MODEL_DIR")"
}

mb() { du -sb "$@" | awk '{s += $1} END {printf "%.0f MB", s / 1e6}'; }
