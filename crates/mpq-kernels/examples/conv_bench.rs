//! Times the fast conv2d / batch-norm kernels against candle's own ops on the conv layers
//! of ResNet-20 (CIFAR, batch 128) and MobileNetV2 (224x224, batch 8), forward and
//! forward+backward, and prints a per-layer table plus model totals.
//!
//! `cargo run --release -p mpq-kernels --example conv_bench -- [resnet|mobilenet|all]
//!  [--reps N] [--no-candle] [--scalar] [--split]`
//!
//! `--split` adds the input and weight gradients timed apart (`conv2d_grads`).
#![expect(
    clippy::print_stdout,
    reason = "a benchmark report printed to the terminal"
)]

use candle::{Device, Result, Tensor, Var};
use mpq_kernels::{Conv2dParams, batch_norm_train, conv2d, conv2d_grads, reference, simd};
use std::time::Instant;

/// One conv layer shape and how often it occurs in the model.
struct Layer {
    name: String,
    count: usize,
    n: usize,
    c: usize,
    hw: usize,
    o: usize,
    k: usize,
    stride: usize,
    groups: usize,
    /// Whether the layer's input needs a gradient (false for the stem conv).
    grad_x: bool,
}

#[expect(clippy::too_many_arguments, reason = "one argument per shape field")]
fn layer(
    name: &str,
    count: usize,
    n: usize,
    c: usize,
    hw: usize,
    o: usize,
    k: usize,
    s: usize,
    g: usize,
) -> Layer {
    Layer {
        name: name.into(),
        count,
        n,
        c,
        hw,
        o,
        k,
        stride: s,
        groups: g,
        grad_x: true,
    }
}

fn resnet20() -> Vec<Layer> {
    let b = 128;
    let mut stem = layer("stem 3->16 3x3 @32", 1, b, 3, 32, 16, 3, 1, 1);
    stem.grad_x = false;
    vec![
        stem,
        layer("16->16 3x3 @32", 6, b, 16, 32, 16, 3, 1, 1),
        layer("16->32 3x3 s2 @32", 1, b, 16, 32, 32, 3, 2, 1),
        layer("ds 16->32 1x1 s2", 1, b, 16, 32, 32, 1, 2, 1),
        layer("32->32 3x3 @16", 5, b, 32, 16, 32, 3, 1, 1),
        layer("32->64 3x3 s2 @16", 1, b, 32, 16, 64, 3, 2, 1),
        layer("ds 32->64 1x1 s2", 1, b, 32, 16, 64, 1, 2, 1),
        layer("64->64 3x3 @8", 5, b, 64, 8, 64, 3, 1, 1),
    ]
}

fn mobilenet_v2() -> Vec<Layer> {
    let b = 8;
    let mut stem = layer("stem 3->32 3x3 s2 @224", 1, b, 3, 224, 32, 3, 2, 1);
    stem.grad_x = false;
    let mut v = vec![stem];
    // (t, c, n, s) inverted-residual settings at width 1.0.
    let (mut cin, mut hw) = (32, 112);
    for (t, c, n, s) in [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ] {
        for i in 0..n {
            let st = if i == 0 { s } else { 1 };
            let hid = cin * t;
            if t != 1 {
                v.push(layer(
                    &format!("pw {cin}->{hid} @{hw}"),
                    1,
                    b,
                    cin,
                    hw,
                    hid,
                    1,
                    1,
                    1,
                ));
            }
            v.push(layer(
                &format!("dw {hid} 3x3 s{st} @{hw}"),
                1,
                b,
                hid,
                hw,
                hid,
                3,
                st,
                hid,
            ));
            hw /= st;
            v.push(layer(
                &format!("pw {hid}->{c} @{hw}"),
                1,
                b,
                hid,
                hw,
                c,
                1,
                1,
                1,
            ));
            cin = c;
        }
    }
    v.push(layer("pw 320->1280 @7", 1, b, 320, 7, 1280, 1, 1, 1));
    v
}

/// Median wall time of `f` over `reps` runs after one warm-up.
fn time(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f().map(|_| s.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

type ConvFn = fn(&Tensor, &Tensor, &Conv2dParams) -> Result<Tensor>;

fn fast(x: &Tensor, w: &Tensor, p: &Conv2dParams) -> Result<Tensor> {
    conv2d(x, w, None, p)
}

fn candle_conv(x: &Tensor, w: &Tensor, p: &Conv2dParams) -> Result<Tensor> {
    x.conv2d(w, p.padding[0], p.stride[0], p.dilation[0], p.groups)
}

/// (forward, forward+backward) seconds of one layer.
fn bench_layer(l: &Layer, f: ConvFn, reps: usize) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (l.n, l.c, l.hw, l.hw), &dev)?;
    let x = if l.grad_x {
        Var::from_tensor(&x)?.as_tensor().clone()
    } else {
        x
    };
    let w = Var::randn(0f32, 0.1, (l.o, l.c / l.groups, l.k, l.k), &dev)?;
    let p = Conv2dParams::square(l.stride, l.k / 2, 1, l.groups);
    let fwd = time(reps, || f(&x, &w, &p).map(|_| ()))?;
    let both = time(reps, || {
        let y = f(&x, &w, &p)?;
        y.backward().map(|_| ())
    })?;
    Ok((fwd, both))
}

/// (input gradient, weight gradient) seconds of one layer through the fast kernels.
fn bench_grads(l: &Layer, reps: usize) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (l.n, l.c, l.hw, l.hw), &dev)?;
    let w = Tensor::randn(0f32, 0.1, (l.o, l.c / l.groups, l.k, l.k), &dev)?;
    let p = Conv2dParams::square(l.stride, l.k / 2, 1, l.groups);
    let dy = conv2d(&x, &w, None, &p)?.randn_like(0., 1.)?;
    let gx = if l.grad_x {
        time(reps, || {
            conv2d_grads(&x, &w, &dy, &p, true, (false, false)).map(|_| ())
        })?
    } else {
        0.0
    };
    let gw = time(reps, || {
        conv2d_grads(&x, &w, &dy, &p, false, (true, false)).map(|_| ())
    })?;
    Ok((gx, gw))
}

/// (fast, candle-ops) fwd+bwd seconds of a train-mode batch norm on `[n, c, hw, hw]`.
fn bench_bn(
    n: usize,
    c: usize,
    hw: usize,
    reps: usize,
    with_slow: bool,
) -> Result<(f64, f64, f64)> {
    let dev = Device::Cpu;
    let x = Var::randn(0f32, 1., (n, c, hw, hw), &dev)?;
    let g = Var::ones(c, candle::DType::F32, &dev)?;
    let b = Var::zeros(c, candle::DType::F32, &dev)?;
    let fwd = time(reps, || batch_norm_train(&x, &g, &b, 1e-5).map(|_| ()))?;
    let fast = time(reps, || {
        batch_norm_train(&x, &g, &b, 1e-5)?.0.backward().map(|_| ())
    })?;
    let slow = if with_slow {
        time(reps.min(3), || {
            reference::batch_norm_train_slow(&x, &g, &b, 1e-5)?
                .0
                .backward()
                .map(|_| ())
        })?
    } else {
        f64::NAN
    };
    Ok((fwd, fast, slow))
}

fn run(model: &str, layers: &[Layer], reps: usize, candle_too: bool, split: bool) -> Result<()> {
    println!("\n== {model} ==  (median seconds per layer; totals weighted by count)");
    println!(
        "{:<26} {:>3} {:>7} | {:>8} {:>8} {:>6} | {:>8} {:>8}",
        "layer", "cnt", "GFLOP", "fast fwd", "fast f+b", "GF/s", "cndl fwd", "cndl f+b"
    );
    let (mut tf, mut tb, mut cf, mut cb, mut fl) = (0., 0., 0., 0., 0.);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for l in layers.iter().filter(|l| l.name.contains(&only)) {
        let oh = (l.hw + 2 * (l.k / 2) - l.k) / l.stride + 1;
        let gflop = 2.0 * (l.n * l.o * oh * oh * (l.c / l.groups) * l.k * l.k) as f64 / 1e9;
        let (f, b) = bench_layer(l, fast, reps)?;
        let (c1, c2) = if candle_too {
            bench_layer(l, candle_conv, reps.min(3))?
        } else {
            (f64::NAN, f64::NAN)
        };
        let k = l.count as f64;
        let passes = if l.grad_x { 3.0 } else { 2.0 };
        println!(
            "{:<26} {:>3} {:>7.3} | {:>8.4} {:>8.4} {:>6.0} | {:>8.4} {:>8.4}",
            l.name,
            l.count,
            gflop,
            f,
            b,
            passes * gflop / b,
            c1,
            c2
        );
        if split {
            let (gx, gw) = bench_grads(l, reps)?;
            println!(
                "{:<26}     gx {:.4} s ({:.0} GF/s)  gw {:.4} s ({:.0} GF/s)",
                "",
                gx,
                gflop / gx,
                gw,
                gflop / gw
            );
        }
        tf += k * f;
        tb += k * b;
        cf += k * c1;
        cb += k * c2;
        fl += k * gflop;
    }
    println!(
        "{:<26} {:>3} {:>7.2} | {:>8.4} {:>8.4} {:>6} | {:>8.4} {:>8.4}",
        "TOTAL conv", "", fl, tf, tb, "", cf, cb
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or("all", String::as_str);
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(7);
    let candle_too = !args.iter().any(|a| a == "--no-candle");
    let split = args.iter().any(|a| a == "--split");
    if args.iter().any(|a| a == "--scalar") {
        simd::set_force_scalar(true);
    }
    println!(
        "isa {:?}, rayon threads {}",
        simd::isa(),
        rayon::current_num_threads()
    );
    if which == "resnet" || which == "all" {
        run(
            "ResNet-20 b128 conv layers",
            &resnet20(),
            reps,
            candle_too,
            split,
        )?;
        if std::env::var("BENCH_ONLY").is_ok() {
            return Ok(());
        }
        println!("\nbatch norm (train) fwd / fwd+bwd, fast vs candle ops:");
        let mut bn = (0., 0., 0.);
        for (c, hw, count) in [(16, 32, 7), (32, 16, 7), (64, 8, 7)] {
            let (f, b, s) = bench_bn(128, c, hw, reps, candle_too)?;
            println!("  [128,{c},{hw},{hw}] x{count}: {f:.4} / {b:.4}  (candle ops f+b {s:.4})");
            bn = (
                bn.0 + count as f64 * f,
                bn.1 + count as f64 * b,
                bn.2 + count as f64 * s,
            );
        }
        println!(
            "  TOTAL bn (21 layers): fwd {:.4}  f+b {:.4}  (candle ops f+b {:.4})",
            bn.0, bn.1, bn.2
        );
    }
    if which == "mobilenet" || which == "all" {
        run(
            "MobileNetV2 224 b8 conv layers",
            &mobilenet_v2(),
            reps,
            candle_too,
            split,
        )?;
    }
    Ok(())
}
