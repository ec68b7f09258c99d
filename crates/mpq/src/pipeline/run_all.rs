//! The whole pipeline on the bundled MNIST subset (`mpq quickstart`): train LeNet-5 (or reuse
//! the model already in the run folder) with the agents' reward split held out, evaluate it,
//! analyse its Hessian (every metric) and train LIMPQ's indicators, run every search method
//! at one budget (average 3 weight bits with 4-bit activations; half the W8A8 BitFusion
//! latency for HAQ; the BitOps of uniform W3A4 for LIMPQ), quantize each plan with a one-epoch
//! fine-tune and export it, summarize the results and render the report. Every stage is a
//! typed request of this module's siblings; each also has the `mpq` command line that runs it
//! alone, written to `DIR/commands.sh`. The folder's layout is in [`crate::run`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{
    AgentOptions, Analysis, AnalyzeRequest, BudgetSpec, CompareRequest, FinetuneOptions,
    HaqOptions, Method, ModelSource, QuantizeRequest, SearchRequest, Split, TrainFrom,
    TrainRequest,
};
use crate::QuantPlan;
use crate::Result;
use crate::cost::HardwareModel;
use crate::graph::NoHooks;
use crate::io::Versioned;
use crate::model::{Model, ModelHint};
use crate::plan::WeightRange;
use crate::progress::Progress;
use crate::quant::CalibrationConfig;
use crate::report::ReportOutcome;
use crate::run::{RunBudget, RunPaths, RunSettings, RunSummary};
use crate::search::haq::FlagStyle;
use crate::search::{Budget, Pin};
use crate::sensitivity::learned::LimpqConfig;
use crate::sensitivity::{AnalyzeConfig, Metric, SampleConfig};
use crate::train::TrainConfig;
use crate::zoo::{self, ZooConfig};

/// The training samples held out of training, on which HAQ and CW-HAWQ score plans.
pub const HOLDOUT: usize = 2000;

/// `mpq quickstart`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunAllRequest {
    /// The run folder (an existing model there is reused).
    pub out: PathBuf,
    /// A shorter run (fewer epochs, probes and episodes).
    pub fast: bool,
    /// The seed of every stage.
    pub seed: u64,
}

/// One stage's request.
#[derive(Debug, Clone, PartialEq)]
pub enum StageRequest {
    /// `mpq train`.
    Train(TrainRequest),
    /// `mpq analyze`.
    Analyze(AnalyzeRequest),
    /// `mpq search`.
    Search(Box<SearchRequest>),
    /// `mpq quantize`.
    Quantize(QuantizeRequest),
    /// `mpq compare`.
    Compare(Box<CompareRequest>),
}

impl StageRequest {
    /// 0 for the analyses, 1 for the searches, 2 for quantization, 3 for the comparison
    /// (the training comes first).
    fn phase(&self) -> usize {
        match self {
            StageRequest::Train(_) | StageRequest::Analyze(_) => 0,
            StageRequest::Search(_) => 1,
            StageRequest::Quantize(_) => 2,
            StageRequest::Compare(_) => 3,
        }
    }
}

/// A stage: its request and the `mpq` command line that runs it alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// The method, for the search and quantize stages.
    pub method: Option<&'static str>,
    /// `mpq --seed N <command> …`.
    pub command: Vec<String>,
    /// The request.
    pub request: StageRequest,
}

/// What `mpq quickstart` did.
#[derive(Debug, Clone)]
pub struct RunAllOutcome {
    /// The run folder.
    pub dir: PathBuf,
    /// Its settings.
    pub settings: RunSettings,
    /// The results.
    pub summary: RunSummary,
    /// The report.
    pub report: ReportOutcome,
}

/// Run lengths of the full and the fast run.
struct Lengths {
    epochs: usize,
    batches: usize,
    max_iter: usize,
    lanczos_steps: Option<usize>,
    limpq_epochs: usize,
    limpq_fraction: Option<f64>,
    episodes: usize,
    finetune_epochs: usize,
    /// The comparison's methods, random plans and fine-tuning seeds, and its fine-tuning rate
    /// (`None`: `mpq quantize`'s rule; the fast run gives the rate the rule gives LeNet-5, a
    /// fifth of its training rate, and skips the range tests).
    compare: (&'static str, usize, usize, Option<f64>),
}

impl Lengths {
    fn new(fast: bool) -> Lengths {
        if fast {
            Lengths {
                epochs: 2,
                batches: 1,
                max_iter: 20,
                lanczos_steps: Some(20),
                limpq_epochs: 1,
                limpq_fraction: Some(0.25),
                episodes: 12,
                finetune_epochs: 1,
                compare: ("uniform,random,ilp", 8, 2, Some(0.01)),
            }
        } else {
            Lengths {
                epochs: 8,
                batches: 2,
                max_iter: 50,
                lanczos_steps: None,
                limpq_epochs: 2,
                limpq_fraction: None,
                episodes: 100,
                finetune_epochs: 1,
                compare: ("uniform,random,hawq-v1,pareto,ilp,limpq", 20, 3, None),
            }
        }
    }
}

/// Builds command lines: `mpq --seed N` and words.
struct Cmd(Vec<String>);

impl Cmd {
    fn new(seed: u64, words: &[&str]) -> Cmd {
        let mut v = vec!["mpq".to_string(), "--seed".into(), seed.to_string()];
        v.extend(words.iter().map(|w| w.to_string()));
        Cmd(v)
    }

    fn add(mut self, words: &[&str]) -> Cmd {
        self.0.extend(words.iter().map(|w| w.to_string()));
        self
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The run's settings and stages. The model stage is `None` when the folder already holds a
/// model (it is reused).
pub fn stages(req: &RunAllRequest) -> Result<(RunSettings, Option<Stage>, Vec<Stage>)> {
    let len = Lengths::new(req.fast);
    let paths = RunPaths::new(&req.out);
    let seed = req.seed;
    let model_path = paths.model();
    let model_arg = path(&model_path);
    let source = ModelSource {
        reference: model_arg.clone(),
        hint: ModelHint {
            seed,
            ..ModelHint::default()
        },
    };
    let train = (!model_path.exists()).then(|| {
        let cmd = Cmd::new(seed, &["train", "--arch", "lenet5", "--data", "mnist10k"]);
        let epochs = len.epochs.to_string();
        let holdout = HOLDOUT.to_string();
        Stage {
            method: None,
            command: cmd
                .add(&[
                    "--epochs",
                    &epochs,
                    "--holdout",
                    &holdout,
                    "--out",
                    &model_arg,
                ])
                .0,
            request: StageRequest::Train(TrainRequest {
                from: TrainFrom::Arch {
                    name: "lenet5".into(),
                    width: None,
                },
                data: "mnist10k".into(),
                config: TrainConfig {
                    epochs: len.epochs,
                    seed,
                    ..TrainConfig::default()
                },
                holdout: HOLDOUT,
                out: model_path.clone(),
            }),
        }
    });
    let mut stages = Vec::new();
    // An analysis of the model on mnist10k by `cmd` (less its `--out`) into `out`.
    let analyze = |cmd: Cmd, analysis: Analysis, out: &PathBuf| Stage {
        method: None,
        command: cmd.add(&["--out", &path(out)]).0,
        request: StageRequest::Analyze(AnalyzeRequest {
            model: source.clone(),
            data: "mnist10k".into(),
            analysis,
            seed,
            out: out.clone(),
        }),
    };

    // Hessian analysis (every metric) and LIMPQ's indicators.
    let sens = paths.file("sensitivity.json");
    let mut config = AnalyzeConfig::new(Metric::All);
    (config.trace.max_iter, config.power.max_iter) = (len.max_iter, len.max_iter);
    config.seed = seed;
    let mut cmd = Cmd::new(
        seed,
        &["analyze", "--model", &model_arg, "--data", "mnist10k"],
    )
    .add(&["--metric", "all", "--batches", &len.batches.to_string()])
    .add(&["--max-iter", &len.max_iter.to_string()]);
    if let Some(s) = len.lanczos_steps {
        config.density.steps = s;
        cmd = cmd.add(&["--lanczos-steps", &s.to_string()]);
    }
    let hessian = Analysis::Hessian {
        config,
        sample: SampleConfig {
            batches: len.batches,
            seed,
            ..SampleConfig::default()
        },
        split: Split::Train,
        svg: None,
    };
    stages.push(analyze(cmd, hessian, &sens));
    let indicators = paths.file("limpq.json");
    let mut limpq = LimpqConfig {
        epochs: len.limpq_epochs,
        batch_size: 128,
        seed,
        ..LimpqConfig::default()
    };
    let mut flags = vec!["--epochs".to_string(), len.limpq_epochs.to_string()];
    if let Some(f) = len.limpq_fraction {
        limpq.data_fraction = f;
        flags.extend(["--data-fraction".to_string(), f.to_string()]);
    }
    let limpq_flags = flags.join(" ");
    let mut cmd = Cmd::new(
        seed,
        &["analyze", "--model", &model_arg, "--data", "mnist10k"],
    )
    .add(&["--metric", "limpq"]);
    cmd.0.extend(flags);
    let analysis = Analysis::Limpq {
        config: limpq,
        label_smoothing: None,
    };
    stages.push(analyze(cmd, analysis, &indicators));

    // Every search method at one budget; HAQ at half the W8A8 latency on BitFusion.
    let layers = zoo::layer_infos("lenet5", &ZooConfig::new([1, 28, 28], 10))?;
    let w8a8 = HardwareModel::from_reference("bitfusion")?
        .table(&layers, &QuantPlan::uniform(&layers, 8, 8))?
        .latency_ms;
    let budget_ms = 0.5 * w8a8;
    let budget_arg = format!("{budget_ms:.9}");
    let budget_ms: f64 = budget_arg.parse().unwrap_or(budget_ms);
    let agent = |episodes: usize| AgentOptions {
        episodes,
        ..AgentOptions::new("mnist10k")
    };
    let agent_args = |episodes: usize| {
        let holdout = HOLDOUT.to_string();
        let e = episodes.to_string();
        let v = [
            "--data",
            "mnist10k",
            "--val-samples",
            &holdout,
            "--episodes",
            &e,
        ];
        v.map(String::from).to_vec()
    };
    let s_arg = path(&sens);
    let methods: Vec<(Method, Vec<String>)> = vec![
        (Method::Uniform, vec![]),
        (Method::Random { max_tries: 1_000 }, vec![]),
        (Method::HawqV1, vec!["--sensitivity".into(), s_arg.clone()]),
        (Method::Pareto, vec!["--sensitivity".into(), s_arg.clone()]),
        (Method::Ilp, vec!["--sensitivity".into(), s_arg.clone()]),
        (
            Method::Haq(HaqOptions {
                agent: agent(len.episodes),
                weight_quantizer: Default::default(),
                state_flags: FlagStyle::Clean,
            }),
            [
                ["--hardware", "bitfusion", "--max-latency-ms", &budget_arg]
                    .map(String::from)
                    .to_vec(),
                agent_args(len.episodes),
            ]
            .concat(),
        ),
        (
            Method::CwIlp { ratio_grid: 8 },
            ["--sensitivity", &s_arg, "--weight-range", "mse"]
                .map(String::from)
                .to_vec(),
        ),
        (
            Method::CwHawq(agent(len.episodes)),
            [
                vec!["--sensitivity".into(), s_arg.clone()],
                agent_args(len.episodes),
                vec!["--weight-range".into(), "mse".into()],
            ]
            .concat(),
        ),
        (
            Method::limpq(),
            // LIMPQ's budget convention: the BitOps of uniform W3A4 with the first and last
            // layers at W8A8, pinned so for the budget as for the search.
            [
                "--sensitivity",
                &path(&indicators),
                "--bops-as",
                "3/4",
                "--pin-first-last",
                "8",
            ]
            .map(String::from)
            .to_vec(),
        ),
    ];
    for (method, flags) in methods {
        let name = method.name();
        let out = paths.plan(name);
        let mut r = SearchRequest::new(source.clone(), method);
        r.seed = seed;
        r.out = Some(out.clone());
        let mut cmd = Cmd::new(seed, &["search", "--model", &model_arg, "--method", name]);
        match &r.method {
            Method::Haq(_) => {
                r.hardware = Some("bitfusion".into());
                r.budget.limits.max_latency_ms = Some(budget_ms);
            }
            Method::Limpq { .. } => {
                r.sensitivity = Some(indicators.clone());
                r.budget = BudgetSpec {
                    limits: Budget::avg_bits(3.0),
                    bops_as: Some((3, 4)),
                };
                r.pins = Pin::parse_all(&[], Some("8"))?;
                cmd = cmd.add(&["--avg-bits", "3"]);
            }
            m => {
                r.budget.limits.avg_bits = Some(3.0);
                r.a_bits = Some(vec![4]);
                cmd = cmd.add(&["--avg-bits", "3", "--a-bits", "4"]);
                if m.sensitivity_metric().is_some() {
                    r.sensitivity = Some(sens.clone());
                }
                if m.channel_wise() {
                    r.weight_range = WeightRange::Mse;
                }
            }
        }
        cmd.0.extend(flags);
        stages.push(Stage {
            method: Some(name),
            command: cmd.add(&["--out", &path(&out)]).0,
            request: StageRequest::Search(Box::new(r)),
        });
    }

    // Quantize, fine-tune and export each plan.
    let plans: Vec<&'static str> = stages.iter().filter_map(|s| s.method).collect();
    for name in plans {
        let (policy, out) = (paths.plan(name), paths.quantized(name));
        let epochs = len.finetune_epochs.to_string();
        let cmd = Cmd::new(seed, &["quantize", "--model", &model_arg])
            .add(&["--policy", &path(&policy), "--data", "mnist10k"])
            .add(&["--finetune-epochs", &epochs, "--all-at-once"])
            .add(&["--out", &path(&out)]);
        stages.push(Stage {
            method: Some(name),
            command: cmd.0,
            request: StageRequest::Quantize(QuantizeRequest {
                model: source.clone(),
                policy,
                data: "mnist10k".into(),
                // Every method gets the same fine-tuning budget: HAWQ's stages (one
                // fine-tuning per block) are for `mpq quantize`.
                finetune: FinetuneOptions {
                    epochs: len.finetune_epochs,
                    all_at_once: true,
                    ..FinetuneOptions::default()
                },
                quantizer: None,
                no_fold_bn: false,
                calibration: CalibrationConfig::default(),
                seed,
                out,
            }),
        });
    }
    // The comparison with error bars, at the quickstart's budget.
    let (methods, random_plans, seeds, lr) = len.compare;
    let out = paths.file("compare");
    let mut cmd = Cmd::new(
        seed,
        &["compare", "--model", &model_arg, "--data", "mnist10k"],
    )
    .add(&["--sensitivity", &s_arg, "--indicators", &path(&indicators)])
    .add(&["--methods", methods, "--avg-bits", "3", "--a-bits", "4"])
    .add(&["--random-plans", &random_plans.to_string()])
    .add(&["--seeds", &seeds.to_string()]);
    if let Some(lr) = lr {
        cmd = cmd.add(&["--lr", &lr.to_string()]);
    }
    let cmd = cmd.add(&["--out", &path(&out)]);
    let mut template = SearchRequest::new(source.clone(), Method::Uniform);
    (template.a_bits, template.seed) = (Some(vec![4]), seed);
    let methods = (methods.split(','))
        .map(|m| match m {
            "uniform" => Method::Uniform,
            "random" => Method::Random { max_tries: 1_000 },
            "hawq-v1" => Method::HawqV1,
            "pareto" => Method::Pareto,
            "limpq" => Method::limpq(),
            _ => Method::Ilp,
        })
        .collect();
    stages.push(Stage {
        method: None,
        command: cmd.0,
        request: StageRequest::Compare(Box::new(CompareRequest {
            template,
            data: "mnist10k".into(),
            methods,
            budgets: vec![BudgetSpec {
                limits: Budget::avg_bits(3.0),
                bops_as: None,
            }],
            plans: Vec::new(),
            sensitivity: Some(sens.clone()),
            indicators: Some(indicators.clone()),
            random_plans,
            seeds,
            finetune: FinetuneOptions {
                epochs: 1,
                lr,
                all_at_once: true,
                ..FinetuneOptions::default()
            },
            calibration: CalibrationConfig::default(),
            resamples: 2000,
            seed,
            out,
        })),
    });
    let settings = RunSettings {
        budget: Some(RunBudget {
            a_bits: 4,
            avg_w_bits: 3.0,
            haq_hardware: "bitfusion".into(),
            haq_max_latency_ms: budget_ms,
            w8a8_latency_ms: w8a8,
        }),
        cw_hawq_episodes: Some(len.episodes),
        data: Some("mnist10k".into()),
        fast: Some(req.fast),
        finetune_epochs: Some(len.finetune_epochs),
        haq_episodes: Some(len.episodes),
        holdout: Some(HOLDOUT),
        limpq_training: Some(limpq_flags),
        model: Some("lenet5".into()),
        mpq_version: Some(env!("CARGO_PKG_VERSION").into()),
        seed: Some(seed),
        train_epochs: Some(len.epochs),
    };
    Ok((settings, train, stages))
}

/// The comparison's verdicts in one line.
fn compare_line(dir: &Path, secs: f64) -> String {
    let file = RunPaths::new(dir).file("compare").join("compare.json");
    match crate::compare::CompareFile::load(&file) {
        Ok(f) => {
            let mut parts = Vec::new();
            for b in &f.budgets {
                for r in &b.rows {
                    if let Some(v) = &r.verdict {
                        parts.push(format!("{} {}", r.name, v.headline()));
                    }
                }
            }
            format!(
                "against uniform {}: {} ({}, {secs:.1} s)",
                f.budgets.first().map_or(String::new(), |b| b.label.clone()),
                parts.join(", "),
                path(&file.with_file_name("compare.md"))
            )
        }
        Err(e) => format!("{e}"),
    }
}

/// Forwards progress bars and drops the stages' own status lines.
struct Bars<'a>(&'a mut dyn Progress);

impl Progress for Bars<'_> {
    fn start(&mut self, label: &str, total: u64) {
        self.0.start(label, total);
    }
    fn inc(&mut self, n: u64) {
        self.0.inc(n);
    }
    fn message(&mut self, msg: &str) {
        self.0.message(msg);
    }
    fn finish(&mut self) {
        self.0.finish();
    }
}

fn run_stage(stage: &Stage, progress: &mut dyn Progress) -> Result<()> {
    let bars = &mut Bars(progress);
    match &stage.request {
        StageRequest::Train(r) => super::train(r, bars).map(drop),
        StageRequest::Analyze(r) => super::analyze(r, bars).map(drop),
        StageRequest::Search(r) => super::search(r, bars).map(drop),
        StageRequest::Quantize(r) => super::quantize(r, bars).map(drop),
        StageRequest::Compare(r) => super::compare(r, bars).map(drop),
    }
    .map_err(|e| crate::Error::Context {
        context: format!("quickstart stage `{}`", shell_join(&stage.command)),
        source: Box::new(e),
    })
}

/// `argv` as one shell line, quoting only the words that need it.
pub fn shell_join(argv: &[String]) -> String {
    let quote = |a: &String| {
        let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=,+".contains(c);
        if a.is_empty() || !a.chars().all(plain) {
            format!("'{}'", a.replace('\'', r"'\''"))
        } else {
            a.clone()
        }
    };
    argv.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// Runs every stage into `req.out`, with one status line per stage through `progress`.
pub fn run_all(req: &RunAllRequest, progress: &mut dyn Progress) -> Result<RunAllOutcome> {
    let started = Instant::now();
    let dir = &req.out;
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    let paths = RunPaths::new(dir);
    let (settings, train, stages) = stages(req)?;
    let mut lines = vec![
        "#!/bin/sh".to_string(),
        "# The commands `mpq quickstart` ran; any line can be re-run alone.".into(),
        "set -e".into(),
    ];
    let mut step = 0;
    let mut done = |progress: &mut dyn Progress, label: &str, result: String| {
        step += 1;
        progress.note(&format!("[{step}/7] {label}: {result}"));
    };

    // 1. The model.
    let trained = train.is_some();
    let model_arg = path(&paths.model());
    match &train {
        Some(stage) => {
            lines.push(shell_join(&stage.command));
            run_stage(stage, progress)?;
        }
        None => lines.push(format!("# reused {model_arg}")),
    }
    let model = Model::load(&paths.model(), &ModelHint::default(), &super::device())?;
    let splits = super::load_data("mnist10k", req.seed)?;
    let norm = model.normalization_or(&splits.normalization);
    let fp = crate::train::evaluate(&model.graph, &splits.test, &norm, 256, &mut NoHooks)?;
    lines.push(format!(
        "# fp.json: mpq eval --model {model_arg} --data mnist10k --json"
    ));
    fp.save(paths.file("fp.json"))?;
    done(
        progress,
        if trained {
            "trained LeNet-5"
        } else {
            "reused LeNet-5"
        },
        format!(
            "{:.2}% FP32 test accuracy ({} test images; {HOLDOUT} training images held out \
             for the agents' rewards)",
            100.0 * fp.accuracy,
            fp.samples
        ),
    );

    // 2.–4. Analysis, search, quantization.
    settings.save(paths.file("settings.json"))?;
    for (phase, label) in ["Hessian analysis", "search", "quantize", "compare"]
        .into_iter()
        .enumerate()
    {
        let t = Instant::now();
        let mine: Vec<&Stage> = stages
            .iter()
            .filter(|s| s.request.phase() == phase)
            .collect();
        for stage in &mine {
            lines.push(shell_join(&stage.command));
            run_stage(stage, progress)?;
        }
        let secs = t.elapsed().as_secs_f64();
        let methods: Vec<&str> = mine.iter().filter_map(|s| s.method).collect();
        let result = match label {
            "Hessian analysis" => format!(
                "top eigenvalue, trace, activation and channel traces of {} layers, spectral \
                 density, LIMPQ's learned indicators ({secs:.1} s)",
                model.graph.layer_infos()?.len()
            ),
            "search" => format!(
                "{} plans in {secs:.1} s ({})",
                methods.len(),
                methods.join(", ")
            ),
            "quantize" => format!(
                "{} packed models, each fine-tuned {} epoch and reloaded bit-identically \
                 ({secs:.1} s)",
                methods.len(),
                settings.finetune_epochs.unwrap_or(0)
            ),
            _ => compare_line(dir, secs),
        };
        done(progress, label, result);
    }

    // 5. The results; 6. the report.
    let mut summary = super::summarize(dir, Some((trained, started.elapsed().as_secs_f64())))?;
    done(progress, "results", path(&paths.file("summary.json")));
    let report = crate::report::render(dir)?;
    lines.push(format!("mpq report --run {}", shell_join(&[path(dir)])));
    crate::io::write_atomic(
        &paths.file("commands.sh"),
        (lines.join("\n") + "\n").as_bytes(),
    )?;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.save(paths.file("summary.json"))?;
    let lacks = [report.missing.clone(), report.unreadable.clone()].concat();
    done(
        progress,
        "report",
        format!(
            "{} ({:.1} s in all{})",
            report.path.display(),
            summary.seconds,
            if lacks.is_empty() {
                String::new()
            } else {
                format!("; lacks {}", lacks.join(", "))
            }
        ),
    );
    Ok(RunAllOutcome {
        dir: dir.clone(),
        settings,
        summary,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_join_quotes_only_what_needs_it() {
        let v: Vec<String> = ["mpq", "--out", "a b/p.json", "it's", "x=1,2"]
            .map(String::from)
            .to_vec();
        assert_eq!(shell_join(&v), r"mpq --out 'a b/p.json' 'it'\''s' x=1,2");
    }
}
