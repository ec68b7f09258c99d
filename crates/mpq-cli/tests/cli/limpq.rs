//! LIMPQ end to end: `mpq analyze --metric limpq` (joint indicator training), `mpq search
//! --method limpq` from the saved indicators, `mpq quantize --finetune-epochs` of the plan,
//! and the input errors.

use super::*;

fn analyze(dir: &Path, out: &str, seed: &str) -> serde_json::Value {
    analyze_with(dir, &["--model", "m.safetensors"], out, seed, &[])
}

/// `mpq analyze --metric limpq` on `model` (its `--model` flags) with `extra` flags.
fn analyze_with(
    dir: &Path,
    model: &[&str],
    out: &str,
    seed: &str,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = vec!["analyze"];
    args.extend_from_slice(model);
    args.extend_from_slice(&[
        "--data",
        SYNTH,
        "--metric",
        "limpq",
        "--epochs",
        "1",
        "--limpq-bits",
        "4,3,2",
        "--batch-size",
        "32",
        "--seed",
        seed,
        "--out",
        out,
        "--json",
        "--quiet",
    ]);
    args.extend_from_slice(extra);
    let stdout = expect_ok(dir, &args);
    parse_json(&stdout, "mpq analyze --metric limpq --json")
}

fn indicators(t: &serde_json::Value) -> Vec<serde_json::Value> {
    t["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["limpq"].clone())
        .collect()
}

#[test]
fn limpq_indicators_search_and_finetune_end_to_end() {
    let dir = TempDir::new("limpq");
    train_mlp(dir.path(), "m.safetensors", &[]);
    let t = analyze(dir.path(), "s.json", "3");
    assert_eq!(t["metric"], "limpq");
    let rows = indicators(&t);
    assert!(
        rows[0].is_null() && rows[2].is_null(),
        "first and last not searched"
    );
    let fc2 = &rows[1];
    for k in ["2", "3", "4"] {
        assert!(fc2["weight"][k].as_f64().unwrap() > 0.0, "{fc2}");
        assert!(fc2["act"][k].as_f64().unwrap() > 0.0, "{fc2}");
    }
    let r = &t["limpq"];
    // The model was trained without label smoothing, so the indicators are too.
    assert_eq!(r["config"]["label_smoothing"], 0.0, "{r}");
    // 64 samples in batches of 32: 2 joint steps of |B| + 1 = 4 passes.
    assert_eq!(r["steps"], 2);
    assert_eq!(r["passes"], 8);
    assert_eq!(r["searched"], serde_json::json!(["fc2"]));
    // Same seed, same indicators; another seed, others.
    assert_eq!(indicators(&analyze(dir.path(), "s2.json", "3")), rows);
    assert_ne!(indicators(&analyze(dir.path(), "s3.json", "4")), rows);

    // The plan comes from the saved JSON alone, the same every time.
    let search = |out: &str| {
        let extra = [
            "--sensitivity",
            "s.json",
            "--bops-as",
            "3/4",
            "--pin-first-last",
            "8",
            "--json",
            "--quiet",
        ];
        expect_json(dir.path(), &search_args("limpq", out, &extra))
    };
    let (p1, p2) = (search("p.json"), search("p2.json"));
    assert_eq!(p1["layers"], p2["layers"]);
    assert_eq!(p1["method"], "limpq");
    let layers = p1["layers"].as_array().unwrap();
    for (l, name) in layers.iter().zip(["fc1", "fc2", "fc3"]) {
        assert_eq!(l["name"], name);
        assert_eq!(l["quantizer"], "lsq");
        assert_eq!(l["granularity"], "per_tensor");
    }
    assert_eq!(
        (&layers[0]["w_bits"], &layers[0]["a_bits"]),
        (&8.into(), &8.into())
    );
    assert_eq!(
        (&layers[2]["w_bits"], &layers[2]["a_bits"]),
        (&8.into(), &8.into())
    );
    let (w, a) = (
        layers[1]["w_bits"].as_u64().unwrap(),
        layers[1]["a_bits"].as_u64().unwrap(),
    );
    assert!(w * a <= 12, "fc2 at W{w}A{a} breaks the W3A4 BitOps budget");
    assert!(p1["limpq"]["alpha"].as_f64() == Some(2.0));

    let files = ["m.safetensors", "p.json", SYNTH, "q"];
    let s = quantize_json(dir.path(), files, &["--finetune-epochs", "1"]);
    assert_eq!(s["finetune_epochs"], 1);
    assert_eq!(s["roundtrip_bit_identical"], true);
}

#[test]
fn limpq_input_errors_exit_2() {
    let dir = TempDir::new("limpq-err");
    train_mlp(dir.path(), "m.safetensors", &[]);
    let base = search_args("limpq", "p.json", &[]);
    expect_error(&dir, &base, 2, &["--sensitivity", "--metric limpq"]);
    std::fs::write(
        dir.join("trace.json"),
        r#"{"layers": [{"name": "fc2", "trace": 1.0}]}"#,
    )
    .unwrap();
    let mut args = base.to_vec();
    args.extend(["--sensitivity", "trace.json"]);
    expect_error(&dir, &args, 2, &["no layer has LIMPQ indicators"]);
    std::fs::write(
        dir.join("s.json"),
        r#"{"layers": [{"name": "fc2", "limpq": {"weight": {"2": 0.2, "4": 0.1},
            "act": {"2": 0.5, "4": 0.3}}}]}"#,
    )
    .unwrap();
    let mut args = base.to_vec();
    args.extend(["--sensitivity", "s.json", "--w-bits", "2,8"]);
    expect_error(&dir, &args, 2, &["no weight indicator for 8 bits"]);
    let mut args = base.to_vec();
    args.extend(["--sensitivity", "s.json", "--bops-as", "2/1"]);
    expect_error(&dir, &args, 2, &["bops-as"]);
    expect_error(
        &dir,
        &[
            "analyze",
            "--model",
            "m.safetensors",
            "--data",
            SYNTH,
            "--metric",
            "limpq",
            "--limpq-bits",
            "4,9",
            "--out",
            "s9.json",
        ],
        2,
        &["9 is outside 2..8"],
    );
}

#[test]
fn indicator_training_defaults_to_the_models_own_label_smoothing() {
    let dir = TempDir::new("limpq-ls");
    train_mlp(dir.path(), "m.safetensors", &["--label-smoothing", "0.2"]);
    let ls = |t: &serde_json::Value| t["limpq"]["config"]["label_smoothing"].as_f64().unwrap();
    assert_eq!(ls(&analyze(dir.path(), "a.json", "0")), 0.2);
    let mine = ["--model", "m.safetensors"];
    let t = analyze_with(
        dir.path(),
        &mine,
        "b.json",
        "0",
        &["--label-smoothing", "0.1"],
    );
    assert_eq!(ls(&t), 0.1);
    // A model without a training record (a fresh zoo model) gets the paper's 0.1.
    let zoo = ["--model", "zoo:mlp", "--input", "1x8x8", "--classes", "3"];
    assert_eq!(ls(&analyze_with(dir.path(), &zoo, "c.json", "0", &[])), 0.1);
}
