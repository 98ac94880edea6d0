# shellcheck shell=bash
# What every step uses: messages, the step runner and its summary table, the compose command,
# HTTP to the published port, waiting for the service, and the cleanup that always runs.
# Sourced by scripts/check-compose.

say() { printf '[check-compose %4ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf '[check-compose] FAIL (%s): %s\n' "${STEP:-setup}" "$*" >&2; exit 1; }

# shellcheck source=scripts/lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/apt.sh"

seconds_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }

# --- steps and the summary table -------------------------------------------------------------
STEP=""          # the step running now (named in FAIL messages and, on failure, in the table)
STEP_T0=""
RESULTS=()       # "name|PASS|seconds|detail" per finished step
DETAIL=""        # what a step found, for the table (set by the step function)

step() { # step NAME FUNCTION: runs FUNCTION, records PASS and its time (a failure exits)
  STEP="$1" DETAIL=""
  STEP_T0="$(date +%s.%N)"
  say "--- $1"
  "$2"
  local secs
  secs="$(seconds_since "$STEP_T0")"
  RESULTS+=("$1|PASS|$secs|$DETAIL")
  say "PASS $1 ($secs s): $DETAIL"
  STEP=""
}

summary() { # the table of every step run (the failed one last), on stdout
  local row name result secs detail
  echo
  printf '%-16s %-6s %8s  %s\n' check result seconds detail
  printf '%-16s %-6s %8s  %s\n' ---------------- ------ -------- ------
  for row in "${RESULTS[@]}"; do
    IFS='|' read -r name result secs detail <<<"$row"
    printf '%-16s %-6s %8s  %s\n' "$name" "$result" "$secs" "$detail"
  done
}

# --- compose and HTTP ------------------------------------------------------------------------
COMPOSE_FILES=(-f docker/compose.yaml -f docker/compose.offline.yaml)

compose() { # compose [-f EXTRA.yaml ...] ARGS: docker-compose on the repository's stack
  # COMPOSE_DOCKER_CLI_BUILD makes compose build with `docker build` (BuildKit) instead of its
  # own classic builder; PATH puts the BuildKit-capable client first for that.
  local extra=()
  while [ "${1:-}" = -f ]; do extra+=(-f "$2"); shift 2; done
  env PATH="$(dirname "$DOCKER_CLI"):$PATH" DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1 \
    docker-compose -p "$PROJECT" "${COMPOSE_FILES[@]}" "${extra[@]}" "$@"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

http() { # http METHOD PORT PATH [BODY]: prints "STATUS SECONDS", the body goes to $WORK/body
  local args=(-sS -m 60 -o "$WORK/body" -w '%{http_code} %{time_total}\n' -X "$1" "http://127.0.0.1:$2$3")
  [ $# -lt 4 ] || args+=(-H 'content-type: application/json' --data "$4")
  curl "${args[@]}" 2>/dev/null || echo "000 0"
}

json() { # json EXPR: evaluates EXPR on $WORK/body (bound to b) and prints the result
  python3 -c 'import json, sys; b = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$WORK/body" "$1" \
    || die "cannot evaluate $1 on the answer: $(head -c 300 "$WORK/body")"
}

ctr() { compose ps -q "$1"; } # the container id of a service

state() { # state SERVICE|ID FIELD: a field of `docker inspect`'s .State (Health.Status, Pid, ...)
  local id="$1"
  [[ "$id" =~ ^[0-9a-f]{64}$ ]] || id="$(ctr "$1")"
  docker inspect --format "{{.State.$2}}" "$id" 2>/dev/null
}

wait_healthy() { # wait_healthy TIMEOUT_S: until aft-serve's health check says healthy; READY_AT, HEALTHY_AT
  local deadline=$((SECONDS + $1)) t0 status id
  t0="$(date +%s.%N)"
  READY_AT="" HEALTHY_AT=""
  id="$(ctr aft-serve)"
  while [ $SECONDS -lt $deadline ]; do
    if [ -z "$READY_AT" ]; then
      read -r status _ < <(http GET "$HTTP_PORT" /health/ready)
      [ "$status" != 200 ] || READY_AT="$(seconds_since "$t0")"
    fi
    if [ "$(state "$id" Health.Status)" = healthy ]; then
      HEALTHY_AT="$(seconds_since "$t0")"
      [ -n "$READY_AT" ] || READY_AT="$HEALTHY_AT"
      return 0
    fi
    sleep 0.5
  done
  compose logs --tail 30 aft-serve >&2 || true
  die "aft-serve not healthy within $1 s (health: $(state aft-serve Health.Status))"
}

server_log() { docker logs "$(ctr aft-serve)" 2>&1; } # the service's log (JSON lines) since its container started

log_field() { # log_field MESSAGE FIELD: FIELD of the last log line with MESSAGE, from stdin
  python3 -c '
import json, sys
msg, field, found = sys.argv[1], sys.argv[2], ""
for line in sys.stdin:
    try:
        rec = json.loads(line)
    except ValueError:
        continue
    fields = rec.get("fields", rec)
    if fields.get("message") == msg and field in fields:
        found = fields[field]
print(found)' "$1" "$2"
}

# --- cleanup ---------------------------------------------------------------------------------
TMPDIRS=()
STACK_UP=0 # 1 while the compose project may have containers

cleanup() {
  local rc=$?
  set +e
  if [ "$STACK_UP" = 1 ]; then
    say "cleanup: docker-compose down -v"
    compose down -v --remove-orphans >/dev/null 2>&1
  fi
  if [ -n "$STEP" ]; then RESULTS+=("$STEP|FAIL|$(seconds_since "$STEP_T0")|see the FAIL message above"); fi
  stop_engine # a no-op unless this run started dockerd and has not stopped it yet
  local d
  for d in "${TMPDIRS[@]}"; do rm -rf "$d"; done
  summary
  if [ "$rc" = 0 ]; then echo "check-compose: PASS"; else echo "check-compose: FAIL (exit $rc)"; fi
  exit "$rc"
}
