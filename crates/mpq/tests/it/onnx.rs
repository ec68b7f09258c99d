//! ONNX import checked against an independent runtime's numbers: the logits tract (its own
//! protobuf types and operator implementations) gives for the PyTorch fixtures, stored in
//! `tests/fixtures/onnx/tract-logits.json` by the cross-check crate (`crosscheck/`, which
//! also runs the exported QDQ models in tract); unsupported operators, broken files, and an
//! imported graph that trains and saves.

use std::path::PathBuf;

use candle::{Device, Tensor};
use mpq::data::{self, DataSplits, LoadOptions};
use mpq::graph::Mode;
use mpq::model::Model;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
}

fn mnist() -> DataSplits {
    data::load("mnist10k", &LoadOptions::default()).expect("bundled mnist10k")
}

fn import(name: &str) -> Model {
    mpq::onnx::load(&fixture(name), &Device::Cpu).expect("fixture imports")
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

fn test_batch(splits: &DataSplits, n: usize) -> Tensor {
    let idx: Vec<usize> = (0..n).collect();
    data::to_tensor(&splits.test, &idx, &splits.normalization, &Device::Cpu).unwrap()
}

/// The fixture's layer names, and its logits on the first 64 test images within 1e-4 of
/// tract's (stored).
fn import_matches_tract(name: &str, layers: &[&str]) {
    let model = import(name);
    let names: Vec<String> = model
        .graph
        .quantizable_layers()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, layers, "{name}: layer names from the ONNX graph");
    let splits = mnist();
    let x = test_batch(&splits, 64);
    let ours = rows(&model.graph.forward(&x, Mode::Eval).unwrap());
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("tract-logits.json")).unwrap()).unwrap();
    let theirs: Vec<Vec<f32>> = serde_json::from_value(stored[name].clone()).unwrap();
    let d = max_abs_diff(&ours, &theirs);
    assert!(
        d <= 1e-4,
        "{name}: imported logits differ from tract's by {d}"
    );
}

#[test]
fn lenet5_import_matches_tract() {
    import_matches_tract("lenet5.onnx", &["conv1", "conv2", "fc1", "fc2", "fc3"]);
}

#[test]
fn resnet8_with_folded_bn_import_matches_tract() {
    import_matches_tract(
        "resnet8.onnx",
        &[
            "conv1",
            "layer1.0.conv1",
            "layer1.0.conv2",
            "layer2.0.conv1",
            "layer2.0.conv2",
            "layer2.0.downsample.0",
            "layer3.0.conv1",
            "layer3.0.conv2",
            "layer3.0.downsample.0",
            "fc",
        ],
    );
    // Folded BatchNorm: the generated initializer names are recorded next to ours.
    let model = import("resnet8.onnx");
    let inits = &model.meta.training.as_ref().unwrap()["initializers"];
    assert_eq!(inits["conv1.weight"], "onnx::Conv_88");
    assert_eq!(inits["fc.weight"], "fc.weight");
}

#[test]
fn opzoo_import_matches_tract() {
    import_matches_tract(
        "opzoo.onnx",
        &[
            "conv1", "branch_a", "branch_b", "se", "conv2", "fc", "MatMul",
        ],
    );
    let model = import("opzoo.onnx");
    assert!(
        model.graph.node("bn1").is_some(),
        "unfolded BatchNorm is a node"
    );
    assert!(model.graph.params().get("bn1.running_var").is_some());
}

#[test]
fn unsupported_operators_are_listed_all_at_once() {
    let err = mpq::onnx::load(&fixture("unsupported.onnx"), &Device::Cpu).unwrap_err();
    let msg = err.to_string();
    for part in [
        "Erf (node /act/Erf)",
        "NonZero (node /weird/NonZero)",
        "TopK (node /head/TopK)",
    ] {
        assert!(msg.contains(part), "{msg}");
    }
    assert!(!msg.contains("Conv"), "{msg}");
    assert!(err.is_input_error());
}

#[test]
fn truncated_and_foreign_files_are_input_errors() {
    let dir = std::env::temp_dir().join(format!("mpq-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(fixture("lenet5.onnx")).unwrap();
    let cut = dir.join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let text = dir.join("text.onnx");
    std::fs::write(&text, "this is not a model\n").unwrap();
    for p in [&cut, &text] {
        let err = mpq::onnx::load(p, &Device::Cpu).unwrap_err();
        assert!(err.is_input_error(), "{p:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn imported_graph_trains_and_saves() {
    let model = import("lenet5.onnx");
    let splits = mnist();
    let x = test_batch(&splits, 32);
    let before = model.graph.forward(&x, Mode::Eval).unwrap();
    let cfg = mpq::train::TrainConfig {
        epochs: 1,
        batch_size: 64,
        lr: 0.01,
        ..Default::default()
    };
    let sub = splits.train.take(512);
    let report = mpq::train::train(
        &model.graph,
        &sub,
        None,
        &splits.normalization,
        &cfg,
        &mut mpq::progress::NoProgress,
    )
    .unwrap();
    assert!(report.epochs[0].train_loss.is_finite());
    let after = model.graph.forward(&x, Mode::Eval).unwrap();
    let moved = (after - before).unwrap().abs().unwrap().max_all().unwrap();
    assert!(
        moved.to_scalar::<f32>().unwrap() > 0.0,
        "training changed nothing"
    );
    // Saved with its structure, it loads again without the ONNX file.
    let dir = std::env::temp_dir().join(format!("mpq-onnx-save-{}", std::process::id()));
    let path = dir.join("m.safetensors");
    model.save(&path).unwrap();
    let back = Model::load(&path, &Default::default(), &Device::Cpu).unwrap();
    let a = rows(&model.graph.forward(&x, Mode::Eval).unwrap());
    let b = rows(&back.graph.forward(&x, Mode::Eval).unwrap());
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    std::fs::remove_dir_all(&dir).ok();
}

/// A QDQ model mpq exported imports back as fake quantization: on the 2,000 test images its
/// accuracy is the simulation's (within 0.1 point: a quantizer input within float summation
/// noise of a rounding boundary can land on the neighbouring code) and its logits match.
fn qdq_imports_back(model: &Model, plan: &mpq::QuantPlan) {
    use mpq::quant::{CalibrationConfig, PlanHooks, prepare_graph};
    let splits = mnist();
    let norm = model.normalization_or(&splits.normalization);
    let graph = prepare_graph(&model.graph, plan).unwrap();
    let cfg = CalibrationConfig {
        samples: 512,
        ..Default::default()
    };
    let mut hooks = PlanHooks::calibrate(&graph, plan, &splits.train, &norm, &cfg).unwrap();
    let sim = mpq::train::evaluate(&graph, &splits.test, &norm, 256, &mut hooks).unwrap();
    let dir = std::env::temp_dir().join(format!("mpq-qdq-back-{}", std::process::id()));
    let path = dir.join("q.onnx");
    mpq::onnx::export_qdq(&path, &graph, &mut hooks, Some(&norm)).unwrap();
    let back = mpq::onnx::load(&path, &Device::Cpu).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(back.meta.normalization.as_ref(), Some(&norm));
    let mut none = mpq::graph::NoHooks;
    let got = mpq::train::evaluate(&back.graph, &splits.test, &norm, 256, &mut none).unwrap();
    assert!(
        (got.accuracy - sim.accuracy).abs() <= 0.001,
        "imported QDQ {:.4} vs simulation {:.4}",
        got.accuracy,
        sim.accuracy
    );
    let x = test_batch(&splits, 256);
    let opts = &mut mpq::graph::ForwardOptions::new(Mode::Eval, &mut hooks);
    let ours = rows(&graph.forward_with(&x, opts).unwrap());
    let theirs = rows(&back.graph.forward(&x, Mode::Eval).unwrap());
    let close = ours
        .iter()
        .zip(&theirs)
        .filter(|(a, b)| max_abs_diff(std::slice::from_ref(*a), std::slice::from_ref(*b)) <= 1e-3)
        .count();
    assert!(
        close >= 250,
        "only {close}/256 samples within 1e-3 of the simulation"
    );
}

#[test]
fn an_exported_qdq_model_imports_back_at_the_simulated_accuracy() {
    let model = import("lenet5.onnx");
    let layers = model.graph.layer_infos().unwrap();
    let mut plan = mpq::QuantPlan::uniform(&layers, 8, 8);
    let bits = [(8, 8), (4, 4), (2, 4), (3, 6), (8, 8)];
    for (l, (w, a)) in plan.layers.iter_mut().zip(bits) {
        l.w_bits = w;
        l.a_bits = a;
    }
    plan.layers[4].granularity = mpq::plan::Granularity::PerTensor;
    qdq_imports_back(&model, &plan);
    let model = import("resnet8.onnx");
    let layers = model.graph.layer_infos().unwrap();
    let mut plan = mpq::QuantPlan::uniform(&layers, 4, 8);
    plan.layers[0].a_bits = 32;
    plan.layers[3].quantizer = mpq::plan::QuantizerKind::Asymmetric;
    plan.layers[5].w_bits = 32;
    qdq_imports_back(&model, &plan);
}

/// The fixture LeNet-5 with attribute `name` of its first Conv set to `value`, imported.
fn lenet_with_conv_attr(name: &str, ints: Vec<i64>, i: i64) -> mpq::Result<Model> {
    use mpq::onnx::proto::{AttributeProto, ModelProto};
    use prost::Message;
    let bytes = std::fs::read(fixture("lenet5.onnx")).unwrap();
    let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let conv = g.node.iter_mut().find(|n| n.op_type == "Conv").unwrap();
    conv.attribute.retain(|a| a.name != name);
    conv.attribute.push(AttributeProto {
        name: name.into(),
        r#type: if ints.is_empty() { 2 } else { 7 },
        i,
        ints,
        ..Default::default()
    });
    mpq::onnx::import_proto(&m, &Device::Cpu)
}

#[test]
fn conv_attributes_are_validated() {
    lenet_with_conv_attr("group", vec![], 1).unwrap();
    for (name, ints, i, says) in [
        ("group", vec![], 0, "group 0"),
        ("group", vec![], -3, "group -3"),
        ("group", vec![], 4, "group"),
        ("strides", vec![0, 1], 0, "strides"),
        ("dilations", vec![1, 0], 0, "dilations"),
        ("dilations", vec![20, 20], 0, "kernel reaching"),
    ] {
        let err = match lenet_with_conv_attr(name, ints, i) {
            Ok(_) => panic!("{name} accepted"),
            Err(e) => e,
        };
        assert!(err.is_input_error(), "{err}");
        assert!(err.to_string().contains(says), "{name}: {err}");
    }
}
