#!/usr/bin/env python3
"""Side-by-side ratios pooled over several alternating rounds of `mpq bench` and
`torch_bench.py`, for a machine whose speed drifts between runs.

    python3 bench/peer/interleaved.py [--rounds N] [--python PY] [--mpq BIN] [--out DIR]

Each round runs both benchmarks once (mpq first in odd rounds, PyTorch first in even ones),
each timing every workload `--repeats` times after a warm-up. The table pools every timed
run of every round per workload and sets the pooled medians against each other (mpq time /
PyTorch time; PyTorch's double-backward HVP against mpq's `resnet20_hvp`), next to the
per-round ratios, so one lucky or unlucky round cannot decide a verdict. The JSON reports of
every round are kept in `--out`. Needs PyTorch for the peer (not part of CI); standard
library only otherwise.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

OURS = ["resnet20_fwd", "resnet20_fwd_bwd", "resnet20_hvp", "mobilenetv2_fwd_bwd"]
PAIRS = [
    ("resnet20_fwd", "resnet20_fwd"),
    ("resnet20_fwd_bwd", "resnet20_fwd_bwd"),
    ("resnet20_hvp", "resnet20_hvp_double_backward"),
    ("mobilenetv2_fwd_bwd", "mobilenetv2_fwd_bwd"),
]


def run(cmd, path):
    with open(path, "w") as f:
        subprocess.run(cmd, stdout=f, check=True)
    with open(path) as f:
        return {w["name"]: w["times_s"] for w in json.load(f)["workloads"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--mpq", default="target/release/mpq")
    ap.add_argument("--out", default="target/interleaved")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    peer_names = sorted({p for _, p in PAIRS})
    ours_cmd = [a.mpq, "bench", "--only", ",".join(OURS), "--repeats", str(a.repeats), "--json", "--quiet"]
    peer_cmd = [a.python, os.path.join(here, "torch_bench.py"), "--threads", "2",
                "--repeats", str(a.repeats), "--quiet", "--only", ",".join(peer_names)]
    pooled_ours = {n: [] for n in OURS}
    pooled_peer = {n: [] for n in peer_names}
    per_round = []
    for r in range(a.rounds):
        jobs = [("ours", ours_cmd), ("peer", peer_cmd)]
        if r % 2 == 1:
            jobs.reverse()
        got = {}
        for who, cmd in jobs:
            got[who] = run(cmd, os.path.join(a.out, f"{who}_{r + 1}.json"))
        for n in OURS:
            pooled_ours[n] += got["ours"][n]
        for n in peer_names:
            pooled_peer[n] += got["peer"][n]
        per_round.append({
            o: statistics.median(got["ours"][o]) / statistics.median(got["peer"][p]) for o, p in PAIRS
        })
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    print("| mpq workload | PyTorch workload | mpq median s (runs) | PyTorch median s (runs) | "
          "pooled ratio | per-round ratios |")
    print("| --- | --- | --- | --- | --- | --- |")
    for o, p in PAIRS:
        mo, mp = statistics.median(pooled_ours[o]), statistics.median(pooled_peer[p])
        rounds = ", ".join(f"{pr[o]:.2f}" for pr in per_round)
        print(f"| {o} | {p} | {mo:.3f} ({len(pooled_ours[o])}) | {mp:.3f} ({len(pooled_peer[p])}) | "
              f"**{mo / mp:.2f}** | {rounds} |")


if __name__ == "__main__":
    main()
