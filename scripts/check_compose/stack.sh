# shellcheck shell=bash disable=SC2034 # globals set here (DETAIL, ...) are read by the other files
# The compose stack's checks, one function per step: up, requests, prometheus, restart, stop,
# alert, down. Each sets DETAIL or dies. Sourced by scripts/check-compose.

check_up() { # docker-compose up -d --build: the image builds (cached after the image step), aft-serve turns healthy
  local t0 build_s
  t0="$(date +%s.%N)"
  STACK_UP=1
  compose up -d --build >"$WORK/up.log" 2>&1 || { tail -30 "$WORK/up.log" >&2; die "docker-compose up -d --build failed"; }
  build_s="$(seconds_since "$t0")"
  wait_healthy 240
  local services
  services="$(compose ps --services --filter status=running | sort | tr '\n' ' ')"
  [ "$services" = "aft-serve prometheus " ] || die "running services: $services (want aft-serve and prometheus)"
  DETAIL="up -d --build returned after $build_s s; /health/ready 200 after $READY_AT s, container healthy after $HEALTHY_AT s (first probe at the 10 s interval); running: $services"
}

check_requests() { # embed, classify and a long document with late chunking, through the published port
  local status secs embed classify longdoc
  read -r status secs < <(http POST "$HTTP_PORT" /v1/embed '{"inputs": ["a cat sat on the mat", "stock prices fell sharply"]}')
  [ "$status" = 200 ] || die "/v1/embed answered $status: $(head -c 300 "$WORK/body")"
  embed="$(json "f'{len(b[\"embeddings\"])} x {len(b[\"embeddings\"][0])} dims ({b[\"model\"]})'")"
  embed="$embed in $(awk -v s="$secs" 'BEGIN {printf "%.0f", s * 1000}') ms"
  read -r status secs < <(http POST "$HTTP_PORT" /v1/classify '{"inputs": ["the dog barked at the postman"], "top_k": 3}')
  [ "$status" = 200 ] || die "/v1/classify answered $status: $(head -c 300 "$WORK/body")"
  classify="$(json "', '.join(f'{r[\"label\"]} {r[\"score\"]:.2f}' for r in b['results'][0])")"
  longdoc="$(python3 scripts/check_compose/client.py long-doc "$HTTP_PORT" 2>&1)" || die "long document: $longdoc"
  DETAIL="embed $embed; classify top 3: $classify; long document: $longdoc"
}

prom() { # prom PATH: GET from Prometheus's published port into $WORK/body; dies unless 200
  local status
  read -r status _ < <(http GET "$PROM_PORT" "$1")
  [ "$status" = 200 ] || die "Prometheus $1 answered $status: $(head -c 200 "$WORK/body")"
}

wait_prom() { # wait_prom TIMEOUT_S PATH EXPR: until EXPR (on the JSON body b) is true
  local deadline=$((SECONDS + $1))
  while [ $SECONDS -lt $deadline ]; do
    prom "$2"
    [ "$(json "$3")" != True ] || return 0
    sleep 1
  done
  return 1
}

check_prometheus() { # up == 1 for aft-serve found by service name; every rule loaded, evaluated, ok; nothing firing
  local t0 up_s want got
  t0="$(date +%s.%N)"
  wait_prom 90 '/api/v1/query?query=up%7Bjob%3D%22aft-serve%22%7D' \
    'any(r["metric"].get("service") == "aft-serve" and r["value"][1] == "1" for r in b["data"]["result"])' \
    || die "no up{job=\"aft-serve\",service=\"aft-serve\"} == 1 within 90 s: $(head -c 300 "$WORK/body")"
  up_s="$(seconds_since "$t0")"
  local target
  target="$(json '[r["metric"]["instance"] for r in b["data"]["result"] if r["metric"].get("service") == "aft-serve"][0]')"
  # Every rule of docker/prometheus/alerts.yml, evaluated at least once, health ok.
  want="$(sed -n 's/^ *- alert: *//p' docker/prometheus/alerts.yml | sort | tr '\n' ' ')"
  wait_prom 60 /api/v1/rules \
    'all(r["health"] == "ok" and not r["lastEvaluation"].startswith("0001") for g in b["data"]["groups"] for r in g["rules"]) and len(b["data"]["groups"]) > 0' \
    || die "rules not all evaluated with health ok within 60 s: $(head -c 400 "$WORK/body")"
  got="$(json '" ".join(sorted(r["name"] for g in b["data"]["groups"] for r in g["rules"])) + " "')"
  [ "$got" = "$want" ] || die "Prometheus loaded the rules [$got], docker/prometheus/alerts.yml has [$want]"
  # Nothing pending or firing once the rules have seen the ready service (an evaluation before
  # the first scrape finds no `up` series, one during start-up no live worker, and sets
  # AftServeAbsent or AftServeNoWorkers pending; their `for: 2m` keeps that from firing).
  local active seen="" deadline=$((SECONDS + 60))
  while :; do
    prom /api/v1/alerts
    active="$(json "' '.join(f'{a[\"labels\"][\"alertname\"]}={a[\"state\"]}' for a in b['data']['alerts'])")"
    [ -n "$active" ] || break
    seen="$active"
    [ $SECONDS -lt $deadline ] || die "alerts active 60 s after the first scrape of the healthy service: $active"
    sleep 1
  done
  DETAIL="up{job=\"aft-serve\",service=\"aft-serve\"} == 1 after $up_s s (target $target, by DNS name); $(wc -w <<<"$want") rules loaded and evaluated, health ok; no alert pending or firing after $(seconds_since "$t0") s${seen:+ (pending at first, from the start: $seen)}"
}

check_restart() { # the server SIGKILLed: restart: unless-stopped brings it back, healthy again
  local id pid restarts t0 back_s
  id="$(ctr aft-serve)"
  pid="$(state "$id" Pid)"
  restarts="$(docker inspect --format '{{.RestartCount}}' "$id")"
  # From the host: inside the container the server is PID 1, and the kernel ignores a SIGKILL
  # sent to a namespace's init from inside it; `docker kill` would count as a deliberate stop,
  # which restart: unless-stopped does not undo. A SIGKILL to its host pid is what the OOM
  # killer does.
  t0="$(date +%s.%N)"
  kill -KILL "$pid"
  local deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ]; do
    [ "$(docker inspect --format '{{.RestartCount}}' "$id")" -gt "$restarts" ] \
      && [ "$(state "$id" Running)" = true ] && break
    sleep 0.2
  done
  [ "$(state "$id" Running)" = true ] || die "not restarted within 60 s of SIGKILL (state: $(state "$id" Status))"
  back_s="$(seconds_since "$t0")"
  wait_healthy 240
  DETAIL="SIGKILL to the server (host pid $pid) -> restarted after $back_s s (RestartCount $restarts -> $(docker inspect --format '{{.RestartCount}}' "$id")); /health/ready 200 $READY_AT s later, healthy $HEALTHY_AT s later ($(awk -v a="$back_s" -v b="$HEALTHY_AT" 'BEGIN {printf "%.1f", a + b}') s from the kill)"
}

in_flight() { # the service's aft_requests_in_flight (0 when it cannot be read)
  curl -sS -m 5 "http://127.0.0.1:$HTTP_PORT/metrics" 2>/dev/null \
    | awk '/^aft_requests_in_flight[ {]/ {s += $NF} END {print s + 0}'
}

check_stop() { # docker-compose stop with requests in flight: every one answered, exit code 0, clean shutdown in the log
  local n=12 client t0 stop_s seen=0 i
  python3 scripts/check_compose/client.py inflight "$HTTP_PORT" "$n" "$WORK/inflight.txt" &
  client=$!
  for ((i = 0; i < 150; i++)); do # up to 30 s for all of them to be inside the server
    seen="$(in_flight)"
    [ "$seen" -lt "$n" ] || break
    sleep 0.2
  done
  [ "$seen" -ge "$n" ] || { kill "$client" 2>/dev/null; die "only $seen of $n requests in flight after 30 s"; }
  t0="$(date +%s.%N)"
  compose stop aft-serve >"$WORK/stop.log" 2>&1 || { cat "$WORK/stop.log" >&2; die "docker-compose stop failed"; }
  stop_s="$(seconds_since "$t0")"
  wait "$client" || die "the in-flight client failed"
  local answered exit_code
  answered="$(grep -cx 200 "$WORK/inflight.txt" || true)"
  [ "$answered" = "$n" ] || die "of $n requests in flight, $answered were answered 200: $(sort "$WORK/inflight.txt" | uniq -c | tr '\n' ';')"
  exit_code="$(state aft-serve ExitCode)"
  [ "$exit_code" = 0 ] || die "aft-serve exited with $exit_code after docker-compose stop"
  server_log >"$WORK/server.log"
  grep -q '"SIGTERM received"' "$WORK/server.log" || die "the log has no 'SIGTERM received'"
  grep -q '"shut down cleanly"' "$WORK/server.log" || die "the log does not say 'shut down cleanly': $(tail -3 "$WORK/server.log")"
  DETAIL="$n requests in flight ($seen counted by aft_requests_in_flight, /metrics included): docker-compose stop took $stop_s s; all $n answered 200; exit code 0; log: SIGTERM received -> shutting down -> shut down cleanly"
}

check_alert() { # with aft-serve stopped, the alert for a service that is down fires
  # DNS discovery (prometheus.yml) drops a stopped container's name, so its target and its `up`
  # series go away instead of turning 0: AftServeAbsent (absent(up{job="aft-serve"})) is the
  # rule that sees this; AftServeDown (up == 0) covers a target that stays but does not answer.
  local t0 pending_s="" state down_seen=""
  t0="$(date +%s.%N)"
  local deadline=$((SECONDS + 240))
  while [ $SECONDS -lt $deadline ]; do
    prom /api/v1/alerts
    state="$(json 'next((a["state"] for a in b["data"]["alerts"] if a["labels"]["alertname"] == "AftServeAbsent"), "")')"
    [ "$state" != pending ] || [ -n "$pending_s" ] || pending_s="$(seconds_since "$t0")"
    case "$(json "next((a['state'] for a in b['data']['alerts'] if a['labels']['alertname'] == 'AftServeDown'), '')")" in
      firing) down_seen=firing ;;
      pending) [ "$down_seen" = firing ] || down_seen=pending ;;
    esac
    [ "$state" != firing ] || break
    sleep 2
  done
  [ "$state" = firing ] || die "AftServeAbsent not firing within 240 s of the stop (state '${state:-inactive}')"
  DETAIL="AftServeAbsent pending after ${pending_s:-?} s, firing after $(seconds_since "$t0") s (for: 2m, evaluated every 15 s); AftServeDown $(case "$down_seen" in firing) echo "fired too" ;; pending) echo "pending for a moment (up 0 for one scrape, then absent), never firing" ;; *) echo "never active (the target was dropped, not failing)" ;; esac)"
  compose up -d aft-serve >"$WORK/up.log" 2>&1 || { tail -20 "$WORK/up.log" >&2; die "docker-compose up -d aft-serve failed"; }
  wait_healthy 240
}

check_down() { # docker-compose down -v: no container, network or volume of the project left
  compose down -v --remove-orphans >"$WORK/down.log" 2>&1 || { cat "$WORK/down.log" >&2; die "docker-compose down -v failed"; }
  STACK_UP=0
  local filter="label=com.docker.compose.project=$PROJECT" left
  left="$(docker ps -aq --filter "$filter") $(docker network ls -q --filter "$filter") $(docker volume ls -q --filter "$filter")"
  [ -z "${left// /}" ] || die "left after down -v: $left"
  DETAIL="$(grep -c '^Removing' "$WORK/down.log") containers and networks, $(grep -c '^Removing volume' "$WORK/down.log") volumes removed; nothing of project $PROJECT left"
}
