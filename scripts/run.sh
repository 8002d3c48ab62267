#!/usr/bin/env bash
# The main job, as the README gives it, on a fresh machine: installs the pinned CUDA 13.0 wheels (for the
# kernel build), builds the release binary, shows the device report, the search space and the FLOPs of the
# published models, packs the data (Fashion-MNIST, and the ImageNet sample where present), then trains the
# tiny supernet on Fashion-MNIST (on the GPU when there is one, else the CPU: about 6 minutes on 2 cores)
# and prints the min and max subnets' accuracy after BN recalibration.
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

# Data: pack Fashion-MNIST (Debian's dataset-fashion-mnist; installed here when run as root) and, where
# this checkout sits beside the shared folder, the 1000-image ImageNet sample; then a contact sheet of
# what the network sees after augmentation.
mkdir -p out/data
FM=/usr/share/datasets/fashion-mnist
if [ ! -d "$FM" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; } || true
fi
if [ -d "$FM" ]; then
  echo "== attnas prepare: Fashion-MNIST"
  $BIN prepare "$FM" out/data/fashion-mnist --quiet
  $BIN data inspect out/data/fashion-mnist/train.pack --crop 32 --out out/fashion-mnist-sheet.png
else
  echo "== Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist): skipping it"
fi
SAMPLE=../shared/data/imagenet-sample-1000
if [ -d "$SAMPLE" ]; then
  echo "== attnas prepare: ImageNet sample ($SAMPLE)"
  $BIN prepare "$SAMPLE" out/data/imagenet-sample --quiet
  $BIN data inspect out/data/imagenet-sample/train.pack --out out/imagenet-sample-sheet.png
fi

if [ -f out/data/fashion-mnist/train.pack ]; then
  echo "== attnas train: the tiny supernet on Fashion-MNIST (sandwich rule + BestUp-3, 400 steps of 64)"
  $BIN train --config configs/tiny.yaml --data out/data/fashion-mnist --out out/runs/tiny --overwrite \
    --set max_steps=400 --set schedule_steps=400
fi
