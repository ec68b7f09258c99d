//! `mpq quantize`: applies a policy (BatchNorm folding, calibration, optional QAT), exports the
//! packed model and checks that the written file reproduces the simulation.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use mpq::QuantPlan;
use mpq::pipeline::{QuantizeConfig, quantize};
use mpq::plan::{QuantizerKind, WeightRange};
use mpq::quant::{CalibrationConfig, RangeMethod};
use mpq::train::{Schedule, TrainConfig};

use crate::args::{GlobalArgs, ModelArgs, UsageError};
use crate::output::{self, Bars, Table};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum QuantizerArg {
    /// Symmetric max-abs scales (per channel unless the policy says per tensor).
    Symmetric,
    /// Symmetric scales from the clip that minimises ‖Q(W) − W‖² (better at 2–3 bits).
    SymmetricMse,
    /// Asymmetric min/max with zero points.
    Asymmetric,
    /// Learned step sizes (LSQ), trained during fine-tuning.
    Lsq,
    /// HAQ's k-means codebook (2^b shared centroids per layer, weights only).
    Kmeans,
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
    /// Fine-tuning learning rate (SGD, cosine schedule).
    #[arg(long, default_value_t = 0.01)]
    pub(crate) lr: f64,
    /// Fine-tuning samples per step.
    #[arg(long, default_value_t = 64)]
    pub(crate) batch_size: usize,
    /// Fine-tuning weight decay.
    #[arg(long, default_value_t = 5e-4)]
    pub(crate) weight_decay: f64,
    /// Override the policy's quantizer for every layer.
    #[arg(long, value_enum)]
    pub(crate) quantizer: Option<QuantizerArg>,
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

pub(crate) fn run(g: &GlobalArgs, a: &QuantizeArgs) -> anyhow::Result<()> {
    if a.out.is_file() {
        return Err(
            UsageError(format!("--out {} is a file, not a folder", a.out.display())).into(),
        );
    }
    let model = super::open_model(&a.model, g.seed)?;
    let mut plan = QuantPlan::load(&a.policy)?;
    if let Some(q) = a.quantizer {
        let (kind, range) = match q {
            QuantizerArg::Symmetric => (QuantizerKind::Symmetric, WeightRange::MaxAbs),
            QuantizerArg::SymmetricMse => (QuantizerKind::Symmetric, WeightRange::Mse),
            QuantizerArg::Asymmetric => (QuantizerKind::Asymmetric, WeightRange::MaxAbs),
            QuantizerArg::Lsq => (QuantizerKind::Lsq, WeightRange::MaxAbs),
            QuantizerArg::Kmeans => (QuantizerKind::KMeans, WeightRange::MaxAbs),
        };
        for l in &mut plan.layers {
            l.quantizer = kind;
            l.weight_range = range;
        }
    }
    if a.no_fold_bn {
        plan.fold_bn = false;
    }
    plan.validate(&model.graph.layer_infos()?)?;
    let splits = super::load_data(&a.data, g.seed)?;
    super::eval::check_shape(&model, &splits)?;
    let finetune = (a.finetune_epochs > 0).then(|| TrainConfig {
        epochs: a.finetune_epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        weight_decay: a.weight_decay,
        schedule: Schedule::Cosine,
        seed: g.seed,
        ..TrainConfig::default()
    });
    if let Some(tc) = &finetune {
        tc.validate()?;
    }
    let cfg = QuantizeConfig {
        calibration: CalibrationConfig {
            samples: a.calib_samples,
            method: match a.calib {
                CalibArg::Minmax => RangeMethod::MinMax,
                CalibArg::Percentile => RangeMethod::Percentile(a.percentile),
                CalibArg::Mse => RangeMethod::Mse,
            },
            ..Default::default()
        },
        finetune,
        eval_batch_size: 256,
    };
    output::status(
        g.quiet,
        &format!(
            "quantizing {} with {} ({} layers in the policy)",
            model.meta.arch,
            a.policy.display(),
            plan.layers.len()
        ),
    );
    let mut bars = Bars::new(g.quiet);
    let s = quantize(&model, &plan, &splits, &cfg, &a.out, &mut bars)?;
    drop(bars);
    if !s.roundtrip_bit_identical {
        anyhow::bail!(
            "internal error: the written model does not reproduce the simulation (see {})",
            a.out.join("summary.json").display()
        );
    }
    if g.json {
        return output::json(&s);
    }
    let mut t = Table::new(&["stage", "accuracy", "loss"]);
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    t.row(vec![
        "fp32".into(),
        pct(s.fp32.accuracy),
        format!("{:.4}", s.fp32.loss),
    ]);
    t.row(vec![
        "quantized (PTQ)".into(),
        pct(s.before_finetune.accuracy),
        format!("{:.4}", s.before_finetune.loss),
    ]);
    if s.finetune_epochs > 0 {
        t.row(vec![
            format!("after {} epochs QAT", s.finetune_epochs),
            pct(s.after_finetune.accuracy),
            format!("{:.4}", s.after_finetune.loss),
        ]);
    }
    t.row(vec![
        "reloaded file".into(),
        pct(s.reloaded.accuracy),
        format!("{:.4}", s.reloaded.loss),
    ]);
    t.print()?;
    output::line(&format!(
        "weights {} bytes ({:.2} avg bits, {:.1}x smaller than FP32), {:.3e} BOPs; file {} bytes \
         ({} codes + {} scales + {} other = {} predicted, + {} header); round trip bit-identical",
        s.size_bytes,
        s.avg_w_bits,
        s.compression,
        s.bops,
        s.export.file_bytes,
        s.export.code_bytes,
        s.export.weight_param_bytes + s.export.activation_param_bytes,
        s.export.other_bytes,
        s.stored_bytes,
        s.export.header_bytes,
    ))?;
    output::line(&format!("wrote {}", a.out.display()))
}
