#!/usr/bin/env bash
# The history benchmark: specs/small_etl_history.yaml's assets stage (mode: history) loading day 2
# of N accounts with 1% of them changed, against the first load of day 1 into an empty schema;
# timed in one run, alternating, RUNS times; prints medians, peak RSS and the paired ratio, and
# appends them to bench/results.tsv. Starts (and stops) the project's PostgreSQL and S3 server.
#   scripts/bench-history.sh [--accounts N] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
accounts=100000 runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --accounts) accounts=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: $0 [--accounts N] [--runs N]" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/etl/target}"
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
scripts/install-deps.sh >/dev/null
cargo build --release --locked --bin etl --bin etl-datagen >&2
ETL="$CARGO_TARGET_DIR/release/etl"
GEN="$CARGO_TARGET_DIR/release/etl-datagen"
scripts/services.sh start >/dev/null
eval "$(scripts/services.sh env)"
work=$(mktemp -d /var/tmp/etl-bench-history.XXXXXX)
trap 'scripts/services.sh stop >/dev/null; rm -rf "$work"' EXIT

# Day 1: the generator's accounts; day 2: every hundredth account's cash (and so its total) up
# by 1.00, the other 99% as they were.
"$GEN" --out "$work/day1" --assets "$accounts" --trades 1 --invalid-rate 0 --seed 1 >/dev/null
mkdir -p "$work/day2"
awk -F, -v OFS=, 'NR > 1 && NR % 100 == 0 { $4 = sprintf("%.2f", $4 + 1); $7 = sprintf("%.2f", $7 + 1) } { print }' \
  "$work/day1/account_assets.csv" > "$work/day2/account_assets.csv"
bucket=etl-bench
for d in day1 day2; do scripts/s3-put.py "$ETL_TEST_S3_ENDPOINT" "$bucket" "$work/$d" "$d" account_assets.csv; done

export PGPASSWORD=etlpass
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${ETL_PG_PORT:-15432}" -U etl etl_test)

# load DAY DATE: the command loading that day's file for that business date (an array, for
# /usr/bin/time to run: it cannot run a shell function).
load() {
  cmd=("$ETL" run specs/small_etl_history.yaml --stage assets --date "$2" --output json
    --set "connections.db={type: postgres, url: '$ETL_TEST_DATABASE_URL', schema: b_history}"
    --s3-endpoint "$ETL_TEST_S3_ENDPOINT" --s3-bucket "$bucket" --source "assets=$1/account_assets.csv")
}
# time_it NAME COMMAND...: runs it under /usr/bin/time, appends "NAME seconds rss_kb".
time_it() {
  local name=$1; shift
  local t; t=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$t" "$@" > "$work/last.out" 2> "$work/last.err" || {
    echo "bench: $name failed ($?):" >&2; cat "$work/last.err" >&2; exit 1
  }
  echo "$name $(tail -n 1 "$t")" >> "$work/times"
  rm -f "$t"
}

: > "$work/times"
for run in $(seq 1 "$runs"); do
  echo "bench: run $run of $runs" >&2
  "${PSQL[@]}" -c "DROP SCHEMA IF EXISTS b_history CASCADE; CREATE SCHEMA b_history;"
  load day1 2025-12-19; time_it history_day1 "${cmd[@]}"
  load day2 2025-12-22; time_it history_day2 "${cmd[@]}"
  # Every hundredth account got a version from day 2; the others kept their one version.
  opened=$("${PSQL[@]}" -At -c "SELECT count(*) FROM b_history.asset_history WHERE valid_from = '2025-12-22'")
  expected=$(( accounts / 100 ))
  [ "$opened" = "$expected" ] || { echo "bench: day 2 opened $opened versions, expected $expected" >&2; exit 1; }
done

python3 - "$work/times" "$accounts" "$runs" <<'PY' | tee -a /dev/stderr > "$work/summary"
import sys, statistics, collections
times, accounts, runs = sys.argv[1], sys.argv[2], sys.argv[3]
runs_of = collections.defaultdict(list)
for line in open(times):
    name, secs, rss = line.split()
    runs_of[name].append((float(secs), int(rss)))
first, second = runs_of["history_day1"], runs_of["history_day2"]
ratios = [b[0] / a[0] for a, b in zip(first, second)]
print(f"{accounts} accounts, {runs} runs, medians:")
for name, v in [("history_day1", first), ("history_day2", second)]:
    print(f"  {name:13} {statistics.median(s for s, _ in v):7.2f} s  peak RSS {max(r for _, r in v) / 1024:7.1f} MB")
print(f"ratio day 2 (1% changed) / day 1 first load, paired median: {statistics.median(ratios):.2f}  (target <= 0.3; each: {' '.join(f'{r:.2f}' for r in ratios)})")
PY
mkdir -p bench
{
  printf '%s\thistory\t%s\t%s\t' "$(date -u +%FT%TZ)" "$accounts" "$runs"
  awk '{ printf "%s=%s/%s ", $1, $2, $3 }' "$work/times"; echo
} >> bench/results.tsv
echo "bench: figures appended to bench/results.tsv" >&2
