//! `mpq quantize`: packed export, reload through `mpq eval`, and bad policies.

use super::*;

fn policy_json(dir: &Path, name: &str, layers: serde_json::Value) {
    write_plan(dir, name, "test", layers);
}

#[test]
fn quantize_exports_a_packed_model_that_eval_reproduces() {
    let dir = TempDir::new("quantize");
    train_mlp(dir.path(), "m.safetensors", &[]);
    policy_json(
        dir.path(),
        "p.json",
        serde_json::json!([
            {"name": "fc1", "w_bits": 4, "a_bits": 8, "weight_range": "mse"},
            {"name": "fc2", "w_bits": 2, "a_bits": 4, "quantizer": "asymmetric"},
            {"name": "fc3", "w_bits": 8, "a_bits": 8, "granularity": "per_tensor"}
        ]),
    );
    for (out, extra) in [
        ("q", vec![]),
        ("qat", vec!["--finetune-epochs", "1"]),
        ("lsq", vec!["--finetune-epochs", "1", "--quantizer", "lsq"]),
        ("mse", vec!["--quantizer", "symmetric-mse"]),
    ] {
        let s = quantize_json(dir.path(), ["m.safetensors", "p.json", SYNTH, out], &extra);
        assert_eq!(s["roundtrip_bit_identical"], true, "{s}");
        let files: BTreeSet<String> = std::fs::read_dir(dir.join(out))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let want: BTreeSet<String> = [
            "model.onnx",
            "model.safetensors",
            "plan.json",
            "summary.json",
        ]
        .map(String::from)
        .into();
        assert_eq!(files, want);
        let plan: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(out).join("plan.json")).unwrap())
                .unwrap();
        let ranges: Vec<&str> = plan["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["weight_range"].as_str().unwrap_or("max_abs"))
            .collect();
        match out {
            "mse" => assert_eq!(ranges, ["mse", "mse", "mse"]),
            "q" | "qat" => assert_eq!(ranges, ["mse", "max_abs", "max_abs"]),
            _ => assert_eq!(ranges, ["max_abs", "max_abs", "max_abs"]),
        }
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(out).join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["after_finetune"], s["after_finetune"]);

        let packed = format!("{out}/model.safetensors");
        let e = eval_json(dir.path(), &packed, SYNTH);
        // The packed file alone (no policy, no calibration) gives the simulated numbers.
        assert_eq!(e["accuracy"], s["after_finetune"]["accuracy"], "{e} vs {s}");
        assert_eq!(e["loss"], s["after_finetune"]["loss"], "{e} vs {s}");
        assert_eq!(e["size_bytes"], s["size_bytes"]);
        assert_eq!(e["bops"], s["bops"]);
        let on_disk = std::fs::metadata(dir.join(&packed)).unwrap().len();
        assert_eq!(on_disk, s["export"]["file_bytes"].as_u64().unwrap());
    }
    // A packed model is not quantized twice.
    expect_error(
        &dir,
        &[
            "eval",
            "--model",
            "q/model.safetensors",
            "--data",
            SYNTH,
            "--policy",
            "p.json",
        ],
        2,
        &["already quantized"],
    );
    // A truncated packed file is an input error.
    let bytes = std::fs::read(dir.join("q/model.safetensors")).unwrap();
    std::fs::write(dir.join("cut.safetensors"), &bytes[..bytes.len() - 40]).unwrap();
    expect_error(
        &dir,
        &["eval", "--model", "cut.safetensors", "--data", SYNTH],
        2,
        &["cut.safetensors"],
    );
}

#[test]
fn quantize_rejects_bad_policies_naming_the_layer() {
    let dir = TempDir::new("quantize-bad");
    train_mlp(dir.path(), "m.safetensors", &[]);
    let cases = [
        (
            "unknown.json",
            serde_json::json!([{"name": "conv9", "w_bits": 4, "a_bits": 8}]),
            "conv9",
        ),
        (
            "bits.json",
            serde_json::json!([{"name": "fc2", "w_bits": 9, "a_bits": 8}]),
            "fc2",
        ),
        (
            "abits.json",
            serde_json::json!([{"name": "fc1", "w_bits": 4, "a_bits": 1}]),
            "fc1",
        ),
        (
            "range.json",
            serde_json::json!([{"name": "fc2", "w_bits": 4, "a_bits": 8, "quantizer": "asymmetric", "weight_range": "mse"}]),
            "fc2",
        ),
        (
            "channels.json",
            serde_json::json!([{"name": "fc1", "w_bits": 4, "a_bits": 8, "channel_w_bits": [4, 4, 2]}]),
            "fc1",
        ),
    ];
    for (name, layers, _) in &cases {
        policy_json(dir.path(), name, layers.clone());
    }
    for (name, _, fragment) in cases {
        expect_error(
            &dir,
            &[
                "quantize",
                "--model",
                "m.safetensors",
                "--policy",
                name,
                "--data",
                SYNTH,
                "--out",
                "out",
            ],
            2,
            &[fragment],
        );
    }
}
