//! `mpq quickstart`: the pipeline on the bundled MNIST subset. For now: train LeNet-5 (or
//! reuse the model already in the run folder), evaluate it, print a summary.

use std::path::PathBuf;

use mpq::data::{self, LoadOptions};
use mpq::graph::NoHooks;
use mpq::model::{Model, ModelHint};

use crate::args::{GlobalArgs, OptimizerArg, QuickstartArgs, ScheduleArg, TrainArgs};
use crate::output::{self, Table, thousands};

pub(crate) fn run(g: &GlobalArgs, a: &QuickstartArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.out).map_err(|e| mpq::Error::io(&a.out, e))?;
    let model_path: PathBuf = a.out.join("model.safetensors");
    let started = std::time::Instant::now();
    let (model, trained) = if model_path.exists() {
        output::status(g.quiet, &format!("[1/2] reusing {}", model_path.display()));
        (
            Model::load(&model_path, &ModelHint::default(), &super::device())?,
            false,
        )
    } else {
        output::status(g.quiet, "[1/2] training LeNet-5 on mnist10k");
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
            out: model_path.clone(),
        };
        (super::train::train_and_save(g, &targs)?.0, true)
    };
    output::status(g.quiet, "[2/2] evaluating on the 2,000-image test split");
    let splits = data::load(
        "mnist10k",
        &LoadOptions {
            seed: g.seed,
            ..Default::default()
        },
    )?;
    let norm = model.normalization_or(&splits.normalization);
    let stats = mpq::train::evaluate(&model.graph, &splits.test, &norm, 256, &mut NoHooks)?;
    let layers = model.graph.layer_infos()?;
    let summary = serde_json::json!({
        "model": model_path.display().to_string(),
        "trained": trained,
        "accuracy": stats.accuracy,
        "loss": stats.loss,
        "samples": stats.samples,
        "params": model.num_params(),
        "macs": layers.iter().map(|l| l.macs).sum::<u64>(),
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
        "\nLeNet-5 FP32 on mnist10k: accuracy {:.2}%, loss {:.4} over {} test images ({:.1}s). Run folder: {}",
        100.0 * stats.accuracy,
        stats.loss,
        stats.samples,
        started.elapsed().as_secs_f64(),
        a.out.display()
    ))
}
