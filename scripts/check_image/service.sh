# shellcheck shell=bash disable=SC2034 # globals set here are read by the other files
# The service in the image: run a command in it, start and stop the server (the engine's
# way), and talk to it over HTTP from the host.
# Sourced by scripts/check-image.

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

http() { # http METHOD PATH [BODY]: prints "STATUS SECONDS", the body goes to $WORK/body
  local args=(-sS -o "$WORK/body" -w '%{http_code} %{time_total}\n' -X "$1" "http://127.0.0.1:$PORT$2")
  [ $# -lt 3 ] || args+=(-H 'content-type: application/json' --data "$3")
  curl "${args[@]}" 2>/dev/null || echo "000 0"
}

wait_ready() { # wait_ready TIMEOUT_S: until /health/ready answers 200
  local deadline=$((SECONDS + $1)) status
  while [ $SECONDS -lt $deadline ]; do
    read -r status _ < <(http GET /health/ready)
    [ "$status" = 200 ] && return 0
    server_alive || return 1
    sleep 0.2
  done
  return 1
}

# Runs "$@" in the image like compose runs the service: root remounted read-only, then the image
# user with no capabilities and no-new-privileges (setpriv), /tmp a tmpfs.
# shellcheck disable=SC2016 # expanded by the container's sh
RO_AS_USER='mount -o remount,bind,ro / || exit 125; uid="$1" gid="$2"; shift 2
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"'

in_image() { # in_image [VAR=VALUE...] -- CMD...: runs CMD in a fresh instance of the image
  local envs=()
  while [ "$1" != -- ]; do envs+=(-e "$1"); shift; done
  shift
  if [ "$ENGINE" = docker ]; then
    docker exec "${envs[@]}" "$DOCKER_CTR" "$@"
  else
    buildah run --user 0:0 --cap-add CAP_SYS_ADMIN --mount type=tmpfs,destination=/tmp \
      "${envs[@]}" "$BUILDAH_SMOKE" -- /bin/sh -c "$RO_AS_USER" sh "${IMG_USER%%:*}" "${IMG_USER##*:}" "$@"
  fi
}

descendant_named() { # descendant_named PID NAME: a process below PID whose comm is NAME
  local -A parent=()
  local s stat rest pid ppid p
  for s in /proc/[0-9]*/stat; do
    stat="$(cat "$s" 2>/dev/null)" || continue
    rest="${stat##*) }"
    pid="${stat%% *}"
    read -r _ ppid _ <<<"$rest"
    parent[$pid]="$ppid"
  done
  for pid in "${!parent[@]}"; do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || continue
    p="$pid"
    while [ -n "${parent[$p]:-}" ] && [ "$p" != 1 ]; do
      p="${parent[$p]}"
      if [ "$p" = "$1" ]; then echo "$pid"; return 0; fi
    done
  done
  return 1
}

start_server() {
  if [ "$ENGINE" = docker ]; then
    # Compose's settings (docker/compose.yaml): read-only root, tmpfs /tmp, no capabilities.
    DOCKER_CTR="$(docker run -d --read-only --tmpfs /tmp --cap-drop ALL \
      --security-opt no-new-privileges:true -p "127.0.0.1:$PORT:8080" "$TAG")"
    (docker logs -f "$DOCKER_CTR" >"$WORK/server.log" 2>&1 &)
  else
    in_image AFT_HOST=127.0.0.1 AFT_PORT="$PORT" -- "${ENTRYPOINT[@]}" >"$WORK/server.log" 2>&1 &
    RUN_PID=$!
    local tries
    for ((tries = 0; tries < 100; tries++)); do
      SERVER_PID="$(descendant_named "$RUN_PID" "$(basename "${ENTRYPOINT[0]}" | cut -c1-15)")" && break
      kill -0 "$RUN_PID" 2>/dev/null || break
      sleep 0.1
    done
    [ -n "$SERVER_PID" ] || { tail -20 "$WORK/server.log" >&2; die "the service did not start"; }
  fi
}

server_alive() {
  if [ "$ENGINE" = docker ]; then
    [ "$(docker inspect --format '{{.State.Running}}' "$DOCKER_CTR" 2>/dev/null)" = true ]
  else
    kill -0 "$SERVER_PID" 2>/dev/null
  fi
}

server_proc() { # server_proc FILE: /proc/<server>/FILE
  if [ "$ENGINE" = docker ]; then docker exec "$DOCKER_CTR" cat "/proc/1/$1"; else cat "/proc/$SERVER_PID/$1"; fi
}

STOP_RC=""
stop_server() { # SIGTERM; the exit status goes to STOP_RC (not a subshell: it waits for RUN_PID)
  local rc=0
  if [ "$ENGINE" = docker ]; then
    docker kill --signal TERM "$DOCKER_CTR" >/dev/null
    # shellcheck disable=SC2153 # DOCKER_CLI: set by pick_docker_client (engine.sh)
    rc="$(timeout 60 "$DOCKER_CLI" wait "$DOCKER_CTR")" || rc=timeout
  else
    kill -TERM "$SERVER_PID"
    local deadline=$((SECONDS + 60))
    while kill -0 "$RUN_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if kill -0 "$RUN_PID" 2>/dev/null; then rc=timeout; else wait "$RUN_PID" || rc=$?; fi
    RUN_PID=""
    SERVER_PID=""
  fi
  STOP_RC="$rc"
}
