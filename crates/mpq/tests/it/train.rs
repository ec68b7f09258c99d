//! Training: a few SGD steps lower the loss, and a run is reproducible from its seed.

use mpq::data::{self, LoadOptions};
use mpq::graph::NoHooks;
use mpq::model::Model;
use mpq::progress::NoProgress;
use mpq::train::{self, TrainConfig};
use mpq::zoo::{self, ZooConfig};

use crate::util::to_f64;

const DATA: &str = "synthetic:1x8x8:3:96";

fn config(seed: u64) -> TrainConfig {
    TrainConfig {
        epochs: 3,
        batch_size: 16,
        lr: 0.05,
        augment: false,
        seed,
        ..TrainConfig::default()
    }
}

fn trained(seed: u64) -> (Model, train::TrainReport, f64, f64) {
    let splits = data::load(DATA, &LoadOptions::default()).unwrap();
    let model = zoo::build("mlp", &ZooConfig::new([1, 8, 8], 3), 0).unwrap();
    let norm = &splits.normalization;
    let before = train::evaluate(&model.graph, &splits.train, norm, 64, &mut NoHooks).unwrap();
    let report = train::train(
        &model.graph,
        &splits.train,
        Some(&splits.test),
        norm,
        &config(seed),
        &mut NoProgress,
    )
    .unwrap();
    let after = train::evaluate(&model.graph, &splits.train, norm, 64, &mut NoHooks).unwrap();
    (model, report, before.loss, after.loss)
}

#[test]
fn a_few_sgd_steps_on_synthetic_data_lower_the_loss() {
    let (_, report, before, after) = trained(0);
    assert_eq!(report.epochs.len(), 3);
    assert!(after < before, "loss went from {before} to {after}");
    let first = report.epochs[0].train_loss;
    let last = report.epochs[2].train_loss;
    assert!(last < first, "epoch losses {first} → {last}");
    assert!(report.epochs.iter().all(|e| e.test.is_some()));
}

#[test]
fn training_twice_with_the_same_seed_gives_bit_identical_weights() {
    let (a, ra, ..) = trained(5);
    let (b, rb, ..) = trained(5);
    for (p, q) in a.graph.params().iter().zip(b.graph.params().iter()) {
        let (x, y) = (to_f64(p.var.as_tensor()), to_f64(q.var.as_tensor()));
        let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&x), bits(&y), "{}", p.name);
    }
    let losses = |r: &train::TrainReport| r.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>();
    assert_eq!(losses(&ra), losses(&rb));
}

#[test]
fn training_with_another_seed_gives_other_weights() {
    let (a, ..) = trained(5);
    let (b, ..) = trained(6);
    let fc1 = |m: &Model| to_f64(m.graph.params().var("fc1.weight").unwrap());
    assert_ne!(fc1(&a), fc1(&b));
}

/// Quantization-aware training under a 2-bit plan lowers the quantized model's training loss
/// below what post-training quantization of the same weights gives.
#[test]
fn qat_lowers_the_quantized_loss() {
    use mpq::QuantPlan;
    use mpq::quant::{CalibrationConfig, PlanHooks};
    let (model, _, _, _) = trained(0);
    let splits = data::load(DATA, &LoadOptions::default()).unwrap();
    let norm = &splits.normalization;
    let plan = QuantPlan::uniform(&model.graph.layer_infos().unwrap(), 2, 2);
    let mut hooks = PlanHooks::calibrate(
        &model.graph,
        &plan,
        &splits.train,
        norm,
        &CalibrationConfig::default(),
    )
    .unwrap();
    let ptq = train::evaluate(&model.graph, &splits.train, norm, 64, &mut hooks).unwrap();
    let cfg = TrainConfig {
        lr: 0.02,
        ..config(0)
    };
    train::train_with(
        &model.graph,
        &splits.train,
        None,
        norm,
        &cfg,
        &mut hooks,
        &mut NoProgress,
    )
    .unwrap();
    let qat = train::evaluate(&model.graph, &splits.train, norm, 64, &mut hooks).unwrap();
    assert!(qat.loss < ptq.loss, "QAT {qat:?} vs PTQ {ptq:?}");
}
