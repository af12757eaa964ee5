#!/usr/bin/env bash
# Benchmark of finpay-resilience: the ResilientClient stack against a bare hyper-util client, and
# the fraud hop through FinPay's client against HAProxy as a retrying proxy and against
# tower-resilience 0.13 (two orderings, B and B2; see crates/resilience/examples/bench/peer.rs),
# ending with a side-by-side table of FinPay and tower-resilience and the targets met or not.
# Not part of the test suite. Writes a markdown report to stdout; progress goes to stderr.
#
#   scripts/bench-resilience.sh                      # defaults: concurrency 32, 5 rounds of 5 s
#   scripts/bench-resilience.sh --rounds 3 --scenario errors
#   scripts/bench-resilience.sh --breakdown          # also where the stack's overhead goes
#
# Arguments are passed to the bench binary (crates/resilience/examples/bench/); `--help` lists
# them. Installs the Debian package `haproxy` when it is missing (needs root and apt-get).
# Everything listens on 127.0.0.1; the bench starts HAProxy itself from a temporary config and
# kills it when each scenario ends.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v haproxy >/dev/null 2>&1; then
    echo "haproxy not found: installing the Debian package" >&2
    apt-get update >&2
    apt-get install -y haproxy >&2
fi

cargo build --release -p finpay-resilience --example bench >&2

target_dir="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bin="${target_dir:-target}/release/examples/bench"

echo "<!-- $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start, $(haproxy -v | head -n 1) -->"
echo "<!-- command: scripts/bench-resilience.sh $* -->"
echo
# The bench bounds itself (every run is bounded in calls and time); the timeout is a backstop.
timeout 3600 "$bin" --haproxy "$(command -v haproxy)" "$@"
echo
echo "<!-- load average $(cut -d' ' -f1-3 /proc/loadavg) at the end -->"
