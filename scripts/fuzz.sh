#!/usr/bin/env bash
# Runs a fuzz target for a while, outside CI: installs cargo-fuzz (on the nightly toolchain
# rustup has, or installs it), builds in a target directory of its own, and replays the target's
# corpus first. Record each long run in fuzz/RUNS.md.
#   scripts/fuzz.sh spec_load|csv_extract [SECONDS] [LIBFUZZER_FLAG...]     (default 600)
# e.g. `scripts/fuzz.sh csv_extract 1500 -detect_leaks=0`: DuckDB's task-scheduler threads keep
# thread-local settings past an input, which LeakSanitizer now and then reports as a leak of the
# first input replayed (DuckDB's, not etl's: see fuzz/RUNS.md).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
target="${1:?usage: scripts/fuzz.sh spec_load|csv_extract [SECONDS]}"
seconds="${2:-600}"
shift $(( $# < 2 ? $# : 2 ))
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.1
export CARGO_TARGET_DIR="${ETL_FUZZ_TARGET_DIR:-$HOME/.cache/etl/fuzz-target}"
features=()
# csv_extract reads with DuckDB: the engine is compiled in (a long first build).
[ "$target" = csv_extract ] && features=(--features engine)
exec cargo +nightly fuzz run "${features[@]}" "$target" "corpus/$target" -- -max_total_time="$seconds" "$@"
