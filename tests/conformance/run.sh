#!/usr/bin/env bash
# Conformance: the official Python SDK (tinker==0.38.0, a client nobody here wrote) drives a full
# flow against the local Tinker server, with default flags and then with the JWT, zstd,
# retrieve_futures and join_sampling_session flags on. Any SDK exception fails the run. Finally
# the default-flags traffic is compared with the reference capture (see compare_traffic.py for
# exactly what is compared).
#
# Needs python3 with venv; the venv lives in target/conformance-venv and is reused.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
VENV="$ROOT/target/conformance-venv"
OUT="$ROOT/target/conformance"
REFERENCE="${TINKER_REFERENCE_CAPTURE:-$ROOT/../shared/spec/captures/cap038_basic.jsonl}"
mkdir -p "$OUT"

if ! "$VENV/bin/python" -c 'import tinker, sys; sys.exit(tinker.__version__ != "0.38.0")' 2>/dev/null; then
  echo "creating $VENV with tinker==0.38.0"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check tinker==0.38.0
fi

cargo build --quiet -p tinker-testkit --bin tinker-local-server
BIN="$ROOT/target/debug/tinker-local-server"

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT

# run_flow NAME CONFIG_JSON: start a server with that config, run the SDK flow against it.
run_flow() {
  local name=$1 config=$2
  echo "$config" > "$OUT/$name.config.json"
  rm -f "$OUT/$name.jsonl" "$OUT/$name.url"
  "$BIN" --port 0 --seed 7 --config "$OUT/$name.config.json" --record "$OUT/$name.jsonl" \
    > "$OUT/$name.url" 2> "$OUT/$name.server.log" &
  SERVER_PID=$!
  local url=""
  for _ in $(seq 1 100); do
    url=$(head -n1 "$OUT/$name.url" 2>/dev/null || true)
    [ -n "$url" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$OUT/$name.server.log"; echo "server died"; exit 1; }
    sleep 0.1
  done
  [ -n "$url" ] || { echo "server did not print its URL"; exit 1; }
  echo "=== conformance run '$name' against $url ==="
  local status=0
  TINKER_BASE_URL="$url" TINKER_API_KEY="tml-conformance-key" TINKER_TELEMETRY=1 \
    PYTHONWARNINGS="ignore::FutureWarning" \
    timeout 300 "$VENV/bin/python" "$ROOT/tests/conformance/official_sdk_flow.py" \
    > "$OUT/$name.client.txt" 2>&1 || status=$?
  cat "$OUT/$name.client.txt"
  stop_server
  if [ "$status" -ne 0 ]; then
    echo "conformance run '$name' FAILED (exit $status); server log: $OUT/$name.server.log"
    exit 1
  fi
}

run_flow default '{}'
run_flow flags '{"client_config": {"pjwt_auth_enabled": true, "proto_compress_fwdbwd": true,
  "sample_use_retrieve_futures": true, "sample_join_sampling_session": true}}'
run_flow slow_polls '{"try_again_polls": 1, "metadata_only_threshold": 64, "long_poll_hold_ms": 200}'

echo "=== flags run: did the flags take effect? ==="
"$VENV/bin/python" "$ROOT/tests/conformance/compare_traffic.py" --expect-flags "$OUT/flags.jsonl"

echo "=== default run vs the reference capture $(basename "$REFERENCE") ==="
if [ -f "$REFERENCE" ]; then
  "$VENV/bin/python" "$ROOT/tests/conformance/compare_traffic.py" "$OUT/default.jsonl" "$REFERENCE"
else
  echo "reference capture not found at $REFERENCE"
  exit 1
fi
echo "conformance: OK"
