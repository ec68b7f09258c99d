#!/usr/bin/env python3
"""PyTorch peer of `mpq bench`: the same workloads, inputs of the same shapes, printing the
same JSON keys, so the two can be run side by side on one machine.

    target/release/mpq bench --json > ours.json
    python bench/peer/torch_bench.py > torch.json      # needs torch (not part of CI)

Models are written out here (no torchvision) to match crates/mpq/src/zoo exactly, layer for
layer: CIFAR ResNet-20 (16/32/64 channels, 1x1-conv+BN projection shortcuts), LeNet-5 (5x5
convs with bias, max-pool 2, 256-120-84-10), and torchvision's MobileNetV2 (width 1.0). The
MAC count per sample is measured with forward hooks and printed as `macs_per_sample`, which
must equal the `mpq bench` value for the same workload.

Workloads (one untimed warm-up run, then --repeats timed runs; median and min seconds):
  resnet20_fwd                      eval mode, torch.no_grad(), batch 128
  resnet20_fwd_bwd                  train mode, cross-entropy, backward, batch 128
  resnet20_hvp                      as mpq's FiniteDiffHvp: central differences of two
                                    eval-mode gradients w.r.t. the conv/linear weights at
                                    w +/- eps*v (Rademacher v, eps = 1e-3 |w|/|v|), restored
  resnet20_hvp_double_backward      PyHessian's exact HVP from scratch (all parameters):
                                    forward, grad with create_graph=True, grad of (g . v)
  resnet20_hvp_double_backward_only the double-backward step alone on a kept graph (PyHessian's
                                    per-iteration cost on a single batch)
  resnet20_layer_traces             PyHessian's per-layer traces of all 22 conv/linear weights
                                    (see `layer_traces`): after TRAIN_STEPS SGD steps on the
                                    batch, eval mode, mean cross-entropy; for each layer its own
                                    Hutchinson loop, tol 1e-3, maxIter 100. Timed once (no
                                    warm-up, whatever --repeats says); prints hvp_count
  lenet5_fwd_bwd                    batch 256, 1x28x28
  mobilenetv2_fwd_bwd               batch 8, 3x224x224
  matmul_1024                       1024x1024 @ 1024x1024, f32
GFLOP per run: forward 2*MACs*batch, fwd+bwd 3x, every HVP variant 6x (the same nominal work,
so GFLOP/s ratios are time ratios); layer traces 3x per product times hvp_count, as mpq counts
its one-sided products (one forward+backward each): nominal here, where a double backward
narrowed to one layer does less work the later the layer.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")  # torch warns about a missing NumPy; none is needed here

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


# ----------------------------------------------------------------------------------------------
# Models (match crates/mpq/src/zoo)
# ----------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(y + s)


class CifarResNet(nn.Module):
    """crates/mpq/src/zoo/resnet.rs `cifar_resnet(n)`: depth 6n+2."""

    def __init__(self, n, classes=10, cin=3):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, c = [], 16
        for stage, width in enumerate([16, 32, 64]):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(c, width, 2 if stage > 0 and i == 0 else 1))
                c = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, classes)
        kaiming_fan_out(self)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class LeNet5(nn.Module):
    """crates/mpq/src/zoo/lenet.rs: PyTorch default initialisation."""

    def __init__(self, classes=10, cin=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_bn_relu6(cin, cout, k, stride, groups=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=False),
    )


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, t):
        super().__init__()
        hidden = inp * t
        layers = []
        if t != 1:
            layers.append(conv_bn_relu6(inp, hidden, 1, 1))
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and inp == oup

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """crates/mpq/src/zoo/mobilenet.rs = torchvision `mobilenet_v2(width_mult)`."""

    def __init__(self, classes=1000, width=1.0, cin=3):
        super().__init__()
        settings = [
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ]
        inp = make_divisible(32 * width)
        last = make_divisible(1280 * max(1.0, width))
        features = [conv_bn_relu6(cin, inp, 3, 2)]
        for t, c, n, s in settings:
            oup = make_divisible(c * width)
            for i in range(n):
                features.append(InvertedResidual(inp, oup, s if i == 0 else 1, t))
                inp = oup
        features.append(conv_bn_relu6(inp, last, 1, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))
        kaiming_fan_out(self)

    def forward(self, x):
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def kaiming_fan_out(model):
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def build(arch):
    if arch == "resnet20":
        return CifarResNet(3)
    if arch == "lenet5":
        return LeNet5()
    if arch == "mobilenetv2":
        return MobileNetV2()
    raise ValueError(arch)


def count_macs(model, input_shape):
    """MACs of one sample: conv Cin*Cout*kh*kw*OH*OW/groups, linear in*out (as LayerInfo)."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            oh, ow = out.shape[-2:]
            total[0] += m.in_channels * m.out_channels * kh * kw * oh * ow // m.groups
        elif isinstance(m, nn.Linear):
            total[0] += m.in_features * m.out_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    for h in handles:
        h.remove()
    return total[0]


# ----------------------------------------------------------------------------------------------
# Workloads
# ----------------------------------------------------------------------------------------------

# name, arch, per-sample input, classes, batch, pass
WORKLOADS = [
    ("resnet20_fwd", "resnet20", (3, 32, 32), 10, 128, "forward"),
    ("resnet20_fwd_bwd", "resnet20", (3, 32, 32), 10, 128, "forward_backward"),
    ("resnet20_hvp", "resnet20", (3, 32, 32), 10, 128, "hvp"),
    ("resnet20_hvp_double_backward", "resnet20", (3, 32, 32), 10, 128, "hvp_double_backward"),
    (
        "resnet20_hvp_double_backward_only",
        "resnet20",
        (3, 32, 32),
        10,
        128,
        "hvp_double_backward_only",
    ),
    ("resnet20_layer_traces", "resnet20", (3, 32, 32), 10, 128, "layer_traces"),
    ("lenet5_fwd_bwd", "lenet5", (1, 28, 28), 10, 256, "forward_backward"),
    ("mobilenetv2_fwd_bwd", "mobilenetv2", (3, 224, 224), 1000, 8, "forward_backward"),
    ("matmul_1024", "sgemm", (1024, 1024, 1024), 0, 1, "matmul"),
]

FLOP_FACTOR = {
    "forward": 1.0,
    "matmul": 1.0,
    "forward_backward": 3.0,
    "hvp": 6.0,
    "hvp_double_backward": 6.0,
    "hvp_double_backward_only": 6.0,
    "layer_traces": 3.0,
}

# Per-layer traces: the model is "briefly trained" first, as mpq's `resnet20_layer_traces`
# (crates/mpq/src/bench.rs): TRAIN_STEPS steps of SGD (lr TRAIN_LR, momentum 0.9, no weight
# decay) on the bench batch in train mode, which also moves the BatchNorm running statistics
# towards the batch's. A random-init ResNet-20 has traces near zero against their noise, so
# most layers would run to maxIter.
TRAIN_STEPS = 10
TRAIN_LR = 0.05
TRACE_TOL = 1e-3
TRACE_MAX_ITER = 100


def train_briefly(model, x, y):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=TRAIN_LR, momentum=0.9)
    for _ in range(TRAIN_STEPS):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def layer_traces(model, x, y, gen, tol=TRACE_TOL, max_iter=TRACE_MAX_ITER):
    """PyHessian's per-layer computation (Yao et al. 2020, `pyhessian/hessian.py`): one
    `hessian(model, criterion, data=(x, y))` object, i.e. one forward and one backward with
    `create_graph=True` (gradsH), then for each layer separately PyHessian's `trace()` loop
    with `params`/`gradsH` narrowed to that layer's weight: Rademacher v on the weight, Hv by
    double backward through the kept graph (`hessian_vector_product`: `torch.autograd.grad(
    gradsH, params, grad_outputs=v, only_inputs=True, retain_graph=True)`), stop when
    |mean - prev| / (|prev| + 1e-6) < tol (PyHessian with the 2021 `abs`), at most maxIter
    products. Narrowing both the outputs and the inputs of the double backward to the layer is
    the cheapest form of PyHessian's per-layer product. Returns (traces, products per layer,
    seconds per layer)."""
    model.eval()
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    loss = F.cross_entropy(model(x), y)
    grads_h = torch.autograd.grad(loss, weights, create_graph=True)
    traces, counts, seconds = [], [], []
    for w, g in zip(weights, grads_h):
        t0 = time.perf_counter()
        vhv, trace = [], 0.0
        for _ in range(max_iter):
            v = torch.randint(0, 2, w.shape, generator=gen, dtype=w.dtype) * 2 - 1
            hv = torch.autograd.grad(g, w, grad_outputs=v, only_inputs=True, retain_graph=True)
            vhv.append((hv[0] * v).sum().item())
            mean = statistics.fmean(vhv)
            if abs(mean - trace) / (abs(trace) + 1e-6) < tol:
                break
            trace = mean
        traces.append(statistics.fmean(vhv))
        counts.append(len(vhv))
        seconds.append(time.perf_counter() - t0)
    return traces, counts, seconds


def rademacher_like(params, gen):
    return [
        (torch.randint(0, 2, p.shape, generator=gen, dtype=torch.int64) * 2 - 1).to(p.dtype)
        for p in params
    ]


def prepare(w, seed):
    """Builds model and data; returns (macs_per_sample, step)."""
    name, arch, shape, classes, batch, kind = w
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed ^ 0xBE4C0000)
    if kind == "matmul":
        m, k, n = shape
        a = torch.randn(m, k, generator=gen)
        b = torch.randn(k, n, generator=gen)
        return m * k * n, lambda: torch.mm(a, b)
    model = build(arch)
    macs = count_macs(model, shape)
    x = torch.randn(batch, *shape, generator=gen)
    y = torch.randint(0, classes, (batch,), generator=gen)
    params = [p for p in model.parameters() if p.requires_grad]

    if kind == "forward":
        model.eval()

        def step():
            with torch.no_grad():
                model(x)

    elif kind == "forward_backward":
        model.train()

        def step():
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()

    elif kind == "hvp":
        # As mpq's FiniteDiffHvp: the quantizable layers' weights only, step
        # eps*|v| = 1e-3 * sqrt(sum_i numel_i * rms_i^2) = 1e-3 * |w| for a dense v.
        model.eval()
        weights = [
            m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
        ]
        v = rademacher_like(weights, gen)
        with torch.no_grad():
            wnorm = torch.sqrt(sum((p.double() ** 2).sum() for p in weights)).item()
            vnorm = torch.sqrt(sum((t.double() ** 2).sum() for t in v)).item()
        eps = 1e-3 * wnorm / vnorm

        def grad_at(sign, saved):
            with torch.no_grad():
                for p, s, d in zip(weights, saved, v):
                    p.copy_(s + sign * eps * d)
            loss = F.cross_entropy(model(x), y)
            return torch.autograd.grad(loss, weights)

        def step():
            saved = [p.detach().clone() for p in weights]
            try:
                gp = grad_at(1.0, saved)
                gm = grad_at(-1.0, saved)
            finally:
                with torch.no_grad():
                    for p, s in zip(weights, saved):
                        p.copy_(s)
            return [(a - b) / (2 * eps) for a, b in zip(gp, gm)]

    elif kind == "hvp_double_backward":
        model.eval()
        v = rademacher_like(params, gen)

        def step():
            loss = F.cross_entropy(model(x), y)
            g = torch.autograd.grad(loss, params, create_graph=True)
            return torch.autograd.grad(g, params, grad_outputs=v, only_inputs=True)

    elif kind == "hvp_double_backward_only":
        model.eval()
        v = rademacher_like(params, gen)
        loss = F.cross_entropy(model(x), y)
        g = torch.autograd.grad(loss, params, create_graph=True)

        def step():
            # PyHessian `hessian_vector_product`: retain_graph so the next product reuses g.
            return torch.autograd.grad(
                g, params, grad_outputs=v, only_inputs=True, retain_graph=True
            )

    elif kind == "layer_traces":
        train_briefly(model, x, y)

        def step():
            traces, counts, secs = layer_traces(model, x, y, gen, tol=TRACE_TOL)
            return {
                "hvp_count": sum(counts),
                "layer_hvps": counts,
                "layer_seconds": secs,
                "traces": traces,
                "tol": TRACE_TOL,
            }

    else:
        raise ValueError(kind)
    return macs, step


def run_workload(w, repeats, seed):
    name, arch, shape, classes, batch, kind = w
    macs, step = prepare(w, seed)
    once = kind == "layer_traces"
    if not once:
        step()  # warm-up
    times, extra = [], {}
    for _ in range(1 if once else repeats):
        t0 = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - t0)
        if isinstance(out, dict):
            extra = out
    median = statistics.median(times)
    gflop = FLOP_FACTOR[kind] * 2.0 * macs * batch / 1e9 * extra.get("hvp_count", 1)
    return {
        "name": name,
        "arch": arch,
        "batch": batch,
        "pass": kind,
        "median_s": median,
        "min_s": min(times),
        "runs": len(times),
        "macs_per_sample": macs,
        "gflop": gflop,
        "gflops_per_s": gflop / median,
        "times_s": times,
        **extra,
    }


# ----------------------------------------------------------------------------------------------
# Machine
# ----------------------------------------------------------------------------------------------


def machine():
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = line.split(":", 1)
                    info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    cores = os.cpu_count() or 1
    mhz = float(info["cpu MHz"]) if "cpu MHz" in info else None
    avx2, avx512f, fma = "avx2" in flags, "avx512f" in flags, "fma" in flags
    fpc = 64 if (avx512f and fma) else 32 if (avx2 and fma) else 8
    return {
        "cores": cores,
        "cpu_model": info.get("model name", platform.processor() or None),
        "mhz": mhz,
        "avx2": avx2,
        "avx512f": avx512f,
        "fma": fma,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "flops_per_cycle": fpc,
        "peak_gflops_per_s": cores * mhz * fpc / 1e3 if mhz else None,
    }


def main():
    global TRACE_TOL
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up")
    ap.add_argument("--only", default="", help="comma-separated workload names")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="no table on stderr")
    ap.add_argument(
        "--trace-tol",
        type=float,
        default=TRACE_TOL,
        help="stopping tolerance of the per-layer traces (0: always maxIter products per layer)",
    )
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    names = [n for n in args.only.split(",") if n]
    known = [w[0] for w in WORKLOADS]
    for n in names:
        if n not in known:
            ap.error(f"unknown workload {n!r} (known: {', '.join(known)})")
    TRACE_TOL = args.trace_tol
    torch.set_num_threads(args.threads)
    results = []
    for w in WORKLOADS:
        if names and w[0] not in names:
            continue
        r = run_workload(w, args.repeats, args.seed)
        results.append(r)
        if not args.quiet:
            print(
                f"{r['name']:34s} median {r['median_s']:.4f} s  min {r['min_s']:.4f} s  "
                f"{r['gflop']:.2f} GFLOP  {r['gflops_per_s']:.1f} GFLOP/s"
                + (f"  {r['hvp_count']} HVPs" if "hvp_count" in r else ""),
                file=sys.stderr,
            )
    report = {
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "ops": f"pytorch {torch.__version__} (mkldnn {torch.backends.mkldnn.is_available()})",
        "seed": args.seed,
        "workloads": results,
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
