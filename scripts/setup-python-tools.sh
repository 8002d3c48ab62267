#!/usr/bin/env bash
# The Python tools the tests and scripts use (checkpoint import, ONNX parity, reading TensorBoard event
# files back): a virtual environment at .venv-tools/ in the repository root (gitignored) with numpy,
# safetensors, onnx, onnxruntime and tensorboard from PyPI. Idempotent: a stamp file records the requirement set, and a rerun with the same set and a
# working environment does nothing. Prints one line saying what it did.
#
#   scripts/setup-python-tools.sh        # then .venv-tools/bin/python has the packages
#
# Bounds, not exact pins: the newest versions inside them have wheels for Python 3.10-3.13 on x86-64
# and aarch64 Linux. PyTorch is not installed (too large); the converter reads safetensors/npz without it.
# Needs python3 with the venv module; when that is missing and we are root (CI), installs python3-venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PYTHON_TOOLS_VENV:-$ROOT/.venv-tools}"
REQS=("numpy>=1.26,<3" "safetensors>=0.4.3,<0.9" "onnx>=1.16,<1.24" "onnxruntime>=1.18,<1.33" "tensorboard>=2.16,<2.21")
STAMP="$VENV/.stamp-attnas-tools"
PY="$VENV/bin/python"
say() { echo "setup-python-tools: $*"; }
fail() { echo "setup-python-tools: $*" >&2; exit 1; }

command -v python3 >/dev/null || fail "python3 not found; install Python 3.10+ (e.g. apt-get install python3 python3-venv)"

versions() {
  "$PY" -c 'import numpy, safetensors, onnx, onnxruntime as o, tensorboard as tb
print(f"numpy {numpy.__version__}, safetensors {safetensors.__version__}, onnx {onnx.__version__}, onnxruntime {o.__version__}, tensorboard {tb.__version__}")' 2>/dev/null
}

# Already done: same requirement set, and the packages import.
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "${REQS[*]}" ] && v="$(versions)"; then
  say "already set up in ${VENV#"$ROOT"/} ($v)"
  exit 0
fi

# A venv that no longer runs (moved, Python upgraded) is rebuilt from scratch.
if [ -d "$VENV" ] && ! "$PY" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$VENV"
fi

if [ ! -x "$PY" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || fail "python3 lacks the venv module; run: sudo apt-get install python3-venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    minor="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    apt-get install -y -qq python3-venv >&2 || apt-get install -y -qq "python$minor-venv" >&2 \
      || fail "could not install python3-venv"
  fi
  python3 -m venv "$VENV" || fail "python3 -m venv $VENV failed"
fi

"$PY" -m pip install -q --disable-pip-version-check "${REQS[@]}" >&2 \
  || fail "pip install into $VENV failed (needs PyPI or a local wheel mirror)"
v="$(versions)" || fail "packages installed but do not import; remove $VENV and rerun"
echo "${REQS[*]}" > "$STAMP"
say "installed into ${VENV#"$ROOT"/} ($v)"
