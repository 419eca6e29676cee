#!/usr/bin/env bash
# Every check CI runs, in order: tools, format, lint, tests, a fuzz smoke run.
# Installs what it needs (as root on Debian: apt packages; cargo tools from crates.io).
#   FUZZ_SECONDS=N  seconds per fuzz target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==== %s\n' "$*"; }

step "tools"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked

step "format"
cargo fmt --all -- --check

step "lint (clippy -D warnings; core's sans-IO bans are in core/clippy.toml)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo test --workspace --locked --doc
cargo nextest run --workspace --locked --no-fail-fast

fuzz_seconds=${FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" != 0 ]; then
  step "fuzz smoke (${fuzz_seconds}s per target)"
  if rustup toolchain list | grep -q '^nightly'; then
    scripts/fuzz.sh "$fuzz_seconds"
  else
    echo "no nightly toolchain on this machine: fuzz smoke skipped (run scripts/fuzz.sh where one is)"
  fi
fi
