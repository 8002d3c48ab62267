#!/usr/bin/env bash
# Install the pinned CUDA 13.0 pip wheel set (nvcc, ptxas, NVRTC, headers) into a gitignored cache folder,
# without a GPU, a driver or root. Idempotent: a stamp file records the installed set.
#
#   source <(scripts/setup-cuda-wheels.sh)          # full set: nvcc + NVRTC
#   source <(scripts/setup-cuda-wheels.sh nvrtc)    # NVRTC + headers only
#   source <(scripts/setup-cuda-wheels.sh nccl)     # NCCL for multi-GPU ranks (~210 MB; GPU machines only)
#
# Every piece is pinned: unpinned, pip pulls 13.5 parts whose PTX a 13.0 driver (580) rejects.
# stdout carries only the `export` lines; progress goes to stderr.
set -euo pipefail
MODE="${1:-full}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${CUDA_WHEELS_DIR:-$ROOT/.cuda-wheels}"
PKGS="nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96"
# install PKGS into DIR once (a stamp file records the set)
install() {
  local dir="$1" stamp="$2"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$PKGS" ]; then
    echo "setup-cuda-wheels: $MODE set already in $dir" >&2
  else
    echo "setup-cuda-wheels: installing $MODE set into $dir" >&2
    mkdir -p "$dir"
    python3 -m pip install -q --disable-pip-version-check --no-deps --upgrade --target "$dir" $PKGS >&2
    echo "$PKGS" > "$stamp"
  fi
}
if [ "$MODE" = nccl ]; then
  # NCCL 2.30 matches the bindings (cudarc's nccl-02030). Its own folder: pip --target --upgrade replaces
  # the whole nvidia/ tree of a target. The wheel ships libnccl.so.2; cudarc loads libnccl.so, so a
  # symlink beside it makes the folder usable on LD_LIBRARY_PATH.
  PKGS="nvidia-nccl-cu13==2.30.7"
  NDIR="${NCCL_WHEEL_DIR:-$ROOT/.nccl-wheel}"
  install "$NDIR" "$NDIR/.stamp-nccl"
  LIB="$NDIR/nvidia/nccl/lib"
  [ -f "$LIB/libnccl.so.2" ] || { echo "setup-cuda-wheels: $LIB/libnccl.so.2 missing after install" >&2; exit 1; }
  ln -sf libnccl.so.2 "$LIB/libnccl.so"
  echo "export LD_LIBRARY_PATH=$LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
  exit 0
fi
if [ "$MODE" = full ]; then
  PKGS="$PKGS nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85"
elif [ "$MODE" != nvrtc ]; then
  echo "usage: $0 [full|nvrtc|nccl]" >&2; exit 2
fi
install "$DEST" "$DEST/.stamp-$MODE"
CU="$DEST/nvidia/cu13"
[ -f "$CU/lib/libnvrtc.so.13" ] || { echo "setup-cuda-wheels: $CU/lib/libnvrtc.so.13 missing after install" >&2; exit 1; }
echo "export NVRTC_LIB=$CU/lib/libnvrtc.so.13"
echo "export NVRTC_INCLUDE=$CU/include"
echo "export LD_LIBRARY_PATH=$CU/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
if [ "$MODE" = full ]; then
  [ -x "$CU/bin/nvcc" ] || { echo "setup-cuda-wheels: $CU/bin/nvcc missing after install" >&2; exit 1; }
  echo "export NVCC=$CU/bin/nvcc"
  echo "export CUDA_HOME=$CU"
fi
