//! The names front ends use for the pipeline's options (`docs/cli.md`), with one line each.

use super::stages::EarlierBlocks;
use super::{MethodKind, QuantizerChoice, Split, WeightQuantizer};
use crate::Named;
use crate::plan::WeightRange;
use crate::search::OmegaMetric;
use crate::search::haq::FlagStyle;
use crate::sensitivity::{Metric, Precision};
use crate::train::OptimizerKind;

impl Named for Metric {
    const VALUES: &'static [(Self, &'static str, &'static str)] = &[
        (
            Metric::Eigen,
            "eigen",
            "Top Hessian eigenvalue per layer (and the model's top-k)",
        ),
        (Metric::Trace, "trace", "Hessian trace per layer"),
        (
            Metric::ActTrace,
            "act-trace",
            "Hessian trace w.r.t. each layer's input activation",
        ),
        (
            Metric::ChannelTrace,
            "channel-trace",
            "Per output channel of weights and per channel of inputs",
        ),
        (
            Metric::Density,
            "density",
            "Spectral density (whole model and per layer), by SLQ",
        ),
        (Metric::All, "all", "Everything above"),
        (
            Metric::Limpq,
            "limpq",
            "LIMPQ's learned importance indicators (a joint training run)",
        ),
    ];
}

impl Named for Split {
    const VALUES: &'static [(Self, &'static str, &'static str)] = &[
        (Split::Train, "train", "The training split"),
        (Split::Test, "test", "The test split"),
    ];
}

impl Named for Precision {
    const VALUES: &'static [(Self, &'static str, &'static str)] = &[
        (Precision::F32, "f32", "The model's own f32 (fast kernels)"),
        (
            Precision::F64,
            "f64",
            "An f64 copy of the model (slower, more accurate)",
        ),
    ];
}

impl Named for OptimizerKind {
    const VALUES: &'static [(Self, &'static str, &'static str)] = &[
        (OptimizerKind::Sgd, "sgd", "SGD with momentum"),
        (
            OptimizerKind::AdamW,
            "adamw",
            "Adam with decoupled weight decay",
        ),
    ];
}

impl Named for QuantizerChoice {
    const VALUES: &'static [(Self, &'static str, &'static str)] = &[
        (
            QuantizerChoice::Symmetric,
            "symmetric",
            "Symmetric max-abs scales (per channel unless the policy says per tensor)",
        ),
        (
            QuantizerChoice::SymmetricMse,
            "symmetric-mse",
            "Symmetric scales of the clip that minimises ‖Q(W) − W‖²",
        ),
        (
            QuantizerChoice::Asymmetric,
            "asymmetric",
            "Asymmetric min/max with zero points",
        ),
        (
            QuantizerChoice::Lsq,
            "lsq",
            "Learned step sizes (LSQ), trained during fine-tuning",
        ),
        (
            QuantizerChoice::Kmeans,
            "kmeans",
            "HAQ's k-means codebook (2^b centroids per layer, weights only)",
        ),
    ];
}

impl Named for OmegaMetric {
    const VALUES: &'static [(Self, &'static str, &'static str)] = &[
        (
            OmegaMetric::Trace,
            "trace",
            "Tr(H)/n (HAWQ-V2); the default except for hawq-v1",
        ),
        (
            OmegaMetric::Eigen,
            "eigen",
            "Top eigenvalue / n (HAWQ); the default of hawq-v1",
        ),
    ];
}

impl Named for WeightRange {
    const VALUES: &'static [(Self, &'static str, &'static str)] = &[
        (
            WeightRange::MaxAbs,
            "max-abs",
            "The largest absolute value per channel (nothing clipped)",
        ),
        (
            WeightRange::Mse,
            "mse",
            "The clip minimising ‖Q(W) − W‖² per channel (better at 2–3 bits)",
        ),
    ];
}

impl Named for WeightQuantizer {
    const VALUES: &'static [(Self, &'static str, &'static str)] = &[
        (
            WeightQuantizer::Linear,
            "linear",
            "Symmetric uniform, weights and activations",
        ),
        (
            WeightQuantizer::Kmeans,
            "kmeans",
            "A k-means codebook per layer, weights only",
        ),
    ];
}

impl Named for FlagStyle {
    const VALUES: &'static [(Self, &'static str, &'static str)] = &[
        (
            FlagStyle::Clean,
            "clean",
            "1 on weight steps, 0 on activation steps",
        ),
        (
            FlagStyle::Reference,
            "reference",
            "The reference code's in-place writes",
        ),
    ];
}

impl Named for MethodKind {
    const VALUES: &'static [(Self, &'static str, &'static str)] = &[
        (
            MethodKind::Uniform,
            "uniform",
            "The largest uniform plan within budget",
        ),
        (
            MethodKind::Random,
            "random",
            "Seeded, uniform among the plans within budget",
        ),
        (
            MethodKind::HawqV1,
            "hawq-v1",
            "HAWQ: bits follow the top eigenvalue per parameter",
        ),
        (
            MethodKind::Pareto,
            "pareto",
            "HAWQ-V2: the exact (size, Omega) frontier's best point",
        ),
        (
            MethodKind::Ilp,
            "ilp",
            "HAWQ-V3's integer program: least Omega under every budget",
        ),
        (
            MethodKind::Haq,
            "haq",
            "HAQ: a DDPG agent picks bits, rewarded by held-out accuracy",
        ),
        (
            MethodKind::Limpq,
            "limpq",
            "LIMPQ: least learned importance (the same exact program)",
        ),
        (
            MethodKind::CwHawq,
            "cw-hawq",
            "CW-HAWQ: an agent picks channel ratios; bits follow traces",
        ),
        (
            MethodKind::CwIlp,
            "cw-ilp",
            "CW-HAWQ's exact baseline: channel ratios on a grid",
        ),
    ];
}

impl Named for EarlierBlocks {
    const VALUES: &'static [(Self, &'static str, &'static str)] = &[
        (
            EarlierBlocks::Ste,
            "ste",
            "Earlier blocks keep training (straight-through estimator)",
        ),
        (EarlierBlocks::Frozen, "frozen", "Earlier blocks stay fixed"),
    ];
}
