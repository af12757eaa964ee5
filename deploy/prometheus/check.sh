#!/usr/bin/env bash
# deploy/prometheus/check.sh: what CI checks of the alert rules and the Grafana dashboard (run by
# .ci/run after the test suite).
#
#   1. `promtool check rules deploy/prometheus/alerts.yml`;
#   2. `promtool test rules deploy/prometheus/alerts_test.yml`;
#   3. every alert of alerts.yml has a test case that fires and one that stays quiet;
#   4. deploy/grafana/finpay.json parses as JSON.
#
# That the rules and the dashboard name only metrics the services export is checked against their
# real /metrics by crates/finpay/tests/metrics.rs (in the test suite).
#
# promtool comes from Debian's `prometheus` package (.ci/run installs it). Without it this script
# fails under CI=true and prints a note and skips elsewhere.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf 'prometheus/check.sh: %s\n' "$*" >&2; }

RULES=deploy/prometheus/alerts.yml
TESTS=deploy/prometheus/alerts_test.yml
DASHBOARD=deploy/grafana/finpay.json

python3 -m json.tool "$DASHBOARD" >/dev/null || { say "$DASHBOARD is not valid JSON"; exit 1; }
say "ok $DASHBOARD parses"

if ! command -v promtool >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    say "promtool is missing (Debian package prometheus); .ci/run installs it"
    exit 1
  fi
  say "note: promtool not found, rules not checked (apt-get install --no-install-recommends prometheus)"
  exit 0
fi

promtool check rules "$RULES"
promtool test rules "$TESTS"

# Which alerts the tests see fire (a non-empty exp_alerts) and stay quiet (exp_alerts: []).
cases=$(awk '
  /^[[:space:]]*alertname:/ { name = $2 }
  /^[[:space:]]*exp_alerts:/ { print name, ($2 == "[]" ? "quiet" : "fires") }
' "$TESTS")
missing=0
for alert in $(sed -n 's/^[[:space:]]*- alert:[[:space:]]*\([A-Za-z0-9_]*\).*/\1/p' "$RULES"); do
  for kind in fires quiet; do
    if ! grep -qx "$alert $kind" <<<"$cases"; then
      say "$alert has no test case where it $([ "$kind" = fires ] && echo fires || echo stays quiet)"
      missing=$((missing + 1))
    fi
  done
done
[ "$missing" -eq 0 ] || exit 1
say "ok $RULES: promtool check rules; promtool test rules; every alert has a firing and a quiet case"
