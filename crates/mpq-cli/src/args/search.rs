//! Flags of `mpq search` (the agent's flags are in [`super::agent`]).

use std::path::PathBuf;

use clap::Args;
use mpq::pipeline::MethodKind;
use mpq::plan::WeightRange;
use mpq::search::OmegaMetric;

use super::agent::AgentArgs;
use super::{HintArgs, named};

#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
    /// `PATH.safetensors` (mpq's, or a PyTorch state_dict with --arch), `PATH.onnx`, `zoo:NAME`.
    #[arg(long, required_unless_present = "table", conflicts_with = "table")]
    pub(crate) model: Option<String>,
    #[command(flatten)]
    pub(crate) hint: HintArgs,
    /// Search a problem table (CSV: layer, w_bits, a_bits, omega or its parts, costs) instead
    /// of a model: uniform, random, pareto and ilp.
    #[arg(long, value_name = "PATH.csv")]
    pub(crate) table: Option<PathBuf>,
    /// Search method.
    #[arg(long, value_parser = named::<MethodKind>())]
    pub(crate) method: MethodKind,
    /// Sensitivity file from `mpq analyze` (uniform and random: optional, to report Omega).
    #[arg(long)]
    pub(crate) sensitivity: Option<PathBuf>,
    /// Curvature of Omega (default: eigen for hawq-v1, trace otherwise).
    #[arg(long, value_parser = named::<OmegaMetric>())]
    pub(crate) omega_metric: Option<OmegaMetric>,
    /// Weight of the activation term of Omega (0 turns it off).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) act_weight: f64,
    /// Candidate weight bits [default: 2,3,4,5,6,8; haq: 2..8; cw-*: 2,4,8; limpq: trained].
    #[arg(long, value_delimiter = ',')]
    pub(crate) w_bits: Option<Vec<u32>>,
    /// Candidate activation bits [default: 4,8; haq: 2..8 (kmeans: 32); cw-*: 8; limpq: trained].
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
    /// A BitOps budget equal to uniform W/A bits, pinned layers at their pins (e.g. 3/4).
    #[arg(long, value_name = "W/A", conflicts_with = "max_bops")]
    pub(crate) bops_as: Option<String>,
    /// LIMPQ: weight of the weight indicators against the activation ones.
    #[arg(long, default_value_t = mpq::search::limpq::DEFAULT_ALPHA)]
    pub(crate) alpha: f64,
    /// Size of the searched layers at most all-low + R x (all-high - all-low), R in [0, 1].
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub(crate) size_ratio: Option<f64>,
    /// BitOps of the searched layers at most all-low + R x (all-high - all-low).
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub(crate) bops_ratio: Option<f64>,
    /// Latency on --hardware of the searched layers at most all-low + R x (all-high - all-low).
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub(crate) latency_ratio: Option<f64>,
    /// Energy on --hardware of the searched layers at most all-low + R x (all-high - all-low).
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub(crate) energy_ratio: Option<f64>,
    /// Paired W/A formats each searched layer chooses from, e.g. 4/4,8/8 (instead of the
    /// w-bits x a-bits grid).
    #[arg(long, value_delimiter = ',', value_name = "W/A,...")]
    pub(crate) formats: Option<Vec<String>>,
    /// Largest latency in ms on --hardware.
    #[arg(long)]
    pub(crate) max_latency_ms: Option<f64>,
    /// Largest energy in mJ on --hardware.
    #[arg(long)]
    pub(crate) max_energy_mj: Option<f64>,
    /// Hardware model for latency/energy: bitfusion, bismo, bismo-cloud, PATH.toml or PATH.csv.
    #[arg(long)]
    pub(crate) hardware: Option<String>,
    /// Pin a layer: NAME=W or NAME=W/A (NAME may be `first` or `last`); repeatable.
    #[arg(long, value_delimiter = ',')]
    pub(crate) pin: Vec<String>,
    /// Pin the first and the last layer to W or W/A bits (e.g. 8).
    #[arg(long, value_name = "W[/A]")]
    pub(crate) pin_first_last: Option<String>,
    /// Layers that share bits, comma separated (a downsample and its main path); repeatable.
    #[arg(long, value_name = "L1,L2,...")]
    pub(crate) tie: Vec<String>,
    /// Range rule of the weight quantizer, recorded in the policy and used for Omega's errors.
    #[arg(long, value_parser = named::<WeightRange>(), default_value = "max-abs")]
    pub(crate) weight_range: WeightRange,
    /// Draws of `random` that try to land within 2% of the budget (else the closest wins).
    #[arg(long, default_value_t = 1_000)]
    pub(crate) max_tries: usize,
    /// Output policy (also OUT.frontier.json/.svg, OUT.curve.svg, OUT.haq-state.json).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// cw-ilp: parts of the grid of channel ratios per layer (8: eighths of the channels).
    #[arg(
        long,
        default_value_t = 8,
        help_heading = "CW-HAWQ (--method cw-hawq, cw-ilp)"
    )]
    pub(crate) ratio_grid: usize,
    #[command(flatten)]
    pub(crate) agent: AgentArgs,
}
