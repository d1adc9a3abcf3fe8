#!/usr/bin/env bash
# Fuzzes every target (or the ones named) for SECONDS each with libFuzzer, on the stable
# toolchain: libfuzzer-sys links libFuzzer, and the coverage instrumentation cargo-fuzz would
# add is passed here as plain rustc flags (no nightly, no cargo-fuzz, no AddressSanitizer: the
# core is `forbid(unsafe_code)`, so what is hunted is panics, hangs and unbounded memory).
#
#   fuzz/run.sh [SECONDS] [TARGET...]        default: 10 s each, every target
#
# Exits non-zero if any target finds a crash, hang or out-of-memory input; the input is saved
# in fuzz/artifacts/<target>/. Turn it into a regression test in core/tests/fuzz_regressions.rs
# (the file says how). The growing corpus lives in fuzz/corpus/<target>/ (not committed).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-10}
shift || true
ALL=(sse_decode proto_decode json_responses tinker_path response_classification call_machines)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
# The flags cargo-fuzz passes (sancov instrumentation + `cfg(fuzzing)`), with debug assertions
# and overflow checks on. `--target` keeps them off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$(pwd)/target}"
echo "building the fuzz targets ($TRIPLE, release + instrumentation)"
cargo build --quiet --locked --release --target "$TRIPLE" --bins

failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  echo "=== $t: ${SECONDS_EACH}s"
  if ! "$CARGO_TARGET_DIR/$TRIPLE/release/$t" -max_total_time="$SECONDS_EACH" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
      "corpus/$t" "${seeds[@]}" 2> "artifacts/$t.log"; then
    tail -n 40 "artifacts/$t.log"
    failed+=("$t")
  else
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "artifacts/$t.log" | tr '\n' ' '
    echo
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found failures in: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "fuzz: ${#TARGETS[@]} targets, no failures"
