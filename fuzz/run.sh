#!/usr/bin/env bash
# Runs every cargo-fuzz target of mpq for SECONDS each (default 60), one job, under
# `nice -n 19`, with libFuzzer's memory limits; the corpus grows in fuzz/corpus/<target>
# from the checked-in seeds in fuzz/seeds/<target>. Exits non-zero if any target crashes
# (panic, abort, timeout, out-of-memory); the crashing input lands in fuzz/artifacts/<target>.
#
#   fuzz/run.sh            # the 60-second smoke run
#   fuzz/run.sh 600        # ten minutes per target
#   TARGETS="onnx idx" fuzz/run.sh 120
set -u
cd "$(dirname "$0")"
SECONDS_EACH="${1:-60}"
TARGETS="${TARGETS:-safetensors packed onnx idx hardware policy sensitivity}"
mkdir -p logs
cargo +nightly fuzz build --release --debug-assertions || exit 2
failed=""
printf '%-12s %12s %8s %8s %8s\n' target executions crashes corpus seconds
for t in $TARGETS; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="logs/$t.log"
    start=$(date +%s)
    nice -n 19 cargo +nightly fuzz run --release --debug-assertions "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=1024 -malloc_limit_mb=1024 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1
    rc=$?
    end=$(date +%s)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    crashes=0
    if [ "$rc" -ne 0 ]; then
        crashes=1
        failed="$failed $t"
    fi
    printf '%-12s %12s %8s %8s %8s\n' "$t" "${execs:-?}" "$crashes" "$corpus" "$((end - start))"
done
if [ -n "$failed" ]; then
    echo "crashed:$failed (see fuzz/logs/<target>.log and fuzz/artifacts/<target>/)" >&2
    exit 1
fi
