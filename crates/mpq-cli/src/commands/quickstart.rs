//! `mpq quickstart`: the pipeline on the bundled MNIST subset. For now: train LeNet-5 (or
//! reuse the model already in the run folder), evaluate it, then quantize it under uniform
//! plans (post-training, and W2A4 with LSQ fine-tuning), export each packed model and print
//! what each plan costs and keeps.

use std::path::PathBuf;

use mpq::QuantPlan;
use mpq::graph::NoHooks;
use mpq::model::{Model, ModelHint};
use mpq::pipeline::{QuantizeConfig, QuantizeSummary, quantize};
use mpq::plan::QuantizerKind;
use mpq::quant::CalibrationConfig;
use mpq::train::TrainConfig;

use crate::args::{GlobalArgs, OptimizerArg, QuickstartArgs, ScheduleArg, TrainArgs};
use crate::output::{self, Bars, Table, thousands};

pub(crate) fn run(g: &GlobalArgs, a: &QuickstartArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.out).map_err(|e| mpq::Error::io(&a.out, e))?;
    let model_path: PathBuf = a.out.join("model.safetensors");
    let started = std::time::Instant::now();
    let (model, trained) = if model_path.exists() {
        output::status(g.quiet, &format!("[1/3] reusing {}", model_path.display()));
        (
            Model::load(&model_path, &ModelHint::default(), &super::device())?,
            false,
        )
    } else {
        output::status(g.quiet, "[1/3] training LeNet-5 on mnist10k");
        let targs = TrainArgs {
            arch: "lenet5".into(),
            data: "mnist10k".into(),
            epochs: if a.fast { 2 } else { 8 },
            lr: 0.05,
            batch_size: 64,
            weight_decay: 5e-4,
            momentum: 0.9,
            nesterov: false,
            optimizer: OptimizerArg::Sgd,
            schedule: ScheduleArg::Cosine,
            step_every: 30,
            step_gamma: 0.1,
            label_smoothing: 0.0,
            no_augment: false,
            width: None,
            holdout: 0,
            out: model_path.clone(),
        };
        (super::train::train_and_save(g, &targs)?.0, true)
    };
    output::status(g.quiet, "[2/3] evaluating on the 2,000-image test split");
    let splits = super::load_data("mnist10k", g.seed)?;
    let norm = model.normalization_or(&splits.normalization);
    let stats = mpq::train::evaluate(&model.graph, &splits.test, &norm, 256, &mut NoHooks)?;
    let layers = model.graph.layer_infos()?;

    output::status(
        g.quiet,
        "[3/3] quantizing: W8A8, W4A8, W4A4 post-training; W2A4 with LSQ fine-tuning",
    );
    let qat_epochs = if a.fast { 1 } else { 3 };
    let mut results: Vec<(String, QuantizeSummary)> = Vec::new();
    for (name, w, act, finetune) in [
        ("w8a8", 8, 8, false),
        ("w4a8", 4, 8, false),
        ("w4a4", 4, 4, false),
        ("w2a4-lsq", 2, 4, true),
    ] {
        let mut plan = QuantPlan::uniform(&layers, w, act);
        if finetune {
            for l in &mut plan.layers {
                l.quantizer = QuantizerKind::Lsq;
            }
        }
        let cfg = QuantizeConfig {
            calibration: CalibrationConfig::default(),
            finetune: finetune.then(|| TrainConfig {
                epochs: qat_epochs,
                lr: 0.01,
                seed: g.seed,
                ..TrainConfig::default()
            }),
            eval_batch_size: 256,
        };
        let mut bars = Bars::new(g.quiet);
        let s = quantize(&model, &plan, &splits, &cfg, &a.out.join(name), &mut bars)?;
        drop(bars);
        if !s.roundtrip_bit_identical {
            anyhow::bail!("internal error: the {name} export does not reproduce the simulation");
        }
        results.push((name.to_string(), s));
    }

    let summary = serde_json::json!({
        "model": model_path.display().to_string(),
        "trained": trained,
        "accuracy": stats.accuracy,
        "loss": stats.loss,
        "samples": stats.samples,
        "params": model.num_params(),
        "macs": layers.iter().map(|l| l.macs).sum::<u64>(),
        "quantized": results
            .iter()
            .map(|(n, s)| serde_json::json!({
                "plan": n,
                "size_bytes": s.size_bytes,
                "avg_w_bits": s.avg_w_bits,
                "bops": s.bops,
                "ptq_accuracy": s.before_finetune.accuracy,
                "accuracy": s.after_finetune.accuracy,
                "finetune_epochs": s.finetune_epochs,
                "file_bytes": s.export.file_bytes,
                "folder": a.out.join(n).display().to_string(),
            }))
            .collect::<Vec<_>>(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    mpq::io_write_json(&a.out.join("summary.json"), &summary)?;
    if g.json {
        return output::json(&summary);
    }
    let mut t = Table::new(&["layer", "op", "params", "MACs"]);
    for l in &layers {
        t.row(vec![
            l.name.clone(),
            serde_json::to_value(l.op)?
                .as_str()
                .unwrap_or("?")
                .to_string(),
            thousands(l.params as u64),
            thousands(l.macs),
        ]);
    }
    t.print()?;
    output::line(&format!(
        "\nLeNet-5 FP32 on mnist10k: accuracy {:.2}%, loss {:.4} over {} test images.\n",
        100.0 * stats.accuracy,
        stats.loss,
        stats.samples,
    ))?;
    let mut q = Table::new(&[
        "plan",
        "weight bytes",
        "avg bits",
        "BOPs",
        "PTQ acc",
        "fine-tuned acc",
        "file bytes",
    ]);
    let fp_bytes = results.first().map_or(0, |(_, s)| s.fp32_size_bytes);
    q.row(vec![
        "fp32".into(),
        thousands(fp_bytes),
        "32".into(),
        format!(
            "{:.3e}",
            1024.0 * layers.iter().map(|l| l.macs as f64).sum::<f64>()
        ),
        format!("{:.2}%", 100.0 * stats.accuracy),
        "-".into(),
        "-".into(),
    ]);
    for (n, s) in &results {
        q.row(vec![
            n.clone(),
            thousands(s.size_bytes),
            format!("{:.2}", s.avg_w_bits),
            format!("{:.3e}", s.bops),
            format!("{:.2}%", 100.0 * s.before_finetune.accuracy),
            if s.finetune_epochs > 0 {
                format!(
                    "{:.2}% ({} ep)",
                    100.0 * s.after_finetune.accuracy,
                    s.finetune_epochs
                )
            } else {
                "-".into()
            },
            thousands(s.export.file_bytes),
        ]);
    }
    q.print()?;
    output::line(&format!(
        "\n{:.1}s. Run folder: {} (each plan's packed model, plan.json and summary.json in its own folder)",
        started.elapsed().as_secs_f64(),
        a.out.display()
    ))
}
