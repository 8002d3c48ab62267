#!/usr/bin/env bash
# The main job, as the README gives it, on a fresh machine: installs the pinned CUDA 13.0 wheels (for the
# kernel build), builds the release binary, shows the device report, the search space and the FLOPs of the
# published models, packs the data (Fashion-MNIST, and the ImageNet sample where present), then trains the
# tiny supernet on Fashion-MNIST (on the GPU when there is one, else the CPU: about 6 minutes on 2 cores)
# and prints the min and max subnets' accuracy after BN recalibration; evaluates, searches, exports and
# checks the ONNX model, then writes out/report.html (the run and its search on one self-contained page)
# and reads the run's TensorBoard event files (out/runs/tiny/tb) back with TensorBoard's own reader.
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
  echo "== attnas train: the tiny supernet on Fashion-MNIST (sandwich rule + BestUp-3, 1000 steps of 64)"
  $BIN train --config configs/tiny.yaml --data out/data/fashion-mnist --out out/runs/tiny --overwrite \
    --set max_steps=1000 --set schedule_steps=1000
  D=out/data/fashion-mnist
  CAL=(--calib-batches 8 --calib-batch-size 64)
  echo "== attnas eval: min and max subnets, BN recalibrated on 512 training images"
  $BIN eval --ckpt out/runs/tiny --arch min,max --data $D "${CAL[@]}" --quiet
  echo "== attnas search: a small evolutionary Pareto search (16 + 3 x 16 candidates on 1000 held-out images)"
  rm -rf out/search
  $BIN search --ckpt out/runs/tiny --data $D --flops 0.3:2.0 --bucket 0.05 --population 16 --mutations 8 \
    --crossovers 8 --iterations 3 --calib-batches 4 --calib-batch-size 64 --eval-images 1000 --out out/search --quiet
  python3 -c 'import json; json.dump(json.load(open("out/search/pareto.json"))[-1]["arch"], open("out/search/best.json", "w"))'
  echo "== attnas export: the front's most accurate subnet -> out/export (safetensors, arch.json, ONNX)"
  $BIN export --ckpt out/runs/tiny --arch out/search/best.json --data $D "${CAL[@]}" --out out/export --quiet
  echo "== ONNX check: onnxruntime vs attnas on the same 64 images"
  $BIN eval --ckpt out/runs/tiny --arch out/export/arch.json --data $D --max-images 64 "${CAL[@]}" --quiet \
    --dump-inputs out/export/x.npy --dump-logits out/export/logits.npy
  PY_TOOLS=0
  if scripts/setup-python-tools.sh; then
    PY_TOOLS=1
    .venv-tools/bin/python scripts/onnx_check.py out/export/model.onnx out/export/x.npy --logits out/export/logits.npy
  else
    echo "(Python tools unavailable: ONNX check skipped)"
  fi
  echo "== deployment: a latency table of the tiny space on this CPU, checked, and the accuracy/latency front"
  $BIN latency --config tiny --arch out/export/arch.json --device cpu --quiet
  $BIN latency-table --config tiny --device cpu --warmup 3 --repeats 15 --out out/latency/tiny-cpu.json \
    --overwrite --quiet
  $BIN latency --config tiny --device cpu --predict out/latency/tiny-cpu.json --check 20 --quiet
  rm -rf out/search-latency
  $BIN search --ckpt out/runs/tiny --data $D --objective latency --latency-table out/latency/tiny-cpu.json \
    --bucket 0.01 --population 16 --mutations 8 --crossovers 8 --iterations 3 --calib-batches 4 \
    --calib-batch-size 64 --eval-images 1000 --device cpu --out out/search-latency --quiet
  echo "== attnas report: out/report.html (training curves, attentive sampling, Pareto front, config)"
  $BIN report out/runs/tiny --search out/search --out out/report.html
  echo "== TensorBoard: out/runs/tiny/tb read back by TensorBoard's event accumulator"
  if [ "$PY_TOOLS" = 1 ]; then
    .venv-tools/bin/python scripts/tensorboard_check.py out/runs/tiny/tb --expect-steps 1000 \
      --expect-tags loss/max,loss/sampled,loss/min,lr,throughput/images_per_sec,eval/max_top1,eval/min_top1 \
      | .venv-tools/bin/python -c 'import json, sys; d = json.load(sys.stdin)["scalars"]
print("  " + ", ".join(f"{t}: {len(v)} points, last {v[-1][1]:.4g}" for t, v in sorted(d.items()) if v))'
    echo "  open it with: .venv-tools/bin/tensorboard --logdir out/runs/tiny/tb"
  else
    echo "(Python tools unavailable: TensorBoard read-back skipped)"
  fi
fi
