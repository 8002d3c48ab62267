#!/usr/bin/env bash
# The main job, as the README gives it, on a fresh machine: installs the pinned CUDA 13.0 wheels (for the
# kernel build), builds the release binary and shows what attnas does today: the device report, the
# search space and the FLOPs of the published models.
# Later stages (search space, data, training) extend this script as they land.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1090
source <(scripts/setup-cuda-wheels.sh)
cargo build --release
BIN=target/release/attnas
echo "== attnas info"
$BIN info
echo "== attnas space (the AttentiveNAS search space)"
$BIN space
echo "== attnas flops: the published AttentiveNAS models A0-A6 and the min/max subnets"
$BIN flops --arch min --arch a0 --arch a1 --arch a2 --arch a3 --arch a4 --arch a5 --arch a6 --arch max
