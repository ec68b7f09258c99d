#!/usr/bin/env python3
"""Whole-model Hessian trace of the bench's ResNet-20: Hutchinson against Hutch++ (Meyer,
Musco, Musco & Woodruff 2021) at equal numbers of Hessian-vector products.

    /work/torchenv/bin/python bench/peer/hutchpp_check.py [--seed 0] [--probes 20] [--m 30 60]

The model, batch and brief training are `torch_bench.py`'s `resnet20_layer_traces` set-up
(batch 128, eval mode, mean cross-entropy, the 22 conv/linear weights); products are exact
(double backward through a kept graph, as PyHessian). Prints the per-probe standard deviation
of Hutchinson's samples z'Hz (and the mean of |Hz|^2, an estimate of |H|_F^2), and for each
budget m one Hutch++ run: a rank-m/3 sketch Q = orth(H S), the exact part tr(Q'HQ) (m/3
products) and m/3 Hutchinson probes of the deflated (I-QQ')H(I-QQ'); from the residual's
per-probe deviation, the standard errors of both estimators at m products. Hutch++ beats
Hutchinson only where the sketch removes most of |H|_F^2 (it needs the residual variance 3x
smaller to break even). Needs only torch (no NumPy); takes minutes.
"""

import argparse
import math
import os
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torch_bench as tb  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probes", type=int, default=20, help="Hutchinson probes for its deviation")
    ap.add_argument("--m", type=int, nargs="+", default=[30, 60], help="Hutch++ budgets")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed ^ 0xBE4C0000)
    model = tb.build("resnet20")
    x = torch.randn(128, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (128,), generator=gen)
    tb.train_briefly(model, x, y)
    ws = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, ws, create_graph=True)
    n = sum(w.numel() for w in ws)
    print(f"dimension {n}, loss {loss.item():.4f}", flush=True)
    count = [0]

    def hvp(v):
        parts, off = [], 0
        for w in ws:
            parts.append(v[off : off + w.numel()].view_as(w).float())
            off += w.numel()
        hv = torch.autograd.grad(grads, ws, grad_outputs=parts, retain_graph=True)
        count[0] += 1
        return torch.cat([h.reshape(-1) for h in hv]).double()

    def rademacher(k):
        return torch.randint(0, 2, (n, k), generator=gen, dtype=torch.float64) * 2 - 1

    t0 = time.time()
    z = rademacher(args.probes)
    samples, fro = [], []
    for j in range(args.probes):
        hz = hvp(z[:, j])
        samples.append(float(z[:, j] @ hz))
        fro.append(float(hz @ hz))
    sd_h = statistics.stdev(samples)
    print(
        f"Hutchinson: mean {statistics.fmean(samples):.4g}, per-probe sd {sd_h:.4g}, "
        f"|H|_F^2 ~ {statistics.fmean(fro):.4g} ({time.time() - t0:.0f} s)",
        flush=True,
    )
    for m in args.m:
        k = m // 3
        s = rademacher(k)
        q, _ = torch.linalg.qr(torch.stack([hvp(s[:, j]) for j in range(k)], 1))
        hq = torch.stack([hvp(q[:, j]) for j in range(k)], 1)
        top = float(torch.trace(q.T @ hq))
        ritz = torch.linalg.eigvalsh((q.T @ hq + (q.T @ hq).T) / 2)
        g = rademacher(k)
        g = g - q @ (q.T @ g)
        resid = [float(g[:, j] @ hvp(g[:, j])) for j in range(k)]
        sd_r = statistics.stdev(resid)
        print(
            f"m={m}: Hutch++ {top + statistics.fmean(resid):.4g} (sketch part {top:.4g}, "
            f"largest |Ritz value| {float(ritz.abs().max()):.4g}); residual per-probe sd "
            f"{sd_r:.4g}; standard error at m products: Hutch++ {sd_r / math.sqrt(k):.4g}, "
            f"Hutchinson {sd_h / math.sqrt(m):.4g} ({time.time() - t0:.0f} s, {count[0]} products)",
            flush=True,
        )


if __name__ == "__main__":
    main()
