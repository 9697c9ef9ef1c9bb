#!/usr/bin/env bash
# The test command: starts PostgreSQL, the S3 server and, where Citus can be built, a Citus cluster
# on loopback, runs every test against them, and stops them again (even when a test fails). Extra
# arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/etl/target}"
# Golden files are rewritten only with UPDATE_GOLDEN=1, and never under CI.
case "${UPDATE_GOLDEN-unset}" in
  unset) ;;
  1) [ -z "${CI:-}" ] || { echo "test.sh: UPDATE_GOLDEN=1 is refused under CI (CI is set)" >&2; exit 2; } ;;
  *) echo "test.sh: UPDATE_GOLDEN=$UPDATE_GOLDEN: set it to 1 to rewrite the golden files, or unset it" >&2; exit 2 ;;
esac
scripts/install-deps.sh
# Citus, for the tests on a distributed cluster: built and installed once per machine. Without its
# source (exit 3: a user's clone has no ../shared) the cluster is not started and those tests skip.
scripts/citus.sh || [ $? = 3 ]
scripts/services.sh start
trap 'scripts/services.sh stop' EXIT
eval "$(scripts/services.sh env)"
cargo test --locked "$@"
