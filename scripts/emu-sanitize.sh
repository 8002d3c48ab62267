#!/usr/bin/env bash
# Runs the emulated kernels under the sanitizers (issue 4; called by .ci/run):
#   1. EMU_SANITIZE=address: the lib tests and every test file that launches emulated kernels (op
#      tests, whole-network forward/backward, folded inference), so an out-of-bounds global or shared
#      access in any kernel, at any shape the suite reaches, fails CI (like compute-sanitizer memcheck).
#      Only the kernels are instrumented, so test files that never launch one (the CLI, data, checkpoint
#      and CPU-only tests) would only repeat the plain run: they are left out. So are the step-level files
#      (train_step, step_device_seam), which were a third of the stage: every kernel they launch is also
#      launched by the op and network files (checked by tracing the emulator's launches), and they place
#      every tensor in one arena allocation, where ASan sees only an overrun of the whole arena, while the
#      op tests give each tensor its own allocation, where an overrun of one tensor is caught;
#   2. EMU_SANITIZE=thread: the same files, where a shared-memory race between threads of a block fails
#      CI (like racecheck). A race is a property of a kernel and its block shape, which the op tests sweep
#      and nn_devices runs across a whole network. The bf16 test files (tests/bf16_*.rs) are left out
#      of TSan: a bf16 entry point is the same template body as its f32 one (same shared memory,
#      barriers, block shapes and indexing; only the loads and stores differ), which the f32 op tests
#      run under TSan; ASan runs the bf16 files, where the 2-byte addressing is new. Kernels without
#      __shared__/barriers/warp intrinsics run
#      their blocks serially (races between blocks are still seen); SIMT_FORCE_THREADS=1 makes them
#      cooperative too.
# Each sanitizer builds in its own CARGO_TARGET_DIR (target/emu-asan, target/emu-tsan) so the normal
# build cache is untouched. Only the kernels are instrumented (the Rust code is not), so the
# dependencies are the same in every build: EMU_SANITIZE_TARGET_DIR=DIR makes both sanitizers share DIR
# (one dependency build; the crate itself is rebuilt, about a minute, whenever the sanitizer changes). The planted-bug tests (tests/emu_sanitize.rs) prove each sanitizer fires.
#
#   scripts/emu-sanitize.sh            # both
#   scripts/emu-sanitize.sh address    # one
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source <(scripts/setup-cuda-wheels.sh 2>/dev/null)
WHICH="${1:-both}"

run() {  # sanitizer, then extra cargo test args
  local san="$1"; shift
  echo "== emulated tests under ${san} sanitizer =="
  local start=$SECONDS
  if ! CARGO_TARGET_DIR="${EMU_SANITIZE_TARGET_DIR:-$ROOT/target/emu-${san:0:1}san}" EMU_SANITIZE="$san" \
    cargo test --no-fail-fast --features emu "$@"; then
    echo "== ${san}: FAILED after $((SECONDS - start)) s =="
    return 1
  fi
  echo "== ${san}: passed in $((SECONDS - start)) s =="
}

# Defaults (leak checking off, the suppression of Rust-only TSan reports) are compiled into
# kernels/emu/simt_runtime.cpp. A TSan report makes the test binary exit 66 even if every test passed.

# The test files that launch emulated kernels (those naming on_cuda_targets! or EmuDevice). Host-only
# tests (data loader, CPU references, the CLI on the CPU) run no instrumented code, and under TSan their
# uninstrumented Rust threads could not be judged anyway.
kernel_tests() {  # extra arguments: file stems to leave out
  local skip=" $* "
  for f in $(grep -lE 'on_cuda_targets!|EmuDevice' tests/*.rs); do
    f="${f#tests/}"; f="${f%.rs}"
    [[ "$skip" == *" $f "* ]] || printf -- '--test %s ' "$f"
  done
}

# shellcheck disable=SC2046
# the step-level files (both sanitizers) and the bf16 files (TSan); see the header
STEP_LEVEL="train_step step_device_seam"
TSAN_SKIP="$STEP_LEVEL $(cd tests && ls bf16_*.rs | sed 's/\.rs$//' | tr '\n' ' ')"

case "$WHICH" in
  address) run address --lib $(kernel_tests $STEP_LEVEL) ;;
  thread) run thread $(kernel_tests $TSAN_SKIP) ;;
  both) rc=0; run address --lib $(kernel_tests $STEP_LEVEL) || rc=1; run thread $(kernel_tests $TSAN_SKIP) || rc=1; exit $rc ;;
  *) echo "usage: $0 [address|thread|both]" >&2; exit 2 ;;
esac
