#!/usr/bin/env bash
# Builds a realistic run folder (the layout `mpq report --run DIR` reads) with the CLI alone:
# LeNet-5 on mnist10k, `analyze --metric all`, every search method at 3 average weight bits
# (4/8-bit activations; HAQ under half the W8A8 BitFusion latency), each plan quantized with
# one fine-tuning epoch, then the report.
# Usage: bench/report/sample_run.sh RUN_DIR [MPQ_BINARY]
set -euo pipefail
DIR=${1:?usage: sample_run.sh RUN_DIR [MPQ_BINARY]}
MPQ=${2:-target/release/mpq}
DATA=${DATA:-mnist10k}
EPOCHS=${EPOCHS:-4}
HAQ_EPISODES=${HAQ_EPISODES:-40}
CW_EPISODES=${CW_EPISODES:-30}
mkdir -p "$DIR/plans" "$DIR/quantized"
M="$DIR/model.safetensors"
S="$DIR/sensitivity.json"
[ -f "$M" ] || "$MPQ" --quiet train --arch lenet5 --data "$DATA" --epochs "$EPOCHS" --out "$M"
"$MPQ" --quiet --json eval --model "$M" --data "$DATA" \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); json.dump({k: d[k] for k in ("accuracy","loss","samples")}, sys.stdout); print()' \
  > "$DIR/fp.json"
[ -f "$S" ] || "$MPQ" --quiet analyze --model "$M" --data "$DATA" --metric all --batches 2 --out "$S"
W8A8=$("$MPQ" --quiet --json hw --model "$M" --hardware bitfusion | python3 -c 'import json,sys; print(json.load(sys.stdin)["latency_ms"])')
LAT=$(python3 -c "print($W8A8 / 2)")
budget=(--sensitivity "$S" --avg-bits 3 --a-bits 4,8)
for m in uniform random hawq-v1 pareto ilp; do
  "$MPQ" --quiet search --model "$M" --method "$m" "${budget[@]}" --out "$DIR/plans/$m.json"
done
"$MPQ" --quiet search --model "$M" --method haq --data "$DATA" --hardware bitfusion \
  --max-latency-ms "$LAT" --episodes "$HAQ_EPISODES" --out "$DIR/plans/haq.json"
"$MPQ" --quiet search --model "$M" --method cw-hawq --sensitivity "$S" --avg-bits 3 \
  --data "$DATA" --episodes "$CW_EPISODES" --out "$DIR/plans/cw-hawq.json"
"$MPQ" --quiet search --model "$M" --method cw-ilp --sensitivity "$S" --avg-bits 3 \
  --out "$DIR/plans/cw-ilp.json"
for p in "$DIR"/plans/*.json; do
  m=$(basename "$p" .json)
  case "$m" in *.*) continue ;; esac  # pareto.frontier.json, haq.haq-state.json
  [ -f "$DIR/quantized/$m/summary.json" ] && continue
  "$MPQ" --quiet quantize --model "$M" --policy "$p" --data "$DATA" --finetune-epochs 1 \
    --out "$DIR/quantized/$m"
done
python3 - "$DIR" "$DATA" "$EPOCHS" "$LAT" "$("$MPQ" --version)" <<'PY'
import datetime, json, sys
d, data, epochs, lat, version = sys.argv[1:]
json.dump({"data": data, "arch": "lenet5", "seed": 0, "train_epochs": int(epochs),
           "budgets": {"avg_bits": 3, "a_bits": "4,8", "haq_max_latency_ms": float(lat),
                       "hardware": "bitfusion"},
           "finetune_epochs": 1, "fast": False, "mpq": version,
           "date": datetime.date.today().isoformat()},
          open(f"{d}/settings.json", "w"), indent=2)
PY
"$MPQ" report --run "$DIR" || true
