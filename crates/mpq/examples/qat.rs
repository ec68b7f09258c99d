//! Post-training quantization versus quantization-aware training (STE fake quantization) of a
//! saved model under a uniform plan, on a data set's test split.
//!
//! `cargo run --release -p mpq --example qat -- MODEL.safetensors DATA W_BITS A_BITS EPOCHS`
//! (for example `lenet5.safetensors mnist10k 2 4 3`). Prints FP32, PTQ and QAT accuracy.

use std::path::Path;

use mpq::QuantPlan;
use mpq::data::{self, LoadOptions};
use mpq::graph::NoHooks;
use mpq::model::{Model, ModelHint};
use mpq::progress::NoProgress;
use mpq::quant::{CalibrationConfig, PlanHooks};
use mpq::train::{TrainConfig, evaluate, train_with};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, data, w, a, epochs] = args.as_slice() else {
        return Err("usage: qat MODEL DATA W_BITS A_BITS EPOCHS".into());
    };
    let model = Model::load(
        Path::new(model),
        &ModelHint::default(),
        &candle::Device::Cpu,
    )?;
    let splits = data::load(data, &LoadOptions::default())?;
    let norm = model.normalization_or(&splits.normalization);
    let plan = QuantPlan::uniform(&model.graph.layer_infos()?, w.parse()?, a.parse()?);
    let fp = evaluate(&model.graph, &splits.test, &norm, 256, &mut NoHooks)?;
    let cfg = CalibrationConfig::default();
    let mut hooks = PlanHooks::calibrate(&model.graph, &plan, &splits.train, &norm, &cfg)?;
    let ptq = evaluate(&model.graph, &splits.test, &norm, 256, &mut hooks)?;
    let train = TrainConfig {
        epochs: epochs.parse()?,
        lr: 0.01,
        ..TrainConfig::default()
    };
    let report = train_with(
        &model.graph,
        &splits.train,
        Some(&splits.test),
        &norm,
        &train,
        &mut hooks,
        &mut NoProgress,
    )?;
    let qat = report
        .epochs
        .last()
        .and_then(|e| e.test)
        .ok_or("no epochs")?;
    let out = serde_json::json!({
        "plan": format!("W{w}A{a}"),
        "fp32_accuracy": fp.accuracy,
        "ptq_accuracy": ptq.accuracy,
        "qat_accuracy": qat.accuracy,
        "qat_epochs": report.epochs.len(),
        "qat_seconds": report.seconds,
    });
    std::io::Write::write_all(&mut std::io::stdout(), format!("{out}\n").as_bytes())?;
    Ok(())
}
