#!/usr/bin/env bash
# Runs a fuzz target for a while, outside CI: installs cargo-fuzz (on the nightly toolchain
# rustup has, or installs it), builds in a target directory of its own, and replays the target's
# corpus first. Record each long run in fuzz/RUNS.md.
#   scripts/fuzz.sh spec_load|csv_extract [SECONDS]     (default 600)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
target="${1:?usage: scripts/fuzz.sh spec_load|csv_extract [SECONDS]}"
seconds="${2:-600}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.1
export CARGO_TARGET_DIR="${ETL_FUZZ_TARGET_DIR:-$HOME/.cache/etl/fuzz-target}"
features=()
# csv_extract reads with DuckDB: the engine is compiled in (a long first build).
[ "$target" = csv_extract ] && features=(--features engine)
exec cargo +nightly fuzz run "${features[@]}" "$target" "corpus/$target" -- -max_total_time="$seconds"
