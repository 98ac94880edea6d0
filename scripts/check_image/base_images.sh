# shellcheck shell=bash
# Base images (the Dockerfile's FROM images): local, pulled, or stand-ins made offline, in the
# engine's own storage (buildah's or docker's). Sourced by scripts/check-image.

image_exists() {
  if [ "$ENGINE" = docker ]; then
    docker image inspect "$1" >/dev/null 2>&1
  else
    buildah inspect --type image "$1" >/dev/null 2>&1
  fi
}
image_label() {
  if [ "$ENGINE" = docker ]; then
    docker image inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null
  else
    buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null
  fi
}
pull_image() { # pull_image REF: quietly; the registry's answer goes to $CACHE/pull.log
  if [ "$ENGINE" = docker ]; then
    timeout 600 docker pull --quiet "$1" >/dev/null 2>"$CACHE/pull.log"
  else
    timeout 600 buildah pull --quiet "$1" >/dev/null 2>"$CACHE/pull.log"
  fi
}
is_standin() { # is_standin NAME: a stand-in base image (named like one and labelled; images built
  # on a stand-in inherit the label but not the name)
  [[ "$1" =~ /(debian:[a-z]+-slim|rust:[0-9.]+-[a-z]+)$ ]] && [ -n "$(image_label "$1" "$LABEL")" ]
}

rust_toolchain() { # rust_toolchain VERSION: the sysroot of a local toolchain whose rustc is VERSION(.x)
  local want="$1" cand ver
  local cands=()
  if command -v rustup >/dev/null; then
    while read -r _ path; do cands+=("$path"); done < <(rustup toolchain list -v 2>/dev/null | sed -E 's/ \((default|override|active)[^)]*\)//g')
  fi
  command -v rustc >/dev/null && cands+=("$(rustc --print sysroot)")
  cands+=(/usr/local/rustup/toolchains/*)
  for cand in "${cands[@]}"; do
    if [ ! -x "$cand/bin/rustc" ] || [ ! -x "$cand/bin/cargo" ]; then continue; fi
    ver="$("$cand/bin/rustc" --version | awk '{print $2}')"
    if [ "$ver" = "$want" ] || [[ "$ver" == "$want".* ]]; then
      printf '%s %s\n' "$(readlink -f "$cand")" "$ver"
      return 0
    fi
  done
  return 1
}

ca_certs_digest() {
  if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
    find /usr/local/share/ca-certificates -type f -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16
  else
    echo none
  fi
}

add_ca_certs() { # add_ca_certs CONTAINER: trust this machine's extra CAs inside it
  compgen -G '/usr/local/share/ca-certificates/*' >/dev/null || return 0
  buildah copy --quiet "$1" /usr/local/share/ca-certificates /usr/local/share/ca-certificates >/dev/null
  quietly update-ca-certificates buildah run "$1" -- update-ca-certificates
}

DEBIAN_ROOT="" # the folder make_debian_rootfs filled; its rootfs/ is the image's root
make_debian_rootfs() { # make_debian_rootfs RELEASE REF: debootstrap, trimmed like the slim image
  local release="$1" ref="$2" root
  command -v debootstrap >/dev/null || apt_install debootstrap
  root="$(mktemp -d "$CACHE/debootstrap.XXXXXX")"
  TMPDIRS+=("$root")
  DEBIAN_ROOT="$root"
  say "stand-in $ref: debootstrap --variant=minbase $release (from $MIRROR)"
  quietly "debootstrap $release" debootstrap --variant=minbase "$release" "$root/rootfs" "$MIRROR/debian"
  # Trimmed like the official slim image: no docs, man pages or locales, now or later.
  mkdir -p "$root/rootfs/etc/dpkg/dpkg.cfg.d"
  cat >"$root/rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  rm -rf "$root"/rootfs/usr/share/{man,info,groff,lintian,linda,locale}/* "$root"/rootfs/var/cache/apt/archives/*.deb
  # No package lists or apt caches either (about 40 MB); the security-update step fetches them.
  rm -rf "$root"/rootfs/var/lib/apt/lists/* "$root"/rootfs/var/cache/apt/*.bin
  find "$root/rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$root/rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  # The official image's sources: the release, its updates and its security updates.
  rm -f "$root/rootfs/etc/apt/sources.list"
  cat >"$root/rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR/debian
Suites: $release $release-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $MIRROR/debian-security
Suites: $release-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

make_debian_standin() { # make_debian_standin RELEASE REF KEY
  local release="$1" ref="$2" key="$3" root c mnt
  make_debian_rootfs "$release" "$ref"
  root="$DEBIAN_ROOT"
  if [ "$ENGINE" = docker ]; then
    make_debian_standin_docker "$release" "$ref" "$key" "$root"
    return
  fi
  c="$(buildah from --quiet scratch)"
  CONTAINERS+=("$c")
  mnt="$(buildah mount "$c")"
  tar -C "$root/rootfs" -cf - . | tar -C "$mnt" -xf -
  buildah umount "$c" >/dev/null
  rm -rf "$root"
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd bash --label "$LABEL=$key" "$c"
  say "stand-in $ref: security updates"
  quietly "apt-get upgrade in $ref" buildah run "$c" -- sh -c \
    'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y && apt-get clean && rm -rf /var/lib/apt/lists/*'
  buildah commit --quiet --format docker --rm "$c" "$ref" >/dev/null # --rm: its working container goes now
}

make_rust_standin() { # make_rust_standin VERSION RELEASE REF KEY SYSROOT FULLVERSION
  local ver="$1" release="$2" ref="$3" key="$4" sysroot="$5" full="$6" c mnt triple tc
  ensure_base "debian:$release-slim"
  triple="$("$sysroot/bin/rustc" -vV | sed -n 's/^host: //p')"
  tc="/usr/local/rustup/toolchains/$full-$triple"
  say "stand-in $ref: debian:$release-slim + build-essential, pkg-config, git, python3, rust $full ($sysroot)"
  if [ "$ENGINE" = docker ]; then
    make_rust_standin_docker "$ver" "$release" "$ref" "$key" "$sysroot" "$full" "$tc"
    return
  fi
  new_container "debian:$release-slim"
  c="$NEW_CONTAINER"
  quietly "apt-get install in $ref" buildah run "$c" -- sh -c \
    'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential pkg-config git python3 ca-certificates curl && rm -rf /var/lib/apt/lists/*'
  add_ca_certs "$c"
  mnt="$(buildah mount "$c")"
  mkdir -p "$mnt$tc" "$mnt/usr/local/cargo/bin"
  # The toolchain without its HTML docs (the official image installs the minimal profile).
  tar -C "$sysroot" --exclude=./share/doc -cf - . | tar -C "$mnt$tc" -xf -
  local tool
  for tool in "$mnt$tc"/bin/*; do ln -s "$tc/bin/${tool##*/}" "$mnt/usr/local/cargo/bin/${tool##*/}"; done
  buildah umount "$c" >/dev/null
  buildah config --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION="$full" --label "$LABEL=$key" "$c"
  local out
  out="$(buildah run "$c" -- cargo --version)" || true
  [[ "$out" == "cargo $ver"* ]] || die "stand-in $ref: cargo does not run ($out)"
  buildah commit --quiet --format docker --rm "$c" "$ref" >/dev/null # --rm: its working container goes now
}

ensure_base() { # ensure_base REF: the image REF exists locally (as itself or a stand-in)
  local ref="$1" kind="" release="" ver="" key="" have sysroot="" full=""
  if [[ "$ref" =~ ^(docker\.io/)?(library/)?debian:([a-z]+)-slim$ ]]; then
    kind=debian release="${BASH_REMATCH[3]}"
    key="r$RECIPE-debian-$release-ca$(ca_certs_digest)"
  elif [[ "$ref" =~ ^(docker\.io/)?(library/)?rust:([0-9]+\.[0-9]+(\.[0-9]+)?)-([a-z]+)$ ]]; then
    kind=rust ver="${BASH_REMATCH[3]}" release="${BASH_REMATCH[5]}"
    if read -r sysroot full < <(rust_toolchain "$ver"); then
      key="r$RECIPE-rust-$full-$release-ca$(ca_certs_digest)"
    fi
  fi
  if image_exists "$ref"; then
    have="$(image_label "$ref" "$LABEL")"
    if [ -z "$have" ]; then say "base $ref: local image"; return; fi
    if [ "$have" = "$key" ]; then say "base $ref: cached stand-in ($have)"; return; fi
    say "base $ref: stand-in $have is stale (want ${key:-a pulled image})"
  fi
  # Fully qualified: without unqualified-search registries buildah pulls short names only when
  # an alias exists (debian has one, rust does not); docker reads them the same way.
  local qualified="$ref"
  if [[ "$ref" != */* ]]; then
    qualified="docker.io/library/$ref"
  elif [[ "${ref%%/*}" != *[.:]* && "${ref%%/*}" != localhost ]]; then
    qualified="docker.io/$ref"
  fi
  if pull_image "$qualified"; then
    say "base $ref: pulled"
    return
  fi
  say "base $ref: registry unreachable ($(tail -1 "$CACHE/pull.log" | cut -c1-120)); making a stand-in"
  case "$kind" in
    debian) make_debian_standin "$release" "$ref" "$key" ;;
    rust)
      [ -n "$sysroot" ] || die "no local Rust toolchain $ver for the $ref stand-in (rustup toolchain install $ver)"
      make_rust_standin "$ver" "$release" "$ref" "$key" "$sysroot" "$full"
      ;;
    *) die "cannot pull $ref and have no stand-in recipe for it" ;;
  esac
  say "base $ref: stand-in ready"
}

# docker: the same stand-ins, from `docker import` of the debootstrap root and BuildKit builds of
# small generated Dockerfiles (in $CACHE, removed after), so each recipe reads as one.
standin_build() { # standin_build REF CONTEXT: builds CONTEXT/Dockerfile as REF, quietly
  quietly "docker build of the $1 stand-in" env DOCKER_BUILDKIT=1 "$DOCKER_CLI" build -t "$1" "$2"
}

make_debian_standin_docker() { # make_debian_standin_docker RELEASE REF KEY ROOT
  local release="$1" ref="$2" key="$3" root="$4" import="localhost/aft-check-image/debootstrap:$1"
  tar -C "$root/rootfs" -cf - . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$import" >/dev/null
  rm -rf "$root/rootfs"
  say "stand-in $ref: security updates"
  cat >"$root/Dockerfile" <<DOCKERFILE
FROM $import
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y && apt-get clean && rm -rf /var/lib/apt/lists/*
LABEL $LABEL=$key
DOCKERFILE
  standin_build "$ref" "$root"
  docker rmi "$import" >/dev/null # the name only: its layer is the stand-in's first
  rm -rf "$root"
}

make_rust_standin_docker() { # make_rust_standin_docker VERSION RELEASE REF KEY SYSROOT FULLVERSION TOOLCHAIN_DIR
  local ver="$1" release="$2" ref="$3" key="$4" sysroot="$5" full="$6" tc="$7" ctx out
  ctx="$(mktemp -d "$CACHE/rust-standin.XXXXXX")"
  TMPDIRS+=("$ctx")
  # The toolchain as build context, hard-linked where it can be (not a second 1.2 GB copy),
  # without its HTML docs (the official image installs the minimal profile).
  cp -al "$sysroot" "$ctx/toolchain" 2>/dev/null || cp -a "$sysroot" "$ctx/toolchain"
  rm -rf "$ctx/toolchain/share/doc"
  mkdir -p "$ctx/ca-certificates"
  if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
    cp -r /usr/local/share/ca-certificates/. "$ctx/ca-certificates/"
  fi
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM debian:$release-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential pkg-config git python3 ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY toolchain/ $tc/
RUN mkdir -p /usr/local/cargo/bin && for tool in $tc/bin/*; do ln -s "\$tool" /usr/local/cargo/bin/; done
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo RUST_VERSION=$full \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL $LABEL=$key
DOCKERFILE
  standin_build "$ref" "$ctx"
  rm -rf "$ctx"
  out="$(docker run --rm "$ref" cargo --version)" || true
  [[ "$out" == "cargo $ver"* ]] || die "stand-in $ref: cargo does not run ($out)"
}
