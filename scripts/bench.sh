#!/usr/bin/env bash
# The load benchmark: etl against `psql \copy` of the same files, timed in one run, alternating,
# REPS times each; prints medians, rows/s, peak RSS and the ratios, and appends them to
# bench/results.tsv. Starts (and stops) the project's PostgreSQL and S3 server.
#   scripts/bench.sh [--assets N] [--trades N] [--reps N] [--first-load-only | --first-load-ratio [--bare]] [--with-pgloader] [--local [--zstd]]
# --bare (with --first-load-ratio): also times etl's first load without the spec's analytics
# (`--set analytics={}`: the six queries a run ends with, which `\copy` does not make).
# --first-load-only times just etl's first load (the memory check at a larger size).
# --first-load-ratio times etl's first load against `\copy` plain then keys (the first-load
# ratio at a larger size, with only the clean files generated and one schema at a time).
# --with-pgloader also times pgloader (installed from the distribution when missing) loading the
# same files into the same finished tables.
# --local: etl reads the generated files from the local disk (its `lake` connection a local
# directory) instead of the S3 server, and nothing is put there: for sizes whose three copies
# (generated, the S3 server's, etl's download) would not fit the disk.
# --zstd (with --local and --first-load-only): the generated trades compressed with zstd (the
# plain file removed), which etl decodes into its spool: at 100M trades the plain file, etl's
# copy of it and the table (~14 + 14 + 25 GB) would not fit this machine's disk.
set -euo pipefail
cd "$(dirname "$0")/.."
assets=100000 trades=1000000 reps=3 only_first=0 first_ratio=0 pgloader=0 local=0 zstd=0 bare=0
while [ $# -gt 0 ]; do
  case "$1" in
    --assets) assets=$2; shift 2 ;;
    --trades) trades=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --first-load-only) only_first=1; shift ;;
    --first-load-ratio) only_first=1; first_ratio=1; shift ;;
    --with-pgloader) pgloader=1; shift ;;
    --local) local=1; shift ;;
    --zstd) zstd=1; shift ;;
    --bare) bare=1; shift ;;
    *) echo "usage: $0 [--assets N] [--trades N] [--reps N] [--first-load-only | --first-load-ratio [--bare]] [--with-pgloader] [--local [--zstd]]" >&2; exit 2 ;;
  esac
done
if [ "$zstd" = 1 ] && { [ "$local" = 0 ] || [ "$only_first" = 0 ] || [ "$first_ratio" = 1 ]; }; then
  echo "bench: --zstd goes with --local and --first-load-only (\\copy reads the plain file)" >&2; exit 2
fi
trades_file=trades.csv
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/etl/target}"
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
[ "$zstd" = 0 ] || command -v zstd >/dev/null || { apt-get update -qq && apt-get install -y -qq zstd >/dev/null; }
[ "$pgloader" = 0 ] || command -v pgloader >/dev/null || { apt-get update -qq && apt-get install -y -qq pgloader >/dev/null; }
scripts/install-deps.sh >/dev/null
cargo build --release --locked --bin etl --bin etl-datagen >&2
ETL="$CARGO_TARGET_DIR/release/etl"
GEN="$CARGO_TARGET_DIR/release/etl-datagen"
scripts/services.sh start >/dev/null
trap 'scripts/services.sh stop >/dev/null' EXIT
eval "$(scripts/services.sh env)"

work=$(mktemp -d /var/tmp/etl-bench.XXXXXX)
export work
trap 'scripts/services.sh stop >/dev/null; rm -rf "$work"' EXIT
"$GEN" --out "$work/clean" --assets "$assets" --trades "$trades" --invalid-rate 0 --seed 1 >/dev/null
if [ "$zstd" = 1 ]; then
  zstd -q -T0 --rm "$work/clean/trades.csv" -o "$work/clean/trades.csv.zst"
  trades_file=trades.csv.zst
fi
[ "$only_first" = 1 ] || "$GEN" --out "$work/dirty" --assets "$assets" --trades "$trades" --invalid-rate 0.01 --seed 1 >/dev/null
# The clean trades with 1% of rows changed (traded_volume and traded_amount doubled): an upsert
# that must update 1% and skip the rest.
mkdir -p "$work/changed" "$work/dirty"
cp "$work/clean/account_assets.csv" "$work/changed/"
[ "$only_first" = 1 ] || awk -F, -v OFS=, 'NR > 1 && NR % 100 == 0 { split($9, a, "."); c = 2 * (a[1] * 100 + a[2]); $8 = $8 * 2; $9 = sprintf("%d.%02d", int(c / 100), c % 100) } { print }' \
  "$work/clean/trades.csv" > "$work/changed/trades.csv"

bucket=etl-bench
for d in clean dirty changed; do
  [ "$local" = 0 ] || break
  if [ -d "$work/$d" ]; then scripts/s3-put.py "$ETL_TEST_S3_ENDPOINT" "$bucket" "$work/$d" "$d" account_assets.csv trades.csv; fi
done

export PGPASSWORD=etlpass
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${ETL_PG_PORT:-15432}" -U etl etl_test)
reset_schema() { "${PSQL[@]}" -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $1 CASCADE; CREATE SCHEMA $1;"; }
# Each schema is dropped once its figures are taken: at 10M trades one holds ~3 GB, and four at
# once would not fit a small disk.
drop_schema() { "${PSQL[@]}" -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $1 CASCADE;"; }

# The tables etl creates for specs/small_etl.yaml, with the CSV's id as the key column so that
# \copy takes the files as they are.
tables() {
  cat <<SQL
SET search_path = $1;
CREATE TABLE asset (id BIGINT PRIMARY KEY, account_id VARCHAR(20) NOT NULL, account_type INTEGER NOT NULL,
  cash NUMERIC(20,2) NOT NULL, frozen_cash NUMERIC(20,2) NOT NULL, market_value NUMERIC(20,2) NOT NULL,
  total_asset NUMERIC(20,2) NOT NULL, updated_at TIMESTAMP NOT NULL);
CREATE TABLE trade (id BIGINT PRIMARY KEY, account_id VARCHAR(20) NOT NULL, account_type INTEGER NOT NULL,
  traded_id VARCHAR(50) NOT NULL, stock_code VARCHAR(10) NOT NULL, traded_time TIMESTAMP NOT NULL,
  traded_price NUMERIC(20,2) NOT NULL, traded_volume BIGINT NOT NULL, traded_amount NUMERIC(20,2) NOT NULL,
  strategy_name VARCHAR(50) NOT NULL, order_remark VARCHAR(100), direction INTEGER NOT NULL,
  offset_flag INTEGER NOT NULL, created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL);
SQL
}
keys() {
  cat <<SQL
SET search_path = $1;
ALTER TABLE asset ADD CONSTRAINT asset_account_id_key UNIQUE (account_id);
CREATE INDEX asset_account_type_idx ON asset (account_type);
ALTER TABLE trade ADD CONSTRAINT trade_traded_id_key UNIQUE (traded_id);
CREATE INDEX trade_account_id_idx ON trade (account_id);
CREATE INDEX trade_account_type_idx ON trade (account_type);
CREATE INDEX trade_stock_code_idx ON trade (stock_code);
ALTER TABLE trade ADD CONSTRAINT trade_account_id_fkey FOREIGN KEY (account_id) REFERENCES asset (account_id);
SQL
}
copy() {
  cat <<SQL
SET search_path = $1;
\\copy asset FROM '$work/clean/account_assets.csv' (FORMAT csv, HEADER true)
\\copy trade FROM '$work/clean/trades.csv' (FORMAT csv, HEADER true)
SQL
}

# pgloader's command file for SCHEMA: both files into the finished tables, in one run.
pgloader_load() {
  local url="postgresql://etl:etlpass@127.0.0.1:${ETL_PG_PORT:-15432}/etl_test"
  cat <<LOAD
LOAD CSV FROM '$work/clean/account_assets.csv'
     (id, account_id, account_type, cash, frozen_cash, market_value, total_asset, updated_at)
  INTO $url
  TARGET TABLE "$1"."asset"
  TARGET COLUMNS (id, account_id, account_type, cash, frozen_cash, market_value, total_asset, updated_at)
  WITH skip header = 1, fields optionally enclosed by '"', fields terminated by ',';
LOAD CSV FROM '$work/clean/trades.csv'
     (id, account_id, account_type, traded_id, stock_code, traded_time, traded_price, traded_volume,
      traded_amount, strategy_name, order_remark [null if blanks], direction, offset_flag, created_at, updated_at)
  INTO $url
  TARGET TABLE "$1"."trade"
  TARGET COLUMNS (id, account_id, account_type, traded_id, stock_code, traded_time, traded_price,
      traded_volume, traded_amount, strategy_name, order_remark, direction, offset_flag, created_at, updated_at)
  WITH skip header = 1, fields optionally enclosed by '"', fields terminated by ',';
LOAD
}

# The CPU seconds the PostgreSQL server has spent: its postmaster's own and its reaped children's
# (backends, parallel workers and autovacuum that have exited), plus its live children's.
pg_dir="${ETL_SERVICES_DIR:-/var/tmp/etl-services-$(id -u)}/pg"
server_cpu() {
  local pm ticks=0 c
  pm=$(head -n 1 "$pg_dir/postmaster.pid")
  ticks=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
  for c in $(pgrep -P "$pm"); do ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo 0))); done
  echo "$ticks $(getconf CLK_TCK)" | awk '{printf "%.2f", $1 / $2}'
}

# time_it NAME COMMAND...: runs it under /usr/bin/time, appends "NAME seconds rss_kb client_cpu
# server_cpu". The server's CPU is read a second before and after (an ended connection's backend
# is counted once the postmaster has reaped it), so it includes any autovacuum in that window.
time_it() {
  local name=$1; shift
  local t; t=$(mktemp)
  sleep 1
  local before; before=$(server_cpu)
  /usr/bin/time -f "%e %M %U %S" -o "$t" "$@" >/dev/null 2>"$work/last.err" || {
    local rc=$?
    # etl exits 4 when rows were rejected: that is the expected end of the dirty run.
    if [ "$rc" != 4 ]; then echo "bench: $name failed ($rc):" >&2; cat "$work/last.err" >&2; exit 1; fi
  }
  sleep 1
  local after; after=$(server_cpu)
  echo "$name $(tail -n 1 "$t" | awk -v s="$(echo "$before $after" | awk '{print $2 - $1}')" '{printf "%s %s %.2f %.2f", $1, $2, $3 + $4, s}')" >> "$work/times"
  rm -f "$t"
}

etl_run() { # SCHEMA PREFIX
  local lake=(--s3-endpoint "$ETL_TEST_S3_ENDPOINT" --s3-bucket "$bucket") at=$2
  # A local file named by --source is where the shell says: an absolute path.
  [ "$local" = 0 ] || { lake=(--set "connections.lake={type: local, path: '$work'}"); at="$work/$2"; }
  "$ETL" run specs/small_etl.yaml --output json \
    --set "connections.db={type: postgres, url: '$ETL_TEST_DATABASE_URL', schema: $1}" \
    "${lake[@]}" ${3:+--set "$3"} \
    --source "assets=$at/account_assets.csv" --source "trades=$at/$trades_file"
}
# Line indexes (for loading only changed records) in a cache of the benchmark's own.
export ETL_CACHE_DIR="$work/cache"
export -f etl_run; export ETL ETL_TEST_DATABASE_URL ETL_TEST_S3_ENDPOINT bucket local trades_file

: > "$work/times"
for rep in $(seq 1 "$reps"); do
  echo "bench: repetition $rep of $reps" >&2
  if [ "$first_ratio" = 1 ]; then
    reset_schema b_plain; tables b_plain | "${PSQL[@]}" >/dev/null
    time_it copy_then_keys bash -c "$(declare -f copy keys); { copy b_plain; keys b_plain; } | ${PSQL[*]}"
    drop_schema b_plain
  fi
  if [ "$only_first" = 1 ]; then
    reset_schema b_etl
    time_it etl_first bash -c "etl_run b_etl clean"
    drop_schema b_etl
    if [ "$bare" = 1 ]; then
      reset_schema b_etl
      time_it etl_first_bare bash -c "etl_run b_etl clean 'analytics={}'"
      drop_schema b_etl
    fi
    continue
  fi
  reset_schema b_copy; tables b_copy | "${PSQL[@]}" >/dev/null; keys b_copy | "${PSQL[@]}" >/dev/null
  time_it copy_finished bash -c "$(declare -f copy); copy b_copy | ${PSQL[*]}"
  drop_schema b_copy
  reset_schema b_plain; tables b_plain | "${PSQL[@]}" >/dev/null
  time_it copy_then_keys bash -c "$(declare -f copy keys); { copy b_plain; keys b_plain; } | ${PSQL[*]}"
  drop_schema b_plain
  if [ "$pgloader" = 1 ]; then
    reset_schema b_pgl; tables b_pgl | "${PSQL[@]}" >/dev/null; keys b_pgl | "${PSQL[@]}" >/dev/null
    pgloader_load b_pgl > "$work/pgl.load"
    time_it pgloader_finished pgloader --quiet --on-error-stop "$work/pgl.load"
    loaded=$("${PSQL[@]}" -At -c "SELECT (SELECT count(*) FROM b_pgl.asset) + (SELECT count(*) FROM b_pgl.trade)")
    [ "$loaded" = "$((assets + trades))" ] || { echo "bench: pgloader loaded $loaded rows, not $((assets + trades))" >&2; exit 1; }
    drop_schema b_pgl
  fi
  reset_schema b_etl
  time_it etl_first bash -c "etl_run b_etl clean"
  time_it etl_rerun bash -c "etl_run b_etl clean"
  time_it etl_changed bash -c "etl_run b_etl changed"
  drop_schema b_etl
  reset_schema b_dirty
  time_it etl_dirty bash -c "etl_run b_dirty dirty"
  drop_schema b_dirty
done

rows=$((assets + trades))
python3 - "$work/times" "$rows" "$assets" "$trades" "$reps" <<'PY' | tee -a /dev/stderr > "$work/summary"
import sys, statistics, collections, platform, os
times, rows, assets, trades, reps = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
runs = collections.defaultdict(list)
for line in open(times):
    name, secs, rss, client, server = line.split()
    runs[name].append((float(secs), int(rss), float(client), float(server)))
med = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
rss = {k: max(r[1] for r in v) for k, v in runs.items()}
client = {k: statistics.median(r[2] for r in v) for k, v in runs.items()}
server = {k: statistics.median(r[3] for r in v) for k, v in runs.items()}
print(f"{assets} assets + {trades} trades, {reps} repetitions, medians:")
for k in [k for k in ["copy_finished", "copy_then_keys", "pgloader_finished", "etl_first", "etl_first_bare", "etl_rerun", "etl_changed", "etl_dirty"] if k in med]:
    print(f"  {k:15} {med[k]:8.2f} s  {rows / med[k]:10.0f} rows/s  peak RSS {rss[k] / 1024:7.1f} MB  cpu: client {client[k]:6.2f} s, server {server[k]:6.2f} s")
if "copy_finished" not in med:
    if "copy_then_keys" in med:
        print("ratios:")
        print(f"  etl first load / \\copy plain then keys and FK   {med['etl_first'] / med['copy_then_keys']:.2f}  (target <= 1.1)")
        cpu = lambda k: client[k] + server[k]
        print(f"  CPU (client + server), the same                 {cpu('etl_first') / cpu('copy_then_keys'):.2f}")
        if "etl_first_bare" in med:
            print(f"  the same without the analytics (--bare)         {med['etl_first_bare'] / med['copy_then_keys']:.2f}")
    sys.exit(0)
print("ratios:")
print(f"  etl first load / \\copy into finished tables     {med['etl_first'] / med['copy_finished']:.2f}  (target <= 0.6)")
print(f"  etl first load / \\copy plain then keys and FK   {med['etl_first'] / med['copy_then_keys']:.2f}  (target <= 1.1)")
print(f"  CPU (client + server), the same                 {(client['etl_first'] + server['etl_first']) / (client['copy_then_keys'] + server['copy_then_keys']):.2f}")
print(f"  etl re-run unchanged / first load               {med['etl_rerun'] / med['etl_first']:.2f}  (target <= 0.05)")
print(f"  etl 1% changed / first load                     {med['etl_changed'] / med['etl_first']:.2f}  (target <= 0.15)")
if "pgloader_finished" in med:
    print(f"  etl first load / pgloader into finished tables  {med['etl_first'] / med['pgloader_finished']:.2f}")
PY
mkdir -p bench
{
  printf '%s\t%s\t%s\t%s\t' "$(date -u +%FT%TZ)" "$assets" "$trades" "$reps"
  awk '{ printf "%s=%s/%s/%s/%s ", $1, $2, $3, $4, $5 }' "$work/times"; echo
} >> bench/results.tsv
echo "bench: figures appended to bench/results.tsv" >&2
