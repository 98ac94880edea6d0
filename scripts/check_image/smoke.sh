# shellcheck shell=bash
# The smoke test's checks, one function per step; each says PASS or dies.
# Sourced by scripts/check-image.

check_json() { # check_json embed|classify MANIFEST: validates $WORK/body, prints a summary
  python3 - "$1" "$2" "$WORK/body" <<'PY'
import json, math, sys

kind, manifest, body = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
if kind == "embed":
    embs, dim = body["embeddings"], manifest["embedding_dim"]
    assert len(embs) == 2, f"{len(embs)} embeddings for 2 inputs"
    assert all(len(e) == dim for e in embs), f"dimensions {[len(e) for e in embs]}, want {dim}"
    norms = [math.sqrt(sum(x * x for x in e)) for e in embs]
    if manifest.get("normalize"):
        assert all(abs(n - 1) < 1e-3 for n in norms), f"norms {norms}, want 1"
    assert abs(sum(a * b for a, b in zip(*embs))) < 0.999 * norms[0] * norms[1], "identical embeddings"
    print(f"2 inputs x {dim} dims, norms {norms[0]:.4f}/{norms[1]:.4f}")
else:
    labels, res = manifest["labels"], body["results"]
    assert len(res) == 1 and len(res[0]) == 3, f"results {res}"
    scores = [r["score"] for r in res[0]]
    assert all(r["label"] in labels for r in res[0]), f"unknown labels in {res[0]}"
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6, f"scores {scores}"
    print(f"top 3 of {len(labels)} labels: " + ", ".join(f"{r['label']} {r['score']:.3f}" for r in res[0]))
PY
}

EMBED_BODY='{"inputs": ["the dog barked at the postman", "stock prices fell sharply"]}'
CLASSIFY_BODY='{"inputs": ["the dog barked at the postman"], "top_k": 3}'
READY_S="" # seconds from start to /health/ready

check_ready() { # starts the service on a free port; /health/ready answers 200
  PORT="$(free_port)"
  say "smoke test: ${ENTRYPOINT[*]} as $IMG_USER on 127.0.0.1:$PORT (read-only root, tmpfs /tmp, no capabilities, no-new-privileges)"
  local t0
  t0="$(date +%s.%N)"
  start_server
  wait_ready 180 || { tail -30 "$WORK/server.log" >&2; die "/health/ready did not answer 200 within 180 s"; }
  READY_S="$(seconds_since "$t0")"
  say "PASS ready: /health/ready 200 after $READY_S s"
}

check_confinement() { # the image's user, no capabilities, no_new_privs, read-only root, tmpfs /tmp
  local status uids capeff capbnd nnp rootopts tmpfs
  status="$(server_proc status)"
  uids="$(awk '/^Uid:/ {print $2}' <<<"$status")"
  capeff="$(awk '/^CapEff:/ {print $2}' <<<"$status")"
  capbnd="$(awk '/^CapBnd:/ {print $2}' <<<"$status")"
  nnp="$(awk '/^NoNewPrivs:/ {print $2}' <<<"$status")"
  rootopts="$(server_proc mountinfo | awk '$5 == "/" {print $6; exit}')"
  tmpfs="$(server_proc mountinfo | awk '$5 == "/tmp" {for (i = 7; i <= NF; i++) if ($i == "-") {print $(i + 1); exit}}')"
  [ "$uids" = "${IMG_USER%%:*}" ] || die "the service runs as uid $uids, not ${IMG_USER%%:*}"
  [[ "$rootopts" == ro,* || "$rootopts" == ro ]] || die "the root filesystem is mounted $rootopts, not read-only"
  [ "$tmpfs" = tmpfs ] || die "/tmp is ${tmpfs:-not mounted}, not a tmpfs"
  [ "$capeff$capbnd" = 00000000000000000000000000000000 ] || die "capabilities left: effective $capeff, bounding $capbnd"
  [ "$nnp" = 1 ] || die "no_new_privs is not set"
  say "PASS user: uid $uids, capabilities none (effective and bounding), no_new_privs, root $rootopts, /tmp tmpfs"
}

check_embed() { # two texts, twice: 200, the manifest's dimensions and norms
  local status secs summary first_ms
  read -r status secs < <(http POST /v1/embed "$EMBED_BODY")
  [ "$status" = 200 ] || die "/v1/embed answered $status: $(head -c 300 "$WORK/body")"
  summary="$(check_json embed "$(manifest)")" || die "/v1/embed: $(head -c 300 "$WORK/body")"
  first_ms="$(ms "$secs")"
  read -r status secs < <(http POST /v1/embed "$EMBED_BODY")
  [ "$status" = 200 ] || die "/v1/embed answered $status the second time: $(head -c 300 "$WORK/body")"
  say "PASS embed: 200 in $first_ms ms (again: $(ms "$secs") ms), $summary"
}

check_classify() { # top 3 labels of the manifest's, scores descending
  local status secs summary
  read -r status secs < <(http POST /v1/classify "$CLASSIFY_BODY")
  [ "$status" = 200 ] || die "/v1/classify answered $status: $(head -c 300 "$WORK/body")"
  summary="$(check_json classify "$(manifest)")" || die "/v1/classify: $(head -c 300 "$WORK/body")"
  say "PASS classify: 200 in $(ms "$secs") ms, $summary"
}

check_healthcheck() { # the image's HEALTHCHECK: 0 and silent when ready, 1 and silent when nothing listens
  local hc_port=8080 hc_rc=0 hc_out closed hc_noise
  [ "$ENGINE" = docker ] || hc_port="$PORT"
  hc_out="$(in_image AFT_HOST=127.0.0.1 AFT_PORT="$hc_port" -- "${HEALTHCHECK[@]}" 2>&1)" || hc_rc=$?
  [ "$hc_rc" = 0 ] || die "HEALTHCHECK ${HEALTHCHECK[*]} exited $hc_rc against the ready service: $hc_out"
  [ -z "$hc_out" ] || die "HEALTHCHECK printed output when healthy: $hc_out"
  closed="$(free_port)"
  hc_rc=0
  hc_out="$(in_image AFT_HOST=127.0.0.1 AFT_PORT="$closed" -- "${HEALTHCHECK[@]}" 2>&1)" || hc_rc=$?
  [ "$hc_rc" = 1 ] || die "HEALTHCHECK exited $hc_rc (want 1) with nothing listening: $hc_out"
  # buildah run adds its own "subprocess exited with status 1" lines; the check itself must be silent.
  hc_noise="$(grep -v -e '^subprocess exited with status' -e '^Error: exit status' <<<"$hc_out" || true)"
  [ -z "$hc_noise" ] || die "HEALTHCHECK is not quiet when failing: $hc_noise"
  say "PASS healthcheck: ${HEALTHCHECK[*]} exits 0 when ready, 1 and silent with nothing listening"
}

check_libraries() { # every library the image ships is mapped by the running service
  local maps lib unused=()
  maps="$(server_proc maps)"
  for lib in "${SHIPPED[@]}"; do grep -q "/${lib//./\\.}\$" <<<"$maps" || unused+=("$lib"); done
  [ "${#unused[@]}" = 0 ] || die "shipped but not loaded by the running service: ${unused[*]}"
  say "PASS libraries: all ${#SHIPPED[@]} shipped libraries are mapped by the running service"
}

check_log_format() { # the service logs JSON lines (AFT_LOG_FORMAT=json in the image)
  head -1 "$WORK/server.log" | python3 -c 'import json, sys; json.loads(sys.stdin.readline())' 2>/dev/null \
    || die "the service log is not JSON lines (AFT_LOG_FORMAT=json): $(head -c 200 "$WORK/server.log")"
}

check_sigterm() { # SIGTERM: exit 0, and the port no longer answers
  local t0 stop_s status
  t0="$(date +%s.%N)"
  stop_server
  stop_s="$(seconds_since "$t0")"
  [ "$STOP_RC" = 0 ] || { tail -20 "$WORK/server.log" >&2; die "after SIGTERM the service exited $STOP_RC, not 0"; }
  read -r status _ < <(http GET /health/live)
  [ "$status" = 000 ] || die "port $PORT still answers after the service exited"
  say "PASS SIGTERM: exit 0 after $stop_s s"
}

manifest() { printf '%s\n' "$IMG_ROOT$MODEL_DIR/manifest.json"; }
