#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, integration, cross-process).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
