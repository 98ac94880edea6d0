# shellcheck shell=bash disable=SC2034 # globals set here (DETAIL, ...) are read by the other files
# The checks about what the service runs: the classifier for the two-models overlay, CPU
# threads against the container's CPU limit, memory against its memory limit, the precision,
# and the two-models overlay. Each sets DETAIL or dies. Sourced by scripts/check-compose.

SECOND_BUNDLE=debian-sections # the classifier's bundle folder (in $BUNDLES) and model name
SECTIONS=fonts,games,mail,sound

check_classifier() { # a classifier trained by `python -m aft.head train` (docs/CLASSIFIERS.md's worked example, 4 sections)
  # The venv from scripts/setup (the aft package and torch); a no-op when it is up to date.
  quietly_run "scripts/setup --no-build" scripts/setup --no-build
  if ! compgen -G '/var/lib/apt/lists/*_i18n_Translation-en*' >/dev/null; then
    say "fetching apt's English long descriptions (apt-get update -o Acquire::Languages=en)"
    quietly_run "apt-get update" apt-get -o DPkg::Lock::Timeout=600 update -o Acquire::Languages=en
  fi
  quietly_run "aft.head.debian_sections" "$AFT_VENV/bin/python" -m aft.head.debian_sections \
    --out "$WORK/sections.csv" --sections "$SECTIONS" --per-section 60
  "$AFT_VENV/bin/python" -m aft.head train --bundle models/aft-mini --data "$WORK/sections.csv" \
    --group-column source --out "$BUNDLES/$SECOND_BUNDLE" --name "$SECOND_BUNDLE" --threads 2 --quiet \
    >"$WORK/train.log" 2>&1 || { tail -20 "$WORK/train.log" >&2; die "aft.head train failed"; }
  chmod -R a+rX "$BUNDLES" # the container's user (uid 10001) reads it
  local data scores
  data="$(grep -m1 '^data:' "$WORK/train.log" | sed -E 's/^data: [^,]*, //; s/;.*//')"
  scores="$(awk '/^this classifier/ {print "accuracy " $3 ", macro-F1 " $4}' "$WORK/train.log")"
  DETAIL="$SECOND_BUNDLE: $data ($SECTIONS); held-out $scores"
}

quietly_run() { # quietly_run WHAT CMD...: CMD's output only when it fails
  local what="$1" log
  shift
  log="$(mktemp "$CACHE/log.XXXXXX")"
  if ! "$@" >"$log" 2>&1; then tail -30 "$log" >&2; rm -f "$log"; die "$what failed"; fi
  rm -f "$log"
}

cpu_limit() { docker inspect --format '{{.HostConfig.NanoCpus}}' "$(ctr aft-serve)" | awk '{print $1 / 1e9}'; }

# The CPUs aft-serve may use: the engine's CPUs, capped by the CPU limit (Rust's
# available_parallelism reads the cgroup quota, rounded down, at least 1).
usable_cpus() { awk -v n="$(docker info --format '{{.NCPU}}')" -v l="$1" 'BEGIN {l = int(l); if (l < 1) l = 1; print (l < n ? l : n)}'; }

logged_fields() { # logged_fields MESSAGE FIELD...: the FIELDs of every server log line with MESSAGE, a line each, in order
  server_log | python3 -c '
import json, sys
message, fields = sys.argv[1], sys.argv[2:]
for line in sys.stdin:
    try:
        rec = json.loads(line)
        f = rec.get("fields", rec)  # flattened (AFT_LOG_FORMAT=json) or not
    except ValueError:
        continue
    if f.get("message") == message:
        print(*(f.get(k) for k in fields))' "$@"
}

threads_logged() { logged_fields "bundle verified; loading the model" model intra_op_threads; }

check_threads() { # under the compose file's CPU limit, aft-serve's threads follow it
  local limit cpus logged
  limit="$(cpu_limit)"
  [ "$limit" != 0 ] || die "no CPU limit on the aft-serve container (deploy.resources.limits.cpus not applied)"
  cpus="$(usable_cpus "$limit")"
  logged="$(threads_logged)"
  # One model, one short worker: it gets every usable CPU (the long lane shares them only
  # while a long document runs).
  [ "$logged" = "aft-mini $cpus" ] || die "with a CPU limit of $limit on $(docker info --format '{{.NCPU}}') CPUs, want 'aft-mini $cpus' threads, the log says '$logged'"
  # The long lane runs below short work: SCHED_IDLE, or nice 19 where the container's seccomp
  # profile refuses scheduler changes; "normal" means the server could lower neither.
  local priorities
  priorities="$(logged_fields "model replica loaded and warm" priority | paste -sd, - | sed 's/,/, /g')"
  case "$priorities" in
    *SCHED_IDLE* | *"nice 19"*) ;;
    *) die "no replica runs at background priority inside the container; the log says: $priorities" ;;
  esac
  DETAIL="limit cpus $limit (NanoCpus), engine CPUs $(docker info --format '{{.NCPU}}'): aft-serve logs intra_op_threads=$cpus (the smaller of the two; cpu-limit below sets a limit under the CPUs); replica priorities: $priorities"
}

check_cpu_limit() { # a lower CPU limit (1) than the machine's CPUs: the threads follow it down
  cat >"$WORK/one-cpu.yaml" <<'YAML'
services:
  aft-serve:
    deploy:
      resources:
        limits:
          cpus: "1"
YAML
  compose -f "$WORK/one-cpu.yaml" up -d aft-serve >"$WORK/up.log" 2>&1 || { tail -20 "$WORK/up.log" >&2; die "up with cpus: 1 failed"; }
  wait_healthy 240
  local limit logged
  limit="$(cpu_limit)"
  [ "$limit" = 1 ] || die "the override set cpus: \"1\", the container has NanoCpus for $limit"
  logged="$(threads_logged)"
  [ "$logged" = "aft-mini 1" ] || die "with a CPU limit of 1, want 'aft-mini 1' threads, the log says '$logged'"
  read -r status _ < <(http POST "$HTTP_PORT" /v1/embed '{"inputs": ["one cpu"]}')
  [ "$status" = 200 ] || die "/v1/embed answered $status with one CPU"
  DETAIL="override cpus: \"1\" (engine CPUs $(docker info --format '{{.NCPU}}')): intra_op_threads=1 in the log, embed 200; healthy after $HEALTHY_AT s"
}

cgroup_memory() { # cgroup_memory PID: "PEAK CURRENT" bytes of PID's memory cgroup (v1 or v2)
  local path
  if path="$(awk -F: '$2 == "memory" {print $3}' "/proc/$1/cgroup")" && [ -n "$path" ]; then
    echo "$(cat "/sys/fs/cgroup/memory$path/memory.max_usage_in_bytes") $(cat "/sys/fs/cgroup/memory$path/memory.usage_in_bytes")"
  else
    path="$(awk -F: '$1 == "0" {print $3}' "/proc/$1/cgroup")"
    echo "$(cat "/sys/fs/cgroup$path/memory.peak" 2>/dev/null || echo 0) $(cat "/sys/fs/cgroup$path/memory.current")"
  fi
}

check_memory() { # a short load (20 s, 4 clients, 1-32 texts of 8-200 words): memory stays under the limit
  local limit counts pid peak current rss
  limit="$(docker inspect --format '{{.HostConfig.Memory}}' "$(ctr aft-serve)")"
  [ "$limit" -gt 0 ] || die "no memory limit on the aft-serve container (deploy.resources.limits.memory not applied)"
  counts="$(python3 scripts/check_compose/client.py load "$HTTP_PORT" 20 4)" || die "the load client failed: $counts"
  [[ "$counts" =~ ^\{\"200\":\ [0-9]+\}$ ]] || die "not every request of the load was answered 200: $counts"
  pid="$(state aft-serve Pid)"
  read -r peak current < <(cgroup_memory "$pid")
  rss="$(awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$pid/status")"
  [ "$peak" -lt "$limit" ] || die "memory peaked at $peak bytes, the limit is $limit"
  # RSS counts the mapped libraries, whose page cache the cgroup may not be charged for (another
  # container read them first); the cgroup's figures are what the limit holds to.
  DETAIL="load: $(json_count "$counts") requests, all 200; container memory (cgroup) peak $(mib "$peak") MiB, now $(mib "$current") MiB, limit $(mib "$limit") MiB; server RSS $(mib "$rss") MiB"
}

mib() { awk -v b="$1" 'BEGIN {printf "%.0f", b / 1048576}'; }

json_count() { python3 -c 'import json, sys; print(sum(json.loads(sys.argv[1]).values()))' "$1"; }

check_int8() { # the CPU image serves aft-mini's int8 copy by default; AFT_PRECISION=float its model.pt
  local precision want status model got detail=""
  for precision in auto float; do
    want=int8
    [ "$precision" = float ] && want=float
    AFT_PRECISION=$precision compose up -d aft-serve >"$WORK/up.log" 2>&1 \
      || { tail -20 "$WORK/up.log" >&2; die "up with AFT_PRECISION=$precision failed"; }
    wait_healthy 240
    read -r status _ < <(http GET "$HTTP_PORT" /info)
    [ "$status" = 200 ] || die "/info answered $status"
    model="$(json 'b["model"]')"
    got="$(json 'b["precision"]')"
    if [ "$model" != aft-mini ] || [ "$got" != "$want" ]; then
      die "AFT_PRECISION=$precision: /info says model $model precision $got, want aft-mini $want"
    fi
    read -r status _ < <(http POST "$HTTP_PORT" /v1/embed '{"inputs": ["an int8 model"]}')
    [ "$status" = 200 ] || die "/v1/embed answered $status with AFT_PRECISION=$precision"
    detail+="AFT_PRECISION=$precision: /info aft-mini $got, embed $(json 'len(b["embeddings"][0])') dims, healthy after $HEALTHY_AT s; "
  done
  DETAIL="${detail%; }"
}

check_two_models() { # docker/compose.two-models.yaml with the trained classifier from /models
  AFT_SECOND_BUNDLE="$SECOND_BUNDLE" compose -f docker/compose.two-models.yaml up -d >"$WORK/up.log" 2>&1 \
    || { tail -20 "$WORK/up.log" >&2; die "up with docker/compose.two-models.yaml failed"; }
  wait_healthy 240
  local status models classify logged cpus want
  read -r status _ < <(http GET "$HTTP_PORT" /v1/models)
  [ "$status" = 200 ] || die "/v1/models answered $status"
  models="$(json '" ".join(m["id"] for m in b["data"])')"
  [ "$models" = "aft-mini $SECOND_BUNDLE" ] || die "/v1/models lists '$models', want 'aft-mini $SECOND_BUNDLE'"
  read -r status _ < <(http POST "$HTTP_PORT" /v1/classify "{\"model\": \"$SECOND_BUNDLE\", \"inputs\": [\"a TrueType font family with wide Unicode coverage\"], \"top_k\": 2}")
  [ "$status" = 200 ] || die "/v1/classify with model $SECOND_BUNDLE answered $status: $(head -c 300 "$WORK/body")"
  [ "$(json "all(r['label'] in '$SECTIONS'.split(',') for r in b['results'][0])")" = True ] \
    || die "labels not among $SECTIONS: $(head -c 300 "$WORK/body")"
  classify="$(json "', '.join(f'{r[\"label\"]} {r[\"score\"]:.2f}' for r in b['results'][0])")"
  read -r status _ < <(http POST "$HTTP_PORT" /v1/embed '{"inputs": ["the default model"]}')
  if [ "$status" != 200 ] || [ "$(json 'b["model"]')" != aft-mini ]; then
    die "/v1/embed without a model: $status, $(head -c 200 "$WORK/body")"
  fi
  # Two models, one short worker each: they split the usable CPUs.
  cpus="$(usable_cpus "$(cpu_limit)")"
  want="$(printf 'aft-mini %s\n%s %s' "$((cpus / 2 > 0 ? cpus / 2 : 1))" "$SECOND_BUNDLE" "$((cpus / 2 > 0 ? cpus / 2 : 1))")"
  logged="$(threads_logged)"
  [ "$logged" = "$want" ] || die "threads per model: want '$want', the log says '$logged'"
  DETAIL="/v1/models: $models; classify with model $SECOND_BUNDLE (\"a TrueType font family ...\"): $classify; embed without model: aft-mini; threads per model $(((cpus / 2) > 0 ? cpus / 2 : 1)) of $cpus usable CPUs; memory limit $(docker inspect --format '{{.HostConfig.Memory}}' "$(ctr aft-serve)" | awk '{printf "%.0f GiB", $1 / 2^30}')"
}
