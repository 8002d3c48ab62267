#!/usr/bin/env bash
# The test suite, as the README gives it: installs the pinned CUDA 13.0 wheels (nvcc, ptxas, NVRTC; no GPU
# needed, idempotent), builds the optimised binary that the CLI tests drive (the end-to-end training test
# trains on Fashion-MNIST for a few minutes and needs it), then runs every test with the SIMT emulator
# built in, so each CUDA kernel runs on the CPU against its reference. GPU tests run too when a GPU is
# present, and skip with one line otherwise. Extra arguments go to `cargo test` (e.g. `--test gemm`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1090
source <(scripts/setup-cuda-wheels.sh)
cargo build --release --quiet
export ATTNAS_BIN="$PWD/target/release/attnas"
cargo test --features emu "$@"
