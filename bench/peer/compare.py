#!/usr/bin/env python3
"""Side-by-side table of `mpq bench --json` and `torch_bench.py` reports (Markdown).

    python3 bench/peer/compare.py ours.json torch.json [stock.json]

Ratios are mpq time / PyTorch time (below 1: mpq is faster). "% peak" is GFLOP/s over the
machine's nominal peak (cores x clock x FLOP/cycle, as both reports state it). The three HVP
rows of PyTorch are all set against mpq's `resnet20_hvp` (two gradients by central
differences). Workloads that report `hvp_count` (per-layer traces, where the stopping rule
decides the number of products) get a second table: products, seconds per product, and the
speed-up of mpq (PyTorch time / mpq time). Uses only the standard library.
"""

import json
import sys

HVP_PEERS = ["resnet20_hvp", "resnet20_hvp_double_backward", "resnet20_hvp_double_backward_only"]


def load(path):
    with open(path) as f:
        return json.load(f)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    ours, peer = load(sys.argv[1]), load(sys.argv[2])
    stock = load(sys.argv[3]) if len(sys.argv) == 4 else None
    peak = ours["machine"].get("peak_gflops_per_s")
    theirs = {w["name"]: w for w in peer["workloads"]}
    stock_w = {w["name"]: w for w in stock["workloads"]} if stock else {}
    for w in ours["workloads"]:
        p = theirs.get(w["name"])
        if p and p.get("macs_per_sample") != w.get("macs_per_sample"):
            print(f"warning: {w['name']}: MACs differ ({w['macs_per_sample']} vs "
                  f"{p['macs_per_sample']})", file=sys.stderr)
    head = ["workload", "mpq s (min)", "PyTorch workload", "PyTorch s (min)", "mpq / PyTorch",
            "mpq GFLOP/s", "PyTorch GFLOP/s"]
    if peak:
        head += ["mpq % peak", "PyTorch % peak"]
    if stock:
        head += ["candle stock s", "stock / mpq"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for w in ours["workloads"]:
        if "hvp_count" in w:
            continue  # the nominal GFLOP of a product count; see the second table
        peers = HVP_PEERS if w["name"] == "resnet20_hvp" else [w["name"]]
        for i, name in enumerate(peers):
            p = theirs.get(name)
            if p is None:
                continue
            first = i == 0
            row = [
                w["name"] if first else "",
                f"{w['median_s']:.3f} ({w['min_s']:.3f})" if first else "",
                name,
                f"{p['median_s']:.3f} ({p['min_s']:.3f})",
                f"{w['median_s'] / p['median_s']:.2f}",
                f"{w['gflops_per_s']:.1f}" if first else "",
                f"{p['gflops_per_s']:.1f}",
            ]
            if peak:
                row += [
                    f"{100 * w['gflops_per_s'] / peak:.1f}%" if first else "",
                    f"{100 * p['gflops_per_s'] / peak:.1f}%",
                ]
            if stock:
                s = stock_w.get(w["name"])
                row += (
                    [f"{s['median_s']:.3f}", f"{s['median_s'] / w['median_s']:.1f}x"]
                    if s and first
                    else ["", ""]
                )
            print("| " + " | ".join(row) + " |")
    counted = [w for w in ours["workloads"] if "hvp_count" in w and w["name"] in theirs
               and "hvp_count" in theirs[w["name"]]]
    if counted:
        print()
        head = ["workload", "mpq s", "mpq HVPs", "mpq s/HVP", "PyTorch s", "PyTorch HVPs",
                "PyTorch s/HVP", "PyTorch / mpq"]
        print("| " + " | ".join(head) + " |")
        print("|" + " --- |" * len(head))
        for w in counted:
            p = theirs[w["name"]]
            row = [
                w["name"],
                f"{w['median_s']:.1f}",
                str(w["hvp_count"]),
                f"{w['median_s'] / w['hvp_count']:.3f}",
                f"{p['median_s']:.1f}",
                str(p["hvp_count"]),
                f"{p['median_s'] / p['hvp_count']:.3f}",
                f"{p['median_s'] / w['median_s']:.2f}x",
            ]
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
