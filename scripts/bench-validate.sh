#!/usr/bin/env bash
# Times `etl validate-spec specs/small_etl.yaml` (process start to exit, as a user sees it) over
# N runs and prints min, median, p95 and max in milliseconds; appends them to
# bench/validate-spec.tsv. ETL_BIN picks the binary (default: a release build).
#   scripts/bench-validate.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-50}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/etl/target}"
if [ -z "${ETL_BIN:-}" ]; then
  cargo build --release --locked --bin etl >&2
  ETL_BIN="$CARGO_TARGET_DIR/release/etl"
fi
"$ETL_BIN" validate-spec specs/small_etl.yaml >/dev/null   # warm the page cache
times=()
for _ in $(seq 1 "$n"); do
  start=$(date +%s%N)
  "$ETL_BIN" validate-spec specs/small_etl.yaml >/dev/null
  end=$(date +%s%N)
  times+=($(( (end - start) / 1000 )))
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
ms() { awk -v us="$1" 'BEGIN { printf "%.1f", us / 1000 }'; }
min=$(ms "${sorted[0]}")
median=$(ms "${sorted[$(( n / 2 ))]}")
p95=$(ms "${sorted[$(( n * 95 / 100 ))]}")
max=$(ms "${sorted[$(( n - 1 ))]}")
echo "validate-spec specs/small_etl.yaml, $n runs: min ${min} ms, median ${median} ms, p95 ${p95} ms, max ${max} ms ($ETL_BIN)"
mkdir -p bench
printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$(basename "$(dirname "$ETL_BIN")")" "$n" "$min" "$median" "$p95" "$max" >> bench/validate-spec.tsv
