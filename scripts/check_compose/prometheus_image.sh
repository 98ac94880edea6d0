# shellcheck shell=bash disable=SC2034 # globals set here (DETAIL, ...) are read by the other files
# The Prometheus image. docker/compose.yaml runs prom/prometheus from Docker Hub; where no
# registry answers, docker/compose.offline.yaml names this stand-in instead: Debian's prometheus
# binary (it needs only libc) on a minimal root laid out like the upstream image (entrypoint
# /bin/prometheus, user nobody, working and data folder /prometheus, port 9090), so the compose
# file's command, mounts and volume work unchanged. Made once, kept, remade when the binary or
# this recipe changes (label). Sourced by scripts/check-compose.

PROM_RECIPE=2
PROM_LABEL=org.aft-serve.check-compose.standin

prometheus_image() {
  command -v prometheus >/dev/null || apt_install prometheus
  local bin key have root lib
  bin="$(command -v prometheus)"
  key="r$PROM_RECIPE-$(sha256sum "$bin" | cut -c1-16)"
  have="$(docker image inspect --format "{{index .Config.Labels \"$PROM_LABEL\"}}" "$PROMETHEUS_IMAGE" 2>/dev/null || true)"
  if [ "$have" = "$key" ]; then
    DETAIL="$PROMETHEUS_IMAGE: cached stand-in ($key; $("$bin" --version 2>&1 | head -1))"
    return
  fi
  root="$(mktemp -d "$CACHE/prometheus-root.XXXXXX")"
  TMPDIRS+=("$root")
  mkdir -p "$root"/{bin,etc/prometheus,prometheus,tmp,var/lib/prometheus}
  # Debian's build keeps its data in /var/lib/prometheus/metrics2 unless told otherwise (upstream:
  # data/ in the working folder); the compose file does not say, so that path leads to the volume.
  ln -s /prometheus "$root/var/lib/prometheus/metrics2"
  cp "$bin" "$root/bin/prometheus"
  # The libraries ldd names (libc and the loader), at the same paths.
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  printf 'root:x:0:0:root:/root:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  chown 65534:65534 "$root/prometheus"
  chmod 1777 "$root/tmp"
  tar -C "$root" -cf - . | docker import \
    --change 'ENTRYPOINT ["/bin/prometheus"]' \
    --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' \
    --change 'USER 65534:65534' --change 'WORKDIR /prometheus' --change 'EXPOSE 9090' \
    --change 'VOLUME ["/prometheus"]' --change "LABEL $PROM_LABEL=$key" - "$PROMETHEUS_IMAGE" >/dev/null
  rm -rf "$root"
  local out
  out="$(docker run --rm "$PROMETHEUS_IMAGE" --version 2>&1 | head -1)" || die "the $PROMETHEUS_IMAGE stand-in does not run: $out"
  DETAIL="$PROMETHEUS_IMAGE: made ($out; $(docker image inspect --format '{{.Size}}' "$PROMETHEUS_IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
}
