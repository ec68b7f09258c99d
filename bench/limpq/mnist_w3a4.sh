#!/usr/bin/env bash
# LIMPQ (Tang et al., ECCV 2022) on the bundled mnist10k, issue 9 acceptance run: indicator
# training (2 epochs), the LIMPQ plan at the BitOps of uniform W3A4 (first and last layer at
# 8 bits in both), and the same LSQ fine-tuning of both plans, on the test split.
#
#   bench/limpq/mnist_w3a4.sh [WORKDIR] [EXTRA ANALYZE FLAGS...]
#
# ARCH=resnet8 EPOCHS=16 runs the same on ResNet-8 (the model is trained into WORKDIR unless
# WORKDIR/ARCH.safetensors exists). LIMPQ_EPOCHS (2), FT_EPOCHS (2), FT_LR (0.01, mpq
# quantize's default; ResNet-8's folded-BN LSQ fine-tuning diverges there, use 0.001) and SEED
# (0) are environment knobs. Needs target/release/mpq (cargo build --release). Prints a table; every
# JSON stays in WORKDIR.
set -euo pipefail
DIR=${1:-runs/limpq-lenet}
shift $(( $# > 1 ? 1 : $# ))
. "$(dirname "$0")/../workdir.sh"
LIMPQ_EPOCHS=${LIMPQ_EPOCHS:-2}
FT_EPOCHS=${FT_EPOCHS:-2}
FT_LR=${FT_LR:-0.01}
SEED=${SEED:-0}
if [ ! -f "$MODEL" ]; then
  "$MPQ" train --arch "$ARCH" --data mnist10k --epochs "$EPOCHS" --out "$MODEL" --quiet
fi

start=$(date +%s.%N)
"$MPQ" analyze --model "$MODEL" --data mnist10k --metric limpq --epochs "$LIMPQ_EPOCHS" \
  --seed "$SEED" --out indicators.json --quiet "$@" > analyze.log
echo "indicator training: $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"
"$MPQ" search --model "$MODEL" --method limpq --sensitivity indicators.json --bops-as 3/4 \
  --out limpq.json --quiet > search.log

# Uniform W3A4 with the same pins and quantizer (LSQ, one step per tensor).
python3 - <<'PY'
import json
p = json.load(open("limpq.json"))
for k in ("solver", "limpq", "omega"):
    p.pop(k, None)
p["method"] = "uniform-w3a4"
ends = {p["layers"][0]["name"], p["layers"][-1]["name"]}
for l in p["layers"]:
    if l["name"] not in ends:
        l["w_bits"], l["a_bits"] = 3, 4
json.dump(p, open("uniform.json", "w"), indent=1)
PY

for p in limpq uniform; do
  "$MPQ" quantize --model "$MODEL" --policy "$p.json" --data mnist10k \
    --finetune-epochs "$FT_EPOCHS" --lr "$FT_LR" --seed "$SEED" --out "q-$p" --quiet > /dev/null
done

python3 - <<'PY'
import json
t = json.load(open("indicators.json"))
r = t["limpq"]
print(f"indicators: {r['steps']} joint steps, {r['passes']} passes; steps grow as bits shrink "
      f"in {100 * r['monotone_fraction']:.0f}% of the (layer, w|a) series; {len(r['bans'])} banned")
for b in r["bans"]:
    print("  ban", b)
print(f"{'plan':13} {'GBOPs':>9} {'avg w bits':>10} {'PTQ %':>7} {'FT %':>7}  bits (w/a per layer)")
for p in ("limpq", "uniform"):
    pol = json.load(open(f"{p}.json"))
    s = json.load(open(f"q-{p}/summary.json"))
    bits = " ".join(f"{l['w_bits']}/{l['a_bits']}" for l in pol["layers"])
    print(f"{p:13} {s['bops'] / 1e9:9.6f} {s['avg_w_bits']:10.3f} "
          f"{100 * s['before_finetune']['accuracy']:7.2f} {100 * s['after_finetune']['accuracy']:7.2f}  {bits}")
PY
