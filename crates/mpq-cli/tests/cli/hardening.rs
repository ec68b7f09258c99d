//! What a hostile but realistic user does to mpq: outputs aimed at inputs (through links
//! too), reruns into an existing output folder. Every case exits 2 with one line and leaves
//! the inputs byte for byte, or replaces the output set as one.

use super::*;

/// The MLP, a policy and a sensitivity table in `dir`.
fn setup(dir: &Path) {
    train_mlp(dir, "m.safetensors", &[]);
    let metric = ["--max-iter", "4", "--quiet"];
    expect_ok(dir, &analyze_args("m.safetensors", "s.json", &metric));
    let budget = ["--sensitivity", "s.json", "--avg-bits", "4", "--quiet"];
    expect_ok(dir, &search_args("ilp", "p.json", &budget));
}

#[test]
fn an_output_aimed_at_an_input_is_refused_and_the_input_kept() {
    let dir = TempDir::new("overwrite");
    setup(dir.path());
    std::os::unix::fs::symlink("m.safetensors", dir.join("link.safetensors")).unwrap();
    std::fs::create_dir(dir.join("D")).unwrap();
    std::fs::hard_link(dir.join("m.safetensors"), dir.join("D/model.safetensors")).unwrap();
    let model = std::fs::read(dir.join("m.safetensors")).unwrap();
    let sens = std::fs::read(dir.join("s.json")).unwrap();
    let policy = std::fs::read(dir.join("p.json")).unwrap();
    let ilp = ["--sensitivity", "s.json", "--avg-bits", "4"];
    let cases: Vec<Vec<&str>> = vec![
        analyze_args("m.safetensors", "m.safetensors", &[]),
        analyze_args("m.safetensors", "x.json", &["--svg", "m.safetensors"]),
        search_args("ilp", "m.safetensors", &ilp),
        search_args("ilp", "s.json", &ilp),
        search_args("ilp", "./link.safetensors", &ilp),
        vec![
            "hw",
            "--model",
            "m.safetensors",
            "--hardware",
            "bitfusion",
            "--export-csv",
            "m.safetensors",
        ],
        vec![
            "quantize",
            "--model",
            "D/model.safetensors",
            "--policy",
            "p.json",
            "--data",
            SYNTH,
            "--out",
            "D",
        ],
        vec![
            "quantize",
            "--model",
            "m.safetensors",
            "--policy",
            "p.json",
            "--data",
            SYNTH,
            "--out",
            "m.safetensors",
        ],
        vec![
            "train",
            "--model",
            "m.safetensors",
            "--data",
            SYNTH,
            "--epochs",
            "1",
            "--out",
            "link.safetensors",
        ],
    ];
    for args in cases {
        expect_error(&dir, &args, 2, &["never writes over its inputs"]);
    }
    assert_eq!(std::fs::read(dir.join("m.safetensors")).unwrap(), model);
    assert_eq!(std::fs::read(dir.join("s.json")).unwrap(), sens);
    assert_eq!(std::fs::read(dir.join("p.json")).unwrap(), policy);
}

#[test]
fn a_rerun_into_an_output_folder_replaces_its_files_as_one_set() {
    let dir = TempDir::new("rerunq");
    setup(dir.path());
    let uniform = ["--avg-bits", "8", "--quiet"];
    expect_ok(dir.path(), &search_args("uniform", "u.json", &uniform));
    let first = quantize_json(dir.path(), ["m.safetensors", "p.json", SYNTH, "q"], &[]);
    std::fs::write(dir.join("q/notes.txt"), "mine").unwrap();
    let second = quantize_json(dir.path(), ["m.safetensors", "u.json", SYNTH, "q"], &[]);
    assert_ne!(first["size_bytes"], second["size_bytes"]);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("q/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["size_bytes"], second["size_bytes"]);
    assert_eq!(summary["model_path"], "q/model.safetensors");
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("q/plan.json")).unwrap()).unwrap();
    assert_eq!(plan["method"], "uniform");
    let e = eval_json(dir.path(), "q/model.safetensors", SYNTH);
    assert_eq!(e["size_bytes"], second["size_bytes"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("q/notes.txt")).unwrap(),
        "mine"
    );
    // No staging folder is left beside it.
    let hidden: Vec<String> = dir
        .listing()
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[test]
fn a_model_with_nan_weights_is_refused_by_every_stage_naming_the_layer() {
    let dir = TempDir::new("nan");
    setup(dir.path());
    let bytes = std::fs::read(dir.join("m.safetensors")).unwrap();
    let (header, _) = split_safetensors(&bytes);
    let weight = header
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.ends_with(".weight"))
        .unwrap()
        .clone();
    let layer = weight.trim_end_matches(".weight").to_string();
    poison(
        &dir.join("m.safetensors"),
        &dir.join("nan.safetensors"),
        &weight,
        1000,
    );
    let model = ["--model", "nan.safetensors"];
    let data = ["--data", SYNTH];
    let cases: Vec<Vec<&str>> = vec![
        [&["eval"][..], &model, &data].concat(),
        [&["eval"][..], &model, &data, &["--policy", "p.json"]].concat(),
        [
            &["train"][..],
            &model,
            &data,
            &["--epochs", "1", "--out", "t.safetensors"],
        ]
        .concat(),
        [
            &[
                "search",
                "--method",
                "haq",
                "--avg-bits",
                "4",
                "--out",
                "h.json",
            ][..],
            &model,
            &AGENT_FAST[..AGENT_FAST.len() - 2],
            &["--episodes", "2"],
        ]
        .concat(),
        [
            &["analyze", "--metric", "limpq", "--out", "l.json"][..],
            &model,
            &data,
        ]
        .concat(),
        [&["analyze", "--out", "s2.json"][..], &model, &data].concat(),
        [
            &["quantize", "--policy", "p.json", "--out", "q"][..],
            &model,
            &data,
        ]
        .concat(),
    ];
    let layer_named = format!("layer {layer}");
    for args in cases {
        expect_error(&dir, &args, 2, &["NaN", &weight, &layer_named]);
    }
}

#[test]
fn training_that_diverges_stops_with_the_epoch_and_writes_nothing() {
    let dir = TempDir::new("diverge");
    let args = with(
        &train_args("mlp", SYNTH, "2", "t.safetensors"),
        &["--lr", "1e12", "--quiet"],
    );
    expect_error(&dir, &args, 2, &["of training", "--lr"]);
}

#[test]
fn output_cut_by_the_reader_ends_quietly_with_exit_0() {
    use std::process::Stdio;
    let dir = TempDir::new("pipe");
    for args in [
        &["info", "--model", "zoo:resnet20", "--json"][..],
        &["info", "--model", "zoo:resnet20"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mpq"))
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before mpq writes a byte.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "mpq {args:?}: {stderr}");
        assert!(stderr.is_empty(), "mpq {args:?}: {stderr}");
    }
}

#[test]
fn a_sensitivity_that_overflows_omega_is_named_not_reported_infeasible() {
    let dir = TempDir::new("overflow");
    setup(dir.path());
    let mut s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("s.json")).unwrap()).unwrap();
    for row in s["layers"].as_array_mut().unwrap() {
        for key in ["trace", "trace_per_param", "top_eigenvalue"] {
            if row.get(key).is_some_and(|v| !v.is_null()) {
                row[key] = serde_json::json!(1e308);
            }
        }
    }
    std::fs::write(dir.join("big.json"), s.to_string()).unwrap();
    for method in ["ilp", "pareto"] {
        let args = search_args(
            method,
            "p2.json",
            &["--sensitivity", "big.json", "--avg-bits", "4", "--quiet"],
        );
        let err = expect_error(&dir, &args, 2, &["overflow", "sensitivity"]);
        assert!(!err.contains("smallest achievable value is see"), "{err}");
    }
}

#[test]
fn a_policy_must_name_every_layer_or_give_a_default() {
    let dir = TempDir::new("partial");
    setup(dir.path());
    let one = serde_json::json!([{"name": "fc1", "w_bits": 4, "a_bits": 8}]);
    write_plan(dir.path(), "part.json", "hand", one.clone());
    let eval = |policy: &'static str| {
        vec![
            "eval",
            "--model",
            "m.safetensors",
            "--data",
            SYNTH,
            "--policy",
            policy,
        ]
    };
    expect_error(
        &dir,
        &eval("part.json"),
        2,
        &["does not name 2", "fc2, fc3", "default"],
    );
    let quantize = [
        "quantize",
        "--model",
        "m.safetensors",
        "--policy",
        "part.json",
    ];
    expect_error(
        &dir,
        &with(&quantize, &["--data", SYNTH, "--out", "q"]),
        2,
        &["fc2, fc3"],
    );
    let plan = serde_json::json!({"method": "hand", "layers": one,
                                  "default": {"w_bits": 32, "a_bits": 32}});
    std::fs::write(dir.join("dflt.json"), plan.to_string()).unwrap();
    let e = expect_json(dir.path(), &with(&eval("dflt.json"), &["--json"]));
    let fp = expect_json(
        dir.path(),
        &[
            "eval",
            "--model",
            "m.safetensors",
            "--data",
            SYNTH,
            "--json",
        ],
    );
    assert!(
        e["size_bytes"].as_f64().unwrap() < fp["size_bytes"].as_f64().unwrap(),
        "{e}"
    );
}

#[test]
fn more_threads_than_cpus_are_capped_with_a_note_and_zero_is_refused() {
    let dir = TempDir::new("threads");
    let start = std::time::Instant::now();
    let out = mpq_in(
        dir.path(),
        &["info", "--model", "zoo:lenet5", "--threads", "100000"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("note: --threads 100000"),
        "{}",
        text(&out.stderr)
    );
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
    expect_error(
        &dir,
        &["info", "--model", "zoo:lenet5", "--threads", "0"],
        2,
        &["threads"],
    );
    expect_error(
        &dir,
        &["info", "--model", "zoo:lenet5", "--memory-limit", "lots"],
        2,
        &["memory-limit"],
    );
}
