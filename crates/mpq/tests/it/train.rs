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

/// The gradients of a parameter store (and extra variables) as f64 vectors, by name.
fn grads_of(
    g: &mpq::graph::Graph,
    extra: &[candle::Var],
    grads: &candle::backprop::GradStore,
) -> Vec<(String, Option<Vec<f64>>)> {
    let mut out: Vec<(String, Option<Vec<f64>>)> = g
        .params()
        .iter()
        .map(|p| (p.name.clone(), grads.get(p.var.as_tensor()).map(to_f64)))
        .collect();
    for (i, v) in extra.iter().enumerate() {
        out.push((
            format!("hook var {i}"),
            grads.get(v.as_tensor()).map(to_f64),
        ));
    }
    out
}

fn assert_same_grads(a: &[(String, Option<Vec<f64>>)], b: &[(String, Option<Vec<f64>>)]) {
    assert_eq!(a.len(), b.len());
    for ((name, ga), (_, gb)) in a.iter().zip(b) {
        match (ga, gb) {
            (Some(ga), Some(gb)) => {
                let num: f64 = ga.iter().zip(gb).map(|(x, y)| (x - y) * (x - y)).sum();
                let den: f64 = gb.iter().map(|y| y * y).sum();
                assert!(
                    num.sqrt() <= 1e-5 * den.sqrt() + 1e-7,
                    "{name}: relative difference {}",
                    (num / den.max(1e-30)).sqrt()
                );
            }
            (None, None) => {}
            _ => panic!(
                "{name}: a gradient in one path only ({:?} vs {:?})",
                ga.is_some(),
                gb.is_some()
            ),
        }
    }
}

#[test]
fn forward_backward_matches_candle_autograd_with_every_node_kind() {
    use candle::{Device, Tensor};
    use mpq::graph::{Conv2dSpec, ForwardOptions, GraphBuilder, Mode, PoolSpec};
    let build = || {
        let mut b = GraphBuilder::new(&[3, 12, 12], &Device::Cpu, 9);
        let x = b
            .conv2d("c1", b.input(), Conv2dSpec::new(3, 8, 3, 1, 1, true))
            .unwrap();
        let x = b.batch_norm("bn1", x).unwrap();
        let x = b.relu(x).unwrap();
        let y = b
            .conv2d("c2", x, Conv2dSpec::new(8, 8, 3, 1, 1, false))
            .unwrap();
        let y = b.batch_norm("bn2", y).unwrap();
        let x = b.add(x, y).unwrap();
        let x = b.relu(x).unwrap();
        let x = b
            .conv2d("c3", x, Conv2dSpec::new(8, 6, 3, 2, 1, true))
            .unwrap();
        let x = b.relu6(x).unwrap();
        let x = b.max_pool(x, PoolSpec::new(2, 2, 0)).unwrap();
        let x = b
            .conv2d("c4", x, Conv2dSpec::new(6, 6, 1, 1, 0, false))
            .unwrap();
        let x = b.avg_pool(x, PoolSpec::new(3, 1, 1)).unwrap();
        let x = b.dropout(x, 0.3).unwrap();
        let g = b.global_avg_pool(x).unwrap();
        let g = b.flatten(g).unwrap();
        let g = b.linear("fc1", g, 7, true).unwrap();
        let g = b.relu(g).unwrap();
        let g = b.dropout(g, 0.2).unwrap();
        let g = b.linear("fc2", g, 4, true).unwrap();
        b.finish(g).unwrap()
    };
    let x = crate::util::tensor(
        &crate::util::uniform(6 * 3 * 144, -1.0, 1.0, 3),
        &[6, 3, 12, 12],
    );
    let y = Tensor::from_vec(vec![0u32, 3, 1, 2, 3, 1], 6, &Device::Cpu).unwrap();
    let loss = |l: &Tensor| -> mpq::Result<Tensor> { train::cross_entropy(l, &y, 0.1) };
    let bad = Tensor::zeros((2, 3, 11, 12), candle::DType::F32, &Device::Cpu).unwrap();
    let mut hooks = NoHooks;
    let err = build()
        .forward_backward(
            &bad,
            &mut ForwardOptions::new(Mode::Train, &mut hooks),
            &loss,
        )
        .expect_err("a wrong input shape is an error");
    assert!(matches!(err, mpq::Error::ShapeMismatch { .. }), "{err}");
    for mode in [Mode::Train, Mode::Eval] {
        let (fast, slow) = (build(), build());
        let run = |g: &mpq::graph::Graph, reference: bool| {
            let mut hooks = NoHooks;
            let mut opts = ForwardOptions::new(mode, &mut hooks);
            opts.dropout_seed = 77;
            let (logits, l, grads) = if reference {
                g.forward_backward_autograd(&x, &mut opts, &loss).unwrap()
            } else {
                g.forward_backward(&x, &mut opts, &loss).unwrap()
            };
            (
                to_f64(&logits),
                l.to_scalar::<f32>().unwrap(),
                grads_of(g, &[], &grads),
            )
        };
        let (la, va, ga) = run(&fast, false);
        let (lb, vb, gb) = run(&slow, true);
        assert!(
            la.iter().zip(&lb).all(|(a, b)| (a - b).abs() < 1e-5),
            "{mode:?} logits"
        );
        assert!((va - vb).abs() < 1e-5, "{mode:?} loss {va} vs {vb}");
        assert!(
            ga.iter().filter(|g| g.1.is_some()).count() >= 12,
            "{mode:?}: too few gradients"
        );
        assert_same_grads(&ga, &gb);
        // Running statistics were updated alike (train mode) or not at all (eval).
        for p in ["bn1.running_mean", "bn2.running_var"] {
            let a = to_f64(fast.params().var(p).unwrap().as_tensor());
            let b = to_f64(slow.params().var(p).unwrap().as_tensor());
            assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-6), "{p}");
        }
    }
}

#[test]
fn forward_backward_matches_candle_autograd_under_lsq_hooks() {
    use mpq::QuantPlan;
    use mpq::graph::{ForwardOptions, Hooks, Mode};
    use mpq::plan::QuantizerKind;
    use mpq::quant::{CalibrationConfig, PlanHooks};
    let splits = data::load(DATA, &LoadOptions::default()).unwrap();
    let norm = &splits.normalization;
    let x = data::to_tensor(
        &splits.train,
        &[0, 1, 2, 3, 4, 5, 6, 7],
        norm,
        &candle::Device::Cpu,
    )
    .unwrap();
    let y = candle::Tensor::from_vec(splits.train.labels()[..8].to_vec(), 8, &candle::Device::Cpu)
        .unwrap();
    let loss =
        |l: &candle::Tensor| -> mpq::Result<candle::Tensor> { train::cross_entropy(l, &y, 0.0) };
    let run = |reference: bool| {
        let model = zoo::build("resnet8", &ZooConfig::new([1, 8, 8], 3), 4).unwrap();
        let mut plan = QuantPlan::uniform(&model.graph.layer_infos().unwrap(), 4, 4);
        for l in plan.layers.iter_mut().skip(1) {
            l.quantizer = QuantizerKind::Lsq;
        }
        let mut hooks = PlanHooks::calibrate(
            &model.graph,
            &plan,
            &splits.train,
            norm,
            &CalibrationConfig::default(),
        )
        .unwrap();
        let extra = hooks.trainable();
        let mut opts = ForwardOptions::new(Mode::Train, &mut hooks);
        let (_, l, grads) = if reference {
            model
                .graph
                .forward_backward_autograd(&x, &mut opts, &loss)
                .unwrap()
        } else {
            model.graph.forward_backward(&x, &mut opts, &loss).unwrap()
        };
        assert!(!extra.is_empty());
        (
            l.to_scalar::<f32>().unwrap(),
            grads_of(&model.graph, &extra, &grads),
        )
    };
    let (va, ga) = run(false);
    let (vb, gb) = run(true);
    assert!((va - vb).abs() < 1e-5, "loss {va} vs {vb}");
    assert!(
        ga.iter()
            .filter(|g| g.0.starts_with("hook") && g.1.is_some())
            .count()
            > 4
    );
    assert_same_grads(&ga, &gb);
}
