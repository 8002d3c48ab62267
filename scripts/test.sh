#!/usr/bin/env bash
# The test suite, as the README gives it: installs the pinned CUDA 13.0 wheels (nvcc, ptxas, NVRTC; no GPU
# needed, idempotent), then runs every test with the SIMT emulator built in, so each CUDA kernel runs on the
# CPU against its reference. GPU tests run too when a GPU is present, and skip with one line otherwise.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test gemm`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1090
source <(scripts/setup-cuda-wheels.sh)
cargo test --features emu "$@"
