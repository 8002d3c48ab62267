#!/usr/bin/env bash
# The main job, as the README gives it, on a fresh machine: installs the pinned CUDA 13.0 wheels (for the
# kernel build), builds the release binary and shows what attnas does today: the device report.
# Later stages (search space, data, training) extend this script as they land.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1090
source <(scripts/setup-cuda-wheels.sh)
cargo build --release
BIN=target/release/attnas
echo "== attnas info"
$BIN info
