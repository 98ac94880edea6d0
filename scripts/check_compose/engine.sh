# shellcheck shell=bash disable=SC2034 # globals set here (DETAIL, ...) are read by the other files
# The Docker engine: uses a dockerd that answers, else starts one and, at the end, stops it and
# puts the host back as it found it. dockerd changes the host: the docker0 bridge, its iptables
# chains and rules (and the FORWARD policy DROP), net.ipv4.ip_forward, the bridge-netfilter
# switches, and cgroup folders named docker. Only the dockerd started here is stopped (by its
# pid; it stops the containerd it started itself); a dockerd that was already running is left
# alone, with everything it set up.
# Sourced by scripts/check-compose.

DOCKERD_PID=""   # the dockerd this run started, while it runs
HOST_STATE=""    # folder with the host's state from before dockerd started
ENGINE_NOTE=""

sysctls() { # the sysctls dockerd sets, as NAME=VALUE lines (those that exist here)
  local f
  for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/bridge/bridge-nf-call-iptables \
    /proc/sys/net/bridge/bridge-nf-call-ip6tables; do
    [ -e "$f" ] && printf '%s=%s\n' "$f" "$(cat "$f")"
  done
  return 0
}

# iptables-save output, normalised for comparing: no comments or counters, and without tables
# that hold nothing (only built-in chains, policy ACCEPT, no rules): with the nft backend a
# table dockerd created stays behind empty once its rules are gone, and filters nothing.
iptables_state() { # iptables-save output on stdin -> the normalised rules
  sed -e '/^#/d' -e 's/ \[[0-9]*:[0-9]*\]$//' | awk '
    /^\*/ {table = $0; body = ""; keep = 0; next}
    /^COMMIT/ {if (keep) printf "%s\n%s", table, body; next}
    {body = body $0 "\n"; if ($0 !~ /^:(INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) ACCEPT$/) keep = 1}'
}
iptables_now() { # iptables_now iptables|ip6tables: the normalised rules in force
  if command -v "$1-save" >/dev/null; then "$1-save" | iptables_state; fi
}

start_engine() { # a dockerd that answers: the running one, or one started here
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v docker-compose >/dev/null || need+=(docker-compose)
  command -v iptables >/dev/null || need+=(iptables)
  command -v curl >/dev/null || need+=(curl)
  [ "${#need[@]}" = 0 ] || apt_install "${need[@]}"
  if [ -x /usr/bin/docker ] && /usr/bin/docker info >/dev/null 2>&1 || docker info >/dev/null 2>&1; then
    pick_docker_client
    ENGINE_NOTE="dockerd already running (left running)"
  else
    [ "$(id -u)" = 0 ] || die "no dockerd answers, and starting one needs root"
    HOST_STATE="$(mktemp -d "$CACHE/host.XXXXXX")"
    TMPDIRS+=("$HOST_STATE")
    sysctls >"$HOST_STATE/sysctls"
    local t
    for t in iptables ip6tables; do
      if command -v "$t-save" >/dev/null; then "$t-save" >"$HOST_STATE/$t.save"; else : >"$HOST_STATE/$t.save"; fi
    done
    ip link show docker0 >/dev/null 2>&1 && touch "$HOST_STATE/had-docker0"
    find /sys/fs/cgroup -maxdepth 2 -name docker -type d >"$HOST_STATE/cgroups" 2>/dev/null || true
    say "starting dockerd (log: $CACHE/dockerd.log)"
    local t0
    t0="$(date +%s.%N)"
    # setsid: its own session, so a Ctrl-C of this script reaches it only through stop_engine.
    setsid dockerd >"$CACHE/dockerd.log" 2>&1 </dev/null &
    DOCKERD_PID=$!
    local i
    for ((i = 0; i < 60; i++)); do
      [ -S /var/run/docker.sock ] && /usr/bin/docker info >/dev/null 2>&1 && break
      kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$CACHE/dockerd.log" >&2; die "dockerd exited at start"; }
      sleep 0.5
    done
    /usr/bin/docker info >/dev/null 2>&1 || die "dockerd did not answer within 30 s (log: $CACHE/dockerd.log)"
    pick_docker_client
    ENGINE_NOTE="dockerd started here (pid $DOCKERD_PID), ready in $(seconds_since "$t0") s"
  fi
  DETAIL="docker $(docker version --format '{{.Server.Version}}'), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /'), client $DOCKER_CLI; $ENGINE_NOTE"
}

stop_engine() { # stops the dockerd started here and restores the host; no-op otherwise
  [ -n "$DOCKERD_PID" ] || return 0
  local pid="$DOCKERD_PID" i=0
  DOCKERD_PID=""
  say "stopping dockerd (pid $pid) and restoring the host"
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    say "dockerd still running 30 s after SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  # iptables: what dockerd added goes (its chains in filter and nat), then the saved rules return.
  local t tbl chain file value line
  for t in iptables ip6tables; do
    command -v "$t" >/dev/null || continue
    for tbl in $("$t-save" 2>/dev/null | sed -n 's/^\*//p'); do
      "$t" -t "$tbl" -F 2>/dev/null || true
      "$t" -t "$tbl" -X 2>/dev/null || true
      for chain in INPUT FORWARD OUTPUT PREROUTING POSTROUTING; do "$t" -t "$tbl" -P "$chain" ACCEPT 2>/dev/null || true; done
    done
    if [ -s "$HOST_STATE/$t.save" ]; then "$t-restore" <"$HOST_STATE/$t.save" || say "WARNING: $t-restore of the saved rules failed"; fi
  done
  while IFS='=' read -r file value; do printf '%s\n' "$value" >"$file" 2>/dev/null || true; done <"$HOST_STATE/sysctls"
  if [ ! -e "$HOST_STATE/had-docker0" ] && ip link show docker0 >/dev/null 2>&1; then ip link delete docker0 || true; fi
  # The cgroup folders dockerd made (cgroup v1: one per controller, with buildkit's inside),
  # empty now: removed from the bottom up.
  while read -r line; do
    grep -qx "$line" "$HOST_STATE/cgroups" || find "$line" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done < <(find /sys/fs/cgroup -maxdepth 2 -name docker -type d 2>/dev/null)
}

check_host_restored() { # after stop_engine: no dockerd of ours, host state as before
  [ -n "$HOST_STATE" ] || { DETAIL="not applicable: $ENGINE_NOTE"; return 0; }
  stop_engine
  local problems=()
  [ "$(sysctls)" = "$(cat "$HOST_STATE/sysctls")" ] || problems+=("sysctls now: $(sysctls | tr '\n' ' ')")
  local t
  for t in iptables ip6tables; do
    [ "$(iptables_now "$t")" = "$(iptables_state <"$HOST_STATE/$t.save")" ] \
      || problems+=("$t differs: $(diff <(iptables_state <"$HOST_STATE/$t.save") <(iptables_now "$t") | head -5 | tr '\n' ' ')")
  done
  if [ ! -e "$HOST_STATE/had-docker0" ] && ip link show docker0 >/dev/null 2>&1; then problems+=("docker0 still exists"); fi
  if /usr/bin/docker info >/dev/null 2>&1; then problems+=("a docker daemon still answers"); fi
  [ "${#problems[@]}" = 0 ] || die "host not restored: ${problems[*]}"
  DETAIL="dockerd stopped; iptables rules and policies, $(wc -l <"$HOST_STATE/sysctls") sysctls (ip_forward $(sed -n 's|.*ip_forward=||p' "$HOST_STATE/sysctls")), no docker0: as before"
}
