# Sourced by the scripts: where the Python environment lives and how cargo finds libtorch.
# (Not needed to run the built binary, which carries an rpath to libtorch.)
AFT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AFT_VENV="${AFT_VENV:-$AFT_ROOT/.venv}"
export VIRTUAL_ENV="$AFT_VENV"
export PATH="$AFT_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
# The training scripts' --bf16 where the CPU multiplies bfloat16 in hardware (AVX-512 BF16, AMX);
# elsewhere PyTorch emulates it, about 60x slower than float32 (an AVX2-only EPYC, 2026-12-07).
AFT_BF16="$(grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null && echo --bf16 || true)"
export AFT_BF16
