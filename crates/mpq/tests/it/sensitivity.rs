//! The Hessian engine against exact Hessians: basis-vector Hessians of a small MLP and a tiny
//! conv net, checked first against the closed-form Hessian of a linear model with squared loss;
//! activation traces against `2 WᵀW / N`; channel traces summing to layer traces; reproducible
//! numbers; untouched weights; bad inputs as input errors.

use candle::{DType, Device, Tensor};
use mpq::data::Batch;
use mpq::graph::{Conv2dSpec, Graph, GraphBuilder};
use mpq::progress::NoProgress;
use mpq::sensitivity::{
    self, AnalyzeConfig, Estimator, FdConfig, FdScheme, FiniteDiffHvp, HessianProblem, Hvp, Loss,
    Metric, Precision, SampleConfig, SensitivityTable,
};

use crate::util::{assert_close, tensor, to_f64, uniform};

/// Mean over samples of `Σ_o (out_o − t_o)²`.
fn squared_loss() -> Loss {
    Loss::new(|out, t| {
        let n = out.dim(0)? as f64;
        Ok(((out - t)?.sqr()?.sum_all()? / n)?)
    })
}

/// Inputs `[n, shape...]` in `[-1, 1]`.
fn inputs(n: usize, shape: &[usize], seed: u64) -> Tensor {
    let mut dims = vec![n];
    dims.extend(shape);
    let len: usize = dims.iter().product();
    tensor(&uniform(len, -1.0, 1.0, seed), &dims)
}

fn labels(n: usize, classes: u32) -> Tensor {
    let y: Vec<u32> = (0..n as u32).map(|i| (i * 7 + 1) % classes).collect();
    Tensor::from_vec(y, n, &Device::Cpu).unwrap()
}

/// input [4] → fc (3 outputs, bias).
fn linear_model(seed: u64) -> Graph {
    let mut b = GraphBuilder::new(&[4], &Device::Cpu, seed);
    let x = b.linear("fc", b.input(), 3, true).unwrap();
    b.finish(x).unwrap()
}

/// input [6] → fc1 8 → ReLU → fc2 3.
fn mlp(seed: u64) -> Graph {
    let mut b = GraphBuilder::new(&[6], &Device::Cpu, seed);
    let x = b.linear("fc1", b.input(), 8, true).unwrap();
    let x = b.relu(x).unwrap();
    let x = b.linear("fc2", x, 3, true).unwrap();
    b.finish(x).unwrap()
}

/// input 1x6x6 → conv 2@3x3 → BN (non-trivial running stats) → ReLU → flatten → fc 3.
fn tiny_cnn(seed: u64) -> Graph {
    let mut b = GraphBuilder::new(&[1, 6, 6], &Device::Cpu, seed);
    let x = b
        .conv2d("conv", b.input(), Conv2dSpec::new(1, 2, 3, 1, 0, true))
        .unwrap();
    let x = b.batch_norm("bn", x).unwrap();
    let x = b.relu(x).unwrap();
    let x = b.flatten(x).unwrap();
    let x = b.linear("fc", x, 3, true).unwrap();
    let g = b.finish(x).unwrap();
    let p = g.params();
    p.var("bn.running_mean")
        .unwrap()
        .set(&tensor(&[0.1, -0.2], &[2]))
        .unwrap();
    p.var("bn.running_var")
        .unwrap()
        .set(&tensor(&[0.5, 2.0], &[2]))
        .unwrap();
    p.var("bn.weight")
        .unwrap()
        .set(&tensor(&[1.5, 0.7], &[2]))
        .unwrap();
    g
}

/// The full Hessian of every analysed weight (row-major `dim`x`dim`), one basis vector per
/// column.
fn full_hessian(h: &mut dyn Hvp) -> Vec<f64> {
    let dim: usize = h.block_sizes().iter().sum();
    let mut out = vec![0.0; dim * dim];
    let mut v = vec![0f32; dim];
    for j in 0..dim {
        v[j] = 1.0;
        let col = h.hvp(&v).unwrap();
        v[j] = 0.0;
        for r in 0..dim {
            out[r * dim + j] = col[r] as f64;
        }
    }
    out
}

/// The diagonal block `[off, off+n)` of a `dim`x`dim` matrix.
fn block(a: &[f64], dim: usize, off: usize, n: usize) -> Vec<f64> {
    let mut b = vec![0.0; n * n];
    for r in 0..n {
        for c in 0..n {
            b[r * n + c] = 0.5 * (a[(off + r) * dim + off + c] + a[(off + c) * dim + off + r]);
        }
    }
    b
}

/// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations (independent of the library).
fn jacobi_eigenvalues(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off < 1e-26 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i * n + i]).collect()
}

fn top_magnitude(ev: &[f64]) -> f64 {
    ev.iter()
        .copied()
        .fold(0.0, |a, x| if x.abs() > a.abs() { x } else { a })
}

fn trace(a: &[f64], n: usize) -> f64 {
    (0..n).map(|i| a[i * n + i]).sum()
}

fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn run(g: &Graph, batches: Vec<Batch>, loss: Loss, cfg: &AnalyzeConfig) -> SensitivityTable {
    sensitivity::analyze_with_loss(g, batches, loss, cfg, &mut NoProgress).unwrap()
}

#[test]
fn linear_squared_loss_hessian_matches_closed_form() {
    let g = linear_model(1);
    let n = 10;
    let x = inputs(n, &[4], 2);
    let t = inputs(n, &[3], 3);
    let xs = to_f64(&x);
    // H[(o,i),(o',i')] = δ_oo' · (2/N) Σ_n x_ni x_ni'.
    let gram = |i: usize, j: usize| {
        (0..n).map(|s| xs[s * 4 + i] * xs[s * 4 + j]).sum::<f64>() * 2.0 / n as f64
    };
    let dim = 12;
    let mut want = vec![0.0; dim * dim];
    for o in 0..3 {
        for i in 0..4 {
            for j in 0..4 {
                want[(o * 4 + i) * dim + o * 4 + j] = gram(i, j);
            }
        }
    }
    for (precision, tol) in [(Precision::F64, 1e-7), (Precision::F32, 1e-3)] {
        for scheme in [FdScheme::Central, FdScheme::OneSided] {
            // Two batches of unequal size: the sample-weighted mean is the full-data Hessian.
            let batches = vec![
                Batch {
                    x: x.narrow(0, 0, 6).unwrap(),
                    y: t.narrow(0, 0, 6).unwrap(),
                },
                Batch {
                    x: x.narrow(0, 6, 4).unwrap(),
                    y: t.narrow(0, 6, 4).unwrap(),
                },
            ];
            let p = HessianProblem::new(&g, batches, squared_loss(), None, precision).unwrap();
            let fd = FdConfig {
                scheme,
                rel_step: None,
            };
            let mut h = FiniteDiffHvp::new(&p, &fd).unwrap();
            let got = full_hessian(&mut h);
            assert_eq!(h.count(), dim as u64);
            let scale = want.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            assert_close(&got, &want, tol * scale, 0.0);
        }
    }
    // The exact estimator and power iteration give the closed-form trace and top eigenvalue.
    let want_block = block(&want, dim, 0, dim);
    let want_trace = trace(&want_block, dim);
    let want_top = top_magnitude(&jacobi_eigenvalues(want_block, dim));
    let batches = vec![Batch { x, y: t }];
    let mut cfg = AnalyzeConfig::new(Metric::All);
    cfg.estimator = Estimator::Exact;
    cfg.precision = Precision::F64;
    cfg.density.steps = 12;
    let table = run(&g, batches.clone(), squared_loss(), &cfg);
    let fc = &table.layers[0];
    assert!(rel_err(fc.trace.unwrap(), want_trace) < 1e-6);
    assert!(rel_err(fc.top_eigenvalue.unwrap(), want_top) < 1e-6);
    // SLQ: every Ritz value is an eigenvalue (Lanczos stops at the invariant subspace), the
    // largest is the top eigenvalue, and the weights sum to 1.
    let d = fc.density.as_ref().unwrap();
    let q = &d.runs[0];
    let ev = jacobi_eigenvalues(block(&want, dim, 0, dim), dim);
    for node in &q.nodes {
        let nearest = ev.iter().map(|e| (e - node).abs()).fold(f64::MAX, f64::min);
        assert!(
            nearest < 1e-6 * want_top.abs(),
            "Ritz value {node} vs {ev:?}"
        );
    }
    assert!(rel_err(*q.nodes.last().unwrap(), want_top) < 1e-6);
    assert!((q.weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    cfg.estimator = Estimator::Hutchinson;
    cfg.metric = Metric::Eigen;
    cfg.power.tol = 1e-9;
    cfg.power.max_iter = 2000;
    let table = run(&g, batches, squared_loss(), &cfg);
    assert!(rel_err(table.layers[0].top_eigenvalue.unwrap(), want_top) < 1e-4);
}

/// Checks the library's exact and Hutchinson estimates of `g` against its full Hessian.
fn check_against_full_hessian(g: &Graph, batches: Vec<Batch>) {
    let p = HessianProblem::new(
        g,
        batches.clone(),
        Loss::cross_entropy(),
        None,
        Precision::F64,
    )
    .unwrap();
    let mut h = FiniteDiffHvp::new(&p, &FdConfig::default()).unwrap();
    let sizes = h.block_sizes().to_vec();
    let dim: usize = sizes.iter().sum();
    let full = full_hessian(&mut h);
    // Differences of gradients give a symmetric matrix when they are accurate.
    let asym = (0..dim * dim)
        .map(|k| (full[k] - full[(k % dim) * dim + k / dim]).abs())
        .fold(0.0, f64::max);
    let scale = full.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    assert!(asym < 1e-6 * scale, "asymmetry {asym} vs {scale}");

    let mut cfg = AnalyzeConfig::new(Metric::All);
    cfg.precision = Precision::F64;
    cfg.estimator = Estimator::Exact;
    cfg.density.steps = 8;
    let exact = run(g, batches.clone(), Loss::cross_entropy(), &cfg);
    cfg.estimator = Estimator::Hutchinson;
    cfg.metric = Metric::ChannelTrace;
    cfg.trace.probes = Some(300);
    let hutch = run(g, batches.clone(), Loss::cross_entropy(), &cfg);
    cfg.metric = Metric::Eigen;
    cfg.power.tol = 1e-10;
    cfg.power.max_iter = 3000;
    let power = run(g, batches, Loss::cross_entropy(), &cfg);

    let mut off = 0;
    for (i, &n) in sizes.iter().enumerate() {
        let b = block(&full, dim, off, n);
        let want_trace = trace(&b, n);
        let want_top = top_magnitude(&jacobi_eigenvalues(b, n));
        let (e, hu, pw) = (&exact.layers[i], &hutch.layers[i], &power.layers[i]);
        assert!(
            rel_err(e.trace.unwrap(), want_trace) < 1e-3,
            "{}: exact trace {} vs {want_trace}",
            e.name,
            e.trace.unwrap()
        );
        assert!(
            rel_err(e.top_eigenvalue.unwrap(), want_top) < 1e-3,
            "{}: exact top eigenvalue {} vs {want_top}",
            e.name,
            e.top_eigenvalue.unwrap()
        );
        assert!(
            rel_err(pw.top_eigenvalue.unwrap(), want_top) < 1e-3,
            "{}: power iteration {} vs {want_top}",
            e.name,
            pw.top_eigenvalue.unwrap()
        );
        let se = hu.trace_stderr.unwrap();
        assert!(se > 0.0);
        assert!(
            (hu.trace.unwrap() - want_trace).abs() <= 3.0 * se,
            "{}: Hutchinson {} ± {se} vs {want_trace}",
            e.name,
            hu.trace.unwrap()
        );
        off += n;
    }
    // The whole analysed Hessian's top eigenvalue (power iteration, deflation for top-k).
    let top = power.model_top_eigenvalues.as_ref().unwrap()[0];
    let full_top = top_magnitude(&jacobi_eigenvalues(full.clone(), dim));
    assert!(rel_err(top, full_top) < 1e-3, "{top} vs {full_top}");
}

#[test]
fn mlp_exact_and_estimates_match_full_hessian() {
    let n = 16;
    let batches = vec![Batch {
        x: inputs(n, &[6], 11),
        y: labels(n, 3),
    }];
    check_against_full_hessian(&mlp(4), batches);
}

#[test]
fn tiny_cnn_exact_and_estimates_match_full_hessian() {
    let n = 12;
    let batches = vec![
        Batch {
            x: inputs(8, &[1, 6, 6], 21),
            y: labels(8, 3),
        },
        Batch {
            x: inputs(n - 8, &[1, 6, 6], 22),
            y: labels(n - 8, 3),
        },
    ];
    check_against_full_hessian(&tiny_cnn(5), batches);
}

#[test]
fn f32_traces_agree_with_f64() {
    let n = 16;
    let batches = vec![Batch {
        x: inputs(n, &[6], 11),
        y: labels(n, 3),
    }];
    let g = mlp(4);
    let mut cfg = AnalyzeConfig::new(Metric::Trace);
    cfg.estimator = Estimator::Exact;
    cfg.precision = Precision::F64;
    let want = run(&g, batches.clone(), Loss::cross_entropy(), &cfg);
    cfg.precision = Precision::F32;
    for (scheme, tol) in [(FdScheme::Central, 1e-3), (FdScheme::OneSided, 5e-3)] {
        cfg.scheme = Some(scheme);
        let got = run(&g, batches.clone(), Loss::cross_entropy(), &cfg);
        for (a, b) in got.layers.iter().zip(&want.layers) {
            let err = rel_err(a.trace.unwrap(), b.trace.unwrap());
            assert!(err < tol, "{scheme:?} {}: {err}", a.name);
        }
    }
}

/// input [5] → fc1 (4) → fc2 (3) with a squared loss: the Hessian w.r.t. fc2's input `a_n` is
/// `2 W2ᵀW2 / N` per sample, w.r.t. fc1's input `2 (W2 W1)ᵀ(W2 W1) / N`.
#[test]
fn activation_trace_matches_closed_form() {
    let mut b = GraphBuilder::new(&[5], &Device::Cpu, 7);
    let x = b.linear("fc1", b.input(), 4, true).unwrap();
    let x = b.linear("fc2", x, 3, true).unwrap();
    let g = b.finish(x).unwrap();
    let w1 = to_f64(g.params().var("fc1.weight").unwrap().as_tensor());
    let w2 = to_f64(g.params().var("fc2.weight").unwrap().as_tensor());
    // Per-sample traces (N samples, each block 2 MᵀM / N: the sum over samples is 2‖M‖²).
    let fc2_diag: Vec<f64> = (0..4)
        .map(|j| 2.0 * (0..3).map(|o| w2[o * 4 + j] * w2[o * 4 + j]).sum::<f64>())
        .collect();
    let m: Vec<f64> = (0..3 * 5)
        .map(|k| {
            (0..4)
                .map(|h| w2[(k / 5) * 4 + h] * w1[h * 5 + k % 5])
                .sum()
        })
        .collect();
    let fc1_trace = 2.0 * m.iter().map(|x| x * x).sum::<f64>();
    let fc2_trace: f64 = fc2_diag.iter().sum();
    let batches = vec![
        Batch {
            x: inputs(6, &[5], 8),
            y: inputs(6, &[3], 9),
        },
        Batch {
            x: inputs(3, &[5], 10),
            y: inputs(3, &[3], 12),
        },
    ];
    let mut cfg = AnalyzeConfig::new(Metric::ChannelTrace);
    cfg.estimator = Estimator::Exact;
    // Whole batches (6 and 3 samples), parts of 4 (6 = 4 + 2) and single samples.
    for (precision, tol, micro) in [
        (Precision::F64, 1e-7, 32),
        (Precision::F64, 1e-7, 4),
        (Precision::F64, 1e-7, 1),
        (Precision::F32, 1e-3, 32),
        (Precision::F32, 1e-3, 4),
    ] {
        cfg.precision = precision;
        cfg.micro_batch = micro;
        let t = run(&g, batches.clone(), squared_loss(), &cfg);
        let (l1, l2) = (&t.layers[0], &t.layers[1]);
        assert!(rel_err(l1.act_trace.unwrap(), fc1_trace) < tol, "{l1:?}");
        assert!(rel_err(l2.act_trace.unwrap(), fc2_trace) < tol, "{l2:?}");
        assert_close(
            l2.act_channel_traces.as_ref().unwrap(),
            &fc2_diag,
            tol * fc2_trace,
            0.0,
        );
        assert_eq!(l2.act_elems, 4);
        assert!(rel_err(l2.act_trace_per_elem.unwrap(), fc2_trace / 4.0) < tol);
    }
    cfg.estimator = Estimator::Hutchinson;
    cfg.precision = Precision::F32;
    cfg.trace.probes = Some(200);
    let t = run(&g, batches, squared_loss(), &cfg);
    for (l, want) in t.layers.iter().zip([fc1_trace, fc2_trace]) {
        let se = l.act_trace_stderr.unwrap();
        assert!(
            (l.act_trace.unwrap() - want).abs() <= 3.0 * se,
            "{}: {} ± {se} vs {want}",
            l.name,
            l.act_trace.unwrap()
        );
    }
}

/// Splitting a batch into passes of fewer samples (to bound memory) gives the same activation
/// traces up to float summation order: the probes are drawn sample by sample, and in eval mode
/// each part's pass yields exactly its samples' share. LeNet-5 has frozen ReLU and max-pool
/// patterns, which the parts must slice consistently.
#[test]
fn activation_traces_do_not_depend_on_micro_batch() {
    let g = mpq::zoo::build("lenet5", &mpq::zoo::ZooConfig::new([1, 28, 28], 10), 5)
        .unwrap()
        .graph;
    let batches = vec![
        Batch {
            x: inputs(7, &[1, 28, 28], 61),
            y: labels(7, 10),
        },
        Batch {
            x: inputs(3, &[1, 28, 28], 62),
            y: labels(3, 10),
        },
    ];
    let mut cfg = AnalyzeConfig::new(Metric::ActTrace);
    cfg.trace.probes = Some(3);
    // A smaller pass sums in another order, and a difference quotient amplifies that rounding
    // by 1/ε: f64 central (δ = 1e-5) agrees to ~1e-10 (measured), f64 one-sided (δ = 1e-8) to
    // ~1e-6, f32 central (δ = 1e-3) to ~2e-3. (f32 one-sided, δ = 1e-4, moves by up to 4% on
    // these tiny early-layer traces, as much as it differs from f64 for whole batches.)
    for (precision, scheme, tol) in [
        (Precision::F64, FdScheme::Central, 1e-9),
        (Precision::F64, FdScheme::OneSided, 1e-5),
        (Precision::F32, FdScheme::Central, 1e-2),
    ] {
        cfg.precision = precision;
        cfg.scheme = Some(scheme);
        cfg.micro_batch = 64;
        let whole = run(&g, batches.clone(), Loss::cross_entropy(), &cfg);
        for micro in [1, 3] {
            cfg.micro_batch = micro;
            let parts = run(&g, batches.clone(), Loss::cross_entropy(), &cfg);
            assert_eq!(parts.hvp_count, whole.hvp_count);
            for (p, w) in parts.layers.iter().zip(&whole.layers) {
                let (a, b) = (p.act_trace.unwrap(), w.act_trace.unwrap());
                assert!(
                    rel_err(a, b) < tol,
                    "{precision:?} {scheme:?}, parts of {micro}: {}: {a} vs {b}",
                    p.name
                );
            }
        }
    }
    cfg.micro_batch = 0;
    expect_input_error(
        sensitivity::analyze(&g, batches, &cfg, &mut NoProgress),
        "micro-batch",
    );
}

#[test]
fn channel_traces_sum_to_layer_traces() {
    let g = mpq::zoo::build("lenet5", &mpq::zoo::ZooConfig::new([1, 28, 28], 10), 3)
        .unwrap()
        .graph;
    let batches = vec![Batch {
        x: inputs(8, &[1, 28, 28], 31),
        y: labels(8, 10),
    }];
    let mut cfg = AnalyzeConfig::new(Metric::ChannelTrace);
    cfg.trace.probes = Some(5);
    let t = run(&g, batches, Loss::cross_entropy(), &cfg);
    assert_eq!(t.hvp_count, 10, "5 weight and 5 activation probes");
    for l in &t.layers {
        let ch = l.channel_traces.as_ref().unwrap();
        let sum: f64 = ch.iter().sum();
        let tr = l.trace.unwrap();
        assert!(
            (sum - tr).abs() <= 1e-9 * tr.abs().max(1e-12),
            "{}: {sum} vs {tr}",
            l.name
        );
        let ach = l.act_channel_traces.as_ref().unwrap();
        let asum: f64 = ach.iter().sum();
        let at = l.act_trace.unwrap();
        assert!(
            (asum - at).abs() <= 1e-9 * at.abs().max(1e-12),
            "{}: {asum} vs {at}",
            l.name
        );
    }
    let conv2 = t.layer("conv2").unwrap();
    assert_eq!(conv2.channel_traces.as_ref().unwrap().len(), 16);
    assert_eq!(conv2.act_channel_traces.as_ref().unwrap().len(), 6);
}

#[test]
fn same_seed_same_numbers_and_weights_untouched() {
    let g = tiny_cnn(9);
    let before: Vec<Vec<u8>> = g
        .params()
        .iter()
        .map(|p| bytes(p.var.as_tensor()))
        .collect();
    let batches = vec![Batch {
        x: inputs(6, &[1, 6, 6], 41),
        y: labels(6, 3),
    }];
    let mut cfg = AnalyzeConfig::new(Metric::All);
    cfg.trace.max_iter = 30;
    cfg.density.steps = 10;
    cfg.top_k = 2;
    let mut a = run(&g, batches.clone(), Loss::cross_entropy(), &cfg);
    let mut b = run(&g, batches.clone(), Loss::cross_entropy(), &cfg);
    a.seconds = 0.0;
    b.seconds = 0.0;
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    cfg.seed = 1;
    let c = run(&g, batches, Loss::cross_entropy(), &cfg);
    assert_ne!(a.layers[0].trace, c.layers[0].trace);
    let after: Vec<Vec<u8>> = g
        .params()
        .iter()
        .map(|p| bytes(p.var.as_tensor()))
        .collect();
    assert_eq!(
        before, after,
        "the weights must be bit-identical after analysis"
    );
}

fn bytes(t: &Tensor) -> Vec<u8> {
    let t = t.flatten_all().unwrap();
    match t.dtype() {
        DType::F32 => t
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        _ => t
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
    }
}

#[test]
fn analysis_batches_take_the_first_samples_in_file_order() {
    let splits = mpq::data::load("synthetic:1x8x8:3:40", &Default::default()).unwrap();
    let norm = &splits.normalization;
    let cfg = SampleConfig {
        batches: 2,
        batch_size: 5,
        ..Default::default()
    };
    let b = sensitivity::analysis_batches(&splits.train, norm, &cfg, &Device::Cpu).unwrap();
    assert_eq!(b.len(), 2);
    let idx: Vec<usize> = (0..10).collect();
    let want = mpq::data::to_batch(&splits.train, &idx, norm, &Device::Cpu).unwrap();
    let got = Tensor::cat(&[&b[0].x, &b[1].x], 0).unwrap();
    assert_eq!(to_f64(&got), to_f64(&want.x));
    for bad in [(0, 5), (2, 0), (100, 100)] {
        let cfg = SampleConfig {
            batches: bad.0,
            batch_size: bad.1,
            ..Default::default()
        };
        let e = sensitivity::analysis_batches(&splits.train, norm, &cfg, &Device::Cpu).unwrap_err();
        assert!(e.is_input_error(), "{e}");
    }
}

fn expect_input_error(r: mpq::Result<SensitivityTable>, fragment: &str) {
    let e = r.expect_err("should fail");
    assert!(e.is_input_error(), "{e}");
    assert!(
        e.to_string().contains(fragment),
        "{e} should mention {fragment:?}"
    );
}

#[test]
fn bad_inputs_are_input_errors() {
    let cfg = AnalyzeConfig::new(Metric::Trace);
    let analyze = |g: &Graph, batches: Vec<Batch>, loss: Loss| {
        sensitivity::analyze_with_loss(g, batches, loss, &cfg, &mut NoProgress)
    };
    let ok_batch = || Batch {
        x: inputs(4, &[6], 1),
        y: labels(4, 3),
    };
    // No quantizable layer.
    let mut b = GraphBuilder::new(&[3], &Device::Cpu, 0);
    let x = b.relu(b.input()).unwrap();
    let no_layers = b.finish(x).unwrap();
    let batch = Batch {
        x: inputs(4, &[3], 1),
        y: labels(4, 3),
    };
    expect_input_error(
        analyze(&no_layers, vec![batch], Loss::cross_entropy()),
        "no quantizable layers",
    );
    // No data.
    expect_input_error(analyze(&mlp(0), vec![], Loss::cross_entropy()), "0 batches");
    // NaN in the data.
    let mut xs = to_f64(&ok_batch().x);
    xs[3] = f64::NAN;
    let nan_batch = Batch {
        x: tensor(&xs, &[4, 6]),
        y: labels(4, 3),
    };
    expect_input_error(
        analyze(&mlp(0), vec![nan_batch], Loss::cross_entropy()),
        "input data",
    );
    // NaN in the weights.
    let g = mlp(0);
    let w = g.params().var("fc2.weight").unwrap();
    let mut ws = to_f64(w.as_tensor());
    ws[0] = f64::INFINITY;
    w.set(&tensor(&ws, w.dims())).unwrap();
    expect_input_error(
        analyze(&g, vec![ok_batch()], Loss::cross_entropy()),
        "fc2.weight",
    );
    // A product that turns non-finite: exp(1e6·logits) is finite at w but overflows at w ± εv.
    let mut b = GraphBuilder::new(&[2], &Device::Cpu, 0);
    let x = b.linear("fc", b.input(), 1, true).unwrap();
    let g = b.finish(x).unwrap();
    for name in ["fc.weight", "fc.bias"] {
        let v = g.params().var(name).unwrap();
        v.set(&v.as_tensor().zeros_like().unwrap()).unwrap();
    }
    let batch = Batch {
        x: tensor(&[1.0; 6], &[3, 2]),
        y: labels(3, 1),
    };
    let steep = Loss::new(|logits, _| Ok((logits * 1e6)?.exp()?.mean_all()?));
    expect_input_error(analyze(&g, vec![batch], steep), "Hessian-vector product");
    // An unknown layer, and an exact estimate of a layer that is too large.
    let mut cfg2 = AnalyzeConfig::new(Metric::Trace);
    cfg2.layers = Some(vec!["nope".into()]);
    expect_input_error(
        sensitivity::analyze(&mlp(0), vec![ok_batch()], &cfg2, &mut NoProgress),
        "nope",
    );
    cfg2.layers = None;
    cfg2.estimator = Estimator::Exact;
    cfg2.exact_max_params = 10;
    expect_input_error(
        sensitivity::analyze(&mlp(0), vec![ok_batch()], &cfg2, &mut NoProgress),
        "exact-max-params",
    );
}

fn rel_l2(a: &[f32], r: &[f32]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(r)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let n: f64 = r.iter().map(|&y| (y as f64).powi(2)).sum();
    (d / n).sqrt()
}

/// LeNet-5 has ReLUs and max-pools: with their patterns frozen at `w`, products at large steps
/// and in f32 agree with a tiny-step f64 product (autodiff's Hessian); left free, sign changes
/// between `w ± εv` corrupt a large-step difference.
#[test]
fn frozen_patterns_make_differences_match_autodiff() {
    let g = mpq::zoo::build("lenet5", &mpq::zoo::ZooConfig::new([1, 28, 28], 10), 3)
        .unwrap()
        .graph;
    let batches = vec![Batch {
        x: inputs(8, &[1, 28, 28], 51),
        y: labels(8, 10),
    }];
    let mut p64 = HessianProblem::new(
        &g,
        batches.clone(),
        Loss::cross_entropy(),
        None,
        Precision::F64,
    )
    .unwrap();
    let dim: usize = p64.layers().iter().map(|l| l.params).sum();
    let z: Vec<f32> = uniform(dim, -1.0, 1.0, 52)
        .iter()
        .map(|&u| if u < 0.0 { -1.0 } else { 1.0 })
        .collect();
    let hvp = |p: &HessianProblem, scheme, rel_step| {
        FiniteDiffHvp::new(p, &FdConfig { scheme, rel_step })
            .unwrap()
            .hvp(&z)
            .unwrap()
    };
    let reference = hvp(&p64, FdScheme::Central, Some(1e-9));
    let big = hvp(&p64, FdScheme::Central, Some(1e-3));
    assert!(
        rel_l2(&big, &reference) < 1e-5,
        "{}",
        rel_l2(&big, &reference)
    );
    let p32 =
        HessianProblem::new(&g, batches, Loss::cross_entropy(), None, Precision::F32).unwrap();
    let central = hvp(&p32, FdScheme::Central, None);
    assert!(
        rel_l2(&central, &reference) < 2e-4,
        "{}",
        rel_l2(&central, &reference)
    );
    let one_sided = hvp(&p32, FdScheme::OneSided, None);
    assert!(
        rel_l2(&one_sided, &reference) < 5e-3,
        "{}",
        rel_l2(&one_sided, &reference)
    );
    p64.set_frozen_patterns(false);
    let free = hvp(&p64, FdScheme::Central, Some(1e-3));
    assert!(
        rel_l2(&free, &reference) > 1e-3,
        "{}",
        rel_l2(&free, &reference)
    );
}

/// `hvp_blocks` gives the full product's entries on the wanted blocks (same perturbation, so
/// the same step) and zeros elsewhere, in both schemes, through the f32 reverse pass.
#[test]
fn block_products_match_the_full_product_on_wanted_blocks() {
    let g = mpq::zoo::build("resnet8", &mpq::zoo::ZooConfig::new([3, 12, 12], 5), 6)
        .unwrap()
        .graph;
    let batches = vec![Batch {
        x: inputs(6, &[3, 12, 12], 61),
        y: labels(6, 5),
    }];
    let p = HessianProblem::new(&g, batches, Loss::cross_entropy(), None, Precision::F32).unwrap();
    for scheme in [FdScheme::Central, FdScheme::OneSided] {
        let fd = FdConfig {
            scheme,
            rel_step: None,
        };
        let mut h = FiniteDiffHvp::new(&p, &fd).unwrap();
        let sizes = h.block_sizes().to_vec();
        let dim: usize = sizes.iter().sum();
        let v: Vec<f32> = uniform(dim, -1.0, 1.0, 62)
            .iter()
            .map(|&u| if u < 0.0 { -1.0 } else { 1.0 })
            .collect();
        let full = h.hvp(&v).unwrap();
        let wanted: Vec<bool> = (0..sizes.len()).map(|i| i % 3 != 1).collect();
        let part = h.hvp_blocks(&v, &wanted).unwrap();
        let mut off = 0;
        for (i, &n) in sizes.iter().enumerate() {
            let (a, b) = (&part[off..off + n], &full[off..off + n]);
            if wanted[i] {
                let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
                let s: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
                assert!(d.sqrt() <= 1e-5 * s.sqrt() + 1e-9, "{scheme:?} block {i}");
            } else {
                assert!(a.iter().all(|&x| x == 0.0), "{scheme:?} block {i} not zero");
            }
            off += n;
        }
        assert!(h.hvp_blocks(&v, &wanted[1..]).is_err());
    }
}

#[test]
fn channel_trace_standard_errors_cover_the_exact_channel_traces() {
    // CW-HAWQ's channel order rests on Hutchinson channel traces: their standard errors must
    // describe the distance to the exact values (z-scores of a normal mean) and shrink as
    // 1/√probes.
    let g = tiny_cnn(4);
    let batches = vec![Batch {
        x: inputs(6, &[1, 6, 6], 41),
        y: labels(6, 3),
    }];
    let mut cfg = AnalyzeConfig::new(Metric::ChannelTrace);
    cfg.estimator = Estimator::Exact;
    let exact = run(&g, batches.clone(), Loss::cross_entropy(), &cfg);
    let mut cfg = AnalyzeConfig::new(Metric::ChannelTrace);
    let mut z = Vec::new();
    let mut se_at = Vec::new();
    for probes in [50, 800] {
        cfg.trace.probes = Some(probes);
        let est = run(&g, batches.clone(), Loss::cross_entropy(), &cfg);
        let mut mean_se = 0.0;
        for (e, x) in est.layers.iter().zip(&exact.layers) {
            let (t, se) = (
                e.channel_traces.as_ref().unwrap(),
                e.channel_trace_stderr.as_ref().unwrap(),
            );
            let want = x.channel_traces.as_ref().unwrap();
            assert_eq!(se.len(), t.len());
            for ((t, se), w) in t.iter().zip(se).zip(want) {
                if probes == 800 {
                    z.push((t - w).abs() / se.max(1e-300));
                }
                mean_se += se;
            }
            assert_eq!(
                x.channel_trace_stderr.as_ref().unwrap().iter().sum::<f64>(),
                0.0
            );
        }
        se_at.push(mean_se);
    }
    let within = z.iter().filter(|&&v| v <= 1.96).count() as f64 / z.len() as f64;
    assert!(z.iter().all(|&v| v < 5.0), "{z:?}");
    assert!(within >= 0.8, "{within} of channels within 1.96 SE: {z:?}");
    // 16x the probes: a quarter of the standard error (within sampling noise of the SEs).
    let ratio = se_at[0] / se_at[1];
    assert!((3.0..5.5).contains(&ratio), "{ratio}");
}
