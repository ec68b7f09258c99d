//! The activation term of Ω from measured errors (docs/algorithms.md §2.6): `mpq analyze`
//! measures `E‖Q_b(a) − a‖²` on the analysed samples, and the search's Ω uses it.

use mpq::Versioned;
use mpq::data::{self, Normalization};
use mpq::meta::ModelHint;
use mpq::pipeline::{self, ACT_ERROR_BITS, Analysis, AnalyzeRequest, ModelSource};
use mpq::progress::NoProgress;
use mpq::search::{OmegaConfig, OmegaTable};
use mpq::sensitivity::{Metric, SampleConfig};

use crate::util::temp_dir;

const DATA: &str = "synthetic:1x6x6:3:64";

/// The per-sample squared error of the plans' activation quantizer on `x` (min-max
/// calibrated on `x` itself), written out from the formulas of docs/algorithms.md §7.2.1.
fn hand_error(x: &[Vec<f32>], bits: u32) -> f64 {
    let all = x.iter().flatten();
    let lo = all.clone().fold(f32::INFINITY, |a, &b| a.min(b)).min(0.0);
    let hi = all.fold(f32::NEG_INFINITY, |a, &b| a.max(b)).max(0.0);
    let qmax = ((1u32 << bits) - 1) as f32;
    let (scale, zp) = if lo >= 0.0 {
        (hi / qmax, 0.0)
    } else {
        let s = (hi - lo) / qmax;
        (s, (-lo / s).round_ties_even().clamp(0.0, qmax))
    };
    let sum: f64 = x
        .iter()
        .flatten()
        .map(|&v| {
            let q = ((v / scale).round_ties_even() + zp).clamp(0.0, qmax);
            f64::from(scale * (q - zp) - v).powi(2)
        })
        .sum();
    sum / x.len() as f64
}

#[test]
fn activation_omega_is_trace_per_element_times_the_measured_error() {
    let dir = temp_dir("act-omega");
    let out = dir.join("s.json");
    let model = ModelSource {
        reference: "zoo:mlp".into(),
        hint: ModelHint {
            input_shape: Some(vec![1, 6, 6]),
            classes: Some(3),
            ..ModelHint::default()
        },
    };
    let sample = SampleConfig {
        batches: 2,
        batch_size: 8,
        ..SampleConfig::default()
    };
    let Analysis::Hessian { config, split, .. } = Analysis::hessian(Metric::ActTrace) else {
        unreachable!()
    };
    let analysis = Analysis::Hessian {
        config,
        sample,
        split,
        svg: Some(dir.join("d.svg")),
    };
    let req = AnalyzeRequest::new(model.clone(), DATA, analysis, &out);
    let table = pipeline::analyze(&req, &mut NoProgress).unwrap().table;

    // The first layer's input is the normalised image: its error by hand on the 16 analysed
    // samples (the first 16 of the training split).
    let splits = data::load(DATA, &Default::default()).unwrap();
    let norm: &Normalization = &splits.normalization;
    let idx: Vec<usize> = (0..16).collect();
    let batch = data::to_batch(&splits.train, &idx, norm, &candle::Device::Cpu).unwrap();
    let x: Vec<Vec<f32>> = batch.x.flatten_from(1).unwrap().to_vec2().unwrap();
    let first = &table.layers[0];
    let measured = first
        .act_error
        .as_ref()
        .expect("measured activation errors");
    assert_eq!(
        measured.keys().copied().collect::<Vec<_>>(),
        ACT_ERROR_BITS.to_vec()
    );
    for &b in &ACT_ERROR_BITS {
        let want = hand_error(&x, b);
        let got = measured[&b];
        assert!(
            (got - want).abs() <= 1e-4 * want,
            "{b} bits: measured {got}, by hand {want}"
        );
    }
    // Errors shrink with every extra bit, on every layer.
    for row in &table.layers {
        let e: Vec<f64> = row.act_error.as_ref().unwrap().values().copied().collect();
        assert!(e.windows(2).all(|w| w[1] < w[0]), "{}: {e:?}", row.name);
    }

    // Ω^a = Tr(H_a)/m · measured error (act weight 1), layer by layer.
    let m = model.open().unwrap();
    let layers = m.graph.layer_infos().unwrap();
    // (The weight term needs a trace; this analysis measured only activations.)
    let mut with_trace = table.clone();
    for row in &mut with_trace.layers {
        row.trace = Some(1.0);
    }
    let omega = OmegaTable::new(&layers, &with_trace, OmegaConfig::default()).unwrap();
    for (i, row) in table.layers.iter().enumerate() {
        let scale = row.act_trace.unwrap().max(0.0) / row.act_elems as f64;
        for &b in &ACT_ERROR_BITS {
            let want = scale * row.act_error.as_ref().unwrap()[&b];
            let got = omega.act_term(i, b).unwrap();
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1e-300),
                "{got} vs {want}"
            );
        }
        assert_eq!(omega.act_term(i, 32).unwrap(), 0.0);
    }
}

#[test]
fn every_method_reports_omega_on_the_trace_scale() {
    // HAWQ ranks layers by eigenvalues; the Ω it prints and writes is still the trace Ω, so
    // that plans of different methods compare on one scale.
    let dir = temp_dir("omega-scale");
    let model = ModelSource {
        reference: "zoo:lenet5".into(),
        hint: ModelHint::default(),
    };
    let layers = model.open().unwrap().graph.layer_infos().unwrap();
    let rows: Vec<serde_json::Value> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let trace = [5.0, 0.1, 2.0, 0.7, 9.0][i] * l.params as f64;
            let eigen = [0.2, 7.0, 1.0, 3.0, 0.5][i];
            let errors: serde_json::Map<String, serde_json::Value> = (2..=8)
                .map(|b| (b.to_string(), (l.params as f64 * 4f64.powi(-b)).into()))
                .collect();
            serde_json::json!({
                "name": l.name, "params": l.params, "trace": trace, "top_eigenvalue": eigen,
                "weight_error": errors,
            })
        })
        .collect();
    let path = dir.join("s.json");
    std::fs::write(&path, serde_json::json!({ "layers": rows }).to_string()).unwrap();
    let table = mpq::sensitivity::SensitivityTable::load(&path).unwrap();
    let trace = OmegaTable::new(&layers, &table, OmegaConfig::default()).unwrap();
    let mut plans = Vec::new();
    for method in [pipeline::Method::HawqV1, pipeline::Method::Ilp] {
        let mut req = pipeline::SearchRequest::new(model.clone(), method);
        req.sensitivity = Some(path.clone());
        req.budget.limits = mpq::search::Budget::avg_bits(4.0);
        let out = pipeline::search(&req, &mut NoProgress).unwrap();
        let plan = out.policy.plan;
        let want = trace.plan_omega(&layers, &plan).unwrap();
        let got = plan.omega.unwrap();
        assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
        for (i, r) in out.rows.iter().enumerate() {
            let (w, a) = plan.bits(&r.name);
            assert_eq!(r.omega, Some(trace.omega(i, w, a).unwrap()));
        }
        plans.push(plan);
    }
    // On the one scale the exact ILP is never worse than HAWQ's heuristic.
    assert!(plans[1].omega.unwrap() <= plans[0].omega.unwrap() * (1.0 + 1e-12));
}

#[test]
fn held_out_samples_reach_no_analysis_calibration_or_fine_tune() {
    // `mpq train --holdout N` keeps N training samples for the agents' rewards; opening the
    // trained model with the same data drops exactly those samples from the training split.
    let dir = temp_dir("holdout");
    let data = "synthetic:1x8x8:3:80";
    let path = dir.join("m.safetensors");
    let mut req = pipeline::TrainRequest::new(pipeline::TrainFrom::arch("mlp"), data, &path);
    req.config.epochs = 1;
    req.config.seed = 5;
    req.holdout = 20;
    pipeline::train(&req, &mut NoProgress).unwrap();
    let (_, splits) =
        pipeline::open_with_data(&ModelSource::new(path.display().to_string()), data, 0).unwrap();
    let full = data::load(data, &Default::default()).unwrap().train;
    let (kept, held) = full.split_holdout(20, 5);
    assert_eq!(splits.train.len(), full.len() - 20);
    assert_eq!(splits.train.pixels(), kept.pixels());
    // No held-out image is left in the split that analysis and fine-tuning read.
    let left: std::collections::HashSet<&[u8]> = (0..splits.train.len())
        .map(|i| splits.train.image(i))
        .collect();
    assert!((0..held.len()).all(|i| !left.contains(held.image(i))));
    // HAQ's reward split is drawn from the held-out samples: asking for more of them than
    // were held out is an input error, not a silent use of training images.
    let mut agent = pipeline::AgentOptions::new(data);
    agent.val_samples = 21;
    agent.episodes = 1;
    let haq = pipeline::Method::Haq(pipeline::HaqOptions {
        agent,
        weight_quantizer: pipeline::WeightQuantizer::Linear,
        state_flags: mpq::search::haq::FlagStyle::Clean,
    });
    let mut search =
        pipeline::SearchRequest::new(ModelSource::new(path.display().to_string()), haq);
    search.budget.limits = mpq::search::Budget::avg_bits(4.0);
    let err = pipeline::search(&search, &mut NoProgress).unwrap_err();
    assert!(
        err.is_input_error() && err.to_string().contains("--holdout 20"),
        "{err}"
    );
    // Another data set: nothing is dropped.
    let (_, other) = pipeline::open_with_data(
        &ModelSource::new(path.display().to_string()),
        "synthetic:1x8x8:3:81",
        0,
    )
    .unwrap();
    assert_eq!(
        other.train.len(),
        data::load("synthetic:1x8x8:3:81", &Default::default())
            .unwrap()
            .train
            .len()
    );
}
