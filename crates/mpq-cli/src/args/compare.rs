//! Flags of `mpq compare`: the model and data, the methods, the budgets (comma lists: each
//! value is one budget), what every search shares, and how plans are measured.

use std::path::PathBuf;

use clap::Args;
use mpq::pipeline::MethodKind;
use mpq::plan::WeightRange;

use super::{HintArgs, named};

#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    /// `PATH.safetensors` (mpq's, or a PyTorch state_dict with --arch), `PATH.onnx`, `zoo:NAME`.
    #[arg(long)]
    pub(crate) model: String,
    #[command(flatten)]
    pub(crate) hint: HintArgs,
    /// Data reference: the training split calibrates, fine-tunes and holds the agents' reward
    /// split; the test split measures.
    #[arg(long)]
    pub(crate) data: String,
    /// Methods to compare, comma separated (random: --random-plans plans per budget).
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = named::<MethodKind>(),
        default_value = "uniform,random,hawq-v1,pareto,ilp,limpq,haq,cw-hawq"
    )]
    pub(crate) methods: Vec<MethodKind>,
    /// A plan of your own to compare at every budget it fits: NAME=PATH.json; repeatable.
    #[arg(long, value_name = "NAME=PATH")]
    pub(crate) plan: Vec<String>,
    /// Hessian sensitivity file (`mpq analyze --metric all`) [default: computed into
    /// OUT/sensitivity.json].
    #[arg(long)]
    pub(crate) sensitivity: Option<PathBuf>,
    /// LIMPQ's indicators (`mpq analyze --metric limpq`) [default: trained into OUT/limpq.json].
    #[arg(long)]
    pub(crate) indicators: Option<PathBuf>,
    /// Budgets: largest average weight bit-widths, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        help_heading = "Budgets (each value is one budget)"
    )]
    pub(crate) avg_bits: Vec<f64>,
    /// Budgets: largest weight storage in MiB.
    #[arg(
        long,
        value_delimiter = ',',
        help_heading = "Budgets (each value is one budget)"
    )]
    pub(crate) max_size_mb: Vec<f64>,
    /// Budgets: largest giga bit-operations per sample.
    #[arg(
        long,
        value_delimiter = ',',
        help_heading = "Budgets (each value is one budget)"
    )]
    pub(crate) max_bops: Vec<f64>,
    /// Budgets: the BitOps of uniform W/A bits (e.g. 3/3,2/4).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "W/A,...",
        help_heading = "Budgets (each value is one budget)"
    )]
    pub(crate) bops_as: Vec<String>,
    /// Budgets: largest latency in ms on --hardware.
    #[arg(
        long,
        value_delimiter = ',',
        help_heading = "Budgets (each value is one budget)"
    )]
    pub(crate) max_latency_ms: Vec<f64>,
    /// Budgets: largest energy in mJ on --hardware.
    #[arg(
        long,
        value_delimiter = ',',
        help_heading = "Budgets (each value is one budget)"
    )]
    pub(crate) max_energy_mj: Vec<f64>,
    /// Candidate weight bits of every method [default: each method's].
    #[arg(long, value_delimiter = ',')]
    pub(crate) w_bits: Option<Vec<u32>>,
    /// Candidate activation bits of every method [default: each method's].
    #[arg(long, value_delimiter = ',')]
    pub(crate) a_bits: Option<Vec<u32>>,
    /// Paired W/A formats each searched layer chooses from (uniform, random, hawq-v1, pareto,
    /// ilp, limpq).
    #[arg(long, value_delimiter = ',', value_name = "W/A,...")]
    pub(crate) formats: Option<Vec<String>>,
    /// Hardware model for latency/energy: bitfusion, bismo, bismo-cloud, PATH.toml or PATH.csv.
    #[arg(long)]
    pub(crate) hardware: Option<String>,
    /// Pin a layer: NAME=W or NAME=W/A (NAME may be `first` or `last`); repeatable.
    #[arg(long, value_delimiter = ',')]
    pub(crate) pin: Vec<String>,
    /// Pin the first and the last layer to W or W/A bits (e.g. 8).
    #[arg(long, value_name = "W[/A]")]
    pub(crate) pin_first_last: Option<String>,
    /// Layers that share bits, comma separated; repeatable.
    #[arg(long, value_name = "L1,L2,...")]
    pub(crate) tie: Vec<String>,
    /// Range rule of the symmetric weight quantizer of every plan.
    #[arg(long, value_parser = named::<WeightRange>(), default_value = "max-abs")]
    pub(crate) weight_range: WeightRange,
    /// Random plans per budget (their distribution, and Omega's rank correlation).
    #[arg(long, default_value_t = 20, help_heading = "Measuring")]
    pub(crate) random_plans: usize,
    /// Fine-tuning seeds per plan (0: post-training quantization only).
    #[arg(long, default_value_t = 3, help_heading = "Measuring")]
    pub(crate) seeds: usize,
    /// Fine-tuning epochs of each plan (every layer at once).
    #[arg(long, default_value_t = 1, help_heading = "Measuring")]
    pub(crate) finetune_epochs: usize,
    /// Fine-tuning learning rate [default: mpq quantize's rule].
    #[arg(long, help_heading = "Measuring")]
    pub(crate) lr: Option<f64>,
    /// Fine-tuning samples per step.
    #[arg(long, default_value_t = 64, help_heading = "Measuring")]
    pub(crate) batch_size: usize,
    /// Training samples that calibrate activation ranges.
    #[arg(long, default_value_t = 512, help_heading = "Measuring")]
    pub(crate) calib_samples: usize,
    /// Bootstrap resamples of every interval.
    #[arg(long, default_value_t = 2000, help_heading = "Measuring")]
    pub(crate) resamples: usize,
    /// HAQ and CW-HAWQ: search episodes.
    #[arg(long, default_value_t = 600, help_heading = "Agents (haq, cw-hawq)")]
    pub(crate) episodes: usize,
    /// HAQ and CW-HAWQ: training samples held out to score plans.
    #[arg(long, default_value_t = 2000, help_heading = "Agents (haq, cw-hawq)")]
    pub(crate) val_samples: usize,
    /// HAQ and CW-HAWQ: episodes of random actions before the agent learns.
    #[arg(long, default_value_t = 20, help_heading = "Agents (haq, cw-hawq)")]
    pub(crate) warmup: usize,
    /// LIMPQ: weight of the weight indicators against the activation ones.
    #[arg(long, default_value_t = mpq::search::limpq::DEFAULT_ALPHA)]
    pub(crate) alpha: f64,
    /// Output folder: compare.json, compare.md, compare-*.svg, cells/ (kept between runs).
    #[arg(long)]
    pub(crate) out: PathBuf,
}
