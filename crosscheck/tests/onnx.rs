//! ONNX import and QDQ export, checked against an independent runtime (`tract-onnx`, its own
//! protobuf types and operator implementations): the logits of the PyTorch fixtures that the
//! main test suite checks mpq's import against are tract's, and the exported QDQ model run by
//! tract gives the simulation's logits and accuracy on the mnist10k test split.

// The measured differences are printed (visible with --nocapture) for the record.
#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle::{Device, Tensor};
use mpq::QuantPlan;
use mpq::data::{self, DataSplits, LoadOptions};
use mpq::graph::Mode;
use mpq::model::Model;
use mpq::plan::{Granularity, QuantizerKind};
use mpq::quant::{CalibrationConfig, PlanHooks, prepare_graph};
use tract_onnx::prelude::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/mpq/tests/fixtures/onnx")
        .join(name)
}

fn mnist() -> DataSplits {
    data::load("mnist10k", &LoadOptions::default()).expect("bundled mnist10k")
}

fn import(name: &str) -> Model {
    mpq::onnx::load(&fixture(name), &Device::Cpu).expect("fixture imports")
}

/// Runs `bytes` (an ONNX model) with tract on one batch `x`; every output, flattened.
fn tract_run(bytes: &[u8], x: &Tensor) -> Vec<Vec<f32>> {
    let shape = x.dims().to_vec();
    let model = tract_onnx::onnx()
        .model_for_read(&mut &*bytes)
        .expect("tract reads the model")
        .with_input_fact(0, f32::fact(shape.clone()).into())
        .expect("input fact")
        .into_optimized()
        .expect("tract optimises the model")
        .into_runnable()
        .expect("runnable");
    let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let input = tract_ndarray::ArrayD::from_shape_vec(shape, v).unwrap();
    let res = model
        .run(tvec!(tract_onnx::prelude::Tensor::from(input).into()))
        .expect("tract runs the model");
    res.iter()
        .map(|t| {
            t.to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .copied()
                .collect()
        })
        .collect()
}

/// The first output of `bytes` run by tract on `x` `[N, ...]` in batches of `batch`, per
/// sample.
fn tract_logits(bytes: &[u8], x: &Tensor, batch: usize) -> Vec<Vec<f32>> {
    let n = x.dim(0).unwrap();
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(batch) {
        let b = batch.min(n - start);
        let y = tract_run(bytes, &x.narrow(0, start, b).unwrap()).swap_remove(0);
        out.extend(y.chunks(y.len() / b).map(<[f32]>::to_vec));
    }
    out
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

fn accuracy(logits: &[Vec<f32>], labels: &[u32]) -> f64 {
    let hits = logits
        .iter()
        .zip(labels)
        .filter(|(l, y)| {
            let arg = l
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap();
            arg as u32 == **y
        })
        .count();
    hits as f64 / labels.len() as f64
}

fn test_batch(splits: &DataSplits, n: usize) -> Tensor {
    let idx: Vec<usize> = (0..n).collect();
    data::to_tensor(&splits.test, &idx, &splits.normalization, &Device::Cpu).unwrap()
}

/// The fixtures whose tract logits the main test suite checks the importer against.
const REFERENCE: [&str; 3] = ["lenet5.onnx", "resnet8.onnx", "opzoo.onnx"];

/// tract's logits of the first 64 mnist10k test images for each fixture, as the main test
/// suite stores them (`crates/mpq/tests/fixtures/onnx/tract-logits.json`): checked here
/// against tract itself, and rewritten with `MPQ_WRITE_REFERENCE=1`.
#[test]
fn stored_reference_logits_are_tract_s() {
    let splits = mnist();
    let x = test_batch(&splits, 64);
    let mut all = serde_json::Map::new();
    for name in REFERENCE {
        let bytes = std::fs::read(fixture(name)).unwrap();
        all.insert(name.into(), serde_json::json!(tract_logits(&bytes, &x, 64)));
    }
    let path = fixture("tract-logits.json");
    let fresh = serde_json::Value::Object(all);
    if std::env::var_os("MPQ_WRITE_REFERENCE").is_some() {
        std::fs::write(&path, serde_json::to_string(&fresh).unwrap() + "\n").unwrap();
    }
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("the stored logits")).unwrap();
    for name in REFERENCE {
        let a: Vec<Vec<f32>> = serde_json::from_value(stored[name].clone()).unwrap();
        let b: Vec<Vec<f32>> = serde_json::from_value(fresh[name].clone()).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0, "{name}: stored logits are not tract's");
    }
}

/// The activation quantizers of an exported QDQ graph: for each layer whose input is
/// quantized, `(layer, the tensor its Clip/QuantizeLinear reads, its DequantizeLinear output)`.
fn quantizer_taps(proto: &mpq::onnx::proto::ModelProto) -> Vec<(String, String, String)> {
    let nodes = &proto.graph.as_ref().expect("graph").node;
    nodes
        .iter()
        .filter_map(|n| {
            let layer = n.name.strip_suffix(".input.quantize")?;
            let clip = nodes
                .iter()
                .find(|c| c.name == format!("{layer}.input.clip"));
            let src = clip.unwrap_or(n).input[0].clone();
            Some((layer.to_string(), src, format!("{layer}.input.dequantized")))
        })
        .collect()
}

/// Runs `proto` with tract on one batch `x`, with `extra` tensors as additional outputs;
/// returns the logits per sample and then each extra output (flattened).
fn tract_with_taps(
    proto: &mpq::onnx::proto::ModelProto,
    extra: &[String],
    x: &Tensor,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut p = proto.clone();
    let g = p.graph.as_mut().expect("graph");
    for name in extra {
        g.output.push(mpq::onnx::proto::ValueInfoProto {
            name: name.clone(),
            r#type: None,
        });
    }
    let mut outs = tract_run(&prost_bytes(&p), x);
    let logits = outs.remove(0);
    let k = logits.len() / x.dim(0).unwrap();
    (logits.chunks(k).map(<[f32]>::to_vec).collect(), outs)
}

/// Simulation hooks whose activation quantizers output the runtime's dequantized codes
/// (`forced`) instead of their own, recording their own inputs (`own`).
struct Forced<'a> {
    plan: &'a mut PlanHooks,
    forced: BTreeMap<String, Tensor>,
    own: BTreeMap<String, Tensor>,
}

impl mpq::graph::Hooks for Forced<'_> {
    fn weight(&mut self, layer: &str, w: &Tensor) -> mpq::Result<Tensor> {
        self.plan.weight(layer, w)
    }

    fn activation(&mut self, layer: &str, x: &Tensor) -> mpq::Result<Tensor> {
        self.own.insert(layer.to_string(), x.clone());
        match self.forced.get(layer) {
            Some(t) => Ok(t.reshape(x.dims())?),
            None => self.plan.activation(layer, x),
        }
    }
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// What the lockstep comparison measured.
#[derive(Debug, Default)]
struct Lockstep {
    /// Codes compared.
    codes: usize,
    /// Codes the runtime's quantizer gives differently from the ONNX formula
    /// `round_half_even(x / s)` on the same input: all are inputs whose `x / s` and
    /// `x · (1/s)` (tract's reciprocal) round to neighbouring codes.
    reciprocal_ties: usize,
    /// Largest |simulation − runtime| at a quantizer input, in units of that quantizer's step.
    max_input_diff_steps: f32,
    /// Codes where the two runtimes' own (free-running) inputs round differently: within
    /// `max_input_diff_steps` of a rounding boundary.
    boundary_flips: usize,
    /// Largest |simulation − runtime| logit.
    max_logit_diff: f32,
}

/// Runs the simulation in lockstep with the runtime on `x`: every activation quantizer of the
/// simulation outputs the runtime's codes. Checks each exported quantizer against the
/// simulation's formula on the runtime's own input, and the float computation between
/// quantizers (layers, residual adds, pooling) against the runtime's up to summation order.
fn lockstep(
    graph: &mpq::graph::Graph,
    hooks: &mut PlanHooks,
    proto: &mpq::onnx::proto::ModelProto,
    x: &Tensor,
    out: &mut Lockstep,
) {
    let taps = quantizer_taps(proto);
    assert!(!taps.is_empty(), "the export has activation quantizers");
    let extra: Vec<String> = taps
        .iter()
        .flat_map(|(_, src, dq)| [src.clone(), dq.clone()])
        .collect();
    let (theirs, values) = tract_with_taps(proto, &extra, x);
    let forced = taps
        .iter()
        .zip(values.chunks(2))
        .map(|((layer, _, _), v)| {
            let t = Tensor::from_slice(&v[1], v[1].len(), &Device::Cpu).unwrap();
            (layer.clone(), t)
        })
        .collect();
    let mut f = Forced {
        plan: hooks,
        forced,
        own: BTreeMap::new(),
    };
    let y = {
        let opts = &mut mpq::graph::ForwardOptions::new(Mode::Eval, &mut f);
        graph.forward_with(x, opts).unwrap()
    };
    for ((layer, src, _), v) in taps.iter().zip(values.chunks(2)) {
        let (src_rt, dq_rt) = (&v[0], &v[1]);
        let q = f
            .plan
            .activation_params(layer)
            .unwrap()
            .expect("quantized input");
        let (s, z) = (q.scale[0], q.zero_point[0]);
        let (lo, hi) = q.range(0);
        let own = flat(&f.own[layer]);
        assert_eq!(
            own.len(),
            src_rt.len(),
            "{layer}: tap {src} has the input's size"
        );
        for ((&xr, &dr), &xo) in src_rt.iter().zip(dq_rt).zip(&own) {
            let spec = q.dequant(q.code(xr, 0), 0);
            if dr != spec {
                // tract rewrites x / s as x · (1/s): the only other rounding it may give.
                let clipped = xr.clamp(s * (lo - z), s * (hi - z));
                let recip = ((clipped * s.recip()).round_ties_even() + z).clamp(lo, hi);
                assert_eq!(
                    dr,
                    q.dequant(recip, 0),
                    "{layer}: the runtime quantizes {xr:e} to {dr:e}, the simulation to {spec:e}"
                );
                out.reciprocal_ties += 1;
            }
            out.max_input_diff_steps = out.max_input_diff_steps.max((xo - xr).abs() / s);
            if q.code(xo, 0) != q.code(xr, 0) {
                out.boundary_flips += 1;
            }
        }
        out.codes += own.len();
    }
    out.max_logit_diff = out.max_logit_diff.max(max_abs_diff(&rows(&y), &theirs));
}

/// Quantizes `model` with `plan` as `mpq eval --policy` does, exports QDQ and runs it with
/// tract on the whole test split.
///
/// Lockstep (every quantizer of the simulation reads the runtime's input): the same codes
/// and every logit within 1e-3 of the runtime's, on every sample. Free-running: accuracy
/// within 0.1 points; the logits of a few samples differ by more, because a quantizer input
/// that lies within float summation noise of a rounding boundary (`boundary_flips`, a few
/// codes in a million) lands on the neighbouring code in one runtime and the difference of
/// one step then propagates.
fn qdq_matches_simulation(model: &Model, plan: &QuantPlan) {
    let splits = mnist();
    let norm = model.normalization_or(&splits.normalization);
    let layers = model.graph.layer_infos().unwrap();
    plan.validate(&layers).unwrap();
    let graph = prepare_graph(&model.graph, plan).unwrap();
    let cfg = CalibrationConfig {
        samples: 512,
        ..Default::default()
    };
    let mut hooks = PlanHooks::calibrate(&graph, plan, &splits.train, &norm, &cfg).unwrap();
    let stats = mpq::train::evaluate(&graph, &splits.test, &norm, 256, &mut hooks).unwrap();
    let proto = mpq::onnx::qdq_model(&graph, &mut hooks, Some(&norm)).unwrap();
    let bytes = prost_bytes(&proto);
    let n = splits.test.len();
    let x = test_batch(&splits, n);
    let mut ours = Vec::new();
    let mut lock = Lockstep::default();
    for s in (0..n).step_by(250) {
        let b = 250.min(n - s);
        let xb = x.narrow(0, s, b).unwrap();
        let opts = &mut mpq::graph::ForwardOptions::new(Mode::Eval, &mut hooks);
        ours.extend(rows(&graph.forward_with(&xb, opts).unwrap()));
        lockstep(&graph, &mut hooks, &proto, &xb, &mut lock);
    }
    let theirs = tract_logits(&bytes, &x, 500);
    let d = max_abs_diff(&ours, &theirs);
    let close = ours
        .iter()
        .zip(&theirs)
        .filter(|(a, b)| max_abs_diff(std::slice::from_ref(*a), std::slice::from_ref(*b)) <= 1e-3)
        .count();
    let acc_tract = accuracy(&theirs, splits.test.labels());
    let acc_ours = accuracy(&ours, splits.test.labels());
    eprintln!(
        "QDQ lockstep: max |sim - tract| logit {:e}; quantizer inputs within {:e} steps; of {} codes, {} on a rounding boundary, {} reciprocal ties",
        lock.max_logit_diff,
        lock.max_input_diff_steps,
        lock.codes,
        lock.boundary_flips,
        lock.reciprocal_ties
    );
    eprintln!(
        "QDQ free-running: {close}/{n} samples with every logit within 1e-3, max |sim - tract| = {d:e}; accuracy sim {:.2}% (eval {:.2}%), tract {:.2}% on {n} samples",
        100.0 * acc_ours,
        100.0 * stats.accuracy,
        100.0 * acc_tract
    );
    assert!(
        lock.max_logit_diff <= 1e-3,
        "lockstep logits differ by {}",
        lock.max_logit_diff
    );
    assert!(
        lock.max_input_diff_steps <= 1e-3,
        "quantizer inputs differ by {} steps between the runtimes",
        lock.max_input_diff_steps
    );
    for (what, k) in [
        ("flip at a rounding boundary", lock.boundary_flips),
        ("are reciprocal ties", lock.reciprocal_ties),
    ] {
        assert!(
            k as f64 <= 1e-5 * lock.codes as f64,
            "{k} of {} codes {what}",
            lock.codes
        );
    }
    assert!(
        close as f64 >= 0.97 * n as f64,
        "only {close}/{n} samples within 1e-3 of the simulation"
    );
    assert!(d <= 0.05, "QDQ logits differ from the simulation by {d}");
    assert!((acc_ours - stats.accuracy).abs() < 1e-9);
    assert!((acc_tract - stats.accuracy).abs() * 100.0 <= 0.1);
}

fn prost_bytes(m: &mpq::onnx::proto::ModelProto) -> Vec<u8> {
    use prost::Message;
    m.encode_to_vec()
}

#[test]
fn lenet5_qdq_export_runs_in_tract_like_the_simulation() {
    let model = import("lenet5.onnx");
    let layers = model.graph.layer_infos().unwrap();
    let mut plan = QuantPlan::uniform(&layers, 8, 8);
    let bits = [(8, 8), (4, 4), (2, 4), (3, 6), (8, 8)];
    for (l, (w, a)) in plan.layers.iter_mut().zip(bits) {
        l.w_bits = w;
        l.a_bits = a;
    }
    plan.layers[4].granularity = Granularity::PerTensor;
    qdq_matches_simulation(&model, &plan);
}

#[test]
fn resnet8_qdq_export_runs_in_tract_like_the_simulation() {
    let model = import("resnet8.onnx");
    let layers = model.graph.layer_infos().unwrap();
    let mut plan = QuantPlan::uniform(&layers, 4, 8);
    plan.layers[0].a_bits = 32;
    plan.layers[3].quantizer = QuantizerKind::Asymmetric;
    plan.layers[5].w_bits = 32;
    plan.layers[9].w_bits = 6;
    qdq_matches_simulation(&model, &plan);
}

#[test]
fn zoo_resnet8_with_batch_norm_folds_and_exports() {
    let cfg = mpq::zoo::ZooConfig::new([1, 28, 28], 10);
    let model = mpq::zoo::build("resnet8", &cfg, 3).unwrap();
    let layers = model.graph.layer_infos().unwrap();
    let mut plan = QuantPlan::uniform(&layers, 4, 4);
    plan.fold_bn = true;
    qdq_matches_simulation(&model, &plan);
    plan.fold_bn = false;
    qdq_matches_simulation(&model, &plan);
}

#[test]
fn opzoo_qdq_export_runs_in_tract_like_the_simulation() {
    let model = import("opzoo.onnx");
    let layers = model.graph.layer_infos().unwrap();
    let plan = QuantPlan::uniform(&layers, 6, 8);
    qdq_matches_simulation(&model, &plan);
}
