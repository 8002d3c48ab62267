#!/usr/bin/env bash
# Build everything a GPU machine needs into one folder (default out/gpu-bundle): the release binary, every
# test and bench executable (release, nvcc cubins embedded, symbols stripped, packed into payload.tar.xz:
# the executables share most of their code, which one xz stream with a 256 MiB window removes, ~35x), and run.sh. The GPU machine
# has no Rust and no registry; it needs only the NVIDIA driver and cuBLAS (NVRTC only for archs without a
# cubin), from the system or from the Python image's nvidia pip packages (run.sh finds them with
# find-cuda-libs.sh and prints which copy it used). run.sh sets REQUIRE_GPU=1: a GPU test that cannot open
# the GPU (a library missing, a module that does not load) fails instead of skipping. Prints the bundle
# size, which must stay under 64 MiB (the device tool's carry limit).
#
#   scripts/gpu-bundle.sh [DIR]          then on the GPU machine:  DIR/run.sh   (logs under $OUT when set)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEST="${1:-out/gpu-bundle}"
# shellcheck disable=SC1090
source <(scripts/setup-cuda-wheels.sh)
export KERNELS_REQUIRE_NVCC=1 KERNEL_ARCHS="${KERNEL_ARCHS:-90a}"

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
rm -rf "$DEST"; mkdir -p "$DEST" "$STAGE/tests" "$STAGE/benches"
cargo build --release
cp target/release/attnas "$DEST/attnas"
cp scripts/find-cuda-libs.sh "$DEST/find-cuda-libs.sh"
# the commit the bundle was built from (side_by_side.py puts it in its rows; +dirty: uncommitted changes)
{ git rev-parse --short HEAD 2>/dev/null || echo -; } | tr -d '\n' > "$DEST/COMMIT"
git diff --quiet HEAD 2>/dev/null || printf '+dirty' >> "$DEST/COMMIT"

# test and bench executables: cargo prints their paths as JSON artifacts
list_executables() {
  cargo "$@" --no-run --message-format=json |
    python3 -c 'import sys, json
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] != ["bin"]:
        print(m["target"]["name"], m["target"]["kind"][0], m["executable"])'
}
list_executables test --release --tests | while read -r name kind exe; do
  [ "$kind" = lib ] && name="lib-$name"
  cp "$exe" "$STAGE/tests/$name"
done
# (cargo bench has no --release flag: benches always build with the release-like bench profile)
list_executables bench --benches | while read -r name kind exe; do
  [ "$kind" = bench ] && cp "$exe" "$STAGE/benches/$name"
done
strip "$DEST/attnas" "$STAGE"/tests/* "$STAGE"/benches/*
# One xz stream (-T1: threads would cut it into independent blocks) with a 256 MiB dictionary, larger than
# the executables together (~450 MiB unpacked, ~6 MiB each), so each executable's copy of the crate is
# coded as a match against the one before: 78 tests and 7 benches pack to 12 MiB where the default
# 8 MiB window (and -T2's blocks) left 63 MiB. Unpacking needs ~260 MiB of memory.
XZ_OPT="-T1 --lzma2=preset=6,dict=256MiB" tar -C "$STAGE" -cJf "$DEST/payload.tar.xz" tests benches

# Side by side (issue #13 item 6, DEVELOPERS.md): the original AttentiveNAS source, when it was brought into
# third_party/AttentiveNAS (gitignored, never committed), travels with scripts/side_by_side.py: its Python
# files, configs and licence only (~0.3 MiB; not the 4 MiB accuracy predictor nor the images).
cp scripts/side_by_side.py "$DEST/side_by_side.py"
ORIGINAL=third_party/AttentiveNAS
if [ -f "$ORIGINAL/models/attentive_nas_dynamic_model.py" ]; then
  mkdir -p "$DEST/AttentiveNAS"
  (cd "$ORIGINAL" && find . -path ./.git -prune -o -type f \( -name '*.py' -o -path './configs/*.yml' -o -name LICENSE \) \
    -print0 | tar --null -T - -cf -) | tar -C "$DEST/AttentiveNAS" -xf -
else
  echo "gpu bundle: no $ORIGINAL (DEVELOPERS.md says how to bring it): run.sh will skip the side-by-side run"
fi

# Real images for `bench train --data` (the input pipeline: decode + augmentation on the host, u8 upload,
# on-device normalisation): the shared ImageNet sample re-encoded at 256 px (~16 MiB), when it is here and
# the bundle stays under the carry limit with it. Real ImageNet JPEGs are ~400 px, so the GPU run's
# data-wait figure is a lower bound on the host's decode cost.
SAMPLE="${ATTNAS_SHARED_DATA:-../shared/data}/imagenet-sample-1000"
if [ -d "$SAMPLE/train" ]; then
  "$DEST/attnas" prepare "$SAMPLE" "$STAGE/data" --payload reencode --max-side 256 --quality 85 --quiet
  if [ $(( $(du -sb "$DEST" | cut -f1) + $(stat -c %s "$STAGE/data/train.pack") )) -lt $(( 62 * 1048576 )) ]; then
    mkdir -p "$DEST/data" && cp "$STAGE/data/train.pack" "$DEST/data/train.pack"
  else
    echo "gpu bundle: leaving out the ImageNet sample pack (the bundle would pass 62 MiB)"
  fi
fi

cat > "$DEST/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine: device report, every test (GPU targets included), every bench. Logs are written to
# a work folder (./logs without $OUT); a summary line per executable goes to stdout and summary.txt. With $OUT
# set (the device tool, which brings back at most 8 files from it), run.sh leaves there, when it ends or is
# stopped by a signal: logs.tar.gz (every log), summary.txt, device.log, bench-train.json and side-by-side.md.
# The CUDA libraries (cuBLAS, cuBLASLt, NVRTC 13, NCCL 2) are taken from the loader's path, a CUDA toolkit
# folder or the Python image's site-packages nvidia/*/lib, in that order (find-cuda-libs.sh), and the
# copy used for each is printed. REQUIRE_GPU=1: a GPU test fails, naming why, if the GPU does not open.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
BUNDLE="$HERE"
OUT_DIR="${OUT:-}"
if [ -n "$OUT_DIR" ]; then LOGS="${TMPDIR:-/tmp}/attnas-gpu-logs.$$"; else LOGS="$HERE/logs"; fi
mkdir -p "$LOGS"
# the few files the device tool brings back, also after a TERM/INT (timeout) ends the run early
deliver() {
  [ -n "$OUT_DIR" ] || return 0
  tar -C "$LOGS" -czf "$OUT_DIR/logs.tar.gz" . 2>/dev/null
  for f in summary.txt device.log bench-train.json side-by-side.md; do
    [ -f "$LOGS/$f" ] && cp "$LOGS/$f" "$OUT_DIR/$f"
  done
  return 0
}
trap 'deliver; exit 143' TERM INT
trap deliver EXIT
export REQUIRE_GPU=1
LIB_ENV="$("$HERE/find-cuda-libs.sh" 2>"$LOGS/cuda-libs.log")"
eval "$LIB_ENV"
WORK="${TMPDIR:-/tmp}/attnas-gpu-bundle.$$"; mkdir -p "$WORK"
if command -v xz >/dev/null; then
  tar -C "$WORK" -xJf "$HERE/payload.tar.xz"
else  # no xz binary: Python's lzma
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "$HERE/payload.tar.xz" "$WORK"
fi
cp "$HERE/attnas" "$WORK/attnas"
cd "$WORK"
HERE="$WORK"
export ATTNAS_BIN="$HERE/attnas"   # CLI tests run this binary instead of the build-machine path
export ATTNAS_SIDE_BY_SIDE="$BUNDLE/side_by_side.py"   # tests/side_by_side_script.rs: the bundle's copy
{
  echo "== date: $(date -u)"; echo "== nvidia-smi"; nvidia-smi || true
  echo "== CUDA libraries used (find-cuda-libs.sh; LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-})"
  cat "$LOGS/cuda-libs.log"
  ldconfig -p | grep -E 'libcuda\.so' || echo "libcuda.so: not in the ld.so cache"
  echo "== attnas info"; ./attnas info --ptxas
} 2>&1 | tee "$LOGS/device.log"
# NCCL (multi-GPU ranks): the wheel's libnccl.so.2 (Python site-packages) or the system's; cudarc loads
# libnccl.so, so link it in a private folder on LD_LIBRARY_PATH. attnas does the same by itself for
# --gpus / torchrun ranks; the tests load NCCL directly, so the bundle sets it up once here.
NCCL_SO2="$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null || true)"
[ -f "$NCCL_SO2" ] || NCCL_SO2="$(ldconfig -p | awk '/libnccl\.so\.2 /{print $NF; exit}')"
if [ -f "$NCCL_SO2" ]; then
  mkdir -p "$WORK/nccl"; ln -sf "$NCCL_SO2" "$WORK/nccl/libnccl.so"
  export LD_LIBRARY_PATH="$WORK/nccl${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "== NCCL: $NCCL_SO2" | tee -a "$LOGS/device.log"
else
  echo "== NCCL: no libnccl.so.2 found (pip install nvidia-nccl-cu13==2.30.7); the NCCL tests will fail" | tee -a "$LOGS/device.log"
fi
./attnas info | grep -E '^NCCL|peer access|gpu [0-9]+ ->' | tee -a "$LOGS/device.log"
: > "$LOGS/summary.txt"
for t in tests/*; do
  n=$(basename "$t")
  # CPU-only and minutes long (trains on Fashion-MNIST with --device cpu): not what the GPU time is for
  case "$n" in train_e2e) echo "test $n: not run here (CPU-only)" | tee -a "$LOGS/summary.txt"; continue;; esac
  # --nocapture: the logs keep skip lines, notes and the tolerance each comparison used on this card
  if timeout 600 "$t" --test-threads=1 --nocapture > "$LOGS/test-$n.log" 2>&1; then s=PASS; else s="FAIL($?)"; fi
  line="test $n: $s $(grep -E '^test result' "$LOGS/test-$n.log" | tail -1)"
  echo "$line" | tee -a "$LOGS/summary.txt"
done
echo "== attnas bench train: AttentiveNAS space, batch 64, sandwich + BestUp-3, on the GPU, bf16 then fp32"
if timeout 600 ./attnas bench train --device cuda --precision bf16 --batch 64 --warmup 2 --steps 5 \
    --json "$LOGS/bench-train.json" > "$LOGS/bench-train.log" 2>&1; then s=PASS; else s="FAIL($?)"; fi
echo "bench train (bf16): $s" | tee -a "$LOGS/summary.txt"
cat "$LOGS/bench-train.log"
if timeout 600 ./attnas bench train --device cuda --precision fp32 --batch 64 --warmup 2 --steps 5 \
    --json "$LOGS/bench-train-fp32.json" > "$LOGS/bench-train-fp32.log" 2>&1; then s=PASS; else s="FAIL($?)"; fi
echo "bench train (fp32): $s" | tee -a "$LOGS/summary.txt"
cat "$LOGS/bench-train-fp32.log"
PACK="$BUNDLE/data/train.pack"
if [ -f "$PACK" ]; then
  echo "== attnas bench train --data: the same step fed by the real input pipeline (1,000 ImageNet JPEGs)"
  if timeout 600 ./attnas bench train --device cuda --batch 64 --warmup 2 --steps 10 --data "$PACK" \
      --json "$LOGS/bench-train-data.json" > "$LOGS/bench-train-data.log" 2>&1; then s=PASS; else s="FAIL($?)"; fi
  echo "bench train --data: $s" | tee -a "$LOGS/summary.txt"
  cat "$LOGS/bench-train-data.log"
fi
echo "== attnas latency on the GPU (CUDA events): A0, A6 and the max subnet, batch 1 and 64"
for batch in 1 64; do
  if timeout 300 ./attnas latency --device cuda --arch a0,a6,max --batch "$batch" --warmup 10 --repeats 50 --json \
      > "$LOGS/latency-b$batch.json" 2> "$LOGS/latency-b$batch.log"; then s=PASS; else s="FAIL($?)"; fi
  echo "latency batch $batch: $s" | tee -a "$LOGS/summary.txt"
  cat "$LOGS/latency-b$batch.json"
done
echo "== latency tables on the GPU: the tiny space, then AttentiveNAS at batch 1; each checked on 20 random subnets"
for space in tiny attentivenas; do
  if timeout 600 ./attnas latency-table --device cuda --config "$space" --out "$LOGS/latency-table-$space.json" \
      --overwrite --quiet > "$LOGS/latency-table-$space.log" 2>&1 \
    && timeout 300 ./attnas latency --device cuda --config "$space" --predict "$LOGS/latency-table-$space.json" \
      --check 20 --quiet > "$LOGS/latency-check-$space.log" 2>&1; then s=PASS; else s="FAIL($?)"; fi
  echo "latency table $space: $s" | tee -a "$LOGS/summary.txt"
  cat "$LOGS/latency-table-$space.log" "$LOGS/latency-check-$space.log"
done
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${NGPU:-0}" -ge 2 ]; then AR="--gpus all"; else AR="--device cuda"; fi
echo "== attnas bench allreduce $AR: gradient arena and 25 MiB bucket (algBW, busBW)"
if timeout 300 ./attnas bench allreduce $AR --json "$LOGS/bench-allreduce.json" > "$LOGS/bench-allreduce.log" 2>&1; then
  s=PASS; else s="FAIL($?)"; fi
echo "bench allreduce: $s" | tee -a "$LOGS/summary.txt"
cat "$LOGS/bench-allreduce.log"
if [ "${NGPU:-0}" -ge 2 ]; then
  echo "== attnas bench train --gpus all (scaling against one GPU)"
  if timeout 600 ./attnas bench train --gpus all --batch 32 --warmup 2 --steps 5 > "$LOGS/bench-train-gpus.log" 2>&1; then
    s=PASS; else s="FAIL($?)"; fi
  echo "bench train --gpus all: $s" | tee -a "$LOGS/summary.txt"
  cat "$LOGS/bench-train-gpus.log"
fi
for b in benches/*; do
  n=$(basename "$b")
  if timeout 600 "$b" > "$LOGS/bench-$n.log" 2>&1; then s=PASS; else s="FAIL($?)"; fi
  echo "bench $n: $s" | tee -a "$LOGS/summary.txt"
  cat "$LOGS/bench-$n.log"
done
# Side by side (DEVELOPERS.md): the original AttentiveNAS PyTorch step (fp32, AMP bf16, + channels_last) and
# its ops against attnas on this card, last because it reads the kernel benches' logs above; when the
# bundle carries the original's source and python3 has PyTorch with CUDA. At most 4 minutes: --budget-s
# stops it starting new measurements, timeout ends it.
if [ ! -d "$BUNDLE/AttentiveNAS" ]; then
  echo "side by side: not run (the bundle carries no AttentiveNAS source; DEVELOPERS.md)" | tee -a "$LOGS/summary.txt"
elif ! python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  echo "side by side: not run (python3 has no PyTorch that sees CUDA)" | tee -a "$LOGS/summary.txt"
else
  echo "== side by side: the original AttentiveNAS step and ops (PyTorch) against attnas, batch 64, BestUp-3, 224 px"
  if timeout 240 python3 "$BUNDLE/side_by_side.py" --attentivenas "$BUNDLE/AttentiveNAS" --attnas ./attnas \
      --device cuda --batch 64 --k 3 --resolution 224 --warmup 2 --steps 6 --budget-s 200 --attnas-bench-logs "$LOGS" \
      --json "$LOGS/side-by-side.json" --out-md "$LOGS/side-by-side.md" > "$LOGS/side-by-side.log" 2>&1; then
    s=PASS; else s="FAIL($?)"; fi
  echo "side by side: $s" | tee -a "$LOGS/summary.txt"
  cat "$LOGS/side-by-side.log"
fi
grep -c FAIL "$LOGS/summary.txt" >/dev/null && echo "some runs FAILED (see $LOGS)" || echo "all runs passed"
RUN
chmod +x "$DEST/run.sh"
size=$(du -sb "$DEST" | cut -f1)
echo "gpu bundle: $DEST, $(( size / 1048576 )) MiB ($size bytes), $(ls "$STAGE/tests" | wc -l) test and $(ls "$STAGE/benches" | wc -l) bench executables ($(du -sm "$STAGE" | cut -f1) MiB unpacked)"
if [ "$size" -ge $(( 64 * 1048576 )) ]; then echo "gpu bundle is over 64 MiB" >&2; exit 1; fi
