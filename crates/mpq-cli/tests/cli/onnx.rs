//! `--model x.onnx` end to end: `info` names layers after the ONNX graph, a PyTorch-exported
//! LeNet-5 goes through `analyze` → `search` → `quantize` (with QAT fine-tuning, so it
//! trains) and `quantize` writes `DIR/model.onnx`; unsupported operators, truncated and
//! foreign files fail with exit code 2 and leave nothing behind.

use std::path::PathBuf;

use super::{TempDir, eval_json, expect_error, expect_json, expect_ok, quantize_json};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../mpq/tests/fixtures/onnx")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn info_lists_onnx_layer_names() {
    let dir = TempDir::new("onnx-info");
    let model = fixture("resnet8.onnx");
    let table = expect_ok(dir.path(), &["info", "--model", &model]);
    for name in ["conv1", "layer2.0.downsample.0", "layer3.0.conv2", "fc"] {
        assert!(table.contains(name), "{name} missing:\n{table}");
    }
    let v = expect_json(dir.path(), &["info", "--model", &model, "--json"]);
    assert_eq!(v["quantizable_layers"], 10, "{v}");
    assert_eq!(v["input_shape"], serde_json::json!([1, 28, 28]), "{v}");
}

#[test]
fn onnx_lenet_analyze_search_quantize() {
    let dir = TempDir::new("onnx-pipeline");
    let model = fixture("lenet5.onnx");
    let fp = eval_json(dir.path(), &model, "mnist10k");
    assert!(fp["accuracy"].as_f64().unwrap() > 0.9, "{fp}");
    expect_ok(
        dir.path(),
        &[
            "--quiet",
            "analyze",
            "--model",
            &model,
            "--data",
            "mnist10k",
            "--metric",
            "trace",
            "--batches",
            "1",
            "--batch-size",
            "64",
            "--max-iter",
            "4",
            "--out",
            "s.json",
        ],
    );
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("s.json")).unwrap()).unwrap();
    assert_eq!(s["layers"][0]["name"], "conv1", "{s}");
    expect_ok(
        dir.path(),
        &[
            "--quiet",
            "search",
            "--model",
            &model,
            "--sensitivity",
            "s.json",
            "--method",
            "pareto",
            "--w-bits",
            "4,8",
            "--a-bits",
            "8",
            "--avg-bits",
            "6",
            "--out",
            "p.json",
        ],
    );
    let files = [model.as_str(), "p.json", "mnist10k", "q"];
    let q = quantize_json(dir.path(), files, &["--finetune-epochs", "1"]);
    assert_eq!(q["roundtrip_bit_identical"], true, "{q}");
    assert!(
        q["after_finetune"]["accuracy"].as_f64().unwrap() > 0.9,
        "{q}"
    );
    let onnx = std::fs::read(dir.join("q/model.onnx")).unwrap();
    assert!(onnx.len() > 1000);
    assert!(
        onnx.windows(14).any(|w| w == b"QuantizeLinear"),
        "QDQ nodes in the export"
    );
    // The packed model of an imported graph loads on its own and evaluates the same.
    let e = eval_json(dir.path(), "q/model.safetensors", "mnist10k");
    assert_eq!(e["accuracy"], q["reloaded"]["accuracy"], "{e} vs {q}");
}

#[test]
fn unsupported_operators_exit_2_listing_every_node() {
    let dir = TempDir::new("onnx-unsupported");
    let model = fixture("unsupported.onnx");
    expect_error(
        &dir,
        &["info", "--model", &model],
        2,
        &[
            "unsupported ONNX operators (3)",
            "Erf (node /act/Erf)",
            "NonZero (node /weird/NonZero)",
            "TopK (node /head/TopK)",
        ],
    );
}

#[test]
fn truncated_or_foreign_onnx_exits_2() {
    let dir = TempDir::new("onnx-corrupt");
    let bytes = std::fs::read(fixture("lenet5.onnx")).unwrap();
    std::fs::write(dir.join("cut.onnx"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(dir.join("notes.onnx"), b"hello, this is text\n").unwrap();
    for f in ["cut.onnx", "notes.onnx"] {
        expect_error(
            &dir,
            &["info", "--model", f],
            2,
            &[f, "not a valid ONNX model"],
        );
    }
    expect_error(
        &dir,
        &[
            "quantize", "--model", "cut.onnx", "--policy", "p.json", "--data", "mnist10k", "--out",
            "q",
        ],
        2,
        &["cut.onnx"],
    );
}

#[test]
fn train_continues_an_onnx_model() {
    let dir = TempDir::new("onnx-train");
    let model = fixture("lenet5.onnx");
    let acc = |m: &str| {
        eval_json(dir.path(), m, "mnist10k")["accuracy"]
            .as_f64()
            .unwrap()
    };
    let before = acc(&model);
    let run = expect_json(
        dir.path(),
        &[
            "--quiet",
            "train",
            "--model",
            &model,
            "--data",
            "mnist10k",
            "--epochs",
            "1",
            "--out",
            "tuned.safetensors",
            "--json",
        ],
    );
    // The fixture was trained one epoch by PyTorch; one more epoch improves it, and the saved
    // model (an imported graph, reloaded without its ONNX file) evaluates as training said.
    let after = acc("tuned.safetensors");
    assert!(after > before, "{before} -> {after}");
    assert!(
        (run["accuracy"].as_f64().unwrap() - after).abs() < 1e-9,
        "{run}"
    );
    assert_eq!(run["epochs"], 1, "{run}");
    expect_error(
        &dir,
        &[
            "train",
            "--model",
            &model,
            "--data",
            "synthetic:3x32x32:10:64",
            "--out",
            "x.safetensors",
        ],
        2,
        &["shape mismatch"],
    );
    assert!(!dir.join("x.safetensors").exists());
    expect_error(
        &dir,
        &[
            "train",
            "--model",
            &model,
            "--arch",
            "lenet5",
            "--data",
            "mnist10k",
            "--out",
            "x.safetensors",
        ],
        2,
        &["--arch"],
    );
}
