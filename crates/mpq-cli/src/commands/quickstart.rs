//! `mpq quickstart`: the whole pipeline on the bundled MNIST subset, as the same `mpq`
//! commands a user would type, run in-process. Train LeNet-5 (or reuse the model already in the
//! run folder) with the reward split held out, evaluate it, analyse its Hessian (every metric),
//! train LIMPQ's indicators, run every search method at one budget (average 3 weight bits with
//! 4-bit activations; half the W8A8 BitFusion latency for HAQ; the BitOps of uniform W3A4 for
//! LIMPQ), quantize each plan with a one-epoch fine-tune, export
//! it, and print the results table. Every command is written to `DIR/commands.sh` and every
//! intermediate JSON stays in the run folder, so any stage can be re-run alone:
//!
//! ```text
//! DIR/model.safetensors  fp.json  settings.json  sensitivity.json  limpq.json  commands.sh
//! DIR/summary.json
//! DIR/plans/<method>.json            (pareto: plans/pareto.frontier.json/.svg; haq: curve)
//! DIR/quantized/<method>/{model.safetensors, plan.json, summary.json}
//! DIR/report.html                    (`mpq report --run DIR`)
//! ```

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use mpq::QuantPlan;
use mpq::cost::HardwareModel;
use mpq::graph::NoHooks;
use mpq::model::{Model, ModelHint};

use crate::args::{Cli, GlobalArgs, QuickstartArgs};
use crate::output::{self, Table, thousands};

/// The training split held out of training, on which HAQ and CW-HAWQ score plans.
const HOLDOUT: usize = 2000;

/// Run lengths of the full and the `--fast` quickstart.
struct Lengths {
    epochs: usize,
    analyze: &'static [&'static str],
    limpq: &'static [&'static str],
    haq_episodes: usize,
    cw_episodes: usize,
    finetune_epochs: usize,
}

impl Lengths {
    fn new(fast: bool) -> Self {
        if fast {
            Lengths {
                epochs: 2,
                analyze: &[
                    "--batches",
                    "1",
                    "--max-iter",
                    "20",
                    "--lanczos-steps",
                    "20",
                ],
                limpq: &["--epochs", "1", "--data-fraction", "0.25"],
                haq_episodes: 12,
                cw_episodes: 12,
                finetune_epochs: 1,
            }
        } else {
            Lengths {
                epochs: 8,
                analyze: &["--batches", "2", "--max-iter", "50"],
                limpq: &["--epochs", "2"],
                haq_episodes: 100,
                cw_episodes: 100,
                finetune_epochs: 1,
            }
        }
    }
}

/// Runs `mpq` command lines in-process with their own output muted, records them, and
/// prints a one-line result per stage.
struct Runner<'a> {
    g: &'a GlobalArgs,
    commands: Vec<String>,
    stage: usize,
    stages: usize,
}

impl Runner<'_> {
    fn mpq(&mut self, args: &[String]) -> anyhow::Result<()> {
        let mut argv = vec!["mpq".to_string(), "--seed".into(), self.g.seed.to_string()];
        if self.g.quiet {
            argv.push("--quiet".into());
        }
        argv.extend(args.iter().cloned());
        let line = shell_join(&argv);
        self.commands.push(line.clone());
        let cli = Cli::try_parse_from(&argv)
            .map_err(|e| anyhow::anyhow!("internal error: quickstart built `{line}`: {e}"))?;
        output::mute(true);
        let r = super::run(&cli);
        output::mute(false);
        r.with_context(|| format!("quickstart stage `{line}`"))
    }

    fn note(&mut self, what: &str) {
        self.commands.push(format!("# {what}"));
    }

    fn done(&mut self, label: &str, result: &str) {
        self.stage += 1;
        output::status(
            self.g.quiet,
            &format!("[{}/{}] {label}: {result}", self.stage, self.stages),
        );
    }
}

fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty()
                || a.chars()
                    .any(|c| !(c.is_ascii_alphanumeric() || "-_./:=,+".contains(c)))
            {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(path).map_err(|e| mpq::Error::io(path, e))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// One search method of the quickstart: its name and flags beyond `--model` and `--out`.
fn methods(
    budget_ms: f64,
    len: &Lengths,
    sens: &str,
    indicators: &str,
) -> Vec<(&'static str, Vec<String>)> {
    let avg = s(&["--avg-bits", "3", "--a-bits", "4"]);
    let with = |m: &str, extra: &[String]| {
        let mut v = s(&["--method", m]);
        v.extend(avg.iter().cloned());
        v.extend(extra.iter().cloned());
        v
    };
    let sensitivity = s(&["--sensitivity", sens]);
    let agent = |episodes: usize| {
        s(&[
            "--data",
            "mnist10k",
            "--val-samples",
            &HOLDOUT.to_string(),
            "--episodes",
            &episodes.to_string(),
        ])
    };
    let mut haq = s(&[
        "--method",
        "haq",
        "--hardware",
        "bitfusion",
        "--max-latency-ms",
        &format!("{budget_ms:.9}"),
    ]);
    haq.extend(agent(len.haq_episodes));
    let mut cw = sensitivity.clone();
    cw.extend(agent(len.cw_episodes));
    cw.extend(s(&["--weight-range", "mse"]));
    vec![
        ("uniform", with("uniform", &[])),
        ("random", with("random", &[])),
        ("hawq-v1", with("hawq-v1", &sensitivity)),
        ("pareto", with("pareto", &sensitivity)),
        ("ilp", with("ilp", &sensitivity)),
        ("haq", haq),
        (
            "cw-ilp",
            with(
                "cw-ilp",
                &[sensitivity.clone(), s(&["--weight-range", "mse"])].concat(),
            ),
        ),
        ("cw-hawq", with("cw-hawq", &cw)),
        (
            "limpq",
            s(&[
                "--method",
                "limpq",
                "--sensitivity",
                indicators,
                "--bops-as",
                "3/4",
                "--avg-bits",
                "3",
            ]),
        ),
    ]
}

pub(crate) fn run(g: &GlobalArgs, a: &QuickstartArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = a.out.clone();
    std::fs::create_dir_all(&dir).map_err(|e| mpq::Error::io(&dir, e))?;
    let len = Lengths::new(a.fast);
    let model_path = dir.join("model.safetensors");
    let model_arg = path_str(&model_path);
    let sens_path = dir.join("sensitivity.json");
    let mut r = Runner {
        g,
        commands: vec![
            "#!/bin/sh".into(),
            "# The commands `mpq quickstart` ran; any line can be re-run alone.".into(),
            "set -e".into(),
        ],
        stage: 0,
        stages: 6,
    };

    // 1. The model.
    let trained = !model_path.exists();
    if trained {
        r.mpq(&s(&[
            "train",
            "--arch",
            "lenet5",
            "--data",
            "mnist10k",
            "--epochs",
            &len.epochs.to_string(),
            "--holdout",
            &HOLDOUT.to_string(),
            "--out",
            &model_arg,
        ]))?;
    } else {
        r.note(&format!("reused {model_arg}"));
    }
    let model = Model::load(&model_path, &ModelHint::default(), &super::device())?;
    let splits = super::load_data("mnist10k", g.seed)?;
    let norm = model.normalization_or(&splits.normalization);
    let fp = mpq::train::evaluate(&model.graph, &splits.test, &norm, 256, &mut NoHooks)?;
    r.note(&format!(
        "fp.json: mpq eval --model {model_arg} --data mnist10k --json"
    ));
    mpq::io_write_json(
        &dir.join("fp.json"),
        &serde_json::json!({
            "accuracy": fp.accuracy,
            "loss": fp.loss,
            "samples": fp.samples,
        }),
    )?;
    r.done(
        if trained {
            "trained LeNet-5"
        } else {
            "reused LeNet-5"
        },
        &format!(
            "{:.2}% FP32 test accuracy ({} test images; {HOLDOUT} training images held out \
             for the agents' rewards)",
            100.0 * fp.accuracy,
            fp.samples
        ),
    );

    // 2. Hessian analysis.
    let t = Instant::now();
    let mut args = s(&[
        "analyze", "--model", &model_arg, "--data", "mnist10k", "--metric", "all",
    ]);
    args.extend(s(len.analyze));
    args.extend(s(&["--out", &path_str(&sens_path)]));
    r.mpq(&args)?;
    let indicators_path = dir.join("limpq.json");
    let mut args = s(&[
        "analyze", "--model", &model_arg, "--data", "mnist10k", "--metric", "limpq",
    ]);
    args.extend(s(len.limpq));
    args.extend(s(&["--out", &path_str(&indicators_path)]));
    r.mpq(&args)?;
    let sens = read_json(&sens_path)?;
    let layers_n = sens["layers"].as_array().map_or(0, Vec::len);
    r.done(
        "Hessian analysis",
        &format!(
            "top eigenvalue, trace, activation and channel traces of {layers_n} layers, \
             spectral density, LIMPQ's learned indicators ({:.1} s)",
            t.elapsed().as_secs_f64()
        ),
    );

    // 3. Every search method at one budget.
    let layers = model.graph.layer_infos()?;
    let hw = HardwareModel::from_reference("bitfusion")?;
    let w8a8 = hw
        .table(&layers, &QuantPlan::uniform(&layers, 8, 8))?
        .latency_ms;
    let budget_ms = 0.5 * w8a8;
    let plans_dir = dir.join("plans");
    let methods = methods(
        budget_ms,
        &len,
        &path_str(&sens_path),
        &path_str(&indicators_path),
    );
    mpq::io_write_json(
        &dir.join("settings.json"),
        &serde_json::json!({
            "model": "lenet5",
            "data": "mnist10k",
            "seed": g.seed,
            "fast": a.fast,
            "train_epochs": len.epochs,
            "holdout": HOLDOUT,
            "budget": {"avg_w_bits": 3, "a_bits": 4, "haq_max_latency_ms": budget_ms,
                       "haq_hardware": "bitfusion", "w8a8_latency_ms": w8a8},
            "haq_episodes": len.haq_episodes,
            "cw_hawq_episodes": len.cw_episodes,
            "limpq_training": len.limpq.join(" "),
            "finetune_epochs": len.finetune_epochs,
            "mpq_version": env!("CARGO_PKG_VERSION"),
        }),
    )?;
    let t = Instant::now();
    for (name, flags) in &methods {
        let out = plans_dir.join(format!("{name}.json"));
        let mut args = s(&["search", "--model", &model_arg]);
        args.extend(flags.iter().cloned());
        args.extend(s(&["--out", &path_str(&out)]));
        r.mpq(&args)?;
    }
    r.done(
        "search",
        &format!(
            "{} plans in {:.1} s ({})",
            methods.len(),
            t.elapsed().as_secs_f64(),
            methods.iter().map(|m| m.0).collect::<Vec<_>>().join(", ")
        ),
    );

    // 4. Quantize, fine-tune, export each plan.
    let t = Instant::now();
    for (name, _) in &methods {
        r.mpq(&s(&[
            "quantize",
            "--model",
            &model_arg,
            "--policy",
            &path_str(&plans_dir.join(format!("{name}.json"))),
            "--data",
            "mnist10k",
            "--finetune-epochs",
            &len.finetune_epochs.to_string(),
            "--out",
            &path_str(&dir.join("quantized").join(name)),
        ]))?;
    }
    r.done(
        "quantize",
        &format!(
            "{} packed models, each fine-tuned {} epoch and reloaded bit-identically ({:.1} s)",
            methods.len(),
            len.finetune_epochs,
            t.elapsed().as_secs_f64()
        ),
    );

    // 5. The results.
    let mut rows = Vec::new();
    for (name, _) in &methods {
        let plan_path = plans_dir.join(format!("{name}.json"));
        let plan = QuantPlan::load(&plan_path)?;
        let q = read_json(&dir.join("quantized").join(name).join("summary.json"))?;
        let lat = hw.table(&layers, &plan).ok();
        rows.push(serde_json::json!({
            "method": name,
            "size_bytes": q["size_bytes"],
            "avg_w_bits": q["avg_w_bits"],
            "bops": q["bops"],
            "latency_ms": lat.as_ref().map(|h| h.latency_ms),
            "energy_mj": lat.as_ref().and_then(|h| h.energy_mj),
            "ptq_accuracy": q["before_finetune"]["accuracy"],
            "accuracy": q["after_finetune"]["accuracy"],
            "search_seconds": plan.seconds,
            "file_bytes": q["export"]["file_bytes"],
        }));
    }
    let summary = serde_json::json!({
        "model": model_arg,
        "trained": trained,
        "fp32": {"accuracy": fp.accuracy, "loss": fp.loss, "samples": fp.samples,
                 "size_bytes": 4 * model.num_params(), "params": model.num_params()},
        "results": rows,
        "seconds": started.elapsed().as_secs_f64(),
    });
    mpq::io_write_json(&dir.join("summary.json"), &summary)?;
    r.done(
        "results",
        &format!("{}", dir.join("summary.json").display()),
    );

    // 6. The report.
    let report = mpq::report::render(&dir)?;
    let mut lines = r.commands.clone();
    lines.push(format!(
        "mpq report --run {}",
        shell_join(&[path_str(&dir)])
    ));
    std::fs::write(dir.join("commands.sh"), lines.join("\n") + "\n")
        .map_err(|e| mpq::Error::io(dir.join("commands.sh"), e))?;
    let lacks = [report.missing, report.unreadable].concat();
    r.done(
        "report",
        &format!(
            "{} ({:.1} s in all{})",
            report.path.display(),
            started.elapsed().as_secs_f64(),
            if lacks.is_empty() {
                String::new()
            } else {
                format!("; lacks {}", lacks.join(", "))
            }
        ),
    );
    if g.json {
        return output::json(&summary);
    }
    print_results(&summary, &dir, started)
}

fn print_results(summary: &serde_json::Value, dir: &Path, started: Instant) -> anyhow::Result<()> {
    let pct = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("-".into(), |x| format!("{:.2}%", 100.0 * x))
    };
    let num = |v: &serde_json::Value, f: &dyn Fn(f64) -> String| v.as_f64().map_or("-".into(), f);
    let mut t = Table::new(&[
        "method",
        "weight bytes",
        "avg bits",
        "BOPs",
        "latency ms",
        "PTQ acc",
        "fine-tuned acc",
        "search s",
    ]);
    let fp = &summary["fp32"];
    t.row(vec![
        "fp32".into(),
        thousands(fp["size_bytes"].as_u64().unwrap_or(0)),
        "32".into(),
        "-".into(),
        "-".into(),
        pct(&fp["accuracy"]),
        "-".into(),
        "-".into(),
    ]);
    for r in summary["results"].as_array().into_iter().flatten() {
        t.row(vec![
            r["method"].as_str().unwrap_or("?").to_string(),
            thousands(r["size_bytes"].as_u64().unwrap_or(0)),
            num(&r["avg_w_bits"], &|x| format!("{x:.2}")),
            num(&r["bops"], &|x| format!("{x:.3e}")),
            num(&r["latency_ms"], &|x| format!("{x:.6}")),
            pct(&r["ptq_accuracy"]),
            pct(&r["accuracy"]),
            num(&r["search_seconds"], &|x| format!("{x:.2}")),
        ]);
    }
    t.print()?;
    output::line(&format!(
        "\nLeNet-5 on mnist10k, average 3 weight bits / 4-bit activations (haq: half the W8A8 \
         BitFusion latency). {:.1} s.\nReport: {}\nRun folder: {} (commands.sh re-runs any \
         stage; plans/ and quantized/ hold every plan, packed model and summary)",
        started.elapsed().as_secs_f64(),
        dir.join("report.html").display(),
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_join_quotes_only_what_needs_it() {
        let v = s(&["mpq", "--out", "a b/p.json", "it's", "x=1,2"]);
        assert_eq!(shell_join(&v), r"mpq --out 'a b/p.json' 'it'\''s' x=1,2");
    }

    #[test]
    fn every_method_parses_as_a_search_command() {
        let len = Lengths::new(true);
        for (name, flags) in methods(0.002, &len, "s.json", "l.json") {
            let mut argv = s(&["mpq", "search", "--model", "m.safetensors"]);
            argv.extend(flags);
            argv.extend(s(&["--out", "p.json"]));
            assert!(Cli::try_parse_from(&argv).is_ok(), "{name}: {argv:?}");
        }
    }
}
