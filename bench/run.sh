#!/usr/bin/env bash
# Side-by-side benchmarks: tinker-rs (release build) and the official Python SDK (tinker==0.38.0)
# on identical inputs, in the same run, against the same local server; prints one table
# (also written to target/bench/table.md). Raw results: target/bench/results.jsonl.
#
#   bench/run.sh            everything (B1, B2, SSE, B3 fan-out, B4 polling with a 30 s 503 burst)
#   bench/run.sh --quick    B3 at 64 and 400 calls only
#   B3_SIZES="64x1 2048x1" bench/run.sh    only these fan-out sizes (calls x samples)
#   bench/run.sh --chaos    also the chaos run (cargo test -p tinker-testkit --release -- --ignored chaos)
#
# Needs python3 with venv; the venv is target/conformance-venv (shared with
# tests/conformance/run.sh, created here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/target/bench"
VENV="$ROOT/target/conformance-venv"
QUICK=0
CHAOS=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --chaos) CHAOS=1 ;;
    *) echo "usage: bench/run.sh [--quick] [--chaos]"; exit 2 ;;
  esac
done
mkdir -p "$OUT"

if ! "$VENV/bin/python" -c 'import tinker, sys; sys.exit(tinker.__version__ != "0.38.0")' 2>/dev/null; then
  echo "creating $VENV with tinker==0.38.0"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check tinker==0.38.0
fi
PY="$VENV/bin/python"
PYBENCH="$ROOT/bench/python/official_sdk_bench.py"
export PYTHONWARNINGS="ignore::FutureWarning,ignore::DeprecationWarning"

echo "building (release)"
cargo build --release --locked --quiet -p tinker-bench -p tinker-testkit --bin tinker-bench --bin tinker-local-server
BENCH="$ROOT/target/release/tinker-bench"
SERVER_BIN="$ROOT/target/release/tinker-local-server"

RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
{
  echo "# $(date -u '+%Y-%m-%d %H:%M:%S UTC'); nproc $(nproc); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt"

both() { # both NAME RUST_ARGS... -- PY_ARGS...
  local name=$1; shift
  local rust=() py=()
  while [ "$1" != "--" ]; do rust+=("$1"); shift; done; shift
  py=("$@")
  echo "== $name: tinker-rs"
  "$BENCH" "${rust[@]}" | tee -a "$RESULTS"
  echo "== $name: official SDK"
  "$PY" "$PYBENCH" "${py[@]}" | tee -a "$RESULTS"
}

"$BENCH" dump "$OUT/bodies"
both "B1 encode" b1 -- b1
both "B2 decode" b2 -- b2 --bodies "$OUT/bodies"
both "B8 SSE decode" sse -- sse

# ---------------------------------------------------------------- the local server
SERVER_PID=""
URL=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT
start_server() { # start_server CONFIG_JSON
  stop_server
  echo "$1" > "$OUT/server.config.json"
  rm -f "$OUT/server.url"
  "$SERVER_BIN" --port 0 --seed 11 --config "$OUT/server.config.json" > "$OUT/server.url" 2>> "$OUT/server.log" &
  SERVER_PID=$!
  URL=""
  for _ in $(seq 1 100); do
    URL=$(head -n1 "$OUT/server.url" 2>/dev/null || true)
    [ -n "$URL" ] && return 0
    sleep 0.1
  done
  echo "the local server did not start; see $OUT/server.log"; exit 1
}
admin() { # admin METHOD PATH
  "$PY" -c 'import sys, urllib.request as u; r = u.Request(sys.argv[1], method=sys.argv[2]); print(u.urlopen(r).read().decode())' "$URL$2" "$1"
}

run_failed() { # a case that crashed or passed its time limit is reported, not skipped
  echo "(failed or timed out)"
  printf '{"sdk": "%s", "workload": "%s", "size": "%s", "error": "the run failed or passed its time limit"}\n' \
    "$sdk" "$workload" "$size" >> "$RESULTS"
}

# B3: no recording (it would cost the server CPU and memory at 20k requests); no session expiry.
start_server '{"record_limit": 0, "session_timeout_secs": null, "long_poll_hold_ms": 1000}'
if [ "$QUICK" = 1 ]; then SIZES="64x1 400x1"; else SIZES="64x1 400x1 2048x1 4096x1 128x16"; fi
SIZES=${B3_SIZES:-$SIZES}  # e.g. B3_SIZES="64x1 400x1" to run fewer
MAX_TOKENS=16
for size in $SIZES; do
  calls=${size%x*}; samples=${size#*x}
  for client in tokio async-std blocking python; do
    admin DELETE /_admin/in_flight > /dev/null
    if [ "$client" = python ]; then
      echo "== B3 $size: official SDK (asyncio)"
      workload="B3 sample fan-out (asyncio)"; sdk=python
      timeout 180 "$PY" "$PYBENCH" fanout --url "$URL" --calls "$calls" --samples "$samples" --max-tokens $MAX_TOKENS | tee -a "$RESULTS" || run_failed
    else
      echo "== B3 $size: tinker-rs ($client)"
      workload="B3 sample fan-out ($client)"; sdk=rust
      timeout 180 "$BENCH" fanout --runtime "$client" --url "$URL" --calls "$calls" --samples "$samples" --max-tokens $MAX_TOKENS | tee -a "$RESULTS" || run_failed
    fi
    peak=$(admin GET /_admin/in_flight | "$PY" -c 'import json, sys; print(json.load(sys.stdin).get("asample", {}).get("peak", 0))')
    printf '{"sdk": "%s", "workload": "%s", "size": "%s", "asample_peak_in_flight": %s}\n' "$sdk" "$workload" "$size" "$peak" >> "$RESULTS"
  done
done

# B4: one server per SDK, recording on, so every poll of every future is counted.
POLL_FILES=()
for client in rust python; do
  start_server '{"session_timeout_secs": null}'
  echo "== B4 polling: $client"
  if [ "$client" = rust ]; then
    timeout 200 "$BENCH" poll --url "$URL" | tee -a "$RESULTS" || echo "(failed or timed out)"
  else
    timeout 200 "$PY" "$PYBENCH" poll --url "$URL" | tee -a "$RESULTS" || echo "(failed or timed out)"
  fi
  admin GET /_admin/requests > "$OUT/poll_$client.json"
  POLL_FILES+=("$OUT/poll_$client.json")
done
stop_server

echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
"$PY" "$ROOT/bench/report.py" "$RESULTS" "${POLL_FILES[@]}" | tee "$OUT/table.md"

if [ "$CHAOS" = 1 ]; then
  cargo test --release --locked -p tinker-testkit --test chaos -- --ignored chaos --nocapture | tee "$OUT/chaos.txt"
fi
