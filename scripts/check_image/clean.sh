# shellcheck shell=bash
# --clean: the image, the stand-ins, buildah's dangling layers and build cache mounts, and the
# working containers that earlier, interrupted runs left on them (which would keep those images).
# Sourced by scripts/check-image.

remove_everything() {
  say "--clean: removing $TAG, the stand-ins, dangling layers and build cache mounts"
  local c
  for c in "${CONTAINERS[@]}"; do buildah umount "$c" >/dev/null 2>&1 || true; buildah rm "$c" >/dev/null 2>&1 || true; done
  CONTAINERS=()
  if [ "$ENGINE" = docker ]; then
    docker rmi "$TAG" >/dev/null
  else
    remove_buildah_leftovers
  fi
  rm -rf "$CACHE"
}

remove_buildah_leftovers() {
  # buildah refuses to remove an image a working container uses, and an interrupted earlier
  # run (a killed `buildah bud` or check) leaves such containers behind: those on what is
  # removed below (this tag, a stand-in, an unnamed build layer) go first. (The lock in
  # scripts/check-image means no other check-image is using them.)
  local stale=0 cid iname name local_caches t
  while read -r cid iname; do
    if [ -z "$iname" ] || [ "$iname" = "$TAG" ] || is_standin "$iname"; then
      buildah rm "$cid" >/dev/null || die "--clean: cannot remove the working container $cid ($iname)"
      stale=$((stale + 1))
    fi
  done < <(buildah containers --format '{{.ContainerID}} {{.ImageName}}')
  [ "$stale" = 0 ] || say "--clean: removed $stale working containers left on these images by earlier runs"
  if image_exists "$TAG"; then buildah rmi "$TAG" >/dev/null || die "--clean: cannot remove $TAG"; fi
  # The build's intermediate layers: every dangling image in buildah's storage.
  buildah rmi --prune >/dev/null 2>&1 || true
  while read -r name; do
    if is_standin "$name"; then buildah rmi "$name" >/dev/null || die "--clean: cannot remove the stand-in $name"; fi
  done < <(buildah images --noheading --format '{{.Name}}:{{.Tag}}')
  # Layers that only the stand-ins held.
  buildah rmi --prune >/dev/null 2>&1 || true
  # buildah keeps RUN --mount=type=cache folders under /var/tmp/buildah-cache/<target>.
  local_caches="$(grep -o 'type=cache,target=[^, ]*' "$DOCKERFILE" | sed 's/.*target=//' | sort -u)"
  for t in $local_caches; do rm -rf "/var/tmp/buildah-cache$t" "/var/tmp/buildah-cache-$(id -u)$t"; done
  find /var/tmp/buildah-cache /var/tmp/buildah-cache-"$(id -u)" -depth -type d -empty -delete 2>/dev/null || true
}
