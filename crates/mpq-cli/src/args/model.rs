//! Flags of the model commands: `mpq info` and `mpq train`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use mpq::train::OptimizerKind;

use super::{ModelArgs, named};

#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ScheduleArg {
    Cosine,
    Step,
    Constant,
}

#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// Zoo architecture (mlp, lenet5, resnet8/20/32/56, resnet18, mobilenetv2, vgg11-small).
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    pub(crate) arch: Option<String>,
    /// Train an existing model instead: `PATH.onnx` or a `PATH.safetensors` saved by mpq.
    #[arg(long)]
    pub(crate) model: Option<String>,
    /// Data reference (mnist10k, mnist:DIR, cifar10:DIR, imagefolder:DIR, synthetic:CxHxW:K:N).
    #[arg(long)]
    pub(crate) data: String,
    /// Passes over the training set.
    #[arg(long, default_value_t = 8)]
    pub(crate) epochs: usize,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub(crate) lr: f64,
    /// Samples per step.
    #[arg(long, default_value_t = 64)]
    pub(crate) batch_size: usize,
    /// Weight decay.
    #[arg(long, default_value_t = 5e-4)]
    pub(crate) weight_decay: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub(crate) momentum: f64,
    /// Nesterov momentum.
    #[arg(long)]
    pub(crate) nesterov: bool,
    /// Optimizer.
    #[arg(long, value_parser = named::<OptimizerKind>(), default_value = "sgd")]
    pub(crate) optimizer: OptimizerKind,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    pub(crate) schedule: ScheduleArg,
    /// Epochs between decays of the step schedule.
    #[arg(long, default_value_t = 30)]
    pub(crate) step_every: usize,
    /// Decay factor of the step schedule.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) step_gamma: f64,
    /// Label smoothing.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) label_smoothing: f64,
    /// Turn off random crop and flip for 3-channel images.
    #[arg(long)]
    pub(crate) no_augment: bool,
    /// Width multiplier (mobilenetv2).
    #[arg(long)]
    pub(crate) width: Option<f64>,
    /// Training samples kept out: the split HAQ's and CW-HAWQ's --val-samples score plans on.
    #[arg(long, default_value_t = 0)]
    pub(crate) holdout: usize,
    /// Output checkpoint (safetensors).
    #[arg(long, default_value = "model.safetensors")]
    pub(crate) out: PathBuf,
}
