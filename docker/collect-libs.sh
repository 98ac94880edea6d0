#!/usr/bin/env bash
# Copies the shared libraries an aft-serve binary needs from the Python environment that holds
# torch into an image layout, and fails if anything else would be missing at run time.
#
#   collect-libs.sh VARIANT BINARY SITE_PACKAGES LIBDIR
#
# VARIANT cpu:  the libraries `ldd BINARY` resolves inside SITE_PACKAGES (libtorch_cpu, libc10,
#               libgomp, and the two CUDA runtime libraries libtorch_cpu of the PyPI wheel
#               needs: libcudart, libcupti) go flat into LIBDIR. The binary's rpath has
#               $ORIGIN/../lib and libtorch_cpu's has $ORIGIN, so BINARY in LIBDIR/../bin finds them.
# VARIANT cuda: the same from torch/lib, plus the ones libtorch dlopens (libcaffe2_nvrtc,
#               libtorch_cuda_linalg), and the nvidia/*/lib trees of the CUDA wheels copied whole
#               to LIBDIR/../../nvidia, where libtorch_cuda's RPATH ($ORIGIN/../../nvidia/*/lib)
#               looks (cuDNN, cuBLAS, NVRTC, ... load parts of themselves with dlopen).
# Every other library ldd reports must be one that debian:*-slim ships (glibc, libstdc++,
# libgcc_s); anything else fails the build here instead of the container at start-up.
# LINK=1 in the environment hard-links where it can instead of copying (scripts/check-deploy).
set -euo pipefail

if [ "$#" -ne 4 ]; then
  echo "usage: $0 cpu|cuda BINARY SITE_PACKAGES LIBDIR" >&2
  exit 2
fi
variant="$1" bin="$2" site="$(cd "$3" && pwd -P)" libdir="$4"
case "$variant" in cpu | cuda) ;; *) echo "$0: VARIANT must be cpu or cuda, not $variant" >&2; exit 2 ;; esac

put() { # put SRC DEST: copy (or hard-link with LINK=1), following symlinks
  if [ "${LINK:-0}" = 1 ] && ln -f "$(readlink -f "$1")" "$2" 2>/dev/null; then return; fi
  cp -L "$1" "$2"
}

# Libraries the runtime base image (debian:bookworm-slim) provides.
system_ok='^(linux-vdso\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1|libc\.so\.6|libutil\.so\.1|libresolv\.so\.2|libm\.so\.6|libdl\.so\.2|librt\.so\.1|libpthread\.so\.0|libstdc\+\+\.so\.6|libgcc_s\.so\.1|libz\.so\.1)$'

mkdir -p "$libdir"
# Resolve libtorch from SITE_PACKAGES whatever build-time rpath the binary has (LD_LIBRARY_PATH
# comes before RUNPATH); libtorch's own RPATH ($ORIGIN/../../nvidia/...) finds the CUDA wheels.
ldd_out="$(LD_LIBRARY_PATH="$site/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$bin")"
if grep -q 'not found' <<<"$ldd_out"; then
  echo "$0: unresolved libraries for $bin:" >&2
  grep 'not found' <<<"$ldd_out" >&2
  exit 1
fi

bad=0
while read -r name path; do
  [ -n "$name" ] || continue
  real="$(readlink -f "$path" 2>/dev/null || echo "$path")"
  case "$real" in
    "$site"/*)
      if [ "$variant" = cuda ] && [[ "$real" == "$site"/nvidia/* ]]; then
        continue # comes with the nvidia/ tree below
      fi
      put "$path" "$libdir/$name"
      ;;
    *)
      if [ "$variant" = cuda ] && [[ "$name" == libcuda.so.1 || "$name" == libnvidia-ml.so.1 ]]; then
        continue # the driver's: the NVIDIA container toolkit mounts them from the host
      fi
      if ! grep -Eq "$system_ok" <<<"$name"; then
        echo "$0: $name ($path) is neither in $site nor in the slim runtime image" >&2
        bad=1
      fi
      ;;
  esac
done < <(awk '$2 == "=>" && $3 ~ /^\// {print $1, $3} $1 ~ /^\// {n=split($1, p, "/"); print p[n], $1}' <<<"$ldd_out")
[ "$bad" = 0 ] || exit 1

if [ "$variant" = cuda ]; then
  for lib in libcaffe2_nvrtc.so libtorch_cuda_linalg.so libc10_cuda.so libtorch_cuda.so libtorch.so; do
    if [ -e "$site/torch/lib/$lib" ] && [ ! -e "$libdir/$lib" ]; then
      put "$site/torch/lib/$lib" "$libdir/$lib"
    fi
  done
  nvdest="$libdir/../../nvidia"
  for dir in "$site"/nvidia/*/lib; do
    pkg="$(basename "$(dirname "$dir")")"
    mkdir -p "$nvdest/$pkg/lib"
    for f in "$dir"/*; do
      case "$f" in *.a | *.bc) continue ;; esac # static archives and bitcode: build-time only
      put "$f" "$nvdest/$pkg/lib/$(basename "$f")"
    done
  done
fi

echo "collect-libs ($variant): $(find "$libdir" -maxdepth 1 -name '*.so*' | wc -l) libraries in $libdir" \
  "($(du -shL "$libdir" | cut -f1))"
