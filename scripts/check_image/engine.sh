# shellcheck shell=bash disable=SC2034 # globals set here are read by the other files
# The engine (docker or buildah) and the build.
# Sourced by scripts/check-image.

# The docker client: `docker` below runs DOCKER_CLI, the first of the `docker` on PATH and
# Debian's /usr/bin/docker that can run a BuildKit build, which the Dockerfile needs. Clients of
# Docker 23 and later need the buildx plugin for that (and refuse DOCKER_BUILDKIT=1 without it);
# older ones, such as Debian 12's 20.10, have BuildKit built in.
DOCKER_CLI=""
docker() { command "${DOCKER_CLI:-docker}" "$@"; }

builds_with_buildkit() { # builds_with_buildkit CLIENT
  "$1" buildx version >/dev/null 2>&1 && return 0
  local major
  major="$("$1" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)" || true
  [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -lt 23 ]
}

pick_docker_client() {
  local c
  for c in "$(type -P docker)" /usr/bin/docker; do
    if [ -x "$c" ] && builds_with_buildkit "$c"; then DOCKER_CLI="$c"; return 0; fi
  done
  die "no docker client here builds with BuildKit (a client of Docker 23+ needs the buildx plugin; apt-get install docker.io gives /usr/bin/docker, which has it built in)"
}

pick_engine() {
  if [ -z "$ENGINE" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=buildah; fi
  fi
  case "$ENGINE" in
    docker)
      docker info >/dev/null 2>&1 || die "no docker daemon answers (try --engine buildah)"
      pick_docker_client
      local need=()
      command -v debootstrap >/dev/null || need+=(debootstrap)
      command -v curl >/dev/null || need+=(curl)
      command -v readelf >/dev/null || need+=(binutils)
      [ "${#need[@]}" = 0 ] || apt_install "${need[@]}"
      ;;
    buildah)
      [ "$(id -u)" = 0 ] || die "the buildah path runs as root (chroot isolation, mounts)"
      local need=()
      command -v buildah >/dev/null || need+=(buildah)
      command -v curl >/dev/null || need+=(curl)
      command -v readelf >/dev/null || need+=(binutils)
      command -v python3 >/dev/null || need+=(python3)
      [ "${#need[@]}" = 0 ] || apt_install "${need[@]}"
      # chroot isolation for every RUN of bud and for buildah run (runc cannot set rlimits here).
      export BUILDAH_ISOLATION=chroot
      ;;
    *) die "--engine must be docker or buildah, not $ENGINE" ;;
  esac
}

prepare_base_images() { # says which engine runs; every FROM image present locally
  local ref
  if [ "$ENGINE" = buildah ]; then
    say "engine: buildah $(buildah version | awk '/^Version:/ {print $2}'), chroot isolation; base images: ${FROM_REFS[*]}"
  else
    say "engine: docker $(docker version --format '{{.Server.Version}}') (client $DOCKER_CLI, BuildKit); base images: ${FROM_REFS[*]}"
  fi
  for ref in "${FROM_REFS[@]}"; do ensure_base "$ref"; done
}

BUILD_S=""    # seconds the build took
IMAGE_SIZE="" # the built image's size, as the engine reports it
build_image() { # builds $TAG from $DOCKERFILE (VARIANT=cpu)
  say "building $TAG from $DOCKERFILE (VARIANT=cpu)"
  local t0
  t0="$(date +%s.%N)"
  if [ "$ENGINE" = docker ]; then
    env DOCKER_BUILDKIT=1 "$DOCKER_CLI" build -f "$DOCKERFILE" --build-arg VARIANT=cpu -t "$TAG" .
    IMAGE_SIZE="$(docker image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1 / 1e6}')"
  else
    BUILD_BEFORE=" $(buildah containers --quiet | tr '\n' ' ')"
    buildah bud --isolation chroot --format docker --pull=never --layers --force-rm \
      -f "$DOCKERFILE" --build-arg VARIANT=cpu -t "$TAG" .
    BUILD_BEFORE=""
    IMAGE_SIZE="$(buildah images --format '{{.Size}}' "$TAG" | head -1)"
  fi
  BUILD_S="$(seconds_since "$t0")"
  say "built in $BUILD_S s; image $IMAGE_SIZE"
}
