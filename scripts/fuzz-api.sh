#!/usr/bin/env bash
# Fuzzes the public payment API against its own OpenAPI document, on a real `finpay up` cluster:
# schemathesis generates valid and invalid requests from GET /openapi.json and runs every check
# (no 5xx on bad input, statuses, headers and bodies as documented, invalid data refused, valid
# data accepted). Then the cluster is stopped with SIGINT and `finpay check` audits the money:
# whatever the fuzzer sent, nothing was debited twice or without a SAFE verdict.
#
# The relaxed checks, each with its reason, are in scripts/fuzz-api.toml. The admin routes
# (tag `admin`) live on the admin listener and are left out.
#
#   bash scripts/fuzz-api.sh                 # 100 cases per operation
#   FUZZ_MAX_EXAMPLES=500 bash scripts/fuzz-api.sh
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples="${FUZZ_MAX_EXAMPLES:-100}"
seed="${FUZZ_SEED:-7}"
start_bound_s=180

# Through the interpreter, not the `st` script: a fresh install's scripts may not be on PATH yet.
st=(python3 -m schemathesis.cli)
if ! python3 -c 'import schemathesis' >/dev/null 2>&1; then
  python3 -m pip install --quiet 'schemathesis>=4.30,<5'
fi
"${st[@]}" --version

cargo build -p finpay
finpay="$PWD/target/debug/finpay"

tmp="$(mktemp -d)"
data="$tmp/data"
up_pid=
cleanup() {
  if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
    kill -INT "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
  fi
  if [ -n "${FUZZ_KEEP:-}" ]; then echo "fuzz-api: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

"$finpay" up --data-dir "$data" --port 0 --seed "$seed" >"$tmp/up.log" 2>&1 </dev/null &
up_pid=$!

# Ready when the supervisor printed its `ready:` line and cluster.json says running and ready.
state() {
  python3 - "$data/cluster.json" <<'EOF'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit(1)
if s.get("phase") != "running" or not s.get("ready"):
    sys.exit(1)
print(s["payment_url"])
EOF
}
url=
for _ in $(seq 1 $((start_bound_s * 5))); do
  if ! kill -0 "$up_pid" 2>/dev/null; then
    echo "fuzz-api: finpay up exited before it was ready" >&2
    cat "$tmp/up.log" >&2
    exit 1
  fi
  if grep -q '^ready: ' "$tmp/up.log" && url="$(state)"; then
    break
  fi
  url=
  sleep 0.2
done
if [ -z "$url" ]; then
  echo "fuzz-api: cluster not ready within ${start_bound_s}s" >&2
  cat "$tmp/up.log" >&2
  exit 1
fi
echo "fuzz-api: payments at $url"

set +e
"${st[@]}" --config-file scripts/fuzz-api.toml run "$url/openapi.json" \
  --url "$url" \
  --checks all \
  --exclude-tag admin \
  --max-examples "$max_examples" \
  --seed "$seed" \
  --generation-database none \
  --workers 2 \
  --request-timeout 30 \
  --no-color 2>&1 | tee "$tmp/st.log"
status="${PIPESTATUS[0]}"
set -e
# schemathesis' own count: "N generated, N passed" or "N generated, M found K unique failures".
cases="$(grep -A1 '^Test cases:' "$tmp/st.log" | tail -n 1 | sed 's/^ *//')"
echo "fuzz-api: schemathesis exit $status; cases: ${cases:-unknown}"

kill -INT "$up_pid"
wait "$up_pid" || { echo "fuzz-api: finpay up did not stop cleanly" >&2; status=1; }
up_pid=

audit="$("$finpay" check --data-dir "$data" --json)" || true
echo "$audit"
if ! python3 -c 'import json,sys; sys.exit(0 if json.loads(sys.argv[1]).get("ok") is True else 1)' "$audit"; then
  echo "fuzz-api: finpay check did not report ok" >&2
  status=1
fi

if [ "$status" -ne 0 ]; then
  echo "fuzz-api: FAILED" >&2
  exit "$status"
fi
echo "fuzz-api: 0 failures; the audit is ok"
