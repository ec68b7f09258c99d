//! Measures the Hessian engine (PyHessian: Yao et al. 2020, by finite differences of
//! gradients) on ResNet-20 at CIFAR shape: the time of one Hessian-vector product (central and
//! one-sided) against one forward+backward of the same model, and with `--accuracy` the error
//! of f32 products for several relative steps against an f64 reference.
//!
//! `cargo run --release -p mpq --example hessian -- [--batch 128] [--reps 5] [--accuracy]
//!  [--model PATH.safetensors]`
#![expect(
    clippy::print_stdout,
    reason = "a benchmark report printed to the terminal"
)]

use std::time::Instant;

use candle::Device;
use mpq::data::{self, LoadOptions};
use mpq::graph::{ForwardOptions, Graph, Mode, NoHooks};
use mpq::model::{Model, ModelHint};
use mpq::sensitivity::{
    FdConfig, FdScheme, FiniteDiffHvp, HessianProblem, Hvp, Loss, Precision, SampleConfig,
};
use mpq::zoo::{self, ZooConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut() -> mpq::Result<()>) -> mpq::Result<f64> {
    f()?; // warm-up
    let mut ts = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        ts.push(t.elapsed().as_secs_f64());
    }
    Ok(median(ts))
}

fn fwd_bwd(g: &Graph, b: &data::Batch, mode: Mode) -> mpq::Result<()> {
    let mut hooks = NoHooks;
    let mut opts = ForwardOptions::new(mode, &mut hooks);
    opts.update_running_stats = false;
    let logits = g.forward_with(&b.x, &mut opts)?;
    let loss = mpq::train::cross_entropy(&logits, &b.y, 0.0)?;
    loss.backward()?;
    Ok(())
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn rel_l2(a: &[f32], r: &[f32]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(r)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    (d / dot(r, r)).sqrt()
}

/// Median over blocks of `|z_iᵀ(Hz)_i − ref_i| / |ref_i|` (what per-layer traces see).
fn block_quad_err(sizes: &[usize], z: &[f32], hz: &[f32], r: &[f32]) -> f64 {
    let mut off = 0;
    let mut errs = Vec::new();
    for &n in sizes {
        let s = off..off + n;
        let (a, b) = (
            dot(&z[s.clone()], &hz[s.clone()]),
            dot(&z[s.clone()], &r[s]),
        );
        errs.push((a - b).abs() / b.abs().max(1e-30));
        off += n;
    }
    median(errs)
}

fn main() -> mpq::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name);
    let value = |name: &str, default: usize| {
        flag(name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let batch = value("--batch", 128);
    let reps = value("--reps", 5);
    let model = match flag("--model").and_then(|i| args.get(i + 1)) {
        Some(p) => Model::open(p, &ModelHint::default(), &Device::Cpu)?,
        None => zoo::build("resnet20", &ZooConfig::new([3, 32, 32], 10), 0)?,
    };
    let g = &model.graph;
    let splits = data::load(
        &format!("synthetic:3x32x32:10:{}", batch * 2),
        &LoadOptions::default(),
    )?;
    let sample = SampleConfig {
        batches: 1,
        batch_size: batch,
        ..Default::default()
    };
    let batches = mpq::sensitivity::analysis_batches(
        &splits.train,
        &model.normalization_or(&splits.normalization),
        &sample,
        g.device(),
    )?;
    let b = &batches[0];
    println!(
        "ResNet-20 ({}), batch {batch}, {} threads, median of {reps}",
        model.meta.arch,
        rayon::current_num_threads()
    );
    let train = time(reps, || fwd_bwd(g, b, Mode::Train))?;
    let eval = time(reps, || fwd_bwd(g, b, Mode::Eval))?;
    let problem = HessianProblem::new(
        g,
        batches.clone(),
        Loss::cross_entropy(),
        None,
        Precision::F32,
    )?;
    let dim: usize = problem.layers().iter().map(|l| l.params).sum();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let z: Vec<f32> = (0..dim)
        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
        .collect();
    let fd = |scheme, rel_step| FdConfig { scheme, rel_step };
    let mut central = FiniteDiffHvp::new(&problem, &fd(FdScheme::Central, None))?;
    let t_central = time(reps, || central.hvp(&z).map(drop))?;
    let mut one = FiniteDiffHvp::new(&problem, &fd(FdScheme::OneSided, None))?;
    let t_one = time(reps, || one.hvp(&z).map(drop))?;
    println!("| step | seconds | / train fwd+bwd |");
    println!("| --- | --- | --- |");
    for (name, t) in [
        (
            "forward+backward, train mode (a training step without the update)",
            train,
        ),
        ("forward+backward, eval mode", eval),
        ("HVP, central differences (2 gradients)", t_central),
        (
            "HVP, one-sided differences (1 gradient, g(w) cached)",
            t_one,
        ),
    ] {
        println!("| {name} | {t:.3} | {:.2}x |", t / train);
    }

    if flag("--accuracy").is_none() {
        return Ok(());
    }
    // Reference: f64 central differences at δ = 1e-10 (patterns frozen, as everywhere below
    // unless marked "free"), i.e. autodiff's Hessian.
    let mut p64 = HessianProblem::new(
        g,
        batches.clone(),
        Loss::cross_entropy(),
        None,
        Precision::F64,
    )?;
    let sizes: Vec<usize> = problem.layers().iter().map(|l| l.params).collect();
    let t = Instant::now();
    let reference = FiniteDiffHvp::new(&p64, &fd(FdScheme::Central, Some(1e-10)))?.hvp(&z)?;
    let t64 = t.elapsed().as_secs_f64();
    let zhz = dot(&z, &reference);
    println!("\nf64 reference δ=1e-10 ({t64:.1} s per HVP): zᵀHz {zhz:.6e}");
    println!(
        "| arithmetic | patterns | scheme | δ | rel. L2 error of Hv | rel. error of zᵀHz | median per-layer rel. error of z_iᵀ(Hz)_i |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let row = |name: &str, pat: &str, scheme: FdScheme, step: f64, hz: &[f32]| {
        let q = (dot(&z, hz) - zhz).abs() / zhz.abs();
        println!(
            "| {name} | {pat} | {scheme:?} | {step:.0e} | {:.2e} | {q:.2e} | {:.2e} |",
            rel_l2(hz, &reference),
            block_quad_err(&sizes, &z, hz, &reference)
        );
    };
    for step in [1e-8, 1e-6, 1e-4] {
        let hz = FiniteDiffHvp::new(&p64, &fd(FdScheme::Central, Some(step)))?.hvp(&z)?;
        row("f64", "frozen", FdScheme::Central, step, &hz);
    }
    p64.set_frozen_patterns(false);
    for step in [1e-8, 1e-6] {
        let hz = FiniteDiffHvp::new(&p64, &fd(FdScheme::Central, Some(step)))?.hvp(&z)?;
        row("f64", "free", FdScheme::Central, step, &hz);
    }
    let mut p32 = problem;
    for scheme in [FdScheme::Central, FdScheme::OneSided] {
        for step in [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2] {
            let hz = FiniteDiffHvp::new(&p32, &fd(scheme, Some(step)))?.hvp(&z)?;
            row("f32", "frozen", scheme, step, &hz);
        }
    }
    p32.set_frozen_patterns(false);
    for step in [1e-3, 1e-2] {
        let hz = FiniteDiffHvp::new(&p32, &fd(FdScheme::Central, Some(step)))?.hvp(&z)?;
        row("f32", "free", FdScheme::Central, step, &hz);
    }
    Ok(())
}
