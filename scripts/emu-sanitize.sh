#!/usr/bin/env bash
# Runs the emulated kernels under the sanitizers (issue 4; called by .ci/run):
#   1. AddressSanitizer: the lib tests and every test file that launches emulated kernels (op
#      tests, whole-network forward/backward, folded inference), so an out-of-bounds global or shared
#      access in any kernel, at any shape the suite reaches, fails CI (like compute-sanitizer memcheck).
#      Only the kernels are instrumented, so test files that never launch one (the CLI, data, checkpoint
#      and CPU-only tests) would only repeat the plain run: they are left out. So are the step-level files
#      (train_step, step_device_seam), which were a third of the stage: every kernel they launch is also
#      launched by the op and network files (checked by tracing the emulator's launches), and they place
#      every tensor in one arena allocation, where ASan sees only an overrun of the whole arena, while the
#      op tests give each tensor its own allocation, where an overrun of one tensor is caught;
#   2. ThreadSanitizer: the same files, where a shared-memory race between threads of a block fails
#      CI (like racecheck). A race is a property of a kernel and its block shape, which the op tests sweep
#      and nn_devices runs across a whole network. The bf16 test files (tests/bf16_*.rs) are left out
#      of TSan: a bf16 entry point is the same template body as its f32 one (same shared memory,
#      barriers, block shapes and indexing; only the loads and stores differ), which the f32 op tests
#      run under TSan; ASan runs the bf16 files, where the 2-byte addressing is new. Kernels without
#      __shared__/barriers/warp intrinsics run
#      their blocks serially (races between blocks are still seen); SIMT_FORCE_THREADS=1 makes them
#      cooperative too.
# Only the kernels are instrumented, never the Rust code, so no Rust is compiled for a sanitizer run: the
# plain test binaries (the ones `scripts/test.sh` builds; built here if missing) run with the sanitizer's
# runtime preloaded and ATTNAS_EMU_LIBRARY naming a shared library of the same kernel sources compiled
# with -fsanitize (build.rs writes $OUT_DIR/emu/build-sanitized.sh for it: about 15 s of C++ per
# sanitizer, where rebuilding the crate and its test binaries took about 3 minutes each). The emulator
# checks that library's kernel table against its own and refuses one from other sources. The planted-bug
# tests (tests/emu_sanitize.rs) prove each sanitizer fires.
#
#   scripts/emu-sanitize.sh            # both
#   scripts/emu-sanitize.sh address    # one
#   scripts/emu-sanitize.sh thread --test depthwise    # one sanitizer, your selection of tests
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source <(scripts/setup-cuda-wheels.sh 2>/dev/null)
WHICH="${1:-both}"
CXX="${CXX:-c++}"

# This build's generated emulator sources: the out_dir of attnas's build script, from cargo's own report
# (building the test binaries first if they are not there yet).
emu_out_dir() {
  cargo test --no-run --features emu --message-format=json "$@" | python3 -c '
import json, sys
msgs = [json.loads(line) for line in sys.stdin if line.startswith("{")]
ours = {m["package_id"] for m in msgs if m.get("manifest_path") == sys.argv[1]}
dirs = [m["out_dir"] for m in msgs if m.get("reason") == "build-script-executed" and m["package_id"] in ours]
print(dirs[-1] if dirs else "")' "$ROOT/Cargo.toml"
}

run() {  # sanitizer, then extra cargo test args
  local san="$1"; shift
  echo "== emulated tests under ${san} sanitizer =="
  local start=$SECONDS out lib runtime triple opts
  out="$(emu_out_dir "$@")"
  [ -x "$out/emu/build-sanitized.sh" ] || { echo "emu-sanitize: no build-sanitized.sh under '$out'" >&2; return 1; }
  lib="$ROOT/target/emu-sanitized/libattnas_simt_${san}.so"
  mkdir -p "$(dirname "$lib")"
  CXX="$CXX" "$out/emu/build-sanitized.sh" "$san" "$lib"
  runtime="$("$CXX" -print-file-name="lib${san:0:1}san.so")"
  [ -f "$runtime" ] || { echo "emu-sanitize: the ${san} sanitizer runtime (lib${san:0:1}san.so) is not installed" >&2; return 1; }
  if [ "$san" = address ]; then
    opts="ASAN_OPTIONS=detect_leaks=0"  # the Rust test harness and the process-lived worker pool are not kernel bugs
  else
    opts="TSAN_OPTIONS=suppressions=$ROOT/kernels/emu/tsan.supp"
  fi
  # cargo runs each test binary through this runner, so only the tests (and the processes they start)
  # get the preloaded runtime, not cargo and rustc
  triple="$(rustc -vV | sed -n 's/^host: //p' | tr 'a-z.-' 'A-Z__')"
  echo "(${lib#"$ROOT"/} built in $((SECONDS - start)) s)"
  if ! env "CARGO_TARGET_${triple}_RUNNER=env LD_PRELOAD=$runtime ATTNAS_EMU_LIBRARY=$lib $opts" \
    cargo test --no-fail-fast --features emu "$@"; then
    echo "== ${san}: FAILED after $((SECONDS - start)) s =="
    return 1
  fi
  echo "== ${san}: passed in $((SECONDS - start)) s =="
}

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

if [ $# -gt 1 ]; then  # a sanitizer and the cargo test selection to run under it
  case "$WHICH" in address | thread) shift; run "$WHICH" "$@"; exit ;; esac
fi
case "$WHICH" in
  address) run address --lib $(kernel_tests $STEP_LEVEL) ;;
  thread) run thread $(kernel_tests $TSAN_SKIP) ;;
  both) rc=0; run address --lib $(kernel_tests $STEP_LEVEL) || rc=1; run thread $(kernel_tests $TSAN_SKIP) || rc=1; exit $rc ;;
  *) echo "usage: $0 [address|thread|both]" >&2; exit 2 ;;
esac
