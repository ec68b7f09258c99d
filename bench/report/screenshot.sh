#!/usr/bin/env bash
# Screenshots RUN_DIR/report.html with headless Chromium (Debian: `apt-get install chromium`).
# Renders the report first when it is missing. Not part of CI.
# Usage: bench/report/screenshot.sh RUN_DIR OUT.png [WIDTHxHEIGHT]
set -euo pipefail
RUN=${1:?usage: screenshot.sh RUN_DIR OUT.png [WIDTHxHEIGHT]}
OUT=${2:?usage: screenshot.sh RUN_DIR OUT.png [WIDTHxHEIGHT]}
SIZE=${3:-1400x5000}
MPQ=${MPQ:-target/release/mpq}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome)}
[ -f "$RUN/report.html" ] || "$MPQ" report --run "$RUN"
PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT
HTML=$(cd "$RUN" && pwd)/report.html
OUT_ABS=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$PROFILE" --window-size="${SIZE/x/,}" \
  --screenshot="$OUT_ABS" "file://$HTML" 2>/dev/null
ls -l "$OUT_ABS"
