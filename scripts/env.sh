# Sourced by the scripts: where the Python environment lives and how cargo finds libtorch.
# (Not needed to run the built binary, which carries an rpath to libtorch.)
AFT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AFT_VENV="${AFT_VENV:-$AFT_ROOT/.venv}"
export VIRTUAL_ENV="$AFT_VENV"
export PATH="$AFT_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
