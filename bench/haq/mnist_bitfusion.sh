#!/usr/bin/env bash
# HAQ (Wang et al., CVPR 2019) on the bundled mnist10k (LeNet-5 or ResNet-8), issue 7 acceptance run:
# BitFusion latency budget = 50% of W8A8; the HAQ plan against the best of 20 random plans
# and the best uniform plan within the same budget, each after post-training quantization
# and after the same short fine-tune (1 epoch of QAT), on the test split.
#
#   bench/haq/mnist_bitfusion.sh [WORKDIR] [EPISODES] [EXTRA HAQ FLAGS...]
#
# ARCH=resnet8 EPOCHS=16 runs the same on ResNet-8 (the model is trained into WORKDIR unless
# WORKDIR/ARCH.safetensors exists).
# Needs target/release/mpq (cargo build --release). Prints a table; every JSON stays in
# WORKDIR.
set -euo pipefail
DIR=${1:-runs/haq-lenet}
EPISODES=${2:-300}
shift $(( $# > 2 ? 2 : $# ))
. "$(dirname "$0")/../workdir.sh"
BITS="--w-bits 2,3,4,5,6,7,8 --a-bits 2,3,4,5,6,7,8"

if [ ! -f "$MODEL" ]; then
  "$MPQ" train --arch "$ARCH" --data mnist10k --epochs "$EPOCHS" --out "$MODEL" --quiet
fi
W8A8=$("$MPQ" hw --model "$MODEL" --hardware bitfusion --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["latency_ms"])')
BUDGET=$(python3 -c "print($W8A8 * 0.5)")
echo "W8A8 latency $W8A8 ms; budget $BUDGET ms"

start=$(date +%s.%N)
"$MPQ" search --model "$MODEL" --method haq --data mnist10k --hardware bitfusion \
  --max-latency-ms "$BUDGET" --episodes "$EPISODES" --out haq.json --quiet "$@" > haq.log
echo "haq search: $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s for $EPISODES episodes"

"$MPQ" search --model "$MODEL" --method uniform --hardware bitfusion \
  --max-latency-ms "$BUDGET" $BITS --out uniform.json --quiet > /dev/null
for s in $(seq 0 19); do
  "$MPQ" search --model "$MODEL" --method random --seed "$s" --hardware bitfusion \
    --max-latency-ms "$BUDGET" $BITS --out "random$s.json" --quiet > /dev/null
done

for p in haq uniform $(seq -f 'random%g' 0 19); do
  "$MPQ" quantize --model "$MODEL" --policy "$p.json" --data mnist10k \
    --finetune-epochs 1 --out "q-$p" --quiet > /dev/null
done

python3 - "$BUDGET" <<'PY'
import json, sys
budget = float(sys.argv[1])
def row(p):
    pol = json.load(open(f"{p}.json"))
    s = json.load(open(f"q-{p}/summary.json"))
    bits = " ".join(f"{l['w_bits']}/{l['a_bits']}" for l in pol["layers"])
    return (p, pol["latency_ms"], s["before_finetune"]["accuracy"] * 100,
            s["after_finetune"]["accuracy"] * 100, bits)
rows = [row("haq"), row("uniform")] + [row(f"random{i}") for i in range(20)]
print(f"{'plan':10} {'latency ms':>11} {'PTQ %':>7} {'FT %':>7}  bits (w/a per layer)")
for r in rows:
    assert r[1] <= budget * (1 + 1e-9), r
    print(f"{r[0]:10} {r[1]:11.6f} {r[2]:7.2f} {r[3]:7.2f}  {r[4]}")
rand = rows[2:]
best_ptq = max(r[2] for r in rand); best_ft = max(r[3] for r in rand)
h, u = rows[0], rows[1]
print(f"best random: PTQ {best_ptq:.2f}%, fine-tuned {best_ft:.2f}%")
print(f"HAQ >= best random: PTQ {h[2] >= best_ptq}, fine-tuned {h[3] >= best_ft}; "
      f"HAQ >= uniform: PTQ {h[2] >= u[2]}, fine-tuned {h[3] >= u[3]}")
PY
