#!/usr/bin/env bash
# Runs the emulated kernels under the sanitizers (issue 4; called by .ci/run):
#   1. EMU_SANITIZE=address: every test target with the emulator (all tests/*.rs and the lib tests),
#      so an out-of-bounds global or shared access in any kernel fails CI (like compute-sanitizer memcheck);
#   2. EMU_SANITIZE=thread: the same suite, where a shared-memory race between threads of a block fails
#      CI (like racecheck). Kernels without __shared__/barriers/warp intrinsics run their blocks serially
#      (races between blocks are still seen); SIMT_FORCE_THREADS=1 makes them cooperative too.
# Each sanitizer builds in its own CARGO_TARGET_DIR (target/emu-asan, target/emu-tsan) so the normal
# build cache is untouched. The planted-bug tests (tests/emu_sanitize.rs) prove each sanitizer fires.
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
  CARGO_TARGET_DIR="$ROOT/target/emu-${san:0:1}san" EMU_SANITIZE="$san" \
    cargo test --features emu --tests "$@"
  echo "== ${san}: $((SECONDS - start)) s =="
}

# detect_leaks=0: the Rust test harness and the emulator's pool (intentionally process-lived) are not
# kernel leaks. halt_on_error: the first report fails the test binary.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:abort_on_error=0}"
# exitcode=66 (the default) fails a test binary that reported a race, even if every test passed.
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=0:second_deadlock_stack=1}"

case "$WHICH" in
  address) run address ;;
  thread) run thread ;;
  both) run address; run thread ;;
  *) echo "usage: $0 [address|thread|both]" >&2; exit 2 ;;
esac
