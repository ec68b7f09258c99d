//! The model zoo: layer tables against the published parameter and MAC counts, forward passes
//! of every architecture, torchvision `state_dict` names, strict loading of PyTorch-style
//! safetensors files, and model save/load round trips.

use std::collections::HashMap;
use std::path::Path;

use candle::{DType, Device, Tensor};
use mpq::model::{Model, ModelHint};
use mpq::zoo::{self, ZooConfig};
use mpq::{Error, graph::Mode};

use crate::util::{as_f32, temp_dir, tensor, to_f64, uniform};

fn totals(arch: &str, shape: [usize; 3], classes: usize) -> (usize, usize, u64) {
    let model = zoo::build(arch, &ZooConfig::new(shape, classes), 0).unwrap();
    let infos = model.graph.layer_infos().unwrap();
    let macs = infos.iter().map(|l| l.macs).sum();
    (infos.len(), model.num_params(), macs)
}

#[test]
fn resnet20_has_22_layers_272474_params_and_40_8m_macs() {
    assert_eq!(
        totals("resnet20", [3, 32, 32], 10),
        (22, 272_474, 40_813_184)
    );
}

#[test]
fn resnet18_has_21_layers_11_7m_params_and_1_8g_macs() {
    assert_eq!(
        totals("resnet18", [3, 224, 224], 1000),
        (21, 11_689_512, 1_814_073_344)
    );
}

#[test]
fn mobilenetv2_has_53_layers_3_5m_params_and_300m_macs() {
    assert_eq!(
        totals("mobilenetv2", [3, 224, 224], 1000),
        (53, 3_504_872, 300_774_272)
    );
}

#[test]
fn lenet5_layers_are_conv1_conv2_fc1_fc2_fc3() {
    let model = zoo::build("lenet5", &ZooConfig::new([1, 28, 28], 10), 0).unwrap();
    let infos = model.graph.layer_infos().unwrap();
    let names: Vec<&str> = infos.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["conv1", "conv2", "fc1", "fc2", "fc3"]);
    assert_eq!(model.graph.quantizable_layers(), names);
    assert_eq!(infos[2].weight_shape, [120, 256]);
    assert_eq!(infos[4].output_shape, [10]);
}

fn small_config(arch: &str) -> ZooConfig {
    match arch {
        "mlp" | "lenet5" => ZooConfig::new([1, 28, 28], 10),
        "resnet18" | "mobilenetv2" => ZooConfig::new([3, 32, 32], 7),
        _ => ZooConfig::new([3, 32, 32], 10),
    }
}

#[test]
fn every_zoo_arch_runs_forward_in_eval_mode_to_finite_logits() {
    for &arch in zoo::ARCHS {
        let cfg = small_config(arch);
        let model = zoo::build(arch, &cfg, 0).unwrap();
        let n = 2;
        let mut shape = vec![n];
        shape.extend(&cfg.input_shape);
        let len: usize = shape.iter().product();
        let x = tensor(&uniform(len, -1.0, 1.0, 5), &shape);
        let logits = model.graph.forward(&x, Mode::Eval).unwrap();
        assert_eq!(logits.dims(), &[n, cfg.classes], "{arch}");
        let v = to_f64(&logits);
        assert!(v.iter().all(|x| x.is_finite()), "{arch}: {v:?}");
        assert!(v.iter().any(|&x| x != 0.0), "{arch}: all-zero logits");
    }
}

#[test]
fn resnet18_runs_forward_at_64x64() {
    let model = zoo::build("resnet18", &ZooConfig::new([3, 64, 64], 1000), 0).unwrap();
    let x = tensor(&uniform(3 * 64 * 64, -1.0, 1.0, 6), &[1, 3, 64, 64]);
    let logits = model.graph.forward(&x, Mode::Eval).unwrap();
    assert_eq!(logits.dims(), &[1, 1000]);
    assert!(to_f64(&logits).iter().all(|x| x.is_finite()));
}

#[test]
fn unknown_arch_is_an_input_error() {
    let err = zoo::build("resnet19", &ZooConfig::new([3, 32, 32], 10), 0).unwrap_err();
    assert!(matches!(err, Error::UnknownArch { .. }), "{err:?}");
    assert!(err.is_input_error());
}

#[test]
fn lenet5_on_a_too_small_input_fails_naming_the_layer() {
    let err = zoo::build("lenet5", &ZooConfig::new([1, 8, 8], 10), 0).unwrap_err();
    match &err {
        Error::ShapeMismatch { name, .. } => assert!(name.contains("conv2"), "{name}"),
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    assert!(err.is_input_error());
}

#[test]
fn forward_with_a_wrong_input_shape_fails_cleanly() {
    let model = zoo::build("lenet5", &ZooConfig::new([1, 28, 28], 10), 0).unwrap();
    for shape in [vec![2, 1, 32, 32], vec![2, 3, 28, 28], vec![1, 28, 28]] {
        let x = Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu).unwrap();
        match model.graph.forward(&x, Mode::Eval) {
            Err(Error::ShapeMismatch { name, .. }) => assert!(name.contains("input"), "{name}"),
            other => panic!("{shape:?}: expected ShapeMismatch, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- torchvision names

fn shapes(model: &Model) -> HashMap<String, Vec<usize>> {
    model
        .graph
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.var.dims().to_vec()))
        .collect()
}

/// Builds `arch` for 224x224 ImageNet and checks that its parameters include `expected`
/// (name and shape); returns the model.
fn assert_keys(arch: &str, expected: &[(&str, &[usize])]) -> Model {
    let model = zoo::build(arch, &ZooConfig::new([3, 224, 224], 1000), 0).unwrap();
    let shapes = shapes(&model);
    for (name, shape) in expected {
        let got = shapes
            .get(*name)
            .unwrap_or_else(|| panic!("missing state_dict key {name}"));
        assert_eq!(got.as_slice(), *shape, "{name}");
    }
    model
}

#[test]
fn resnet18_parameter_names_match_torchvision_state_dict() {
    let model = assert_keys(
        "resnet18",
        &[
            ("conv1.weight", &[64, 3, 7, 7]),
            ("bn1.weight", &[64]),
            ("bn1.bias", &[64]),
            ("bn1.running_mean", &[64]),
            ("bn1.running_var", &[64]),
            ("bn1.num_batches_tracked", &[]),
            ("layer1.0.conv1.weight", &[64, 64, 3, 3]),
            ("layer1.1.bn2.running_var", &[64]),
            ("layer2.0.conv1.weight", &[128, 64, 3, 3]),
            ("layer2.0.downsample.0.weight", &[128, 64, 1, 1]),
            ("layer2.0.downsample.1.running_mean", &[128]),
            ("layer2.0.downsample.1.num_batches_tracked", &[]),
            ("layer4.1.conv2.weight", &[512, 512, 3, 3]),
            ("fc.weight", &[1000, 512]),
            ("fc.bias", &[1000]),
        ],
    );
    // torchvision's resnet18().state_dict() has 122 entries; layer1 has no downsample.
    assert_eq!(model.graph.params().len(), 122);
    assert!(
        model
            .graph
            .params()
            .get("layer1.0.downsample.0.weight")
            .is_none()
    );
    assert!(model.graph.params().get("conv1.bias").is_none());
}

#[test]
fn mobilenetv2_parameter_names_match_torchvision_state_dict() {
    let model = assert_keys(
        "mobilenetv2",
        &[
            ("features.0.0.weight", &[32, 3, 3, 3]),
            ("features.0.1.weight", &[32]),
            ("features.1.conv.0.0.weight", &[32, 1, 3, 3]),
            ("features.1.conv.0.1.running_mean", &[32]),
            ("features.1.conv.1.weight", &[16, 32, 1, 1]),
            ("features.1.conv.2.running_var", &[16]),
            ("features.2.conv.0.0.weight", &[96, 16, 1, 1]),
            ("features.2.conv.1.0.weight", &[96, 1, 3, 3]),
            ("features.2.conv.2.weight", &[24, 96, 1, 1]),
            ("features.2.conv.3.num_batches_tracked", &[]),
            ("features.17.conv.2.weight", &[320, 960, 1, 1]),
            ("features.18.0.weight", &[1280, 320, 1, 1]),
            ("features.18.1.running_var", &[1280]),
            ("classifier.1.weight", &[1000, 1280]),
            ("classifier.1.bias", &[1000]),
        ],
    );
    // torchvision's mobilenet_v2().state_dict() has 314 entries.
    assert_eq!(model.graph.params().len(), 314);
}

// ---------------------------------------------------------------- PyTorch-style checkpoints

/// The model's tensors under their own (torchvision) names, with running statistics and batch
/// counters set to non-default values so a round trip is visible.
fn state_dict(model: &Model) -> HashMap<String, Tensor> {
    model
        .graph
        .params()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let t = p.var.as_tensor();
            let t = if p.name.ends_with("num_batches_tracked") {
                Tensor::new(17i64 + i as i64, &Device::Cpu).unwrap()
            } else if p.name.ends_with("running_mean") || p.name.ends_with("running_var") {
                let n = t.elem_count();
                tensor(&as_f32(&uniform(n, 0.1, 2.0, i as u64)), t.dims())
            } else {
                t.copy().unwrap()
            };
            (p.name.clone(), t)
        })
        .collect()
}

fn hint(arch: &str, shape: [usize; 3]) -> ModelHint {
    ModelHint {
        arch: Some(arch.into()),
        input_shape: Some(shape.to_vec()),
        classes: Some(1000),
        ..Default::default()
    }
}

fn save(tensors: &HashMap<String, Tensor>, path: &Path) {
    candle::safetensors::save(tensors, path).unwrap();
}

/// The error of loading `path` with `hint` on the CPU (the load must fail).
fn load_err(path: &Path, hint: &ModelHint) -> Error {
    Model::load(path, hint, &Device::Cpu).expect_err("the load should fail")
}

fn check_pytorch_checkpoint(arch: &str, shape: [usize; 3], victim: &str) {
    let dir = temp_dir(arch);
    // Weights from seed 7; the loader builds from seed 0, so matching values come from the file.
    let source = zoo::build(arch, &ZooConfig::new(shape, 1000), 7).unwrap();
    let sd = state_dict(&source);
    let hint = hint(arch, shape);

    let good = dir.join("good.safetensors");
    save(&sd, &good);
    let loaded = Model::load(&good, &hint, &Device::Cpu).unwrap();
    assert_eq!(loaded.meta.arch, arch);
    assert_eq!(loaded.graph.params().len(), sd.len());
    for p in loaded.graph.params().iter() {
        let want = &sd[&p.name];
        assert_eq!(p.var.dtype(), want.dtype(), "{}", p.name);
        assert_eq!(to_f64(p.var.as_tensor()), to_f64(want), "{}", p.name);
    }

    // The batch counters are optional, as in PyTorch's load_state_dict of old checkpoints.
    let mut no_counters = sd.clone();
    no_counters.retain(|k, _| !k.ends_with("num_batches_tracked"));
    let path = dir.join("no_counters.safetensors");
    save(&no_counters, &path);
    Model::load(&path, &hint, &Device::Cpu).unwrap();

    let mut missing = sd.clone();
    missing.remove(victim).unwrap();
    let path = dir.join("missing.safetensors");
    save(&missing, &path);
    let e = load_err(&path, &hint);
    assert!(
        matches!(&e, Error::MissingTensor { name, .. } if name == victim),
        "{e:?}"
    );
    assert!(e.is_input_error());

    let mut extra = sd.clone();
    extra.insert(
        "head.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let path = dir.join("extra.safetensors");
    save(&extra, &path);
    let e = load_err(&path, &hint);
    assert!(
        matches!(&e, Error::UnexpectedTensor { name, .. } if name == "head.weight"),
        "{e:?}"
    );

    let mut misshaped = sd.clone();
    let dims = sd[victim].dims().to_vec();
    let mut wrong = dims.clone();
    wrong[0] += 1;
    misshaped.insert(
        victim.into(),
        Tensor::zeros(wrong.as_slice(), DType::F32, &Device::Cpu).unwrap(),
    );
    let path = dir.join("misshaped.safetensors");
    save(&misshaped, &path);
    let e = load_err(&path, &hint);
    assert!(
        matches!(&e, Error::ShapeMismatch { name, .. } if name.contains(victim)),
        "{e:?}"
    );

    // Without --arch a file lacking mpq metadata cannot be interpreted.
    let e = load_err(&good, &ModelHint::default());
    assert!(
        matches!(e, Error::InvalidConfig { .. }) && e.is_input_error(),
        "{e:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resnet18_loads_torchvision_named_safetensors_strictly() {
    check_pytorch_checkpoint("resnet18", [3, 224, 224], "layer2.0.downsample.0.weight");
}

#[test]
fn mobilenetv2_loads_torchvision_named_safetensors_strictly() {
    check_pytorch_checkpoint("mobilenetv2", [3, 32, 32], "features.2.conv.1.0.weight");
}

#[test]
fn truncated_safetensors_file_is_a_corrupt_file_error() {
    let dir = temp_dir("truncated");
    let model = zoo::build("lenet5", &ZooConfig::new([1, 28, 28], 10), 0).unwrap();
    let path = dir.join("model.safetensors");
    model.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for keep in [bytes.len() / 2, bytes.len() - 1, 20, 4] {
        let cut = dir.join(format!("cut{keep}.safetensors"));
        std::fs::write(&cut, &bytes[..keep]).unwrap();
        let e = load_err(&cut, &ModelHint::default());
        let ok = matches!(e, Error::CorruptFile { .. }) && e.is_input_error();
        assert!(ok, "{keep} bytes: {e:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_model_file_is_an_io_input_error() {
    let path = temp_dir("missing").join("does-not-exist.safetensors");
    let err = load_err(&path, &hint("resnet18", [3, 32, 32]));
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.is_input_error());
    assert!(err.to_string().contains("does-not-exist"), "{err}");
}

// ---------------------------------------------------------------- save / load / seeds

#[test]
fn saved_model_loads_back_with_identical_logits() {
    let dir = temp_dir("roundtrip");
    let cfg = ZooConfig::new([3, 16, 16], 5);
    let model = zoo::build("resnet8", &cfg, 3).unwrap();
    let x = tensor(&uniform(2 * 3 * 16 * 16, -1.0, 1.0, 9), &[2, 3, 16, 16]);
    // A train-mode pass moves the running statistics away from their defaults.
    model.graph.forward(&x, Mode::Train).unwrap();
    let path = dir.join("resnet8.safetensors");
    model.save(&path).unwrap();

    let loaded = Model::load(&path, &ModelHint::default(), &Device::Cpu).unwrap();
    assert_eq!(loaded.meta, model.meta);
    let a = to_f64(&model.graph.forward(&x, Mode::Eval).unwrap());
    let b = to_f64(&loaded.graph.forward(&x, Mode::Eval).unwrap());
    assert_eq!(a, b);
    for (p, q) in model
        .graph
        .params()
        .iter()
        .zip(loaded.graph.params().iter())
    {
        assert_eq!(p.name, q.name);
        assert_eq!(
            to_f64(p.var.as_tensor()),
            to_f64(q.var.as_tensor()),
            "{}",
            p.name
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn all_values(model: &Model) -> Vec<f64> {
    model
        .graph
        .params()
        .iter()
        .flat_map(|p| to_f64(p.var.as_tensor()))
        .collect()
}

#[test]
fn same_seed_builds_identical_weights_and_another_seed_differs() {
    for arch in ["lenet5", "resnet8", "mobilenetv2"] {
        let cfg = small_config(arch);
        let a = all_values(&zoo::build(arch, &cfg, 42).unwrap());
        let b = all_values(&zoo::build(arch, &cfg, 42).unwrap());
        let c = all_values(&zoo::build(arch, &cfg, 43).unwrap());
        assert_eq!(a, b, "{arch}");
        assert_ne!(a, c, "{arch}");
    }
}

/// Folding every Conv→BN pair keeps the eval-mode function (running statistics made
/// non-trivial first) and removes every BatchNorm node of ResNet-8 and MobileNetV2.
#[test]
fn batch_norm_folding_preserves_eval_logits() {
    use mpq::graph::{Mode, Op};
    for (arch, shape) in [("resnet8", [3, 16, 16]), ("mobilenetv2", [3, 32, 32])] {
        let model = zoo::build(arch, &ZooConfig::new(shape, 10), 5).unwrap();
        let g = &model.graph;
        let x = candle::Tensor::randn(
            0f32,
            1.0,
            (4, shape[0], shape[1], shape[2]),
            &candle::Device::Cpu,
        )
        .unwrap();
        for _ in 0..3 {
            g.forward(&(&x * 2.0).unwrap(), Mode::Train).unwrap();
        }
        let (folded, pairs) = g.fold_batch_norm().unwrap();
        let bn_count = g
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, Op::BatchNorm2d(_)))
            .count();
        assert_eq!(pairs.len(), bn_count, "{arch}: every BN follows a conv");
        assert!(
            folded
                .nodes()
                .iter()
                .all(|n| !matches!(n.op, Op::BatchNorm2d(_)))
        );
        assert_eq!(folded.quantizable_layers(), g.quantizable_layers());
        let a: Vec<f32> = g
            .forward(&x, Mode::Eval)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = folded
            .forward(&x, Mode::Eval)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() <= 1e-4 * scale, "{arch}: {u} vs {v}");
        }
    }
    let lenet = zoo::build("lenet5", &ZooConfig::new([1, 28, 28], 10), 0).unwrap();
    let (same, pairs) = lenet.graph.fold_batch_norm().unwrap();
    assert!(pairs.is_empty());
    assert_eq!(same.nodes().len(), lenet.graph.nodes().len());
}
