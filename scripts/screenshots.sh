#!/usr/bin/env bash
# Makes the README's screenshots: docs/report.png (`etl report` of five business dates of the
# generator's data loaded from the project's S3 server into its PostgreSQL) and docs/progress.png
# (a first load's progress bars on a 120-column terminal, replayed through pyte). Needs Chromium
# (scripts/install-deps.sh) and pyte (installed here from PyPI). Starts and stops the services.
#   scripts/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/etl/target}"
scripts/install-deps.sh >/dev/null
python3 -c 'import pyte' 2>/dev/null || python3 -m pip install --quiet pyte
cargo build --release --locked --bin etl --bin etl-datagen >&2
ETL="$CARGO_TARGET_DIR/release/etl"
GEN="$CARGO_TARGET_DIR/release/etl-datagen"
scripts/services.sh start >/dev/null
eval "$(scripts/services.sh env)"
work=$(mktemp -d /var/tmp/etl-shots.XXXXXX)
trap 'scripts/services.sh stop >/dev/null; rm -rf "$work"' EXIT
export PGPASSWORD=etlpass
psql -X -q -h 127.0.0.1 -p "${ETL_PG_PORT:-15432}" -U etl etl_test -c "DROP SCHEMA IF EXISTS shots CASCADE; CREATE SCHEMA shots;"
url="$ETL_TEST_DATABASE_URL?options=-c%20search_path%3Dshots"
db="connections.db={type: postgres, url: '$url', schema: shots}"
export S3_ENDPOINT="${ETL_TEST_S3_ENDPOINT#http://}" S3_BUCKET=etl-shots S3_ACCESS_KEY=minioadmin S3_SECRET_KEY=minioadmin123
# Five business dates: each day's files from the generator (another seed, a few more accounts and
# trades, about 1% invalid rows), uploaded over the same keys and loaded for that date.
for day in 1 2 3 4 5; do
  "$GEN" --out "$work/d$day" --assets $((20000 + day * 500)) --trades $((300000 + day * 20000)) --invalid-rate 0.01 --seed "$day" >/dev/null
  scripts/s3-put.py "$ETL_TEST_S3_ENDPOINT" etl-shots "$work/d$day" "" account_assets.csv trades.csv
  if [ "$day" = 5 ]; then
    # The last day on a terminal, recorded for the progress screenshot.
    script -qefc "stty cols 120 rows 24; '$ETL' run specs/small_etl.yaml --date 2026-12-0$day --set \"$db\"" "$work/progress.rec" >/dev/null || true
  else
    "$ETL" run specs/small_etl.yaml --date "2026-12-0$day" --set "$db" --quiet >/dev/null || true
  fi
done
mkdir -p docs
"$ETL" report specs/small_etl.yaml --set "$db" --out "$work/report.html"
shot() { # PAGE PNG WIDTH HEIGHT
  chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
    --user-data-dir="$work/chromium" --window-size="$3,$4" --screenshot="$2" "file://$1" 2>/dev/null
}
shot "$work/report.html" docs/report.png 1200 2300
scripts/term-shot.py "$work/progress.rec" 120 24 "$work/progress.html"
shot "$work/progress.html" docs/progress.png 1000 300
echo "screenshots: docs/report.png docs/progress.png" >&2
