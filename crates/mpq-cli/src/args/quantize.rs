//! Flags of the commands that apply a policy: `mpq eval`, `mpq quantize` and `mpq hw`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use mpq::pipeline::QuantizerChoice;
use mpq::pipeline::stages::EarlierBlocks;

use super::{ModelArgs, named};

#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Data reference; the test split is evaluated.
    #[arg(long)]
    pub(crate) data: String,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 256)]
    pub(crate) batch_size: usize,
    /// A policy (QuantPlan JSON) to simulate: fake-quantized weights and activations (PTQ).
    #[arg(long)]
    pub(crate) policy: Option<PathBuf>,
    /// Training samples used to calibrate activation ranges under --policy.
    #[arg(long, default_value_t = 512)]
    pub(crate) calib_samples: usize,
    /// Also simulate latency and energy: bitfusion, bismo, bismo-cloud, PATH.toml or PATH.csv.
    #[arg(long)]
    pub(crate) hardware: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum CalibArg {
    Minmax,
    Percentile,
    Mse,
}

#[derive(Debug, Args)]
pub(crate) struct QuantizeArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Policy (QuantPlan JSON) to apply.
    #[arg(long)]
    pub(crate) policy: PathBuf,
    /// Data reference: training split for calibration and fine-tuning, test split for accuracy.
    #[arg(long)]
    pub(crate) data: String,
    /// Quantization-aware fine-tuning epochs (0: post-training quantization only).
    #[arg(long, default_value_t = 0)]
    pub(crate) finetune_epochs: usize,
    /// Fine-tuning learning rate (SGD, cosine schedule) [default: a learning-rate range test
    /// on the quantized model, capped at a fifth of the model's recorded training rate].
    #[arg(long)]
    pub(crate) lr: Option<f64>,
    /// Fine-tuning samples per step.
    #[arg(long, default_value_t = 64)]
    pub(crate) batch_size: usize,
    /// Fine-tuning weight decay.
    #[arg(long, default_value_t = 5e-4)]
    pub(crate) weight_decay: f64,
    /// With a HAWQ plan (it carries a fine-tuning order): earlier blocks keep training (ste)
    /// or stay fixed (frozen) while later stages fine-tune.
    #[arg(long, value_parser = named::<EarlierBlocks>(), default_value = "ste")]
    pub(crate) earlier_blocks: EarlierBlocks,
    /// Fine-tune every layer at once, even when the plan carries HAWQ's block order.
    #[arg(long)]
    pub(crate) all_at_once: bool,
    /// Override the policy's quantizer for every layer.
    #[arg(long, value_parser = named::<QuantizerChoice>())]
    pub(crate) quantizer: Option<QuantizerChoice>,
    /// Keep BatchNorm separate instead of folding it into the convolutions (overrides the policy).
    #[arg(long)]
    pub(crate) no_fold_bn: bool,
    /// Training samples used to calibrate activation ranges.
    #[arg(long, default_value_t = 512)]
    pub(crate) calib_samples: usize,
    /// How activation ranges are chosen from the calibration samples.
    #[arg(long, value_enum, default_value_t = CalibArg::Minmax)]
    pub(crate) calib: CalibArg,
    /// Percentile for `--calib percentile`.
    #[arg(long, default_value_t = 99.99)]
    pub(crate) percentile: f64,
    /// Output folder (model.safetensors, plan.json, summary.json).
    #[arg(long)]
    pub(crate) out: PathBuf,
}

/// Flags of `mpq hw`.
#[derive(Debug, Args)]
pub(crate) struct HwArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Hardware model: bitfusion, bismo, bismo-cloud, PATH.toml (a spec) or PATH.csv (a table).
    #[arg(long)]
    pub(crate) hardware: String,
    /// A policy; without it every layer is W8A8 (a packed model uses its own plan).
    #[arg(long)]
    pub(crate) policy: Option<PathBuf>,
    /// Also write the model's lookup table (every layer at w, a in 2..8 and 32) as CSV.
    #[arg(long, value_name = "PATH.csv")]
    pub(crate) export_csv: Option<PathBuf>,
}
