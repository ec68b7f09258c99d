//! Packed export round trips: the dequantized weights of a written file equal the
//! simulation's bit for bit, the logits are identical, and the packed payload is exactly the
//! reported size; corrupt packed files are input errors.

use candle::Device;
use mpq::QuantPlan;
use mpq::cost::CostTable;
use mpq::data::{self, DataSplits, Dataset, Normalization};
use mpq::export;
use mpq::graph::{ForwardOptions, Graph, Mode};
use mpq::model::{Model, ModelHint};
use mpq::pipeline::{bit_equal, same_weights};
use mpq::plan::{Granularity, QuantizerKind};
use mpq::quant::{CalibrationConfig, PlanHooks, prepare_graph};
use mpq::train::{TrainConfig, train_with};
use mpq::zoo::{self, ZooConfig};

use crate::util::temp_dir;

fn splits(shape: &str) -> DataSplits {
    data::load(&format!("synthetic:{shape}:10:96"), &Default::default()).unwrap()
}

/// One epoch of quantization-aware training of `graph` under `hooks` (batch 32, rate `lr`).
fn one_epoch(graph: &Graph, train: &Dataset, norm: &Normalization, lr: f64, hooks: &mut PlanHooks) {
    let tc = TrainConfig {
        epochs: 1,
        batch_size: 32,
        lr,
        ..TrainConfig::default()
    };
    let progress = &mut mpq::progress::NoProgress;
    train_with(graph, train, None, norm, &tc, hooks, progress).unwrap();
}

/// Quantizes `model` under `plan` (optionally a few QAT steps), exports, reloads and checks
/// weights, logits and sizes.
fn round_trip(model: &Model, plan: &QuantPlan, splits: &DataSplits, qat: bool, tag: &str) {
    let norm = splits.normalization.clone();
    let graph = prepare_graph(&model.graph, plan).unwrap();
    let cfg = CalibrationConfig {
        samples: 64,
        ..Default::default()
    };
    let mut hooks = PlanHooks::calibrate(&graph, plan, &splits.train, &norm, &cfg).unwrap();
    if qat {
        one_epoch(&graph, &splits.train, &norm, 0.01, &mut hooks);
    }
    let dir = temp_dir(tag);
    let path = dir.join("model.safetensors");
    let stats = export::save_packed(&path, &model.meta, &graph, &hooks).unwrap();
    let back = Model::load(&path, &ModelHint::default(), &Device::Cpu).unwrap();
    assert!(
        same_weights(&graph, &mut hooks, &back).unwrap(),
        "{tag}: weights differ"
    );
    let idx: Vec<usize> = (0..splits.test.len().min(16)).collect();
    let x = data::to_tensor(&splits.test, &idx, &norm, &Device::Cpu).unwrap();
    let a = graph
        .forward_with(&x, &mut ForwardOptions::new(Mode::Eval, &mut hooks))
        .unwrap();
    let mut back_hooks = back.quantized.clone().unwrap();
    let b = back
        .graph
        .forward_with(&x, &mut ForwardOptions::new(Mode::Eval, &mut back_hooks))
        .unwrap();
    assert!(bit_equal(&a, &b).unwrap(), "{tag}: logits differ");

    // Sizes: codes take exactly ⌈bits/8⌉ per tensor, scales and zero points exactly the
    // reported overhead.
    let table = CostTable::new(&model.graph.layer_infos().unwrap(), plan).unwrap();
    let codes: u64 = table
        .layers
        .iter()
        .filter(|r| {
            plan.precision(&r.name)
                .is_some_and(|p| !p.weights_full_precision())
        })
        .map(|r| r.weight_bits.div_ceil(8))
        .sum();
    assert_eq!(stats.code_bytes, codes, "{tag}");
    assert_eq!(stats.weight_param_bytes * 8, table.overhead_bits, "{tag}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        stats.file_bytes,
        "{tag}"
    );
    // Without unfolded BatchNorms, the file is its header plus exactly the predicted bytes.
    if plan.fold_bn {
        let stored = CostTable::new(&graph.layer_infos().unwrap(), plan)
            .unwrap()
            .stored_bytes;
        assert_eq!(stats.file_bytes - stats.header_bytes, stored, "{tag}");
    }
    std::fs::remove_dir_all(dir).ok();
}

fn lenet() -> (Model, DataSplits) {
    let s = splits("1x28x28");
    let m = zoo::build("lenet5", &ZooConfig::new([1, 28, 28], 10), 5).unwrap();
    (m, s)
}

fn resnet8() -> (Model, DataSplits) {
    let s = splits("3x16x16");
    let m = zoo::build("resnet8", &ZooConfig::new([3, 16, 16], 10), 2).unwrap();
    (m, s)
}

/// The plan with every layer of `model` at `w_bits` / `a_bits`.
fn uniform(model: &Model, w_bits: u32, a_bits: u32) -> QuantPlan {
    QuantPlan::uniform(&model.graph.layer_infos().unwrap(), w_bits, a_bits)
}

/// [`uniform`] with every layer's quantizer set to `q`.
fn uniform_with(model: &Model, w_bits: u32, a_bits: u32, q: QuantizerKind) -> QuantPlan {
    let mut plan = uniform(model, w_bits, a_bits);
    for l in &mut plan.layers {
        l.quantizer = q;
    }
    plan
}

#[test]
fn lenet_mixed_plans_round_trip_bit_identically() {
    let (model, s) = lenet();
    let layers = model.graph.layer_infos().unwrap();
    // Mixed widths, both granularities, both uniform quantizers, one FP32 layer, and
    // per-channel widths.
    let mut plan = QuantPlan::uniform(&layers, 4, 8);
    plan.layers[0].w_bits = 8;
    plan.layers[0].a_bits = 32;
    plan.layers[1].w_bits = 3;
    plan.layers[1].granularity = Granularity::PerTensor;
    plan.layers[2].quantizer = QuantizerKind::Asymmetric;
    plan.layers[2].w_bits = 5;
    plan.layers[3].quantizer = QuantizerKind::Asymmetric;
    plan.layers[3].granularity = Granularity::PerTensor;
    plan.layers[3].a_bits = 4;
    plan.layers[4].w_bits = 32;
    round_trip(&model, &plan, &s, false, "lenet-mixed");
    round_trip(&model, &plan, &s, true, "lenet-mixed-qat");

    let mut cw = QuantPlan::uniform(&layers, 8, 8);
    cw.layers[0].channel_w_bits = Some(vec![2, 3, 4, 5, 6, 8]);
    cw.layers[1].channel_w_bits = Some((0..16).map(|c| 2 + (c % 7)).collect());
    round_trip(&model, &cw, &s, false, "lenet-channel-bits");

    // A CW-HAWQ plan: every layer per-channel over {2, 4, 8}, the MSE clip chosen per
    // channel at its own width, before and after QAT.
    let mut cw = QuantPlan::uniform(&layers, 8, 8);
    cw.method = "cw-hawq".into();
    for l in &mut cw.layers {
        let n = layers
            .iter()
            .find(|i| i.name == l.name)
            .unwrap()
            .out_channels;
        l.channel_w_bits = Some((0..n).map(|c| [8, 4, 2][c % 3]).collect());
        l.weight_range = mpq::plan::WeightRange::Mse;
    }
    round_trip(&model, &cw, &s, false, "lenet-cw-mse");
    round_trip(&model, &cw, &s, true, "lenet-cw-mse-qat");
}

#[test]
fn resnet_per_channel_plan_round_trips_with_folded_batchnorm() {
    let (resnet, rs) = resnet8();
    let layers = resnet.graph.layer_infos().unwrap();
    let mut plan = uniform(&resnet, 8, 8);
    for (k, l) in plan.layers.iter_mut().enumerate() {
        let n = layers[k].out_channels;
        l.channel_w_bits = Some((0..n).map(|c| [8, 4, 3, 2][(c + k) % 4]).collect());
    }
    round_trip(&resnet, &plan, &rs, false, "resnet8-channel-bits");
    round_trip(&resnet, &plan, &rs, true, "resnet8-channel-bits-qat");
}

#[test]
fn lsq_plans_round_trip_after_training_the_steps() {
    let (model, s) = lenet();
    let mut plan = uniform_with(&model, 2, 4, QuantizerKind::Lsq);
    plan.layers[1].granularity = Granularity::PerTensor;
    round_trip(&model, &plan, &s, true, "lenet-lsq");
}

#[test]
fn kmeans_plans_round_trip_bit_identically() {
    let (model, s) = lenet();
    // HAQ's k-means on the middle layers (conv1 at 8 bits has fewer weights, 150, than
    // 256 clusters), uniform at the ends, one k-means layer with FP32 activations and the
    // search's 3 iterations.
    let mut plan = uniform(&model, 4, 8);
    plan.method = "haq".into();
    for (i, bits) in [(0, 8), (1, 3), (2, 2), (3, 5)] {
        plan.layers[i].quantizer = QuantizerKind::KMeans;
        plan.layers[i].w_bits = bits;
    }
    plan.layers[2].a_bits = 32;
    plan.layers[2].kmeans_iters = Some(3);
    round_trip(&model, &plan, &s, false, "lenet-kmeans");
    // Fine-tuning moves the shared centroids; the file still reproduces the simulation.
    round_trip(&model, &plan, &s, true, "lenet-kmeans-qat");
    // The packed file of a ResNet, with its folded BatchNorms.
    let (resnet, rs) = resnet8();
    let mut plan = uniform(&resnet, 4, 8);
    for l in plan.layers.iter_mut().skip(1) {
        l.quantizer = QuantizerKind::KMeans;
    }
    round_trip(&resnet, &plan, &rs, false, "resnet8-kmeans");
}

#[test]
fn kmeans_fine_tuning_keeps_the_clusters_shared() {
    let (model, s) = lenet();
    let plan = uniform_with(&model, 2, 8, QuantizerKind::KMeans);
    let graph = prepare_graph(&model.graph, &plan).unwrap();
    let cfg = CalibrationConfig {
        samples: 64,
        ..Default::default()
    };
    let mut hooks = PlanHooks::calibrate(&graph, &plan, &s.train, &s.normalization, &cfg).unwrap();
    let w = |g: &mpq::graph::Graph| {
        g.params()
            .var("fc1.weight")
            .unwrap()
            .as_tensor()
            .copy()
            .unwrap()
    };
    let before = hooks.weight_codebook("fc1", &w(&graph)).unwrap().unwrap();
    one_epoch(&graph, &s.train, &s.normalization, 0.05, &mut hooks);
    let after = hooks.weight_codebook("fc1", &w(&graph)).unwrap().unwrap();
    // Same assignment, moved centroids, at most 4 distinct values in the used weight.
    assert_eq!(after.codes, before.codes);
    assert_ne!(after.centroids, before.centroids);
    let used = mpq::graph::Hooks::weight(&mut hooks, "fc1", &w(&graph)).unwrap();
    let distinct: std::collections::BTreeSet<u32> = used
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert!(distinct.len() <= 4, "{} values", distinct.len());
    assert_eq!(
        after.values(),
        used.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

#[test]
fn resnet_round_trips_with_and_without_folded_batch_norm() {
    let (model, s) = resnet8();
    let mut plan = uniform(&model, 4, 8);
    round_trip(&model, &plan, &s, false, "resnet8-folded");
    plan.fold_bn = false;
    round_trip(&model, &plan, &s, true, "resnet8-bn");
}

#[test]
fn per_channel_widths_simulate_exactly() {
    let (model, _) = lenet();
    let w = model
        .graph
        .params()
        .var("conv2.weight")
        .unwrap()
        .as_tensor()
        .clone();
    let mut p = mpq::plan::LayerPrecision::new("conv2", 8, 8);
    p.channel_w_bits = Some((0..16).map(|c| 2 + (c % 7)).collect());
    // The simulation under `p`, checked against the reference, which clamps every channel to
    // its own range.
    let simulate = |p: &mpq::plan::LayerPrecision| {
        let q = mpq::quant::weight_params(&w, p).unwrap();
        let fast: Vec<f32> = mpq::quant::fake_quant_tensor(&w, &q)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let slow =
            mpq::quant::fake_quant_values(&w.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &q);
        assert_eq!(fast, slow);
        (q, fast)
    };
    let (_, fast) = simulate(&p);
    // Channel c has at most 2^b_c − 1 distinct levels.
    for c in 0..16 {
        let b = 2 + (c % 7) as u32;
        let levels: std::collections::BTreeSet<u32> = fast[c * 150..(c + 1) * 150]
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert!(
            levels.len() < (1 << b),
            "channel {c}: {} levels",
            levels.len()
        );
    }
    // With the MSE clip, values beyond a channel's clipped range saturate at that channel's
    // own width (not the widest one), and the simulation still matches the reference.
    p.weight_range = mpq::plan::WeightRange::Mse;
    let (q, fast) = simulate(&p);
    for c in 0..16 {
        let (_, hi) = q.range(c);
        let top = hi * q.scale[c];
        let m = fast[c * 150..(c + 1) * 150]
            .iter()
            .fold(0f32, |a, v| a.max(v.abs()));
        assert!(m <= top * (1.0 + 1e-6), "channel {c}: {m} > {top}");
    }
}

#[test]
fn corrupt_packed_files_are_input_errors() {
    let (model, s) = lenet();
    let plan = uniform(&model, 4, 8);
    let graph = prepare_graph(&model.graph, &plan).unwrap();
    let hooks = PlanHooks::calibrate(
        &graph,
        &plan,
        &s.train,
        &s.normalization,
        &CalibrationConfig::default(),
    )
    .unwrap();
    let dir = temp_dir("corrupt-packed");
    let path = dir.join("model.safetensors");
    export::save_packed(&path, &model.meta, &graph, &hooks).unwrap();
    let (mut tensors, md) = {
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.data().to_vec(), v.shape().to_vec(), v.dtype()))
            .collect();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        (t, meta.metadata().clone().unwrap())
    };
    // Drop the last byte of one code tensor: the stream is too short.
    let i = tensors
        .iter()
        .position(|t| t.0 == "fc1.weight.codes")
        .unwrap();
    tensors[i].1.pop();
    tensors[i].2 = vec![tensors[i].1.len()];
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, sh, dt)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, sh.clone(), d).unwrap(),
            )
        })
        .collect();
    let bad = dir.join("bad.safetensors");
    safetensors::tensor::serialize_to_file(views, Some(md), &bad).unwrap();
    let err = Model::load(&bad, &ModelHint::default(), &Device::Cpu).unwrap_err();
    assert!(err.is_input_error(), "{err}");
    assert!(err.to_string().contains("fc1"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}
