#!/usr/bin/env bash
# CW-HAWQ (Qian et al. 2020, docs/algorithms.md §3) on the bundled mnist10k, issue 8 acceptance run: an average
# of 3 weight bits (8-bit activations, MSE weight clip), the CW-HAWQ plan (DDPG over channel
# ratios) against the layer-wise HAWQ-V2 `pareto` plan, the deterministic channel-wise baseline
# `cw-ilp` and uniform W3, each after post-training quantization and after the same short
# fine-tune (1 epoch of QAT), on the test split. Two candidate sets: {2,4,8} (CW-HAWQ's
# default, the example of docs/algorithms.md §3.3) and {2,3,4,5,6,8}.
#
#   bench/cw_hawq/mnist_avg3.sh [WORKDIR] [EPISODES] [EXTRA CW-HAWQ FLAGS...]
#
# The model (ARCH, default lenet5, EPOCHS, default 10) is trained into WORKDIR with the 2,000
# training samples that score CW-HAWQ's plans held out (`mpq train --holdout`), so the reward
# is measured on images the model has not seen. Needs target/release/mpq.
set -euo pipefail
DIR=${1:-runs/cw-lenet}
EPISODES=${2:-300}
shift $(( $# > 2 ? 2 : $# ))
. "$(dirname "$0")/../workdir.sh"
COMMON="--avg-bits 3 --a-bits 8 --weight-range mse"
if [ ! -f "$MODEL" ]; then
  "$MPQ" train --arch "$ARCH" --data mnist10k --epochs "$EPOCHS" --holdout 2000 \
    --out "$MODEL" --quiet
fi
if [ ! -f ct.json ]; then
  "$MPQ" analyze --model "$MODEL" --data mnist10k --metric channel-trace --batches 4 \
    --out ct.json --quiet
fi
plans=""
for W in 2,4,8 2,3,4,5,6,8; do
  tag=${W//,/}
  for m in pareto cw-ilp; do
    "$MPQ" search --model "$MODEL" --method $m --sensitivity ct.json $COMMON --w-bits $W \
      --out "$m-$tag.json" --quiet > /dev/null
    plans="$plans $m-$tag"
  done
  start=$(date +%s.%N)
  "$MPQ" search --model "$MODEL" --method cw-hawq --sensitivity ct.json $COMMON --w-bits $W \
    --data mnist10k --val-samples 2000 --episodes "$EPISODES" --out "cw-hawq-$tag.json" \
    --quiet "$@" > "cw-hawq-$tag.log"
  echo "cw-hawq {$W}: $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s for $EPISODES episodes"
  plans="$plans cw-hawq-$tag"
done
"$MPQ" search --model "$MODEL" --method uniform --w-bits 3 --a-bits 8 --avg-bits 3 \
  --weight-range mse --out uniform-3.json --quiet > /dev/null
plans="$plans uniform-3"
for p in $plans; do
  "$MPQ" quantize --model "$MODEL" --policy "$p.json" --data mnist10k \
    --finetune-epochs 1 --out "q-$p" --quiet > /dev/null
done

python3 - $plans <<'PY'
import json, sys
print(f"{'plan':18} {'bytes':>6} {'avg w':>6} {'PTQ %':>7} {'FT %':>7}  channels per width (layer: bits:count)")
rows = {}
for p in sys.argv[1:]:
    pol = json.load(open(f"{p}.json"))
    s = json.load(open(f"q-{p}/summary.json"))
    assert pol["avg_w_bits"] <= 3 + 1e-9, p
    desc = []
    for l in pol["layers"]:
        cb = l.get("channel_w_bits")
        if cb:
            counts = {}
            for b in cb:
                counts[b] = counts.get(b, 0) + 1
            desc.append(l["name"] + " " + ",".join(f"{b}:{n}" for b, n in sorted(counts.items(), reverse=True)))
        else:
            desc.append(f"{l['name']} {l['w_bits']}")
    ptq, ft = s["before_finetune"]["accuracy"] * 100, s["after_finetune"]["accuracy"] * 100
    rows[p] = (ptq, ft)
    print(f"{p:18} {pol['size_bytes']:6} {pol['avg_w_bits']:6.3f} {ptq:7.2f} {ft:7.2f}  {'; '.join(desc)}")
for tag in ("248", "234568"):
    c, pa, il = rows[f"cw-hawq-{tag}"], rows[f"pareto-{tag}"], rows[f"cw-ilp-{tag}"]
    print(f"{{{tag}}}: cw-hawq >= pareto: PTQ {c[0] >= pa[0]}, fine-tuned {c[1] >= pa[1]}; "
          f"cw-hawq >= cw-ilp: PTQ {c[0] >= il[0]}, fine-tuned {c[1] >= il[1]}")
PY
