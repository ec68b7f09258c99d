//! Command-line arguments (the contract of `shared/design/cli.md`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// An argument problem found after parsing (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// mpq: mixed-precision quantization of neural networks.
#[derive(Debug, Parser)]
#[command(name = "mpq", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Seed of every random choice (same seed and inputs give the same numbers).
    #[arg(long, global = true, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    pub(crate) threads: Option<usize>,
    /// No progress bars or status lines.
    #[arg(long, global = true)]
    pub(crate) quiet: bool,
    /// Print the result as one JSON object on stdout.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Layer table: name, op, weight shape, params, MACs, input/output shapes.
    Info(InfoArgs),
    /// Train a zoo model.
    Train(TrainArgs),
    /// Test accuracy and loss of a model.
    Eval(EvalArgs),
    /// Hessian sensitivity per layer: eigenvalues, traces, activation/channel traces, density.
    Analyze(crate::commands::analyze::AnalyzeArgs),
    /// Bit-width search: a policy (QuantPlan JSON) within a budget.
    Search(Box<SearchArgs>),
    /// Per-layer latency and energy of a model (under a policy) on a simulated accelerator.
    Hw(HwArgs),
    /// Apply a policy (optional QAT fine-tuning) and export the packed quantized model.
    Quantize(crate::commands::QuantizeArgs),
    /// The whole pipeline on the bundled MNIST subset.
    Quickstart(QuickstartArgs),
    /// HTML report (inline SVG plots) of a run folder: writes DIR/report.html.
    Report(ReportArgs),
    /// Warm timings of fixed forward/backward/HVP workloads (ResNet-20, LeNet-5, MobileNetV2).
    Bench(BenchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum MethodArg {
    /// The largest uniform plan within budget.
    Uniform,
    /// Seeded, uniform among the plans of the candidate grid within budget.
    Random,
    /// HAWQ: bits non-increasing in top eigenvalue per parameter, plus a fine-tuning order.
    #[value(name = "hawq-v1")]
    HawqV1,
    /// HAWQ-V2: the exact (size, Omega) Pareto frontier and its best point within budget.
    Pareto,
    /// HAWQ-V3 integer program: least Omega under every budget (exact).
    Ilp,
    /// HAQ: a DDPG agent proposes bits layer by layer, rewarded by the accuracy on a
    /// held-out split under the budget (needs --data).
    Haq,
    /// LIMPQ: least learned importance (activation + alpha x weight indicators) under every
    /// budget, the same exact integer program (needs --sensitivity from `mpq analyze
    /// --metric limpq`; first and last layer at 8 bits, LSQ quantizers).
    Limpq,
    /// CW-HAWQ: per layer, a DDPG agent picks the fraction of output channels at each weight
    /// width, and channels get bits in Hessian-trace order (needs a channel-trace
    /// --sensitivity and --data).
    #[value(name = "cw-hawq")]
    CwHawq,
    /// CW-HAWQ's deterministic baseline: per-layer channel ratios on a grid, the least
    /// channel Omega within budget solved exactly (needs a channel-trace --sensitivity).
    #[value(name = "cw-ilp")]
    CwIlp,
}

impl MethodArg {
    /// The method's name in plans and messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            MethodArg::Uniform => "uniform",
            MethodArg::Random => "random",
            MethodArg::HawqV1 => "hawq-v1",
            MethodArg::Pareto => "pareto",
            MethodArg::Ilp => "ilp",
            MethodArg::Haq => "haq",
            MethodArg::Limpq => "limpq",
            MethodArg::CwHawq => "cw-hawq",
            MethodArg::CwIlp => "cw-ilp",
        }
    }

    /// Whether the method needs a sensitivity table.
    pub(crate) fn needs_sensitivity(self) -> bool {
        matches!(
            self,
            MethodArg::HawqV1
                | MethodArg::Pareto
                | MethodArg::Ilp
                | MethodArg::CwHawq
                | MethodArg::CwIlp
                | MethodArg::Limpq
        )
    }

    /// Whether the method searches per-channel weight bits (CW-HAWQ).
    pub(crate) fn channel_wise(self) -> bool {
        matches!(self, MethodArg::CwHawq | MethodArg::CwIlp)
    }

    /// Whether the method scores plans on data with a DDPG agent.
    pub(crate) fn agent(self) -> bool {
        matches!(self, MethodArg::Haq | MethodArg::CwHawq)
    }
}

/// Which curvature scales the weight quantization error in Omega.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OmegaMetricArg {
    /// Tr(H)/n (HAWQ-V2); the default except for hawq-v1.
    Trace,
    /// Top eigenvalue / n (HAWQ); the default of hawq-v1.
    Eigen,
}

/// How the symmetric weight quantizer picks its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum WeightRangeArg {
    /// The largest absolute value per channel (HAWQ's quantizer; nothing is clipped).
    MaxAbs,
    /// The clip minimising ‖Q(W) − W‖² per channel (much smaller error at 2–3 bits).
    Mse,
}

impl WeightRangeArg {
    pub(crate) fn range(self) -> mpq::plan::WeightRange {
        match self {
            WeightRangeArg::MaxAbs => mpq::plan::WeightRange::MaxAbs,
            WeightRangeArg::Mse => mpq::plan::WeightRange::Mse,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Search method.
    #[arg(long, value_enum)]
    pub(crate) method: MethodArg,
    /// Sensitivity JSON from `mpq analyze` (needed by hawq-v1, pareto and ilp; optional for
    /// uniform and random, which then report the plan's Omega).
    #[arg(long)]
    pub(crate) sensitivity: Option<PathBuf>,
    /// Curvature of Omega (default: eigen for hawq-v1, trace otherwise).
    #[arg(long, value_enum)]
    pub(crate) omega_metric: Option<OmegaMetricArg>,
    /// Weight of the activation term of Omega (0 turns it off).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) act_weight: f64,
    /// Candidate weight bit-widths [default: 2,3,4,5,6,8; haq: 2,3,4,5,6,7,8; cw-hawq and
    /// cw-ilp: 2,4,8; limpq: the trained ones].
    #[arg(long, value_delimiter = ',')]
    pub(crate) w_bits: Option<Vec<u32>>,
    /// Candidate activation bit-widths [default: 4,8; haq: 2,3,4,5,6,7,8; haq with
    /// --weight-quantizer kmeans: 32, weights only; cw-hawq and cw-ilp: 8, one width;
    /// limpq: the trained ones].
    #[arg(long, value_delimiter = ',')]
    pub(crate) a_bits: Option<Vec<u32>>,
    /// Largest average weight bit-width.
    #[arg(long, group = "size")]
    pub(crate) avg_bits: Option<f64>,
    /// Largest weight storage in MiB (scales included).
    #[arg(long, group = "size")]
    pub(crate) max_size_mb: Option<f64>,
    /// Smallest compression ratio versus FP32 weights.
    #[arg(long, group = "size")]
    pub(crate) compression: Option<f64>,
    /// Largest giga bit-operations per sample.
    #[arg(long)]
    pub(crate) max_bops: Option<f64>,
    /// A BitOps budget equal to the uniform plan at W/A bits (pinned layers at their pins):
    /// LIMPQ's "average wb x ab" target, e.g. 3/4.
    #[arg(long, value_name = "W/A", conflicts_with = "max_bops")]
    pub(crate) bops_as: Option<String>,
    /// LIMPQ: weight of the weight indicators against the activation ones.
    #[arg(long, default_value_t = mpq::search::limpq::DEFAULT_ALPHA)]
    pub(crate) alpha: f64,
    /// Largest latency in ms on --hardware.
    #[arg(long)]
    pub(crate) max_latency_ms: Option<f64>,
    /// Largest energy in mJ on --hardware.
    #[arg(long)]
    pub(crate) max_energy_mj: Option<f64>,
    /// Hardware model for latency/energy: bitfusion, bismo, bismo-cloud, PATH.toml or PATH.csv.
    #[arg(long)]
    pub(crate) hardware: Option<String>,
    /// Pin a layer: NAME=W (weights and activations) or NAME=W/A; NAME may be `first` or
    /// `last`. Repeatable or comma separated.
    #[arg(long, value_delimiter = ',')]
    pub(crate) pin: Vec<String>,
    /// Pin the first and the last layer to W or W/A bits (e.g. 8).
    #[arg(long, value_name = "W[/A]")]
    pub(crate) pin_first_last: Option<String>,
    /// Layers that share bits, comma separated (e.g. a residual downsample and its main path
    /// conv). Repeatable.
    #[arg(long, value_name = "L1,L2,...")]
    pub(crate) tie: Vec<String>,
    /// Range rule of the plan's symmetric weight quantizer: recorded in every layer of the
    /// policy, and Omega's weight errors ‖Q_b(W) − W‖² are computed with it.
    #[arg(long, value_enum, default_value_t = WeightRangeArg::MaxAbs)]
    pub(crate) weight_range: WeightRangeArg,
    /// Random draws before `random` gives up.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) max_tries: usize,
    /// Output policy file (pareto also writes OUT.frontier.json and OUT.frontier.svg; haq
    /// OUT.curve.svg and its resumable state OUT.haq-state.json).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// cw-ilp: parts of the grid of channel ratios per layer (8: every ratio vector in
    /// eighths of the layer's channels).
    #[arg(
        long,
        default_value_t = 8,
        help_heading = "CW-HAWQ (--method cw-hawq, cw-ilp)"
    )]
    pub(crate) ratio_grid: usize,
    #[command(flatten)]
    pub(crate) haq: HaqArgs,
}

/// The settings of `--method haq` and the agent of `cw-hawq` (defaults: the HAQ reference
/// code's, spec §4.7).
#[derive(Debug, Args)]
#[command(next_help_heading = "HAQ and CW-HAWQ agent (--method haq, cw-hawq)")]
pub(crate) struct HaqArgs {
    /// Data reference; plans are scored on a split held out of its training data.
    #[arg(long)]
    pub(crate) data: Option<String>,
    /// Search episodes.
    #[arg(long, default_value_t = 600)]
    pub(crate) episodes: usize,
    /// Continue the search saved in OUT.haq-state.json (same settings; more --episodes
    /// extend it).
    #[arg(long)]
    pub(crate) resume: bool,
    /// Weight quantizer: linear (symmetric uniform, weights and activations) or kmeans
    /// (a k-means codebook per layer, weights only: the model-size experiment).
    #[arg(long, value_enum, default_value_t = WeightQuantizerArg::Linear)]
    pub(crate) weight_quantizer: WeightQuantizerArg,
    /// Training samples held out to score plans.
    #[arg(long, default_value_t = 2000)]
    pub(crate) val_samples: usize,
    /// Training samples that calibrate activation ranges per plan.
    #[arg(long, default_value_t = 512)]
    pub(crate) calib_samples: usize,
    /// SGD steps of fine-tuning under each plan before scoring it (0: post-training only).
    #[arg(long, default_value_t = 0)]
    pub(crate) finetune_steps: usize,
    /// Samples per fine-tuning step.
    #[arg(long, default_value_t = 128)]
    pub(crate) finetune_batch_size: usize,
    /// Fine-tuning learning rate (momentum 0.9, weight decay 4e-5).
    #[arg(long, default_value_t = 0.001)]
    pub(crate) finetune_lr: f64,
    /// Episodes of uniformly random actions before the agent learns.
    #[arg(long, default_value_t = 20)]
    pub(crate) warmup: usize,
    /// Width of the first hidden layer of actor and critic.
    #[arg(long, default_value_t = 300)]
    pub(crate) hidden1: usize,
    /// Width of the second hidden layer.
    #[arg(long, default_value_t = 300)]
    pub(crate) hidden2: usize,
    /// Adam learning rate of the actor.
    #[arg(long, default_value_t = 1e-4)]
    pub(crate) actor_lr: f64,
    /// Adam learning rate of the critic.
    #[arg(long, default_value_t = 1e-3)]
    pub(crate) critic_lr: f64,
    /// Soft-update rate of the target nets.
    #[arg(long, default_value_t = 0.01)]
    pub(crate) tau: f64,
    /// Discount factor.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) discount: f64,
    /// Transitions per agent update.
    #[arg(long, default_value_t = 64)]
    pub(crate) rl_batch_size: usize,
    /// Replay memory in transitions [default: 128 × searched layers].
    #[arg(long)]
    pub(crate) replay_size: Option<usize>,
    /// Exploration standard deviation after the warm-up.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) sigma: f64,
    /// Per-episode decay of the exploration standard deviation.
    #[arg(long, default_value_t = 0.99)]
    pub(crate) sigma_decay: f64,
    /// Rate of the moving reward baseline.
    #[arg(long, default_value_t = 0.5)]
    pub(crate) baseline_rate: f64,
    /// Agent updates per stored transition.
    #[arg(long, default_value_t = 1)]
    pub(crate) updates_per_step: usize,
    /// λ of the reward λ·(accuracy − FP accuracy), accuracies in %.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) reward_scale: f64,
    /// The weight/activation flag of the state: clean (1 on weight steps) or reference
    /// (the reference code's inverted in-place writes).
    #[arg(long, value_enum, default_value_t = StateFlagsArg::Clean)]
    pub(crate) state_flags: StateFlagsArg,
}

/// HAQ's weight quantizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum WeightQuantizerArg {
    /// Symmetric uniform (the latency/energy experiments).
    Linear,
    /// A k-means codebook per layer (the model-size experiment).
    Kmeans,
}

/// HAQ's state flag semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StateFlagsArg {
    /// 1 on weight steps, 0 on activation steps.
    Clean,
    /// The reference code's in-place writes.
    Reference,
}

#[derive(Debug, Args)]
pub(crate) struct HwArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Hardware model: bitfusion, bismo, bismo-cloud, PATH.toml (a spec) or PATH.csv
    /// (`layer,w_bits,a_bits,latency_ms[,energy_mj]`).
    #[arg(long)]
    pub(crate) hardware: String,
    /// A policy (QuantPlan JSON); without it every layer is W8A8 (a packed model uses its
    /// own plan).
    #[arg(long)]
    pub(crate) policy: Option<PathBuf>,
    /// Also write the model's lookup table (every layer at w, a in 2..8 and 32) as CSV.
    #[arg(long, value_name = "PATH.csv")]
    pub(crate) export_csv: Option<PathBuf>,
}

/// How to find or build a model.
#[derive(Debug, Args, Clone)]
pub(crate) struct ModelArgs {
    /// `PATH.safetensors` (saved by mpq, or a PyTorch state_dict with --arch) or `zoo:NAME`.
    #[arg(long)]
    pub(crate) model: String,
    /// Architecture of a state_dict without mpq metadata.
    #[arg(long)]
    pub(crate) arch: Option<String>,
    /// Input shape CxHxW (zoo models and state_dicts).
    #[arg(long, value_parser = parse_shape)]
    pub(crate) input: Option<Shape>,
    /// Number of classes (zoo models and state_dicts).
    #[arg(long)]
    pub(crate) classes: Option<usize>,
    /// Width multiplier (mobilenetv2).
    #[arg(long)]
    pub(crate) width: Option<f64>,
}

#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OptimizerArg {
    Sgd,
    Adamw,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ScheduleArg {
    Cosine,
    Step,
    Constant,
}

#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// Zoo architecture (mlp, lenet5, resnet8, resnet20, resnet32, resnet56, resnet18, mobilenetv2, vgg11-small).
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    pub(crate) arch: Option<String>,
    /// Train an existing model instead of a fresh zoo one: `PATH.onnx` (imported as a trainable
    /// graph) or `PATH.safetensors` saved by mpq.
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
    #[arg(long, value_enum, default_value_t = OptimizerArg::Sgd)]
    pub(crate) optimizer: OptimizerArg,
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
    /// Training samples kept out of training: the seeded split (same --seed) that `mpq search
    /// --method haq|cw-hawq --val-samples N` scores plans on, so the search's reward is
    /// measured on images the model has not seen.
    #[arg(long, default_value_t = 0)]
    pub(crate) holdout: usize,
    /// Output checkpoint (safetensors).
    #[arg(long, default_value = "model.safetensors")]
    pub(crate) out: PathBuf,
}

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
    /// Also simulate latency and energy on this hardware model (bitfusion, bismo,
    /// bismo-cloud, PATH.toml or PATH.csv).
    #[arg(long)]
    pub(crate) hardware: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct QuickstartArgs {
    /// Run folder (reused: an existing model there is not retrained).
    #[arg(long, default_value = "runs/quickstart")]
    pub(crate) out: PathBuf,
    /// A shorter run (fewer epochs) for a first look.
    #[arg(long)]
    pub(crate) fast: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// Run folder (as `mpq quickstart` writes it: model.safetensors, fp.json, settings.json,
    /// sensitivity.json, plans/<method>.json, quantized/<method>/summary.json).
    #[arg(long, value_name = "DIR")]
    pub(crate) run: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Timed runs per workload, after one untimed warm-up run.
    #[arg(long, default_value_t = 5)]
    pub(crate) repeats: usize,
    /// Run only these workloads (comma separated): resnet20_fwd, resnet20_fwd_bwd,
    /// resnet20_hvp, resnet20_layer_traces, lenet5_fwd_bwd, mobilenetv2_fwd_bwd, matmul_1024.
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<String>,
    /// Use candle's own conv and batch-norm ops instead of mpq-kernels (as MPQ_STOCK_OPS=1).
    #[arg(long)]
    pub(crate) stock: bool,
}

/// A per-sample shape such as `3x32x32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape(pub(crate) Vec<usize>);

/// Parses `CxHxW` (or `F`, or `HxW`).
pub(crate) fn parse_shape(s: &str) -> Result<Shape, String> {
    let dims: Result<Vec<usize>, _> = s
        .split(['x', 'X'])
        .map(|d| d.trim().parse::<usize>())
        .collect();
    match dims {
        Ok(d) if !d.is_empty() && d.iter().all(|&x| x > 0) => Ok(Shape(d)),
        _ => Err(format!("expected a shape like 3x32x32, got {s:?}")),
    }
}
