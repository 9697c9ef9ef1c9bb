#!/usr/bin/env bash
# Mutation testing with cargo-mutants over the modules that carry a guarantee, outside CI (each
# mutant rebuilds the crate and runs the tests that guard it). Starts and stops the services.
#   scripts/mutants.sh [--list] [--iterate] [GROUP...]
#   scripts/mutants.sh --record [GROUP...]
#     groups: reuse table copy stage pg connect schedule queue secrets checks extract (default: all); `load` is
#             table copy stage pg connect: the PostgreSQL load's files, each with the tests that
#             reach it (the load's whole set of tests took ~9 minutes a mutant)
#     --iterate: test only the mutants a group's last run did not catch or find unviable (the
#                missed, timed-out and untested ones), keeping its earlier outcomes; those recorded
#                in tests/mutants/GROUP.txt count too, so a run on a new machine goes on from them;
#                so do those tests/mutants/GROUP.explained.txt lists (missed, and shown in
#                tests/MUTANTS.md equivalent or out of any test's reach: testing them again would
#                only miss them again)
#     --record:  write each group's caught and unviable mutants so far (its output directory's
#                lists) into tests/mutants/GROUP.txt, and its timeouts (a test left waiting: found,
#                but counted apart) into tests/mutants/GROUP.timeout.txt, to be committed: a
#                machine's outcomes go with it, the repository's stay. cargo-mutants matches a name
#                by file, line, column and mutation: each list names the tree its names are of
#                (`# tree: COMMIT`, HEAD when recorded) and is carried to the tree a run mutates
#                (scripts/mutants-remap.py), so only mutants on lines changed since are tested
#                again; --iterate skips both lists (a timeout costs minutes to find again).
# Results go to mutants.out/ under $ETL_MUTANTS_DIR (default ~/.cache/etl/mutants); record the
# counts and every missed mutant in tests/MUTANTS.md. Its services run on ports and in a directory
# of their own (PostgreSQL 25432, S3 29000/29001), so scripts/test.sh may run beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
list=0
record=0
iterate=()
groups=()
for a in "$@"; do
  case "$a" in
    --list) list=1 ;;
    --iterate) iterate=(--iterate) ;;
    --record) record=1 ;;
    *) groups+=("$a") ;;
  esac
done
[ ${#groups[@]} -gt 0 ] || groups=(reuse load schedule queue secrets checks extract)
expanded=()
for g in "${groups[@]}"; do
  if [ "$g" = load ]; then expanded+=(table copy stage pg connect); else expanded+=("$g"); fi
done
groups=("${expanded[@]}")
out="${ETL_MUTANTS_DIR:-$HOME/.cache/etl/mutants}"
mkdir -p "$out"
# The outcomes kept in the repository: every mutant a run caught or found unviable, by group.
recorded_of() { echo "tests/mutants/$1.txt"; }
timeouts_of() { echo "tests/mutants/$1.timeout.txt"; }
# Missed mutants tests/MUTANTS.md shows equivalent (or out of any test's reach, with why), kept
# by hand (`#` starts a comment line).
explained_of() { echo "tests/mutants/$1.explained.txt"; }
lists_of() {
  local d="$out/$1/mutants.out"
  cat "$d/caught.txt" "$d/previously_caught.txt" "$d/unviable.txt" 2>/dev/null || true
}
# A mutant is named by file, line and column, so a line added or removed above it renames it.
# Every list says the tree its names are of (the repository's lists a `# tree: COMMIT` line, a
# run's outcomes `$out/GROUP/base`: the tree it mutated), and is carried to the tree it is used on
# (scripts/mutants-remap.py: names on lines changed since are dropped, to be tested again).
tree_of() { sed -n 's/^# tree: //p' "$1" 2>/dev/null | head -1; }
# Names (stdin) of the tree $1 at their lines in the tree $2 (the working tree when left out).
carried() { grep -v '^#' | grep -v '^$' | python3 scripts/mutants-remap.py "$1" ${2:+"$2"}; }
# A repository list's names carried to the tree $2 (a list without a tree line is taken as
# HEAD's).
list_at() { [ -f "$1" ] || return 0; carried "$(tree_of "$1" | grep . || git rev-parse HEAD)" ${2:+"$2"} < "$1"; }
# The tree a group's last run mutated (HEAD for a run from before bases were kept).
base_of() { cat "$out/$1/base" 2>/dev/null || git rev-parse HEAD; }
# A run's outcomes carried to the tree $2.
run_at() { lists_of "$1" | carried "$(base_of "$1")" ${2:+"$2"}; }
# Every tree a group's names are of must be in the repository (a run's base is kept reachable
# by refs/mutants/GROUP): a name that cannot be carried is never dropped silently.
trees_present() {
  local t
  for t in $(base_of "$1") $(tree_of "$(recorded_of "$1")") $(tree_of "$(timeouts_of "$1")") $(tree_of "$(explained_of "$1")"); do
    git cat-file -e "$t^{commit}" 2>/dev/null || { echo "mutants: $1's names are of the tree $t, which this repository does not hold: fetch it, or set the list's '# tree:' line" >&2; exit 1; }
  done
}
if [ "$record" = 1 ]; then
  mkdir -p tests/mutants
  head=$(git rev-parse HEAD)
  for g in "${groups[@]}"; do
    trees_present "$g"
    f=$(recorded_of "$g")
    t=$(timeouts_of "$g")
    e=$(explained_of "$g")
    # Recorded as of HEAD: whatever the working tree holds, the names are HEAD's lines.
    { cat "$out/$g/mutants.out/timeout.txt" 2>/dev/null | carried "$(base_of "$g")" "$head"; list_at "$t" "$head"; } | LC_ALL=C sort -u > "$t.new" || true
    if [ -f "$e" ]; then
      { grep '^#' "$e" | grep -v '^# tree: '; echo "# tree: $head"; list_at "$e" "$head" | LC_ALL=C sort -u; } > "$e.new"
      mv "$e.new" "$e"
    fi
    # previously_caught.txt holds the timeouts and explained mutants an --iterate run skipped: they
    # stay apart.
    # (grep finding no line, a group without timeouts or explained mutants, is no failure)
    { cat "$t.new"; list_at "$e" "$head"; } | { grep -v '^$' || true; } | LC_ALL=C sort -u > "$t.apart"
    { echo "# tree: $head"; { run_at "$g" "$head"; list_at "$f" "$head"; } | LC_ALL=C sort -u | LC_ALL=C comm -23 - "$t.apart"; } > "$f.new" || true
    rm -f "$t.apart"
    mv "$f.new" "$f"
    if [ -s "$t.new" ]; then { echo "# tree: $head"; cat "$t.new"; } > "$t"; rm -f "$t.new"; else rm -f "$t.new"; fi
    echo "== $g: $(grep -vc '^#' "$f") caught or unviable recorded in $f, $(grep -v '^#' "$t" 2>/dev/null | wc -l) timeouts in $t (as of $head)"
  done
  exit 0
fi
# A target directory of its own: a run takes hours, and must not hold the one builds use. It is
# seeded with a copy of the dev build's (same profile, same dependencies), so DuckDB's C++ is not
# compiled a second time: only the crate itself is rebuilt for each mutant. Only a run seeds it
# (`--list` builds nothing), and only once no cargo holds the dev build's lock: a copy taken
# while a build was still going (a CI's, on a new machine) left the crates then being compiled,
# DuckDB's among them, to be compiled again.
export CARGO_TARGET_DIR="${ETL_MUTANTS_TARGET_DIR:-$HOME/.cache/etl/mutants-target}"
dev_target="${ETL_DEV_TARGET_DIR:-$HOME/.cache/etl/target}"
if [ "$list" = 0 ] && [ ! -d "$CARGO_TARGET_DIR/debug" ] && [ -d "$dev_target/debug" ]; then
  echo "mutants: seeding $CARGO_TARGET_DIR from $dev_target (the dependencies' builds), once no cargo uses it" >&2
  mkdir -p "$CARGO_TARGET_DIR"
  flock "$dev_target/debug/.cargo-lock" cp -a "$dev_target/debug" "$CARGO_TARGET_DIR/debug"
  rm -rf "$CARGO_TARGET_DIR/debug/incremental"
fi
command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants@25.3.1
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest@0.9.143
# `connect`: the connection helpers of exec/postgres/mod.rs alone, with the tests of connecting
# (a quicker part of `load`).
# Each group: the files mutated, and the tests that guard them.
files_of() {
  case "$1" in
    reuse) echo "src/exec/reuse/mod.rs src/exec/reuse/fingerprint.rs src/exec/incremental/mod.rs src/exec/incremental/scan.rs src/exec/incremental/index.rs" ;;
    table) echo "src/exec/postgres/table.rs" ;;
    copy) echo "src/exec/postgres/copy.rs" ;;
    stage) echo "src/exec/postgres/load.rs" ;;
    pg) echo "src/exec/postgres/mod.rs" ;;
    schedule) echo "src/schedule/runner.rs src/schedule/store.rs src/schedule/trigger.rs" ;;
    queue) echo "src/exec/queue.rs" ;;
    secrets) echo "src/spec/secret.rs" ;;
    checks) echo "src/spec/check/mod.rs src/spec/check/columns.rs src/spec/check/distribution.rs" ;;
    connect) echo "src/exec/postgres/mod.rs" ;;
    extract) echo "src/exec/extract.rs src/exec/stage.rs src/exec/layout.rs" ;;
    *) echo "unknown group $1" >&2; exit 2 ;;
  esac
}
# The unit and integration tests (name filters) that guard each group.
tests_of() {
  case "$1" in
    reuse) echo "exec:: unchanged:: fuzzed:: statements:: etags:: compression::a_gzip_object_on_s3 history::a_history_reading_only_its_changed_lines history::a_dropped_line history::a_vanished_key" ;;
    table) echo "run::a_created_table run::a_table_that_does_not_match run::each_column_type_is_checked unchanged::a_dropped_index unchanged::a_column_dropped statements:: history::a_history_equals citus::" ;;
    copy) echo "exec::postgres run::generated_data run::money_is_exact run::a_failure_in_the_middle faults::a_run_killed faults::a_session_cut rules::a_unique_value unchanged::loading_only" ;;
    stage) echo "run:: faults:: outcomes:: statements:: passes:: unchanged::loading_only unchanged::an_unchanged_stage unchanged::a_file_from_s3 unchanged::a_load_committed contracts::a_failed_contract contracts::a_changed_file rejects::a_replay history:: rules::a_unique_value workers::workers_and_the_run_share files::a_set_committed" ;;
    pg) echo "exec::postgres run::generated_data run::two_runs run::exit_codes faults:: outcomes::" ;;
    schedule) echo "schedule::" ;;
    queue) echo "workers:: files::a_set_committed faults::a_run_killed_in_the_middle schedule::a_schedule_with_workers" ;;
    secrets) echo "spec::secret:: secrets:: spec_cli::" ;;
    checks) echo "spec:: spec_cli:: bad_input::" ;;
    connect) echo "run::connections outcomes::connection outcomes::statement_timeout secrets:: faults::a_database_that_never faults::wrong" ;;
    extract) echo "exec:: passes:: fuzzed:: extract:: bad_input:: files::a_set run::generated_data unchanged::loading_only run::an_error_budget outcomes::a_column_failing_on_every_row outcomes::a_header_mismatch outcomes::a_repeated_unread_column history::a_snapshot_keeps_each_date" ;;
  esac
}
# Only the mutants of these functions (a regex over cargo-mutants' names), for a group that is a
# part of a file; and those left out of a group (another group has them).
re_of() {
  case "$1" in
    connect) echo "url_has_password|connect_options|connect_help|scrub" ;;
  esac
}
exclude_of() {
  case "$1" in
    pg) echo "url_has_password|connect_options|connect_help|scrub" ;;
  esac
}
export ETL_SERVICES_DIR="${ETL_MUTANTS_SERVICES_DIR:-/var/tmp/etl-mutants-services-$(id -u)}"
export ETL_PG_PORT=25432 ETL_S3_PORT=29000 ETL_S3_AUTH_PORT=29001 ETL_CITUS_PORT=25440
# The random edit series (unchanged::a_random_series...) runs 20 steps per mutant, not 200: its
# fixed edits are covered by the other unchanged:: tests, and 200 steps would dominate every mutant.
export ETL_DIFF_STEPS="${ETL_DIFF_STEPS:-20}"
# The test asks that a fifth of its steps read only the changed lines; the default seed's first
# 20 steps toggle the byte order mark and change the table often enough that none does (it
# passes at 200), so the short series runs from a seed whose first 20 steps take both paths.
export ETL_DIFF_SEED="${ETL_DIFF_SEED:-1}"
if [ "$list" = 0 ]; then
  scripts/services.sh start
  trap 'scripts/services.sh stop' EXIT
  eval "$(scripts/services.sh env)"
fi
for g in "${groups[@]}"; do
  args=()
  for f in $(files_of "$g"); do args+=(--file "$f"); done
  [ -z "$(re_of "$g")" ] || args+=(--re "$(re_of "$g")")
  [ -z "$(exclude_of "$g")" ] || args+=(--exclude-re "$(exclude_of "$g")")
  # --iterate also skips the mutants recorded in the repository, every list carried to the
  # working tree, which the run mutates (kept as the run's base: `git stash create` names the
  # working tree's tracked files as a commit; HEAD when it is clean). `--list` works in a
  # directory of its own: a run of the group may be going on in "$out/$g".
  dir="$out/$g"
  [ "$list" = 0 ] || dir="$out/$g.list"
  trees_present "$g"
  if [ ${#iterate[@]} -gt 0 ]; then
    mkdir -p "$dir/mutants.out"
    { run_at "$g"; for l in "$(recorded_of "$g")" "$(timeouts_of "$g")" "$(explained_of "$g")"; do list_at "$l"; done; } \
      | LC_ALL=C sort -u > "$dir/previously.tmp" || true
    # cargo-mutants --iterate skips what caught.txt, unviable.txt and previously_caught.txt name:
    # only the carried names, so a name left at its old line never skips another mutant.
    mv "$dir/previously.tmp" "$dir/mutants.out/previously_caught.txt"
    : > "$dir/mutants.out/caught.txt"
    : > "$dir/mutants.out/unviable.txt"
  fi
  if [ "$list" = 1 ]; then
    echo "== $g: $(cargo mutants --list "${args[@]}" "${iterate[@]}" --output "$dir" | wc -l) mutants${iterate:+ to test}"
    continue
  fi
  base=$(git stash create)
  base=${base:-$(git rev-parse HEAD)}
  git update-ref "refs/mutants/$g" "$base"
  echo "$base" > "$out/$g/base"
  # The library's unit tests and the integration tests, filtered to those that guard the group,
  # run by nextest: a process a test (.config/nextest.toml keeps the traced ones apart), and the
  # first failure ends the mutant's run, the tests still running killed (a caught mutant costs
  # the time to its first failing test, not the whole set's, nor a slow test's left to finish:
  # nextest kills each test's process group, the etl processes it started with it). A mutant
  # whose tests run past five times the unmutated ones' (at least 4 minutes) is a timeout: an
  # endless loop costs less than the fixed 10 minutes it did.
  # shellcheck disable=SC2046
  cargo mutants "${args[@]}" "${iterate[@]}" --output "$out/$g" --test-tool nextest \
    --timeout-multiplier 5 --minimum-test-timeout 240 --build-timeout 1800 \
    -- --max-fail 1:immediate --lib --test integration $(tests_of "$g") || true
  echo "== $g: $(cat "$out/$g/mutants.out/caught.txt" 2>/dev/null | wc -l) caught," \
    "$(cat "$out/$g/mutants.out/missed.txt" 2>/dev/null | wc -l) missed," \
    "$(cat "$out/$g/mutants.out/unviable.txt" 2>/dev/null | wc -l) unviable," \
    "$(cat "$out/$g/mutants.out/timeout.txt" 2>/dev/null | wc -l) timeout"
  # Kept in the repository's list (commit it); `--record` does the same for a run still going.
  bash scripts/mutants.sh --record "$g"
done
