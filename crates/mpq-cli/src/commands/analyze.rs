//! `mpq analyze`: second-order sensitivity of every quantizable layer — top eigenvalues (HAWQ:
//! Dong et al. 2019), traces (HAWQ-V2: Dong et al. 2020; Hutchinson 1989 as in PyHessian: Yao
//! et al. 2020), activation and channel traces (HAWQ-V2, CW-HAWQ) and spectral densities (SLQ:
//! Ghorbani et al. 2019) — and LIMPQ's learned importance indicators (Tang et al. 2022, a joint
//! training run), written atomically as the Sensitivity JSON of `cli.md`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use mpq::sensitivity::learned::{self, LimpqConfig};
use mpq::sensitivity::{
    self, AnalyzeConfig, DensityConfig, Estimator, FdScheme, Metric, PowerConfig, Precision,
    SampleConfig, SensitivityTable, TraceConfig,
};

use crate::args::{GlobalArgs, ModelArgs};
use crate::output::{self, Bars, Table, thousands};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum MetricArg {
    /// Top Hessian eigenvalue per layer (and the top-k of the whole model).
    Eigen,
    /// Hessian trace per layer.
    Trace,
    /// Hessian trace w.r.t. each layer's input activation.
    ActTrace,
    /// Per output channel of weights and per channel of input activations.
    ChannelTrace,
    /// Spectral density (whole model and per layer) by stochastic Lanczos quadrature.
    Density,
    /// Everything above.
    All,
    /// LIMPQ's learned importance indicators (a joint indicator training run; see the
    /// LIMPQ options).
    Limpq,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum EstimatorArg {
    /// Rademacher probes shared by all layers, PyHessian's stopping rule per layer.
    Hutchinson,
    /// Basis vectors: exact traces and eigenvalues (small layers only).
    Exact,
    /// Hutch++: not offered (per-layer traces would need one sketch per layer); selecting it
    /// is an input error that says why.
    Hutchpp,
}

/// Why `--estimator hutchpp` is refused.
const HUTCHPP: &str = "hutchpp is not offered: its low-rank sketch needs Hessian-vector \
    products restricted to one layer, so per-layer traces of L layers would cost L sketches, \
    while hutchinson's shared probes give every layer every product (one product updates all \
    layers; see docs/benchmarks.md, \"Hessian\"); use hutchinson, or exact for small layers";

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SplitArg {
    Train,
    Test,
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

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PrecisionArg {
    F32,
    F64,
}

#[derive(Debug, Args)]
pub(crate) struct AnalyzeArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Data reference (mnist10k, mnist:DIR, cifar10:DIR, imagefolder:DIR, synthetic:CxHxW:K:N).
    #[arg(long)]
    pub(crate) data: String,
    /// What to compute.
    #[arg(long, value_enum, default_value_t = MetricArg::Trace)]
    pub(crate) metric: MetricArg,
    /// Batches analysed (the first batches·batch-size samples of the split, in file order).
    #[arg(long, default_value_t = 1)]
    pub(crate) batches: usize,
    /// Samples per batch.
    #[arg(long, default_value_t = 128)]
    pub(crate) batch_size: usize,
    /// Which split the samples come from.
    #[arg(long, value_enum, default_value_t = SplitArg::Train)]
    pub(crate) split: SplitArg,
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
    /// Relative finite-difference step (default: one-sided 1e-4 in f32, 1e-8 in f64; central
    /// 1e-3 in f32, 1e-5 in f64).
    #[arg(long)]
    pub(crate) rel_step: Option<f64>,
    /// Arithmetic (f64: an f64 copy of the model; slower, more accurate).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub(crate) precision: PrecisionArg,
    /// Largest layer (weights, or input elements per sample) --estimator exact accepts.
    #[arg(long, default_value_t = 4096)]
    pub(crate) exact_max_params: usize,
    /// Samples per pass of the activation products (act-trace, channel-trace, all): bounds
    /// their memory; the numbers change only by float summation order.
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
    #[command(flatten)]
    pub(crate) limpq: LimpqArgs,
}

/// The settings of `--metric limpq` (defaults: spec §5.4's ResNet-18 recipe; the batch is
/// --batch-size).
#[derive(Debug, Args)]
#[command(next_help_heading = "LIMPQ (--metric limpq)")]
pub(crate) struct LimpqArgs {
    /// Candidate bit-widths (weights and activations), in pass order.
    #[arg(long, value_delimiter = ',', default_value = "6,5,4,3,2")]
    pub(crate) limpq_bits: Vec<u32>,
    /// Epochs of joint indicator training.
    #[arg(long, default_value_t = 3)]
    pub(crate) epochs: usize,
    /// Fraction of the training split used (a seeded subset).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) data_fraction: f64,
    /// Base learning rate (cosine to --lr-min, SGD momentum 0.9).
    #[arg(long, default_value_t = 0.01)]
    pub(crate) lr: f64,
    /// Final learning rate.
    #[arg(long, default_value_t = 1e-5)]
    pub(crate) lr_min: f64,
    /// Weight decay.
    #[arg(long, default_value_t = 2.5e-5)]
    pub(crate) weight_decay: f64,
    /// Label smoothing of the cross-entropy [default: the model's own training label
    /// smoothing where its metadata records it, else 0.1 as the paper].
    #[arg(long)]
    pub(crate) label_smoothing: Option<f64>,
    /// Skip the random mixed-precision pass of each step (|B| passes instead of |B|+1).
    #[arg(long)]
    pub(crate) no_mixed_pass: bool,
}

fn config(g: &GlobalArgs, a: &AnalyzeArgs) -> mpq::Result<AnalyzeConfig> {
    Ok(AnalyzeConfig {
        metric: match a.metric {
            MetricArg::Eigen => Metric::Eigen,
            MetricArg::Trace => Metric::Trace,
            MetricArg::ActTrace => Metric::ActTrace,
            MetricArg::ChannelTrace => Metric::ChannelTrace,
            MetricArg::Density => Metric::Density,
            MetricArg::All => Metric::All,
            MetricArg::Limpq => Metric::Limpq,
        },
        estimator: match a.estimator {
            EstimatorArg::Hutchinson => Estimator::Hutchinson,
            EstimatorArg::Exact => Estimator::Exact,
            EstimatorArg::Hutchpp => return Err(mpq::Error::config("estimator", HUTCHPP)),
        },
        trace: TraceConfig {
            max_iter: a.max_iter,
            tol: a.tol,
            min_probes: a.min_probes,
            probes: a.probes,
        },
        power: PowerConfig {
            max_iter: a.max_iter,
            tol: a.tol,
        },
        top_k: a.top_k,
        density: DensityConfig {
            steps: a.lanczos_steps,
            runs: a.density_runs,
        },
        scheme: match a.scheme {
            SchemeArg::Auto => None,
            SchemeArg::Central => Some(FdScheme::Central),
            SchemeArg::OneSided => Some(FdScheme::OneSided),
        },
        rel_step: a.rel_step,
        precision: match a.precision {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::F64 => Precision::F64,
        },
        exact_max_params: a.exact_max_params,
        micro_batch: a.micro_batch,
        layers: (!a.layers.is_empty()).then(|| a.layers.clone()),
        seed: g.seed,
    })
}

pub(crate) fn run(g: &GlobalArgs, a: &AnalyzeArgs) -> anyhow::Result<()> {
    if matches!(a.metric, MetricArg::Limpq) {
        return run_limpq(g, a);
    }
    let cfg = config(g, a)?;
    cfg.validate()?;
    let model = super::open_model(&a.model, g.seed)?;
    let splits = super::load_data(&a.data, g.seed)?;
    super::eval::check_shape(&model, &splits)?;
    let norm = model.normalization_or(&splits.normalization);
    let (ds, split) = match a.split {
        SplitArg::Train => (&splits.train, "train"),
        SplitArg::Test => (&splits.test, "test"),
    };
    let sample = SampleConfig {
        batches: a.batches,
        batch_size: a.batch_size,
        shuffle: a.shuffle,
        seed: g.seed,
    };
    let batches = sensitivity::analysis_batches(ds, &norm, &sample, model.graph.device())?;
    let mut bars = Bars::new(g.quiet);
    let mut table = sensitivity::analyze(&model.graph, batches, &cfg, &mut bars)?;
    table.model = a.model.model.clone();
    table.data = Some(a.data.clone());
    table.split = Some(split.into());
    let svg = match &table.density {
        Some(d) => {
            let path = a.svg.clone().unwrap_or_else(|| a.out.with_extension("svg"));
            let title = format!("Hessian eigenvalue density of {}", table.model);
            sensitivity::write_density_svg(&path, d, &title)?;
            Some(path)
        }
        None => None,
    };
    if let Err(e) = table.save(&a.out) {
        if let Some(p) = &svg {
            let _ = std::fs::remove_file(p);
        }
        return Err(e.into());
    }
    if g.json {
        return output::json(&table);
    }
    print_table(&table)?;
    let mut done = format!(
        "\n{} Hessian-vector products in {:.1} s",
        table.hvp_count, table.seconds
    );
    if let Some(p) = table.probes {
        done.push_str(&format!(", {p} weight probes"));
    }
    if let Some(p) = table.act_probes {
        done.push_str(&format!(", {p} activation probes"));
    }
    if let Some(top) = &table.model_top_eigenvalues {
        let top: Vec<String> = top.iter().map(|x| format!("{x:.4e}")).collect();
        done.push_str(&format!("; model top eigenvalues {}", top.join(", ")));
    }
    done.push_str(&format!("; written to {}", a.out.display()));
    if let Some(p) = svg {
        done.push_str(&format!(" and {}", p.display()));
    }
    output::line(&done)
}

fn sci(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{x:.4e}"))
}

fn print_table(t: &SensitivityTable) -> anyhow::Result<()> {
    let has = |f: &dyn Fn(&mpq::sensitivity::LayerSensitivity) -> bool| t.layers.iter().any(f);
    let (tr, eig, act) = (
        has(&|l| l.trace.is_some()),
        has(&|l| l.top_eigenvalue.is_some()),
        has(&|l| l.act_trace.is_some()),
    );
    let mut header = vec!["layer", "op", "params"];
    if tr {
        header.extend(["trace", "stderr", "trace/param"]);
    }
    if eig {
        header.push("top eigenvalue");
    }
    if act {
        header.extend(["act trace", "act stderr"]);
    }
    let mut table = Table::new(&header);
    for l in &t.layers {
        let mut row = vec![
            l.name.clone(),
            serde_json::to_value(l.op)?
                .as_str()
                .unwrap_or_default()
                .to_string(),
            thousands(l.params as u64),
        ];
        if tr {
            row.extend([sci(l.trace), sci(l.trace_stderr), sci(l.trace_per_param)]);
        }
        if eig {
            row.push(sci(l.top_eigenvalue));
        }
        if act {
            row.extend([sci(l.act_trace), sci(l.act_trace_stderr)]);
        }
        table.row(row);
    }
    table.print()
}

/// `--metric limpq`: the joint indicator training on the training split.
fn run_limpq(g: &GlobalArgs, a: &AnalyzeArgs) -> anyhow::Result<()> {
    let l = &a.limpq;
    let model = super::open_model(&a.model, g.seed)?;
    // A smoothing the model was not trained with pushes every logit smaller; where no
    // BatchNorm follows a searched layer, its steps scale its output and absorb that push
    // (high-bit steps collapse to the clamp or jump tenfold) instead of learning the
    // quantization trade-off. So the default is the model's own training loss.
    let label_smoothing = l
        .label_smoothing
        .or_else(|| model.training_label_smoothing())
        .unwrap_or(LimpqConfig::default().label_smoothing);
    let cfg = LimpqConfig {
        bits: l.limpq_bits.clone(),
        epochs: l.epochs,
        data_fraction: l.data_fraction,
        batch_size: a.batch_size,
        lr: l.lr,
        lr_min: l.lr_min,
        weight_decay: l.weight_decay,
        label_smoothing,
        mixed_pass: !l.no_mixed_pass,
        seed: g.seed,
        ..LimpqConfig::default()
    };
    cfg.validate()?;
    let splits = super::load_data(&a.data, g.seed)?;
    super::eval::check_shape(&model, &splits)?;
    let norm = model.normalization_or(&splits.normalization);
    let mut bars = Bars::new(g.quiet);
    let mut table = learned::train_indicators(&model.graph, &splits.train, &norm, &cfg, &mut bars)?;
    table.model = a.model.model.clone();
    table.data = Some(a.data.clone());
    table.save(&a.out)?;
    if g.json {
        return output::json(&table);
    }
    print_limpq(&table, &cfg.bits)?;
    let r = table
        .limpq
        .as_ref()
        .expect("train_indicators should fill the limpq report");
    output::line(&format!(
        "\n{} joint steps ({} passes, {} samples) in {:.1} s; steps grow as bits shrink in \
         {:.0}% of the (layer, weights|activations) series; {} indicator(s) banned{}; written \
         to {}",
        r.steps,
        r.passes,
        r.samples,
        table.seconds,
        100.0 * r.monotone_fraction,
        r.bans.len(),
        if r.bans.is_empty() {
            String::new()
        } else {
            format!(":\n  {}", r.bans.join("\n  "))
        },
        a.out.display()
    ))
}

fn print_limpq(t: &SensitivityTable, bits: &[u32]) -> anyhow::Result<()> {
    let mut sorted = bits.to_vec();
    sorted.sort_unstable_by(|x, y| y.cmp(x));
    let names: Vec<String> = sorted
        .iter()
        .flat_map(|b| [format!("w{b}"), format!("a{b}")])
        .collect();
    let mut header = vec!["layer", "params"];
    header.extend(names.iter().map(String::as_str));
    header.push("banned");
    let mut table = Table::new(&header);
    for l in &t.layers {
        let mut row = vec![l.name.clone(), thousands(l.params as u64)];
        match &l.limpq {
            Some(ind) => {
                for b in &sorted {
                    row.push(sci(ind.weight.get(b).copied()));
                    row.push(sci(ind.act.get(b).copied()));
                }
                let banned: Vec<String> = ind
                    .banned_w_bits
                    .iter()
                    .map(|b| format!("w{b}"))
                    .chain(ind.banned_a_bits.iter().map(|b| format!("a{b}")))
                    .collect();
                row.push(if banned.is_empty() {
                    "-".into()
                } else {
                    banned.join(" ")
                });
            }
            None => {
                row.extend(std::iter::repeat_n("-".to_string(), names.len()));
                row.push("not searched (8 bits)".into());
            }
        }
        table.row(row);
    }
    table.print()
}
