//! Flags of `mpq analyze`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use mpq::pipeline::Split;
use mpq::sensitivity::{Metric, Precision};

use super::{ModelArgs, named};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum EstimatorArg {
    /// Rademacher probes shared by all layers, PyHessian's stopping rule per layer.
    Hutchinson,
    /// Basis vectors: exact traces and eigenvalues (small layers only).
    Exact,
    /// Hutch++: not offered; selecting it is an input error that says why.
    Hutchpp,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SchemeArg {
    /// One-sided for Hutchinson traces, central for eigenvalues, exact blocks and densities.
    Auto,
    /// (g(w+εv) − g(w−εv)) / 2ε: two gradients per product.
    Central,
    /// (g(w+εv) − g(w)) / ε with g(w) cached: one gradient per product.
    OneSided,
}

#[derive(Debug, Args)]
pub(crate) struct AnalyzeArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Data reference (mnist10k, mnist:DIR, cifar10:DIR, imagefolder:DIR, synthetic:CxHxW:K:N).
    #[arg(long)]
    pub(crate) data: String,
    /// What to compute.
    #[arg(long, value_parser = named::<Metric>(), default_value = "trace")]
    pub(crate) metric: Metric,
    /// Batches analysed (the first batches·batch-size samples of the split, in file order).
    #[arg(long, default_value_t = 1)]
    pub(crate) batches: usize,
    /// Samples per batch.
    #[arg(long, default_value_t = 128)]
    pub(crate) batch_size: usize,
    /// Which split the samples come from.
    #[arg(long, value_parser = named::<Split>(), default_value = "train")]
    pub(crate) split: Split,
    /// A seeded random selection of samples instead of the first ones.
    #[arg(long)]
    pub(crate) shuffle: bool,
    /// Most Hutchinson probes / power iterations.
    #[arg(long, default_value_t = 100)]
    pub(crate) max_iter: usize,
    /// Relative tolerance of the stopping rules.
    #[arg(long, default_value_t = 1e-3)]
    pub(crate) tol: f64,
    /// Fewest Hutchinson probes before a layer may stop.
    #[arg(long, default_value_t = 10)]
    pub(crate) min_probes: usize,
    /// Trace estimator.
    #[arg(long, value_enum, default_value_t = EstimatorArg::Hutchinson)]
    pub(crate) estimator: EstimatorArg,
    /// Exactly this many Hutchinson probes (no stopping rule).
    #[arg(long)]
    pub(crate) probes: Option<usize>,
    /// Eigenvalues of the whole model for `eigen` (power iteration with deflation).
    #[arg(long, default_value_t = 1)]
    pub(crate) top_k: usize,
    /// Lanczos steps of the density.
    #[arg(long, default_value_t = 100)]
    pub(crate) lanczos_steps: usize,
    /// Lanczos runs averaged by the density.
    #[arg(long, default_value_t = 1)]
    pub(crate) density_runs: usize,
    /// Finite-difference scheme of the Hessian-vector products.
    #[arg(long, value_enum, default_value_t = SchemeArg::Auto)]
    pub(crate) scheme: SchemeArg,
    /// Relative finite-difference step [default: one-sided 1e-4 (f64 1e-8), central 1e-3 (1e-5)].
    #[arg(long)]
    pub(crate) rel_step: Option<f64>,
    /// Arithmetic (f64: an f64 copy of the model; slower, more accurate).
    #[arg(long, value_parser = named::<Precision>(), default_value = "f32")]
    pub(crate) precision: Precision,
    /// Largest layer (weights, or input elements per sample) --estimator exact accepts.
    #[arg(long, default_value_t = 4096)]
    pub(crate) exact_max_params: usize,
    /// Samples per pass of the activation products (bounds their memory, not their numbers).
    #[arg(long, default_value_t = 32)]
    pub(crate) micro_batch: usize,
    /// Analyse only these layers (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub(crate) layers: Vec<String>,
    /// Output sensitivity JSON.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// SVG plot of the model's spectral density (density and all; default: OUT with .svg).
    #[arg(long)]
    pub(crate) svg: Option<PathBuf>,
    /// LIMPQ (--metric limpq): candidate bit-widths (weights and activations), in pass order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "6,5,4,3,2",
        help_heading = "LIMPQ"
    )]
    pub(crate) limpq_bits: Vec<u32>,
    /// LIMPQ: epochs of joint indicator training.
    #[arg(long, default_value_t = 3, help_heading = "LIMPQ")]
    pub(crate) epochs: usize,
    /// LIMPQ: fraction of the training split used (a seeded subset).
    #[arg(long, default_value_t = 1.0, help_heading = "LIMPQ")]
    pub(crate) data_fraction: f64,
    /// LIMPQ: base learning rate (cosine to --lr-min, SGD momentum 0.9).
    #[arg(long, default_value_t = 0.01, help_heading = "LIMPQ")]
    pub(crate) lr: f64,
    /// LIMPQ: final learning rate.
    #[arg(long, default_value_t = 1e-5, help_heading = "LIMPQ")]
    pub(crate) lr_min: f64,
    /// LIMPQ: weight decay.
    #[arg(long, default_value_t = 2.5e-5, help_heading = "LIMPQ")]
    pub(crate) weight_decay: f64,
    /// LIMPQ: label smoothing [default: the model's own training one, else the paper's 0.1].
    #[arg(long, help_heading = "LIMPQ")]
    pub(crate) label_smoothing: Option<f64>,
    /// LIMPQ: skip the random mixed-precision pass of each step (|B| passes, not |B|+1).
    #[arg(long, help_heading = "LIMPQ")]
    pub(crate) no_mixed_pass: bool,
}
