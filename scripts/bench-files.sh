#!/usr/bin/env bash
# The file-set benchmark: one business date of TRADES trades split into PARTS gzip files on S3,
# loaded by specs/daily.yaml, against the same rows in one plain file (the parts decompressed and
# joined, one header), each a first load into an empty schema; timed in turn by farm-bench (pairs
# A B A B ..., the ratio taken pair by pair), with peak RSS. Starts (and stops) the project's
# PostgreSQL and S3 server. Record the figures in BENCHMARKS.md.
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
command -v farm-bench >/dev/null || { echo "bench-files: farm-bench is not on PATH" >&2; exit 2; }
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
echo "== $trades trades in $parts gzip files (A) against one plain file (B), $runs pairs" >&2
farm-bench -n "$runs" --warmup 1 --timeout 3600 --vs "$work/load.sh one one/trades/$date/all.csv" -- "$work/load.sh" set "set/trades/$date/part-*.csv.gz"
