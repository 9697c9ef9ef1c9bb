#!/usr/bin/env bash
# The test command: starts PostgreSQL and the S3 server on loopback, runs every test against
# them, and stops them again (even when a test fails). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/etl/target}"
scripts/install-deps.sh
scripts/services.sh start
trap 'scripts/services.sh stop' EXIT
eval "$(scripts/services.sh env)"
cargo test --locked "$@"
