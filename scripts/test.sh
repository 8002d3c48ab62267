#!/usr/bin/env bash
# The test suite, as the README gives it: installs the pinned CUDA 13.0 wheels (nvcc, ptxas, NVRTC; no GPU
# needed, idempotent), then runs every test with the SIMT emulator built in, so each CUDA kernel runs on
# the CPU against its reference. The CLI tests drive the binary cargo builds for them (the test profile:
# optimised, opt-level 1 for the crate and 2 for its dependencies; the end-to-end training test trains on
# Fashion-MNIST with it for a few minutes, about 15 % slower than a release build, which would cost 200 s
# of compiling on 2 cores). ATTNAS_BIN=path runs them against another build (e.g. target/release/attnas). GPU tests run too when a GPU is
# present, and skip with one line otherwise.
# It also sets up the Python tools venv (.venv-tools: numpy, safetensors, onnx, onnxruntime, tensorboard) for the
# checkpoint-import and ONNX tests; if that fails (offline), those tests skip with one line, unless
# REQUIRE_PYTHON_TOOLS=1 (CI), where the failure stops the run.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test gemm`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1090
source <(scripts/setup-cuda-wheels.sh)
if ! scripts/setup-python-tools.sh; then
  [ "${REQUIRE_PYTHON_TOOLS:-}" = 1 ] && exit 1
  echo "test.sh: Python tools unavailable; their tests will skip" >&2
fi
cargo test --features emu "$@"
