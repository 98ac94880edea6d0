# shellcheck shell=bash disable=SC2034 # globals set here are read by the other files
# The engine (docker or buildah) and the build.
# Sourced by scripts/check-image.

pick_engine() {
  if [ -z "$ENGINE" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=buildah; fi
  fi
  case "$ENGINE" in
    docker) docker info >/dev/null 2>&1 || die "no docker daemon answers (try --engine buildah)" ;;
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

prepare_base_images() { # says which engine runs; buildah: every FROM image present locally
  local ref
  if [ "$ENGINE" = buildah ]; then
    say "engine: buildah $(buildah version | awk '/^Version:/ {print $2}'), chroot isolation; base images: ${FROM_REFS[*]}"
    for ref in "${FROM_REFS[@]}"; do ensure_base "$ref"; done
  else
    say "engine: docker $(docker version --format '{{.Server.Version}}'); base images: ${FROM_REFS[*]}"
  fi
}

BUILD_S=""    # seconds the build took
IMAGE_SIZE="" # the built image's size, as the engine reports it
build_image() { # builds $TAG from $DOCKERFILE (VARIANT=cpu)
  say "building $TAG from $DOCKERFILE (VARIANT=cpu)"
  local t0
  t0="$(date +%s.%N)"
  if [ "$ENGINE" = docker ]; then
    DOCKER_BUILDKIT=1 docker build -f "$DOCKERFILE" --build-arg VARIANT=cpu -t "$TAG" .
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
