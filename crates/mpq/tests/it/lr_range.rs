//! QAT's default learning rate (docs/quantization.md, "The fine-tuning learning rate"): the
//! range test leaves the model as it found it, repeats itself from its seed, and picks a rate
//! at which fine-tuning lowers the loss; a recorded training rate caps the pick at a fifth.

use mpq::QuantPlan;
use mpq::data::{self, DataSplits};
use mpq::graph::Graph;
use mpq::model::Model;
use mpq::pipeline::DefaultLr;
use mpq::progress::NoProgress;
use mpq::quant::{CalibrationConfig, PlanHooks, prepare_graph};
use mpq::run::LrSource;
use mpq::train::{self, LrRangeConfig, TrainConfig};
use mpq::zoo::{self, ZooConfig};

use crate::util::to_f64;

fn splits() -> DataSplits {
    data::load("synthetic:1x8x8:3:256", &Default::default()).unwrap()
}

/// The zoo MLP, quantized W4A8 under its calibrated hooks.
fn quantized(splits: &DataSplits) -> (Model, Graph, PlanHooks) {
    let model = zoo::build("mlp", &ZooConfig::new([1, 8, 8], 3), 0).unwrap();
    let plan = QuantPlan::uniform(&model.graph.layer_infos().unwrap(), 4, 8);
    let graph = prepare_graph(&model.graph, &plan).unwrap();
    let cal = CalibrationConfig::default();
    let norm = &splits.normalization;
    let hooks = PlanHooks::calibrate(&graph, &plan, &splits.train, norm, &cal).unwrap();
    (model, graph, hooks)
}

fn config() -> LrRangeConfig {
    LrRangeConfig {
        batch_size: 16,
        seed: 3,
        ..LrRangeConfig::default()
    }
}

fn weights(g: &Graph) -> Vec<Vec<u64>> {
    (g.params().iter())
        .map(|p| {
            to_f64(p.var.as_tensor())
                .iter()
                .map(|x| x.to_bits())
                .collect()
        })
        .collect()
}

#[test]
fn the_range_test_restores_the_model_and_repeats_itself_from_its_seed() {
    let s = splits();
    let (_, graph, mut hooks) = quantized(&s);
    let before = weights(&graph);
    let a =
        train::lr_range_test(&graph, &s.train, &s.normalization, &config(), &mut hooks).unwrap();
    assert_eq!(weights(&graph), before, "the range test changed the model");
    let b =
        train::lr_range_test(&graph, &s.train, &s.normalization, &config(), &mut hooks).unwrap();
    assert_eq!(a, b, "same seed, same model: a different test");
    assert_eq!(a.lr, a.stable_lr / config().safety);
    // Every level up to the stable one kept its loss within the tolerance of the lowest
    // before it; the level after it did not (or the grid ran out).
    let tol = config().tolerance;
    let mut best = f64::INFINITY;
    for l in &a.levels {
        let stable = l.loss.is_finite() && l.loss <= best + tol;
        assert_eq!(stable, l.lr <= a.stable_lr, "{a:?}");
        best = best.min(l.loss);
    }
    assert!(a.steps <= config().grid().len() * config().steps_per_level);
}

#[test]
fn fine_tuning_at_the_range_tests_rate_lowers_the_loss() {
    let s = splits();
    let (_, graph, mut hooks) = quantized(&s);
    let norm = &s.normalization;
    let r = train::lr_range_test(&graph, &s.train, norm, &config(), &mut hooks).unwrap();
    let loss = |g: &Graph, h: &mut PlanHooks| train::evaluate(g, &s.train, norm, 64, h).unwrap();
    let before = loss(&graph, &mut hooks).loss;
    let tc = TrainConfig {
        epochs: 2,
        batch_size: 16,
        lr: r.lr,
        augment: false,
        ..TrainConfig::default()
    };
    train::train_with(
        &graph,
        &s.train,
        None,
        norm,
        &tc,
        &mut hooks,
        &mut NoProgress,
    )
    .unwrap();
    let after = loss(&graph, &mut hooks).loss;
    assert!(
        after.is_finite() && after < before,
        "at lr {} the loss went from {before} to {after}",
        r.lr
    );
}

#[test]
fn a_recorded_training_rate_caps_the_default_at_a_fifth() {
    let s = splits();
    let (mut model, graph, mut hooks) = quantized(&s);
    let tc = TrainConfig {
        batch_size: 16,
        seed: 3,
        ..TrainConfig::default()
    };
    let norm = &s.normalization;

    // No recorded recipe (an import): the range test's rate.
    let rule = DefaultLr::for_model(&model);
    assert_eq!(rule.training_lr, None);
    let (lr, source, r) = rule.pick(&graph, &s.train, norm, &tc, &mut hooks).unwrap();
    assert_eq!((lr, source), (r.lr, LrSource::RangeTest));

    // Trained at a rate whose fifth is below anything the range test can return
    // (lr_min / safety): the fifth.
    model.meta.training = Some(serde_json::json!({ "config": { "lr": 2.5e-5 } }));
    let rule = DefaultLr::for_model(&model);
    assert_eq!(rule.training_lr, Some(2.5e-5));
    assert_eq!(rule.training_fraction, 0.2);
    let (lr, source, _) = rule.pick(&graph, &s.train, norm, &tc, &mut hooks).unwrap();
    assert_eq!(source, LrSource::TrainingRecipe);
    assert!((lr - 5e-6).abs() < 1e-18, "lr {lr}");

    // Trained at a high rate: the range test's, which is smaller.
    model.meta.training = Some(serde_json::json!({ "config": { "lr": 100.0 } }));
    let (lr, source, r) = (DefaultLr::for_model(&model))
        .pick(&graph, &s.train, norm, &tc, &mut hooks)
        .unwrap();
    assert_eq!((lr, source), (r.lr, LrSource::RangeTest));
}
