//! Warm timings of a fixed table of workloads (`mpq bench`): ResNet-20 forward,
//! forward+backward, one Hessian-vector product by central differences and the per-layer
//! Hessian traces of all its layers (HAWQ-V2's sensitivity, as `mpq analyze --metric trace`),
//! LeNet-5 and MobileNetV2 forward+backward, and a square matrix product as the machine's
//! attainable GEMM rate. Inputs are synthetic and seeded; FLOP counts come from the layer
//! table's MACs. `bench/peer/torch_bench.py` runs the same workloads in PyTorch (per-layer
//! traces as PyHessian computes them) and prints the same keys.

use std::time::Instant;

use candle::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::data::Batch;
use crate::graph::{ForwardOptions, Graph, Mode, NoHooks};
use crate::progress::Progress;
use crate::report::text::Table;
use crate::sensitivity::{
    self, AnalyzeConfig, FdConfig, FdScheme, FiniteDiffHvp, HessianProblem, Hvp, Loss, Metric,
    Precision,
};
use crate::train::{Optimizer, Sgd, cross_entropy};
use crate::zoo::{self, ZooConfig};
use crate::{Error, Result};

/// What one run of a workload computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Pass {
    /// Forward pass in eval mode (running BatchNorm statistics).
    Forward,
    /// Train-mode forward, mean cross-entropy, backward to every trainable parameter.
    ForwardBackward,
    /// One Hessian-vector product w.r.t. every quantizable layer's weights by central
    /// differences (the sensitivity engine's [`FiniteDiffHvp`]): two eval-mode gradients at
    /// `w ± εv` for a seeded Rademacher `v`; the weights are never written.
    Hvp,
    /// Hessian traces of every quantizable layer, as `mpq analyze --metric trace` computes
    /// them ([`sensitivity::analyze`] with its defaults: Rademacher probes shared by all layers,
    /// one-sided differences, PyHessian's stopping rule per layer with tolerance 1e-3, at most
    /// 100 probes, at least 10), on a model first trained for [`TRAIN_STEPS`] SGD steps on the
    /// batch. Timed once, without a warm-up run (a run takes minutes); the report gives the
    /// products spent in `hvp_count`.
    LayerTraces,
    /// An `n x n` by `n x n` f32 matrix product (`input` holds `[n, n, n]`).
    Matmul,
}

/// SGD steps (learning rate [`TRAIN_LR`], momentum 0.9, no weight decay, train mode, so the
/// BatchNorm running statistics move too) on the bench batch before [`Pass::LayerTraces`]:
/// at random initialisation ResNet-20's layer traces are close to zero against their probe
/// noise and most layers would run to the maximum probe count. The PyTorch peer trains the
/// same way.
pub const TRAIN_STEPS: usize = 10;

/// Learning rate of the [`TRAIN_STEPS`] steps.
pub const TRAIN_LR: f64 = 0.05;

/// One row of the workload table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Workload {
    /// Name used by `--only` and in reports (`resnet20_fwd_bwd`).
    pub name: &'static str,
    /// Zoo architecture (`sgemm` for [`Pass::Matmul`]).
    pub arch: &'static str,
    /// Per-sample input shape `[C, H, W]` (the matrix sizes for [`Pass::Matmul`]).
    pub input: [usize; 3],
    /// Number of classes of the model.
    pub classes: usize,
    /// Samples per run.
    pub batch: usize,
    /// What a run computes.
    pub pass: Pass,
}

const fn workload(
    name: &'static str,
    arch: &'static str,
    input: [usize; 3],
    classes: usize,
    batch: usize,
    pass: Pass,
) -> Workload {
    Workload {
        name,
        arch,
        input,
        classes,
        batch,
        pass,
    }
}

/// The fixed workload table, in run order.
pub const WORKLOADS: &[Workload] = &[
    workload(
        "resnet20_fwd",
        "resnet20",
        [3, 32, 32],
        10,
        128,
        Pass::Forward,
    ),
    workload(
        "resnet20_fwd_bwd",
        "resnet20",
        [3, 32, 32],
        10,
        128,
        Pass::ForwardBackward,
    ),
    workload("resnet20_hvp", "resnet20", [3, 32, 32], 10, 128, Pass::Hvp),
    workload(
        "resnet20_layer_traces",
        "resnet20",
        [3, 32, 32],
        10,
        128,
        Pass::LayerTraces,
    ),
    workload(
        "lenet5_fwd_bwd",
        "lenet5",
        [1, 28, 28],
        10,
        256,
        Pass::ForwardBackward,
    ),
    workload(
        "mobilenetv2_fwd_bwd",
        "mobilenetv2",
        [3, 224, 224],
        1000,
        8,
        Pass::ForwardBackward,
    ),
    workload(
        "matmul_1024",
        "sgemm",
        [1024, 1024, 1024],
        0,
        1,
        Pass::Matmul,
    ),
];

/// Settings of a benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchConfig {
    /// Timed runs per workload, after one untimed warm-up run.
    pub repeats: usize,
    /// Workload names to run (empty: all of [`WORKLOADS`]).
    pub only: Vec<String>,
    /// Seed of the weights, inputs, labels and HVP direction.
    pub seed: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            repeats: 5,
            only: Vec::new(),
            seed: 0,
        }
    }
}

impl BenchConfig {
    /// The workloads to run, in table order; an unknown name or zero repeats is an error.
    pub fn selected(&self) -> Result<Vec<&'static Workload>> {
        if self.repeats == 0 {
            return Err(Error::config("repeats", "must be at least 1"));
        }
        for name in &self.only {
            if !WORKLOADS.iter().any(|w| w.name == name) {
                let known: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
                return Err(Error::config(
                    "only",
                    format!("unknown workload {name:?} (known: {})", known.join(", ")),
                ));
            }
        }
        Ok(WORKLOADS
            .iter()
            .filter(|w| self.only.is_empty() || self.only.iter().any(|n| n == w.name))
            .collect())
    }
}

/// The CPU the benchmark ran on (from `/proc/cpuinfo` where it exists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Logical cores available to the process.
    pub cores: usize,
    /// CPU model name.
    pub cpu_model: Option<String>,
    /// Nominal clock in MHz as the kernel reports it.
    pub mhz: Option<f64>,
    /// AVX2 support.
    pub avx2: bool,
    /// AVX-512 Foundation support.
    pub avx512f: bool,
    /// FMA3 support.
    pub fma: bool,
    /// Instruction set the mpq kernels dispatch to (`avx512`, `avx2`, `scalar`).
    pub kernels_isa: String,
    /// f32 FLOP per cycle per core assumed for the peak: 64 with AVX-512 (two 16-lane FMA
    /// ports), 32 with AVX2+FMA, 8 otherwise.
    pub flops_per_cycle: u32,
    /// `cores · MHz · flops_per_cycle` in GFLOP/s, when the clock is known.
    pub peak_gflops_per_s: Option<f64>,
}

/// Timings of one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadResult {
    /// Workload name.
    pub name: String,
    /// Architecture.
    pub arch: String,
    /// Samples per run.
    pub batch: usize,
    /// What a run computes.
    pub pass: Pass,
    /// Median seconds of the timed runs.
    pub median_s: f64,
    /// Fastest timed run in seconds.
    pub min_s: f64,
    /// Number of timed runs.
    pub runs: usize,
    /// Multiply-accumulates of one sample's forward pass (conv and linear layers; the
    /// product's MACs for [`Pass::Matmul`]).
    pub macs_per_sample: u64,
    /// GFLOP of one run: forward `2·MACs·batch`, forward+backward 3x that, HVP 6x, layer
    /// traces 3x per product (see [`Pass::flop_factor`]).
    pub gflop: f64,
    /// `gflop / median_s`.
    pub gflops_per_s: f64,
    /// Every timed run in seconds, in order.
    pub times_s: Vec<f64>,
    /// Hessian-vector products of one run, where the count is not fixed
    /// ([`Pass::LayerTraces`]: it depends on when the stopping rule holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hvp_count: Option<u64>,
}

/// What a benchmark run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// The machine.
    pub machine: Machine,
    /// Worker threads of the rayon pool the kernels use.
    pub threads: usize,
    /// `mpq-kernels` or `candle-stock` (`MPQ_STOCK_OPS=1`, `--stock`).
    pub ops: String,
    /// Seed of the inputs and weights.
    pub seed: u64,
    /// One entry per workload run.
    pub workloads: Vec<WorkloadResult>,
}

/// Runs the selected workloads, each warm: one untimed run, then `cfg.repeats` timed ones.
/// Reports one progress stage per workload.
pub fn run(cfg: &BenchConfig, progress: &mut dyn Progress) -> Result<BenchReport> {
    let selected = cfg.selected()?;
    let mut workloads = Vec::with_capacity(selected.len());
    for w in selected {
        workloads.push(run_workload(w, cfg, progress)?);
    }
    Ok(BenchReport {
        machine: machine(),
        threads: rayon::current_num_threads(),
        ops: if crate::graph::stock_ops() {
            "candle-stock"
        } else {
            "mpq-kernels"
        }
        .into(),
        seed: cfg.seed,
        workloads,
    })
}

impl Pass {
    /// FLOP of one run in units of the forward pass's `2·MACs·batch`: a backward pass costs
    /// about two forward passes (input and weight gradients), a central-difference HVP two
    /// forward+backward; [`Pass::LayerTraces`] counts one forward+backward per product (the
    /// one-sided scheme's one gradient) times `hvp_count`.
    pub fn flop_factor(self) -> f64 {
        match self {
            Pass::Forward | Pass::Matmul => 1.0,
            Pass::ForwardBackward | Pass::LayerTraces => 3.0,
            Pass::Hvp => 6.0,
        }
    }
}

/// Times one workload: the model (or matrices), inputs and HVP direction are built before
/// the clock starts; then one untimed warm-up run and `cfg.repeats` timed ones.
pub fn run_workload(
    w: &Workload,
    cfg: &BenchConfig,
    progress: &mut dyn Progress,
) -> Result<WorkloadResult> {
    let dev = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xBE4C_0000);
    let mut time =
        |step: &mut dyn FnMut() -> Result<()>| time_runs(w.name, cfg.repeats, progress, step);
    let mut hvp_count = None;
    let (macs, times_s) = if w.pass == Pass::Matmul {
        let [m, k, n] = w.input;
        let a = normal(&mut rng, &[m, k], &dev)?;
        let b = normal(&mut rng, &[k, n], &dev)?;
        let times = time(&mut || {
            a.matmul(&b)?;
            Ok(())
        })?;
        ((m * k * n) as u64, times)
    } else {
        let graph = zoo::build_graph(w.arch, &ZooConfig::new(w.input, w.classes), cfg.seed, &dev)?;
        let macs: u64 = graph.layer_infos()?.iter().map(|l| l.macs).sum();
        let mut dims = vec![w.batch];
        dims.extend_from_slice(&w.input);
        let x = normal(&mut rng, &dims, &dev)?;
        let labels: Vec<u32> = (0..w.batch)
            .map(|_| rng.random_range(0..w.classes as u32))
            .collect();
        let y = Tensor::from_vec(labels, w.batch, &dev)?;
        let times = match w.pass {
            Pass::Forward => time(&mut || {
                graph.forward(&x, Mode::Eval)?;
                Ok(())
            })?,
            Pass::ForwardBackward => time(&mut || {
                let mut hooks = NoHooks;
                let mut opts = ForwardOptions::new(Mode::Train, &mut hooks);
                // The trainer's step: the hand-written reverse pass where it applies.
                let loss = |logits: &Tensor| cross_entropy(logits, &y, 0.0);
                graph.forward_backward(&x, &mut opts, &loss)?;
                Ok(())
            })?,
            Pass::LayerTraces => {
                train_briefly(&graph, &x, &y)?;
                let cfg = AnalyzeConfig::new(Metric::Trace);
                let batch = Batch { x, y };
                let t0 = Instant::now();
                let table = sensitivity::analyze(&graph, vec![batch], &cfg, progress)?;
                let secs = t0.elapsed().as_secs_f64();
                hvp_count = Some(table.hvp_count);
                vec![secs]
            }
            _ => {
                // The sensitivity engine's product over every quantizable layer's weights
                // (eval mode, weights perturbed through hooks and never written).
                let batch = Batch { x, y };
                let problem = HessianProblem::new(
                    &graph,
                    vec![batch],
                    Loss::cross_entropy(),
                    None,
                    Precision::F32,
                )?;
                // Central, as documented on `Pass::Hvp` and as the PyTorch peer computes it
                // (`FdConfig::default()` is the one-sided scheme of Hutchinson traces).
                let fd = FdConfig {
                    scheme: FdScheme::Central,
                    rel_step: None,
                };
                let mut hvp = FiniteDiffHvp::new(&problem, &fd)?;
                let dim: usize = hvp.block_sizes().iter().sum();
                let v: Vec<f32> = (0..dim)
                    .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
                    .collect();
                time(&mut || {
                    hvp.hvp(&v)?;
                    Ok(())
                })?
            }
        };
        (macs, times)
    };
    let runs_hvps = hvp_count.unwrap_or(1) as f64;
    let gflop = w.pass.flop_factor() * 2.0 * macs as f64 * w.batch as f64 / 1e9 * runs_hvps;
    let median_s = median(&times_s);
    Ok(WorkloadResult {
        name: w.name.into(),
        arch: w.arch.into(),
        batch: w.batch,
        pass: w.pass,
        median_s,
        min_s: times_s.iter().copied().fold(f64::INFINITY, f64::min),
        runs: times_s.len(),
        macs_per_sample: macs,
        gflop,
        gflops_per_s: gflop / median_s,
        times_s,
        hvp_count,
    })
}

/// [`TRAIN_STEPS`] steps of SGD on one batch in train mode (running statistics updated).
fn train_briefly(graph: &Graph, x: &Tensor, y: &Tensor) -> Result<()> {
    let mut opt = Sgd::new(graph.params().trainable(), 0.9, false, 0.0);
    for _ in 0..TRAIN_STEPS {
        let mut hooks = NoHooks;
        let mut opts = ForwardOptions::new(Mode::Train, &mut hooks);
        let logits = graph.forward_with(x, &mut opts)?;
        let grads = cross_entropy(&logits, y, 0.0)?.backward()?;
        opt.step(&grads, TRAIN_LR)?;
    }
    Ok(())
}

/// One untimed warm-up run of `step`, then `repeats` timed ones (seconds), reported as a
/// progress stage named `name`.
fn time_runs(
    name: &str,
    repeats: usize,
    progress: &mut dyn Progress,
    step: &mut dyn FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    progress.start(name, repeats as u64 + 1);
    step()?;
    progress.inc(1);
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t0 = Instant::now();
        step()?;
        times.push(t0.elapsed().as_secs_f64());
        progress.inc(1);
    }
    progress.finish();
    Ok(times)
}

/// Median of a non-empty sample (mean of the two middle values for an even count).
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

fn normal(rng: &mut ChaCha8Rng, dims: &[usize], dev: &Device) -> Result<Tensor> {
    let n = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    Ok(Tensor::from_vec(v, dims, dev)?)
}

/// The machine: core count, CPU model, clock and SIMD flags (`/proc/cpuinfo` on Linux,
/// runtime detection elsewhere), and the instruction set the kernels use.
pub fn machine() -> Machine {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    };
    let flags: Option<Vec<String>> =
        field("flags").map(|f| f.split_whitespace().map(str::to_string).collect());
    let has = |flag: &str| match &flags {
        Some(f) => f.iter().any(|x| x == flag),
        None => detected(flag),
    };
    let (avx2, avx512f, fma) = (has("avx2"), has("avx512f"), has("fma"));
    let mhz = field("cpu MHz").and_then(|m| m.parse::<f64>().ok());
    let flops_per_cycle = if avx512f && fma {
        64
    } else if avx2 && fma {
        32
    } else {
        8
    };
    let isa = match mpq_kernels::simd::isa() {
        mpq_kernels::simd::Isa::Avx512 => "avx512",
        mpq_kernels::simd::Isa::Avx2 => "avx2",
        mpq_kernels::simd::Isa::Scalar => "scalar",
    };
    Machine {
        cores,
        cpu_model: field("model name"),
        mhz,
        avx2,
        avx512f,
        fma,
        kernels_isa: isa.into(),
        flops_per_cycle,
        peak_gflops_per_s: mhz.map(|m| cores as f64 * m * flops_per_cycle as f64 / 1e3),
    }
}

#[cfg(target_arch = "x86_64")]
fn detected(flag: &str) -> bool {
    match flag {
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        _ => false,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detected(_flag: &str) -> bool {
    false
}

impl Machine {
    /// One line: cores, CPU, clock, SIMD flags, the kernels' instruction set and the peak.
    pub fn describe(&self) -> String {
        let flags = [
            ("avx2", self.avx2),
            ("fma", self.fma),
            ("avx512f", self.avx512f),
        ];
        let flags: Vec<&str> = flags.iter().filter(|f| f.1).map(|f| f.0).collect();
        let cpu = self.cpu_model.as_deref().unwrap_or("unknown CPU");
        let mut s = format!("machine: {} cores, {cpu}", self.cores);
        if let Some(mhz) = self.mhz {
            s.push_str(&format!(" @ {mhz:.0} MHz"));
        }
        let flags = if flags.is_empty() {
            "none".to_string()
        } else {
            flags.join(" ")
        };
        s.push_str(&format!(", flags: {flags}; kernels: {}", self.kernels_isa));
        if let Some(p) = self.peak_gflops_per_s {
            let f = self.flops_per_cycle;
            s.push_str(&format!("; peak {p:.0} GFLOP/s ({f} FLOP/cycle/core)"));
        }
        s
    }
}

impl BenchReport {
    /// The Hessian workloads against one training step (forward+backward) of the same model,
    /// when both ran: one HVP by central differences, and the products of the per-layer
    /// traces.
    pub fn ratio_lines(&self) -> Vec<String> {
        let find = |name: &str| self.workloads.iter().find(|w| w.name == name);
        let Some(step) = find("resnet20_fwd_bwd") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(h) = find("resnet20_hvp") {
            out.push(format!(
                "resnet20: one HVP (central differences, 2 gradients) = {:.2}x one \
                 forward+backward",
                h.median_s / step.median_s
            ));
        }
        if let Some(t) = find("resnet20_layer_traces")
            && let Some(n) = t.hvp_count.filter(|&n| n > 0)
        {
            let per = t.median_s / n as f64;
            out.push(format!(
                "resnet20: per-layer traces of all layers: {n} HVPs (one-sided, 1 gradient) in \
                 {:.1} s, {per:.3} s each = {:.2}x one forward+backward",
                t.median_s,
                per / step.median_s
            ));
        }
        out
    }
}

impl std::fmt::Display for BenchReport {
    /// The settings line, the table of workloads, and the ratio lines.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut t = Table::new("workload|batch|median s|min s|runs|HVPs|GFLOP|GFLOP/s|% peak");
        let dash = || "-".to_string();
        for w in &self.workloads {
            let peak = self.machine.peak_gflops_per_s;
            t.row(vec![
                w.name.clone(),
                w.batch.to_string(),
                format!("{:.4}", w.median_s),
                format!("{:.4}", w.min_s),
                w.runs.to_string(),
                w.hvp_count.map_or_else(dash, |n| n.to_string()),
                format!("{:.2}", w.gflop),
                format!("{:.1}", w.gflops_per_s),
                peak.map_or_else(dash, |p| format!("{:.1}", 100.0 * w.gflops_per_s / p)),
            ]);
        }
        let (th, ops, seed) = (self.threads, &self.ops, self.seed);
        write!(f, "threads: {th}, ops: {ops}, seed {seed}\n\n{t}")?;
        let ratios = self.ratio_lines();
        if !ratios.is_empty() {
            write!(f, "\n\n{}", ratios.join("\n"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
    }

    #[test]
    fn unknown_workload_and_zero_repeats_are_config_errors() {
        let cfg = BenchConfig {
            only: vec!["resnet21_fwd".into()],
            ..Default::default()
        };
        let err = cfg.selected().unwrap_err();
        assert!(err.is_input_error());
        assert!(err.to_string().contains("resnet20_fwd_bwd"), "{err}");
        let cfg = BenchConfig {
            repeats: 0,
            ..Default::default()
        };
        assert!(cfg.selected().is_err());
        let cfg = BenchConfig {
            only: vec!["lenet5_fwd_bwd".into(), "resnet20_fwd".into()],
            ..Default::default()
        };
        let names: Vec<&str> = cfg.selected().unwrap().iter().map(|w| w.name).collect();
        assert_eq!(names, ["resnet20_fwd", "lenet5_fwd_bwd"]);
    }

    #[test]
    fn lenet_workload_counts_flops_from_macs() {
        let cfg = BenchConfig {
            repeats: 2,
            only: vec!["lenet5_fwd_bwd".into()],
            seed: 1,
        };
        let r = run(&cfg, &mut crate::progress::NoProgress).unwrap();
        let w = &r.workloads[0];
        // conv1 86,400 + conv2 153,600 + fc 30,720 + 10,080 + 840 MACs per sample.
        let want = 3.0 * 2.0 * 281_640.0 * 256.0 / 1e9;
        assert!((w.gflop - want).abs() < 1e-9, "{} vs {want}", w.gflop);
        assert_eq!((w.runs, w.times_s.len()), (2, 2));
        assert!(w.min_s > 0.0 && w.min_s <= w.median_s);
        assert!(r.threads >= 1 && r.machine.cores >= 1);
    }

    #[test]
    fn every_pass_runs_on_small_shapes() {
        let cfg = BenchConfig {
            repeats: 1,
            ..Default::default()
        };
        let small = |pass| Workload {
            name: "small",
            arch: "lenet5",
            input: [1, 28, 28],
            classes: 10,
            batch: 4,
            pass,
        };
        let fwd = 2.0 * 281_640.0 * 4.0 / 1e9;
        for pass in [
            Pass::Forward,
            Pass::ForwardBackward,
            Pass::Hvp,
            Pass::LayerTraces,
        ] {
            let r = run_workload(&small(pass), &cfg, &mut crate::progress::NoProgress).unwrap();
            assert_eq!(r.pass, pass);
            let hvps = match pass {
                Pass::LayerTraces => {
                    let n = r.hvp_count.unwrap();
                    assert!((10..=100).contains(&n), "{n} products");
                    n as f64
                }
                _ => {
                    assert_eq!(r.hvp_count, None);
                    1.0
                }
            };
            assert!((r.gflop - pass.flop_factor() * fwd * hvps).abs() < 1e-9);
            assert!(r.median_s > 0.0 && r.gflops_per_s.is_finite());
            assert_eq!(r.runs, 1);
        }
        let mm = Workload {
            arch: "sgemm",
            input: [8, 16, 4],
            batch: 1,
            pass: Pass::Matmul,
            ..small(Pass::Matmul)
        };
        let r = run_workload(&mm, &cfg, &mut crate::progress::NoProgress).unwrap();
        assert_eq!(r.macs_per_sample, 8 * 16 * 4);
    }
}
