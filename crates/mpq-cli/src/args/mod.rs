//! The command line (the contract in `docs/cli.md`): global flags, the subcommands, the
//! model flags they share, and one module per command's own flags. `commands/` maps them to
//! the library's requests.

pub(crate) mod agent;
pub(crate) mod analyze;
pub(crate) mod compare;
pub(crate) mod model;
pub(crate) mod quantize;
pub(crate) mod runs;
pub(crate) mod search;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use mpq::Named;
use mpq::model::ModelHint;
use mpq::pipeline::ModelSource;

use model::{InfoArgs, TrainArgs};
use quantize::{EvalArgs, HwArgs, QuantizeArgs};
use runs::{BenchArgs, QuickstartArgs, ReportArgs};

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
    /// Worker threads (default: all cores; more than the cores are capped to them).
    #[arg(long, global = true)]
    pub(crate) threads: Option<usize>,
    /// Memory budget for inputs (shapes, counts, files): bytes or with K/M/G/T, e.g. 8G
    /// (default: half the machine's memory, or MPQ_MEMORY_LIMIT). Larger inputs exit 2
    /// before anything is allocated.
    #[arg(long, global = true, value_name = "BYTES")]
    pub(crate) memory_limit: Option<String>,
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
    /// Train a zoo model, or continue an ONNX or mpq model.
    Train(TrainArgs),
    /// Test accuracy and loss of a model.
    Eval(EvalArgs),
    /// Hessian sensitivity per layer: eigenvalues, traces, activation/channel traces, density.
    Analyze(Box<analyze::AnalyzeArgs>),
    /// Bit-width search: a policy (QuantPlan JSON) within a budget.
    Search(Box<search::SearchArgs>),
    /// Per-layer latency and energy of a model (under a policy) on a simulated accelerator.
    Hw(HwArgs),
    /// Apply a policy (optional QAT fine-tuning) and export the packed quantized model.
    Quantize(QuantizeArgs),
    /// The whole pipeline on the bundled MNIST subset.
    Quickstart(QuickstartArgs),
    /// HTML report (inline SVG plots) of a run folder: writes DIR/report.html.
    Report(ReportArgs),
    /// Does mixed precision pay? Methods against uniform and random plans, with error bars.
    Compare(Box<compare::CompareArgs>),
    /// Warm timings of fixed forward/backward/HVP workloads (ResNet-20, LeNet-5, MobileNetV2).
    Bench(BenchArgs),
}

/// How to find or build a model.
#[derive(Debug, Args, Clone)]
pub(crate) struct ModelArgs {
    /// `PATH.safetensors` (mpq's, or a PyTorch state_dict with --arch), `PATH.onnx`, `zoo:NAME`.
    #[arg(long)]
    pub(crate) model: String,
    #[command(flatten)]
    pub(crate) hint: HintArgs,
}

/// What a model file may lack: its architecture, input shape, classes, width.
#[derive(Debug, Args, Clone)]
pub(crate) struct HintArgs {
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

impl ModelArgs {
    /// The model reference with its fallbacks; `seed` seeds fresh zoo weights.
    pub(crate) fn source(&self, seed: u64) -> ModelSource {
        self.hint.source(&self.model, seed)
    }
}

impl HintArgs {
    /// `reference` with these fallbacks; `seed` seeds fresh zoo weights.
    pub(crate) fn source(&self, reference: &str, seed: u64) -> ModelSource {
        ModelSource {
            reference: reference.to_string(),
            hint: ModelHint {
                arch: self.arch.clone(),
                input_shape: self.input.as_ref().map(|s| s.0.clone()),
                classes: self.classes,
                width: self.width,
                seed,
            },
        }
    }
}

/// A value parser for a library option with named values, listing them with their help.
pub(crate) fn named<T: Named + Clone + Send + Sync>() -> impl TypedValueParser<Value = T> {
    let values = T::VALUES.iter().map(|v| PossibleValue::new(v.1).help(v.2));
    PossibleValuesParser::new(values).map(|s| T::from_name(&s).expect("clap checked the name"))
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
