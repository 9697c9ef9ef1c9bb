#!/usr/bin/env bash
# The file-set benchmark: one business date of TRADES trades split into PARTS gzip files on S3,
# loaded by specs/daily.yaml, against the same rows in one plain file (the parts decompressed and
# joined, one header), each a first load into an empty schema; timed in turn under /usr/bin/time
# (set, one, set, one, ..., after one warm-up pair; the ratio taken pair by pair), wall seconds, cpu
# seconds and peak RSS. Starts (and stops) the project's PostgreSQL and S3 server. Record the
# figures in BENCHMARKS.md.
#   scripts/bench-files.sh [--trades N] [--parts N] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
trades=1000000 parts=20 runs=5
while [ $# -gt 0 ]; do
  case "$1" in
    --trades) trades=$2; shift 2 ;;
    --parts) parts=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: $0 [--trades N] [--parts N] [--runs N]" >&2; exit 2 ;;
  esac
done
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/etl/target}"
scripts/install-deps.sh >/dev/null
cargo build --release --locked --bin etl --bin etl-datagen >&2
ETL="$CARGO_TARGET_DIR/release/etl"
GEN="$CARGO_TARGET_DIR/release/etl-datagen"
scripts/services.sh start >/dev/null
work=$(mktemp -d /var/tmp/etl-bench-files.XXXXXX)
trap 'scripts/services.sh stop >/dev/null; rm -rf "$work"' EXIT
eval "$(scripts/services.sh env)"

date=2025-12-22
"$GEN" --out "$work/set" --assets 100000 --trades "$trades" --invalid-rate 0 --seed 7 --days 1 --start "$date" \
  --files-per-day "$parts" --gzip >/dev/null
# The same rows in one plain file: the parts decompressed, in name order, one header.
mkdir -p "$work/one/trades/$date" "$work/one/assets"
cp "$work/set/assets/$date.csv.gz" "$work/one/assets/"
first=1
for f in "$work/set/trades/$date"/part-*.csv.gz; do
  if [ "$first" = 1 ]; then gzip -dc "$f"; first=0; else gzip -dc "$f" | tail -n +2; fi
done > "$work/one/trades/$date/all.csv"

bucket=etl-bench-files
for layout in set one; do
  scripts/s3-put.py "$ETL_TEST_S3_ENDPOINT" "$bucket" "$work/$layout" "$layout"
done

export PGPASSWORD=etlpass
port="${ETL_PG_PORT:-15432}"
s3="${ETL_TEST_S3_ENDPOINT#http://}"
# One first load: the schema emptied, then etl run (the ledger and records kept in the schema).
cat > "$work/load.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
layout=\$1 files=\$2
psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $port -U etl etl_test -c "DROP SCHEMA IF EXISTS bench_\$layout CASCADE; CREATE SCHEMA bench_\$layout;"
S3_ENDPOINT=$s3 S3_BUCKET=$bucket exec "$ETL" run specs/daily.yaml --date $date -q \\
  --set "connections.db={type: postgres, url: 'postgres://etl:etlpass@127.0.0.1:$port/etl_test?options=-c%20search_path%3Dbench_\$layout', schema: bench_\$layout}" \\
  --set "stages.assets.source.files=\$layout/assets/$date.csv*" --set "stages.trades.source.files=\$files"
SH
chmod +x "$work/load.sh"
# time_it NAME LAYOUT FILES: one load under /usr/bin/time, appends "NAME wall user sys rss_kb".
time_it() {
  local t; t=$(mktemp)
  /usr/bin/time -f "%e %U %S %M" -o "$t" "$work/load.sh" "$2" "$3" >/dev/null 2>"$work/last.err" || {
    echo "bench-files: the $1 load failed:" >&2; cat "$work/last.err" >&2; exit 1; }
  echo "$1 $(tail -n 1 "$t")" >> "$work/times"
  rm -f "$t"
}
echo "bench-files: $trades trades in $parts gzip files (set) against one plain file (one), $runs pairs" >&2
: > "$work/times"
for run in $(seq 0 "$runs"); do
  time_it set set "set/trades/$date/part-*.csv.gz"
  time_it one one "one/trades/$date/all.csv"
  # The first pair warms the page cache and the server: not counted.
  if [ "$run" = 0 ]; then : > "$work/times"; else echo "bench-files: pair $run of $runs done" >&2; fi
done
python3 - "$work/times" "$trades" "$parts" "$runs" <<'PY'
import sys, statistics
times, trades, parts, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = {"set": [], "one": []}
for line in open(times):
    name, wall, user, sys_, rss = line.split()
    rows[name].append((float(wall), float(user) + float(sys_), int(rss)))
def fig(name, i):
    v = [r[i] for r in rows[name]]
    return min(v), statistics.median(v), max(v)
print(f"{trades} trades: {parts} gzip files (set) against one plain file (one), {runs} pairs")
print("| | set (min / median / max) | one (min / median / max) | set / one, paired median |")
print("|---|---|---|---|")
for label, i, unit, scale in [("wall", 0, "s", 1), ("cpu", 1, "s", 1), ("peak RSS", 2, "MB", 1 / 1024)]:
    ratio = statistics.median(a[i] / b[i] for a, b in zip(rows["set"], rows["one"]))
    s = " / ".join(f"{x * scale:.2f}" for x in fig("set", i))
    o = " / ".join(f"{x * scale:.2f}" for x in fig("one", i))
    print(f"| {label} ({unit}) | {s} | {o} | {ratio:.3f} |")
PY
