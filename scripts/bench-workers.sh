#!/usr/bin/env bash
# The workers benchmark: one business date of TRADES trades in PARTS gzip files on S3, loaded by
# specs/daily.yaml with its trade parts committed file by file (`--env workers`), each a first
# load into an empty schema: `etl run` alone, then `etl run --distribute` beside 1, 2 and 4
# `etl worker`s; into the project's PostgreSQL, and with --citus into the loopback Citus cluster
# (`asset` a reference table, `trade` distributed by traded_id). Each count REPS times, in turn;
# wall seconds of the run (the workers start before it and exit once idle), medians. Starts (and
# stops) the services. Record the figures in BENCHMARKS.md. --shards N gives the distributed
# table N shards (Citus's default is 32; a file's merge costs in proportion to them).
#   scripts/bench-workers.sh [--trades N] [--parts N] [--reps N] [--citus [--shards N]]
set -euo pipefail
cd "$(dirname "$0")/.."
trades=2000000 parts=20 reps=3 citus=0 shards=
while [ $# -gt 0 ]; do
  case "$1" in
    --trades) trades=$2; shift 2 ;;
    --parts) parts=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --citus) citus=1; shift ;;
    --shards) shards=", shard_count: $2"; shift 2 ;;
    *) echo "usage: $0 [--trades N] [--parts N] [--reps N] [--citus [--shards N]]" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/etl/target}"
scripts/install-deps.sh >/dev/null
cargo build --release --locked --bin etl --bin etl-datagen >&2
ETL="$CARGO_TARGET_DIR/release/etl"
GEN="$CARGO_TARGET_DIR/release/etl-datagen"
scripts/services.sh start >/dev/null
work=$(mktemp -d /var/tmp/etl-bench-workers.XXXXXX)
trap 'pkill -f "etl worker specs/daily.yaml" 2>/dev/null || true; scripts/services.sh stop >/dev/null; rm -rf "$work"' EXIT
eval "$(scripts/services.sh env)"
if [ "$citus" = 1 ]; then
  [ -n "${ETL_TEST_CITUS_URL:-}" ] || { echo "bench-workers: no Citus cluster (scripts/citus.sh found no Citus source)" >&2; exit 3; }
  base="$ETL_TEST_CITUS_URL"
  spread=(--set "stages.assets.target.distribution=reference" --set "stages.trades.target.distribution={column: traded_id$shards}")
else
  base="$ETL_TEST_DATABASE_URL"
  spread=()
fi

date=2025-12-22
"$GEN" --out "$work/set" --assets 100000 --trades "$trades" --invalid-rate 0 --seed 7 --days 1 --start "$date" \
  --files-per-day "$parts" --gzip >/dev/null
bucket=etl-bench-workers
scripts/s3-put.py "$ETL_TEST_S3_ENDPOINT" "$bucket" "$work/set" set
s3="${ETL_TEST_S3_ENDPOINT#http://}"
url="$base?options=-c%20search_path%3Dbench_workers"
flags=(--env workers --date "$date" -q
  --set "connections.db={type: postgres, url: '$url', schema: bench_workers}"
  --set "stages.assets.source.files=set/assets/$date.csv*" --set "stages.trades.source.files=set/trades/$date/part-*.csv.gz"
  "${spread[@]}")
export S3_ENDPOINT="$s3" S3_BUCKET="$bucket"

# load N: an emptied schema, N workers started, then the timed run; "N wall" appended.
load() {
  local n=$1
  psql -X -q "$base" -c "DROP SCHEMA IF EXISTS bench_workers CASCADE; CREATE SCHEMA bench_workers;"
  local pids=()
  for i in $(seq 1 "$n"); do
    "$ETL" worker specs/daily.yaml --id "w$i" --poll 100ms --exit-when-idle 5s "${flags[@]}" >"$work/worker-$i.log" 2>&1 &
    pids+=($!)
  done
  local distribute=()
  [ "$n" = 0 ] || distribute=(--distribute)
  local start end
  start=$(date +%s.%N)
  "$ETL" run specs/daily.yaml "${flags[@]}" "${distribute[@]}" >/dev/null 2>"$work/run.err" || { echo "bench-workers: the run with $n worker(s) failed:" >&2; cat "$work/run.err" >&2; exit 1; }
  end=$(date +%s.%N)
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  loaded=$(psql -X -At "$base" -c "SELECT count(*) FROM bench_workers.trade")
  [ "$loaded" = "$trades" ] || { echo "bench-workers: $loaded trades loaded, not $trades" >&2; exit 1; }
  echo "$n $(echo "$end - $start" | bc)" >> "$work/times"
}
where=$([ "$citus" = 1 ] && echo "the loopback Citus cluster" || echo "PostgreSQL")
echo "bench-workers: $trades trades in $parts gzip files into $where; the run alone, then beside 1, 2, 4 workers; $reps each" >&2
: > "$work/times"
load 0 && : > "$work/times"   # a warm-up, not counted
for rep in $(seq 1 "$reps"); do
  for n in 0 1 2 4; do load "$n"; done
  echo "bench-workers: repetition $rep of $reps done" >&2
done
python3 - "$work/times" "$trades" "$parts" "$where" <<'PY'
import sys, statistics, collections
times, trades, parts, where = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
runs = collections.defaultdict(list)
for line in open(times):
    n, wall = line.split()
    runs[int(n)].append(float(wall))
alone = statistics.median(runs[0])
print(f"{trades} trades in {parts} gzip files into {where}, medians of {len(runs[0])}:")
for n in sorted(runs):
    m = statistics.median(runs[n])
    who = "the run alone" if n == 0 else f"the run + {n} worker(s)"
    print(f"  {who:24} {m:7.2f} s  {trades / m:9.0f} trades/s  {m / alone:5.2f} of the run alone")
PY
