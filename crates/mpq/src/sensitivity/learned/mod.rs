//! LIMPQ: learned layer-wise importance indicators (Tang et al., "Mixed-Precision Neural
//! Network Quantization via Learned Layer-wise Importance", ECCV 2022; docs/algorithms.md §5.2–§5.5). One
//! joint training run learns, for every searched layer, an LSQ step per candidate bit-width
//! for its weights and its input activation; those steps are the indicators the one-shot ILP
//! of [`crate::search::limpq`] minimises.
//!
//! The first and the last quantizable layer are not searched (the paper fixes them at 8 bits
//! and leaves them unquantized during indicator training). The model's weights are restored
//! after training: only the indicators are kept.

mod hooks;
mod joint;
mod switchable_bn;

use std::collections::BTreeMap;
use std::time::Instant;

pub use super::indicators::{
    BANNED_INDICATOR, LayerIndicators, LimpqConfig, LimpqReport, non_monotone,
};
pub use hooks::{IndicatorHooks, STEP_RANGE};
pub use joint::{JointTrainer, StepConfig, StepStats};
pub use switchable_bn::SwitchableBn;

use super::table::{LayerSensitivity, SensitivityTable};
use super::{Estimator, Metric};
use crate::data::{self, Dataset, LoaderConfig, Normalization};
use crate::graph::Graph;
use crate::plan::BitWidth;
use crate::progress::Progress;
use crate::{Error, Result};

/// The searched layers of `graph`: every quantizable layer but the first and the last.
pub fn searched_layers(graph: &Graph) -> Result<(Vec<String>, Vec<String>)> {
    let q: Vec<String> = graph
        .quantizable_layers()
        .into_iter()
        .map(String::from)
        .collect();
    if q.len() < 3 {
        return Err(Error::config(
            "model",
            format!(
                "LIMPQ searches the layers between the first and the last; this model has {} \
                 quantizable layers",
                q.len()
            ),
        ));
    }
    let fixed = vec![q[0].clone(), q[q.len() - 1].clone()];
    Ok((q[1..q.len() - 1].to_vec(), fixed))
}

/// Trains the indicators of `graph` on `train` (docs/algorithms.md §5.4) and returns them as a sensitivity
/// table (metric `limpq`, one row per quantizable layer, `limpq` set on the searched ones).
/// The graph's weights are restored afterwards.
pub fn train_indicators(
    graph: &Graph,
    train: &Dataset,
    norm: &Normalization,
    cfg: &LimpqConfig,
    progress: &mut dyn Progress,
) -> Result<SensitivityTable> {
    cfg.validate()?;
    if train.is_empty() {
        return Err(Error::config("data", "the training set is empty"));
    }
    let start = Instant::now();
    let (searched, fixed) = searched_layers(graph)?;
    let weights = searched
        .iter()
        .map(|n| {
            Ok((
                n.clone(),
                graph
                    .params()
                    .var(&format!("{n}.weight"))?
                    .as_tensor()
                    .clone(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let hooks = IndicatorHooks::new(&weights, &cfg.bits)?;
    let snapshot = graph.params().snapshot()?;
    let result = run(graph, train, norm, cfg, hooks, progress);
    graph.params().restore(&snapshot)?;
    let (hooks, mut report) = result?;
    report.searched = searched.clone();
    report.fixed = fixed;

    let infos = graph.layer_infos()?;
    let mut rows = Vec::new();
    let (mut series, mut monotone) = (0usize, 0usize);
    for info in &infos {
        let mut row = LayerSensitivity::new(info);
        if searched.contains(&info.name) {
            let (w, a) = hooks.values(&info.name)?;
            for (kind, v) in [("weight", &w), ("activation", &a)] {
                if let Some((b, x)) = cfg.bits.iter().zip(v.iter()).find(|(_, x)| !x.is_finite()) {
                    return Err(Error::NonFinite(format!(
                        "LIMPQ indicators: the learned {kind} step of layer {} at {b} bits is \
                         {x} after training (try a smaller --lr)",
                        info.name
                    )));
                }
            }
            let map = |v: &[f64]| -> BTreeMap<BitWidth, f64> {
                cfg.bits.iter().copied().zip(v.iter().copied()).collect()
            };
            let ind = LayerIndicators::new(map(&w), map(&a));
            series += 2;
            monotone += usize::from(ind.banned_w_bits.is_empty())
                + usize::from(ind.banned_a_bits.is_empty());
            report
                .bans
                .extend(ind.bans.iter().map(|b| format!("{}: {b}", info.name)));
            row.limpq = Some(ind);
        }
        rows.push(row);
    }
    report.monotone_fraction = monotone as f64 / series.max(1) as f64;
    Ok(SensitivityTable {
        model: String::new(),
        metric: Metric::Limpq,
        estimator: Estimator::default(),
        seed: cfg.seed,
        batches: report.steps,
        batch_size: cfg.batch_size,
        hvp_count: 0,
        seconds: start.elapsed().as_secs_f64(),
        layers: rows,
        data: None,
        split: Some("train".into()),
        samples: report.samples,
        loss: report.epoch_losses.last().copied().unwrap_or(f64::NAN),
        trace_scheme: Default::default(),
        trace_rel_step: 0.0,
        scheme: Default::default(),
        precision: Default::default(),
        rel_step: 0.0,
        tol: 0.0,
        max_iter: 0,
        min_probes: 0,
        probes: None,
        act_probes: None,
        model_trace: None,
        model_top_eigenvalues: None,
        density: None,
        limpq: Some(report),
    })
}

fn run(
    graph: &Graph,
    train: &Dataset,
    norm: &Normalization,
    cfg: &LimpqConfig,
    hooks: IndicatorHooks,
    progress: &mut dyn Progress,
) -> Result<(IndicatorHooks, LimpqReport)> {
    let step_cfg = StepConfig {
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
        label_smoothing: cfg.label_smoothing,
        grad_clip: cfg.grad_clip,
        mixed_pass: cfg.mixed_pass,
    };
    let mut trainer = JointTrainer::new(graph, hooks, &step_cfg)?;
    let n = ((train.len() as f64 * cfg.data_fraction).round() as usize).clamp(1, train.len());
    let subset = if n == train.len() {
        train.clone()
    } else {
        let (_, kept) = train.split_holdout(n, data::derive_seed(cfg.seed, &[0x4c49_4d50]));
        kept
    };
    let loader = LoaderConfig {
        batch_size: cfg.batch_size,
        shuffle: true,
        augment: true,
        drop_last: false,
        seed: cfg.seed,
    };
    let per_epoch = data::num_batches(subset.len(), &loader);
    let total = per_epoch * cfg.epochs;
    let mut report = LimpqReport {
        config: cfg.clone(),
        searched: Vec::new(),
        fixed: Vec::new(),
        switchable_bn: trainer
            .batch_norms()
            .names()
            .into_iter()
            .map(String::from)
            .collect(),
        steps: 0,
        passes: 0,
        samples: subset.len(),
        epoch_losses: Vec::new(),
        monotone_fraction: 0.0,
        bans: Vec::new(),
    };
    for epoch in 0..cfg.epochs {
        progress.start(
            &format!("limpq epoch {}/{}", epoch + 1, cfg.epochs),
            per_epoch as u64,
        );
        let (mut loss_sum, mut count) = (0.0, 0usize);
        for (i, batch) in data::batches(&subset, norm, &loader, epoch, graph.device()).enumerate() {
            let batch = batch?;
            let lr = cfg.lr_at(report.steps, total);
            // The paper reseeds every generator with `epoch·len(loader) + batch_idx + 1`.
            let step_seed = (epoch * per_epoch + i + 1) as u64;
            let seed = data::derive_seed(cfg.seed, &[0x4c49_4d51, step_seed]);
            let s = trainer.step(graph, &batch.x, &batch.y, lr, seed)?;
            report.steps += 1;
            report.passes += s.passes.len();
            loss_sum += s.losses.iter().sum::<f64>();
            count += s.losses.len();
            progress.inc(1);
            progress.message(&format!("loss {:.4}", loss_sum / count.max(1) as f64));
        }
        progress.finish();
        report.epoch_losses.push(loss_sum / count.max(1) as f64);
    }
    Ok((trainer.into_hooks(), report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{LoadOptions, to_batch};
    use crate::graph::{ForwardOptions, Mode};
    use crate::progress::NoProgress;
    use crate::zoo::{self, ZooConfig};

    fn resnet8() -> Graph {
        zoo::build("resnet8", &ZooConfig::new([3, 8, 8], 4), 3)
            .unwrap()
            .graph
    }

    fn data() -> crate::data::DataSplits {
        crate::data::load("synthetic:3x8x8:4:64", &LoadOptions::default()).unwrap()
    }

    /// The searched layers' names and weights.
    fn searched_weights(graph: &Graph) -> Vec<(String, candle::Tensor)> {
        let (searched, _) = searched_layers(graph).unwrap();
        searched
            .iter()
            .map(|n| {
                let v = graph.params().var(&format!("{n}.weight")).unwrap();
                (n.clone(), v.as_tensor().clone())
            })
            .collect()
    }

    fn trainer(graph: &Graph, bits: &[BitWidth]) -> JointTrainer {
        let w = searched_weights(graph);
        let hooks = IndicatorHooks::new(&w, bits).unwrap();
        let cfg = StepConfig {
            momentum: 0.9,
            weight_decay: 2.5e-5,
            label_smoothing: 0.1,
            grad_clip: 1.0,
            mixed_pass: true,
        };
        JointTrainer::new(graph, hooks, &cfg).unwrap()
    }

    #[test]
    fn joint_step_runs_one_pass_per_bit_plus_a_mixed_one_and_updates_every_indicator() {
        let graph = resnet8();
        let splits = data();
        let idx: Vec<usize> = (0..16).collect();
        let b = to_batch(&splits.train, &idx, &splits.normalization, graph.device()).unwrap();
        let bits = [4, 3, 2];
        let mut t = trainer(&graph, &bits);
        let layers = t.hooks().layers().to_vec();
        assert!(!layers.contains(&"conv1".to_string()) && !layers.contains(&"fc".to_string()));
        let before: Vec<_> = layers
            .iter()
            .map(|n| t.hooks().values(n).unwrap())
            .collect();
        let s = t.step(&graph, &b.x, &b.y, 0.01, 7).unwrap();
        assert_eq!(s.passes.len(), bits.len() + 1);
        for (p, &bit) in s.passes.iter().zip(&bits) {
            assert!(p.iter().all(|&x| x == bit), "uniform pass {p:?}");
        }
        for n in &layers {
            // The instrumented hook: each searched weight was quantized once per pass.
            assert_eq!(t.hooks().weight_calls(n), bits.len() as u64 + 1, "{n}");
        }
        for (n, (w0, _)) in layers.iter().zip(&before) {
            let (w1, a1) = t.hooks().values(n).unwrap();
            for k in 0..bits.len() {
                assert_ne!(
                    w0[k], w1[k],
                    "{n}: weight step of {} bits not updated",
                    bits[k]
                );
                // Activation steps start at their first forward (inside the step) and then
                // move: compare with the initial value the hook computed.
                assert!(a1[k] > 0.0, "{n}: activation step {} never set", bits[k]);
            }
        }
        // A second step moves the activation steps too.
        let a_before: Vec<_> = layers
            .iter()
            .map(|n| t.hooks().values(n).unwrap().1)
            .collect();
        t.step(&graph, &b.x, &b.y, 0.01, 8).unwrap();
        for (n, a0) in layers.iter().zip(&a_before) {
            let a1 = t.hooks().values(n).unwrap().1;
            for k in 0..bits.len() {
                assert_ne!(a0[k], a1[k], "{n}: activation step of {} bits", bits[k]);
            }
        }
        // Without the mixed pass: |B| passes.
        let w = searched_weights(&graph);
        let cfg = StepConfig {
            momentum: 0.9,
            weight_decay: 0.0,
            label_smoothing: 0.0,
            grad_clip: 1.0,
            mixed_pass: false,
        };
        let mut t2 =
            JointTrainer::new(&graph, IndicatorHooks::new(&w, &bits).unwrap(), &cfg).unwrap();
        assert_eq!(
            t2.step(&graph, &b.x, &b.y, 0.01, 7).unwrap().passes.len(),
            3
        );
    }

    #[test]
    fn switchable_bn_keeps_separate_statistics_per_bit_width() {
        let graph = resnet8();
        let splits = data();
        let idx: Vec<usize> = (0..16).collect();
        let b = to_batch(&splits.train, &idx, &splits.normalization, graph.device()).unwrap();
        let bits = [4, 2];
        let mut t = trainer(&graph, &bits);
        let bn_names: Vec<String> = t
            .batch_norms()
            .names()
            .into_iter()
            .map(String::from)
            .collect();
        assert!(
            bn_names.contains(&"layer1.0.bn1".to_string()),
            "{bn_names:?}"
        );
        assert!(
            !bn_names.contains(&"bn1".to_string()),
            "the first conv's BN is not switched"
        );
        let mean = |t: &JointTrainer, n: &str, k: usize| -> Vec<f32> {
            t.batch_norms()
                .running_mean(n, k)
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let n = &bn_names[0];
        let init = mean(&t, n, 0);
        assert_eq!(init, mean(&t, n, 1));
        // One pass at 4 bits by hand: only the 4-bit copy's statistics move.
        let mut hooks = t.hooks().clone();
        hooks.set_uniform(0);
        let mut bn = t.batch_norms().clone();
        bn.load(&graph, &hooks).unwrap();
        graph
            .forward_with(&b.x, &mut ForwardOptions::new(Mode::Train, &mut hooks))
            .unwrap();
        let mut g = candle::backprop::GradStore::default();
        let mut acc = candle::backprop::GradStore::default();
        bn.store(&graph, &hooks, &mut g, &mut acc).unwrap();
        let m4: Vec<f32> = bn.running_mean(n, 0).unwrap().to_vec1().unwrap();
        let m2: Vec<f32> = bn.running_mean(n, 1).unwrap().to_vec1().unwrap();
        assert_ne!(m4, init);
        assert_eq!(m2, init);
        // A joint step updates both copies, differently (different quantized inputs).
        t.step(&graph, &b.x, &b.y, 0.01, 1).unwrap();
        let (a, c) = (mean(&t, n, 0), mean(&t, n, 1));
        assert_ne!(a, init);
        assert_ne!(c, init);
        assert_ne!(a, c);
    }

    #[test]
    fn same_seed_same_indicators_and_weights_are_restored() {
        let splits = data();
        let cfg = LimpqConfig {
            bits: vec![4, 3, 2],
            epochs: 1,
            batch_size: 32,
            data_fraction: 0.5,
            ..Default::default()
        };
        let run = |seed: u64| {
            let graph = resnet8();
            let before = graph.params().snapshot().unwrap();
            let cfg = LimpqConfig {
                seed,
                ..cfg.clone()
            };
            let t = train_indicators(
                &graph,
                &splits.train,
                &splits.normalization,
                &cfg,
                &mut NoProgress,
            )
            .unwrap();
            let after = graph.params().snapshot().unwrap();
            for (x, y) in before.iter().zip(&after) {
                let v = |t: &candle::Tensor| -> Vec<f64> {
                    let t = t.flatten_all().unwrap().to_dtype(candle::DType::F64);
                    t.unwrap().to_vec1().unwrap()
                };
                let (x, y) = (v(x), v(y));
                assert_eq!(x, y, "weights restored");
            }
            t
        };
        let (a, b, c) = (run(5), run(5), run(6));
        let ind = |t: &SensitivityTable| -> Vec<Option<LayerIndicators>> {
            t.layers.iter().map(|l| l.limpq.clone()).collect()
        };
        assert_eq!(ind(&a), ind(&b));
        assert_ne!(ind(&a), ind(&c));
        let r = a.limpq.as_ref().unwrap();
        assert_eq!(r.samples, 32);
        assert_eq!(r.steps, 1);
        assert_eq!(r.passes, 4);
        assert_eq!(a.metric, Metric::Limpq);
        assert!(a.layers[0].limpq.is_none() && a.layers.last().unwrap().limpq.is_none());
        assert!(a.layers[1].limpq.is_some());
    }
}
