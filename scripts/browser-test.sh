#!/usr/bin/env bash
# The live dashboard in a real browser: Playwright (PyPI) driving Debian's chromium, headless,
# against a `finpay up` of its own (scripts/browser-test.py says what it checks). Installs what it
# needs when missing. Then `finpay check` on the stopped cluster.
#
#   bash scripts/browser-test.sh [SCREENSHOT]   # default: a temporary file; docs/dashboard.png to refresh the README's
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'browser-test.sh: %s\n' "$*" >&2; }

if [ ! -x /usr/bin/chromium ]; then
  say "installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi
if ! python3 -c 'import playwright' 2>/dev/null; then
  say "installing playwright from PyPI"
  python3 -m pip install -q playwright
fi

cargo build -q -p finpay
bin="$PWD/target/debug/finpay"
work=$(mktemp -d)
shot="${1:-$work/dashboard.png}"
"$bin" up --port 0 --data-dir "$work/data" >"$work/up.log" 2>&1 &
up=$!
stop() {
  kill -INT "$up" 2>/dev/null || true
  wait "$up" 2>/dev/null || true
}
trap 'stop; rm -rf "$work"' EXIT

for _ in $(seq 1 240); do
  grep -q '^ready' "$work/up.log" && break
  kill -0 "$up" 2>/dev/null || { cat "$work/up.log" >&2; exit 1; }
  sleep 0.5
done
grep -q '^ready' "$work/up.log" || { say "finpay up not ready in 120 s"; cat "$work/up.log" >&2; exit 1; }

python3 scripts/browser-test.py "$work/data" "$bin" "$shot"
stop
"$bin" check --data-dir "$work/data"
say "ok"
