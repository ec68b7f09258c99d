//! Hessian sensitivity of every quantizable layer: top eigenvalues (HAWQ: Dong et al. 2019),
//! traces (HAWQ-V2: Dong et al. 2020, with Hutchinson 1989 as in PyHessian: Yao et al. 2020),
//! activation traces (HAWQ-V2), channel traces (CW-HAWQ) and spectral densities (SLQ:
//! Ghorbani et al. 2019), all from Hessian-vector products behind the [`Hvp`] trait; and
//! LIMPQ's learned importance indicators (Tang et al. 2022, [`learned`]).
//!
//! The model runs in eval mode (BatchNorm with running statistics), the loss is the mean
//! cross-entropy (or any [`Loss`]), and the data are the batches given (see
//! [`analysis_batches`]: the first `N·B` samples of a split in file order, no augmentation).
//! Every probe comes from a seeded generator, so the same seed and inputs give bit-identical
//! numbers. The model's weights are never written.
//!
//! ```
//! use mpq::data::{self, LoadOptions};
//! use mpq::progress::NoProgress;
//! use mpq::sensitivity::{self, AnalyzeConfig, Metric, SampleConfig};
//! use mpq::zoo::{self, ZooConfig};
//!
//! let model = zoo::build("mlp", &ZooConfig::new([1, 8, 8], 3), 0).unwrap();
//! let splits = data::load("synthetic:1x8x8:3:32", &LoadOptions::default()).unwrap();
//! let sample = SampleConfig { batches: 1, batch_size: 16, ..Default::default() };
//! let batches = sensitivity::analysis_batches(
//!     &splits.train, &splits.normalization, &sample, model.graph.device()).unwrap();
//! let mut cfg = AnalyzeConfig::new(Metric::Trace);
//! cfg.trace.probes = Some(4);
//! let table = sensitivity::analyze(&model.graph, batches, &cfg, &mut NoProgress).unwrap();
//! assert_eq!(table.hvp_count, 4);
//! assert!(table.layers.iter().all(|l| l.trace.is_some()));
//! ```

mod activation;
mod channel;
mod density;
mod forward;
mod hessian;
mod hvp;
mod indicators;
pub mod learned;
mod linalg;
mod problem;
mod table;

use std::time::Instant;

use candle::Device;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use activation::{ActivationHvp, activation_traces, exact_activation_trace};
pub use density::{Density, DensityConfig, Quadrature, slq};
pub use hessian::{
    EigenEstimate, PowerConfig, TraceConfig, TraceEstimate, exact_block, exact_estimates,
    hutchinson_traces, power_iteration, top_eigenvalues,
};
pub use hvp::{FdConfig, FdScheme, FiniteDiffHvp, Hvp};
pub use problem::{HessianProblem, Loss, Precision};
pub use table::{LayerSensitivity, SensitivityTable};

use crate::data::{self, Batch, Dataset, Normalization};
use crate::progress::Progress;
use crate::{Error, Result};
use channel::weight_channels;

/// What `mpq analyze --metric` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// Top eigenvalue per layer, and the top-k of the whole analysed Hessian.
    Eigen,
    /// Hessian trace per layer.
    #[default]
    Trace,
    /// Activation Hessian trace per layer input.
    ActTrace,
    /// Weight and activation traces with their per-channel parts.
    ChannelTrace,
    /// Spectral density, whole model and per layer.
    Density,
    /// Everything above.
    All,
    /// LIMPQ's learned importance indicators ([`learned::train_indicators`]; not part of
    /// `all`, since it trains rather than measures).
    Limpq,
}

impl Metric {
    fn wants(self) -> Parts {
        let all = self == Metric::All;
        Parts {
            eigen: all || self == Metric::Eigen,
            trace: all || matches!(self, Metric::Trace | Metric::ChannelTrace),
            channels: all || self == Metric::ChannelTrace,
            act: all || matches!(self, Metric::ActTrace | Metric::ChannelTrace),
            density: all || self == Metric::Density,
        }
    }
}

struct Parts {
    eigen: bool,
    trace: bool,
    channels: bool,
    act: bool,
    density: bool,
}

/// How traces are estimated. (No Hutch++: its sketch needs products restricted to one layer,
/// so per-layer traces would split the product budget L ways, while Hutchinson's shared probes
/// give every layer every probe. Nor for the whole-model trace: on ResNet-20 the spectrum is
/// too flat for its sketch to pay, 1.3–1.6x Hutchinson's standard error at equal product
/// count; see `docs/benchmarks.md`, "Hessian".)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Estimator {
    /// Rademacher probes shared by all layers, PyHessian's stopping rule per layer.
    #[default]
    Hutchinson,
    /// Basis vectors: the exact diagonal block (and its exact top eigenvalue) for layers of at
    /// most [`AnalyzeConfig::exact_max_params`] weights (activations: elements per sample).
    Exact,
}

impl Estimator {
    /// Why Hutch++ is not offered as a per-layer trace estimator (`--estimator hutchpp`).
    pub const HUTCHPP_REFUSAL: &'static str = "hutchpp is not offered: its low-rank sketch \
        needs Hessian-vector products restricted to one layer, so per-layer traces of L layers \
        would cost L sketches, while hutchinson's shared probes give every layer every product \
        (one product updates all layers; see docs/benchmarks.md, \"Hessian\"); use hutchinson, \
        or exact for small layers";
}

/// Settings of [`analyze`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyzeConfig {
    /// What to compute.
    pub metric: Metric,
    /// Trace estimator.
    pub estimator: Estimator,
    /// Hutchinson settings (weights and activations).
    pub trace: TraceConfig,
    /// Power-iteration settings.
    pub power: PowerConfig,
    /// Eigenvalues of the whole analysed Hessian for `eigen` (deflation).
    pub top_k: usize,
    /// SLQ settings.
    pub density: DensityConfig,
    /// Finite-difference scheme; `None` picks by accuracy per second: one-sided for Hutchinson
    /// traces (their own standard error dwarfs its ~1e-3 bias, and a probe costs half), central
    /// for power iteration, exact blocks and densities (deterministic: the difference error is
    /// the error).
    pub scheme: Option<FdScheme>,
    /// Relative finite-difference step `δ`; `None`: the scheme's default in this precision.
    pub rel_step: Option<f64>,
    /// f32 (the model's) or an f64 copy.
    pub precision: Precision,
    /// Largest block the `exact` estimator accepts.
    pub exact_max_params: usize,
    /// Samples per pass of the activation products (`act-trace`, `channel-trace`): a batch is
    /// split into parts of at most this many samples, which bounds the pass's memory
    /// (activation probes, perturbed activations and their gradients scale with it) without
    /// changing the numbers beyond float summation order. Weight products run whole batches.
    pub micro_batch: usize,
    /// Layers to analyse (all quantizable layers when `None`).
    pub layers: Option<Vec<String>>,
    /// Seed of every probe and start vector.
    pub seed: u64,
}

impl AnalyzeConfig {
    /// Defaults (PyHessian's tolerances, 10 minimum probes, f32, schemes by accuracy per second)
    /// for
    /// `metric`.
    pub fn new(metric: Metric) -> Self {
        AnalyzeConfig {
            metric,
            estimator: Estimator::Hutchinson,
            trace: TraceConfig::default(),
            power: PowerConfig::default(),
            top_k: 1,
            density: DensityConfig::default(),
            scheme: None,
            rel_step: None,
            precision: Precision::F32,
            exact_max_params: 4096,
            micro_batch: 32,
            layers: None,
            seed: 0,
        }
    }

    /// Checks ranges once, before any work.
    pub fn validate(&self) -> Result<()> {
        let positive = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::config(field, "must be a positive number"))
            }
        };
        positive("tol", self.trace.tol)?;
        positive("tol", self.power.tol)?;
        if let Some(d) = self.rel_step {
            positive("rel-step", d)?;
        }
        for (field, v) in [
            ("max-iter", self.trace.max_iter),
            ("max-iter", self.power.max_iter),
            ("top-k", self.top_k),
            ("lanczos-steps", self.density.steps),
            ("density-runs", self.density.runs),
            ("exact-max-params", self.exact_max_params),
            ("micro-batch", self.micro_batch),
        ] {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        if self.trace.probes == Some(0) {
            return Err(Error::config("probes", "must be at least 1"));
        }
        Ok(())
    }
}

/// Which samples to analyse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleConfig {
    /// Batches.
    pub batches: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// A seeded random selection instead of the first `batches · batch_size` in file order.
    pub shuffle: bool,
    /// Seed of the shuffle.
    pub seed: u64,
}

impl Default for SampleConfig {
    /// One batch of 128, in file order.
    fn default() -> Self {
        SampleConfig {
            batches: 1,
            batch_size: 128,
            shuffle: false,
            seed: 0,
        }
    }
}

/// Stream tags of the seeded generators.
const STREAM_SAMPLES: u64 = 1;
const STREAM_TRACE: u64 = 2;
const STREAM_ACT: u64 = 3;
const STREAM_MODEL_EIGEN: u64 = 4;
const STREAM_MODEL_DENSITY: u64 = 5;
const STREAM_LAYER_EIGEN: u64 = 1 << 20;
const STREAM_LAYER_DENSITY: u64 = 2 << 20;

/// The generator of stream `tag` under `seed`.
fn stream(seed: u64, tag: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(data::derive_seed(seed, &[0x4845_5353, tag]))
}

/// The analysed batches: the samples of [`analysis_samples`], normalised, without
/// augmentation, `batch_size` to a batch.
pub fn analysis_batches(
    ds: &Dataset,
    norm: &Normalization,
    cfg: &SampleConfig,
    device: &Device,
) -> Result<Vec<Batch>> {
    analysis_samples(ds, cfg)?
        .chunks(cfg.batch_size)
        .map(|idx| data::to_batch(ds, idx, norm, device))
        .collect()
}

/// Indices of the analysed samples: the first `batches · batch_size` samples of `ds` in file
/// order (or a seeded random selection with `shuffle`). Zero batches, a zero batch size or
/// more samples than `ds` has are input errors.
pub fn analysis_samples(ds: &Dataset, cfg: &SampleConfig) -> Result<Vec<usize>> {
    if cfg.batches == 0 {
        return Err(Error::config("batches", "must be at least 1"));
    }
    if cfg.batch_size == 0 {
        return Err(Error::config("batch-size", "must be at least 1"));
    }
    let need = cfg.batches.saturating_mul(cfg.batch_size);
    if need > ds.len() {
        return Err(Error::config(
            "batches",
            format!(
                "{} batches of {} need {need} samples but the split has {}",
                cfg.batches,
                cfg.batch_size,
                ds.len()
            ),
        ));
    }
    let mut order: Vec<usize> = (0..ds.len()).collect();
    if cfg.shuffle {
        order.shuffle(&mut stream(cfg.seed, STREAM_SAMPLES));
    }
    order.truncate(need);
    Ok(order)
}

/// [`analyze_with_loss`] with the mean cross-entropy.
pub fn analyze(
    graph: &crate::graph::Graph,
    batches: Vec<Batch>,
    cfg: &AnalyzeConfig,
    progress: &mut dyn Progress,
) -> Result<SensitivityTable> {
    analyze_with_loss(graph, batches, Loss::cross_entropy(), cfg, progress)
}

/// Computes `cfg.metric` for the analysed layers of `graph` on `batches` under `loss`.
pub fn analyze_with_loss(
    graph: &crate::graph::Graph,
    batches: Vec<Batch>,
    loss: Loss,
    cfg: &AnalyzeConfig,
    progress: &mut dyn Progress,
) -> Result<SensitivityTable> {
    cfg.validate()?;
    if cfg.metric == Metric::Limpq {
        return Err(Error::config(
            "metric",
            "limpq indicators are trained, not measured: use learned::train_indicators",
        ));
    }
    let start = Instant::now();
    let n_batches = batches.len();
    let batch_size = match batches.first() {
        Some(b) => b.x.dim(0)?,
        None => 0,
    };
    let problem = HessianProblem::new(graph, batches, loss, cfg.layers.as_deref(), cfg.precision)?;
    let loss_value = problem.loss();
    let infos = problem.layers().to_vec();
    let parts = cfg.metric.wants();
    let exact = cfg.estimator == Estimator::Exact;
    if exact {
        check_exact_sizes(&problem, cfg, &parts)?;
    }
    let mut rows: Vec<LayerSensitivity> = infos.iter().map(LayerSensitivity::new).collect();
    let wchan: Vec<usize> = infos.iter().map(weight_channels).collect();
    let fd = |hutchinson: bool| FdConfig {
        scheme: cfg.scheme.unwrap_or(if hutchinson {
            FdScheme::OneSided
        } else {
            FdScheme::Central
        }),
        rel_step: cfg.rel_step,
    };
    // Products for Hutchinson traces and for everything deterministic (eigen, exact, density).
    let mut trace_hvp = FiniteDiffHvp::new(&problem, &fd(true))?;
    let mut hvp = FiniteDiffHvp::new(&problem, &fd(false))?;
    let mut probes = None;

    if exact && (parts.trace || parts.eigen) {
        for (i, l) in infos.iter().enumerate() {
            let h = exact_block(&mut hvp, i, progress, &format!("exact {}", l.name))?;
            let (t, top) = exact_estimates(&h, l.params, wchan[i])?;
            if parts.trace {
                fill_trace(&mut rows[i], &t, parts.channels);
            }
            if parts.eigen {
                rows[i].top_eigenvalue = Some(top);
                rows[i].eigen_iterations = Some(l.params);
                rows[i].eigen_converged = Some(true);
            }
        }
    } else {
        if parts.trace {
            let mut rng = stream(cfg.seed, STREAM_TRACE);
            let est = hutchinson_traces(&mut trace_hvp, &wchan, &cfg.trace, &mut rng, progress)?;
            probes = est.first().map(|e| e.probes);
            for (row, t) in rows.iter_mut().zip(&est) {
                fill_trace(row, t, parts.channels);
            }
        }
        if parts.eigen {
            for (i, l) in infos.iter().enumerate() {
                progress.start(&format!("eigen {}", l.name), 1);
                let mut rng = stream(cfg.seed, STREAM_LAYER_EIGEN + l.index as u64);
                let (e, _) = power_iteration(&mut hvp, Some(i), &[], &cfg.power, &mut rng)?;
                rows[i].top_eigenvalue = Some(e.value);
                rows[i].eigen_iterations = Some(e.iterations);
                rows[i].eigen_converged = Some(e.converged);
                progress.inc(1);
                progress.finish();
            }
        }
    }
    let mut model_top = None;
    if parts.eigen {
        progress.start("eigen model", cfg.top_k as u64);
        let mut rng = stream(cfg.seed, STREAM_MODEL_EIGEN);
        let top = top_eigenvalues(&mut hvp, cfg.top_k, &cfg.power, &mut rng)?;
        model_top = Some(top.iter().map(|e| e.value).collect());
        progress.finish();
    }

    let mut act_probes = None;
    let mut act_count = 0;
    if parts.act {
        let mut ahvp = ActivationHvp::new(&problem, &fd(!exact), cfg.micro_batch)?;
        let est = if exact {
            (0..infos.len())
                .map(|i| exact_activation_trace(&mut ahvp, i, progress))
                .collect::<Result<Vec<_>>>()?
        } else {
            let mut rng = stream(cfg.seed, STREAM_ACT);
            let est = activation_traces(&mut ahvp, &cfg.trace, &mut rng, progress)?;
            act_probes = est.first().map(|e| e.probes);
            est
        };
        for (row, t) in rows.iter_mut().zip(&est) {
            row.act_trace = Some(t.trace);
            row.act_trace_stderr = t.stderr;
            row.act_trace_per_elem = Some(t.trace / row.act_elems.max(1) as f64);
            if parts.channels {
                row.act_channel_traces = Some(t.channels.clone());
            }
        }
        act_count = ahvp.count();
    }

    let mut density = None;
    if parts.density {
        progress.start("density model", 1);
        let mut rng = stream(cfg.seed, STREAM_MODEL_DENSITY);
        density = Some(slq(&mut hvp, None, &cfg.density, &mut rng)?);
        progress.finish();
        for (i, l) in infos.iter().enumerate() {
            progress.start(&format!("density {}", l.name), 1);
            let mut rng = stream(cfg.seed, STREAM_LAYER_DENSITY + l.index as u64);
            rows[i].density = Some(slq(&mut hvp, Some(i), &cfg.density, &mut rng)?);
            progress.finish();
        }
    }

    let model_trace = parts
        .trace
        .then(|| rows.iter().filter_map(|r| r.trace).sum());
    let hvp_count = trace_hvp.count() + hvp.count() + act_count;
    Ok(SensitivityTable {
        model: String::new(),
        metric: cfg.metric,
        estimator: cfg.estimator,
        seed: cfg.seed,
        batches: n_batches,
        batch_size,
        hvp_count,
        seconds: start.elapsed().as_secs_f64(),
        layers: rows,
        data: None,
        split: None,
        samples: problem.samples(),
        loss: loss_value,
        trace_scheme: trace_hvp.scheme(),
        trace_rel_step: trace_hvp.rel_step(),
        scheme: hvp.scheme(),
        precision: cfg.precision,
        rel_step: hvp.rel_step(),
        tol: cfg.trace.tol,
        max_iter: cfg.trace.max_iter,
        min_probes: cfg.trace.min_probes,
        probes,
        act_probes,
        model_trace,
        model_top_eigenvalues: model_top,
        density,
        limpq: None,
    })
}

fn fill_trace(row: &mut LayerSensitivity, t: &TraceEstimate, channels: bool) {
    row.trace = Some(t.trace);
    row.trace_stderr = t.stderr;
    row.trace_per_param = Some(t.trace / row.params.max(1) as f64);
    row.trace_probes = Some(t.probes);
    row.trace_converged_at = t.converged_at;
    if channels {
        row.channel_traces = Some(t.channels.clone());
        row.channel_trace_stderr = t.channel_stderr.clone();
    }
}

fn check_exact_sizes(problem: &HessianProblem, cfg: &AnalyzeConfig, parts: &Parts) -> Result<()> {
    for l in problem.layers() {
        let (what, n) = if (parts.trace || parts.eigen) && l.params > cfg.exact_max_params {
            ("weights", l.params)
        } else if parts.act && l.input_elems > cfg.exact_max_params {
            ("input elements per sample", l.input_elems)
        } else {
            continue;
        };
        return Err(Error::config(
            "estimator",
            format!(
                "layer {} has {n} {what}; --estimator exact takes at most {} (one product per \
                 element; raise --exact-max-params, pick layers with --layers, or use hutchinson)",
                l.name, cfg.exact_max_params
            ),
        ));
    }
    Ok(())
}
