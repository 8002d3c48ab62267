#!/usr/bin/env bash
# Runs the emulated kernels under the sanitizers (issue 4; called by .ci/run):
#   1. EMU_SANITIZE=address: every test target with the emulator (all tests/*.rs and the lib tests),
#      so an out-of-bounds global or shared access in any kernel fails CI (like compute-sanitizer memcheck);
#   2. EMU_SANITIZE=thread: the same suite, where a shared-memory race between threads of a block fails
#      CI (like racecheck). Kernels without __shared__/barriers/warp intrinsics run their blocks serially
#      (races between blocks are still seen); SIMT_FORCE_THREADS=1 makes them cooperative too.
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

# ThreadSanitizer looks for races between the threads of a block, so it runs the test files that launch
# emulated kernels (those naming on_cuda_targets! or EmuDevice); host-only tests (data loader, CPU
# references) use uninstrumented Rust threads that TSan cannot judge.
kernel_tests() {
  grep -lE 'on_cuda_targets!|EmuDevice' tests/*.rs | sed -E 's|tests/(.*)\.rs|--test \1|' | tr '\n' ' '
}

case "$WHICH" in
  address) run address --tests ;;
  # shellcheck disable=SC2046
  thread) run thread $(kernel_tests) ;;
  # shellcheck disable=SC2046
  both) rc=0; run address --tests || rc=1; run thread $(kernel_tests) || rc=1; exit $rc ;;
  *) echo "usage: $0 [address|thread|both]" >&2; exit 2 ;;
esac
