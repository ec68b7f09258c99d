//! `mpq search --method haq` (HAQ, Wang et al., CVPR 2019): budgets hold in every episode,
//! the history and curve are written, the same seed gives the same plan and history, `--resume`
//! continues a saved search exactly, and an unreachable budget exits 2 before any episode.

use super::*;

type Json = serde_json::Value;

/// A small, fast HAQ run on the synthetic MLP: tiny nets, few episodes.
const FAST: &[&str] = &[
    "--method",
    "haq",
    "--data",
    SYNTH,
    "--val-samples",
    "16",
    "--calib-samples",
    "16",
    "--warmup",
    "3",
    "--hidden1",
    "32",
    "--hidden2",
    "32",
    "--json",
    "--quiet",
];

fn haq(dir: &Path, out: &str, extra: &[&str]) -> Json {
    let mut args = vec!["search", "--model", "m.safetensors", "--out", out];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    parse_json(&expect_ok(dir, &args), "mpq search --method haq --json")
}

fn read_json(path: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The W8A8 latency and energy of the MLP on BitFusion.
fn w8a8(dir: &Path) -> (f64, f64) {
    let v = parse_json(
        &expect_ok(
            dir,
            &[
                "hw",
                "--model",
                "m.safetensors",
                "--hardware",
                "bitfusion",
                "--json",
            ],
        ),
        "hw",
    );
    (
        v["latency_ms"].as_f64().unwrap(),
        v["energy_mj"].as_f64().unwrap(),
    )
}

#[test]
fn haq_meets_the_latency_budget_and_writes_history_curve_and_state() {
    let dir = TempDir::new("haqlatency");
    train_mlp(dir.path(), "m.safetensors", &[]);
    let (lat, _) = w8a8(dir.path());
    let budget = format!("{}", lat * 0.5);
    let p = haq(
        dir.path(),
        "p.json",
        &[
            "--hardware",
            "bitfusion",
            "--max-latency-ms",
            &budget,
            "--episodes",
            "8",
        ],
    );
    let limit = lat * 0.5 * (1.0 + 1e-9);
    assert_eq!(p["method"], "haq");
    assert!(p["latency_ms"].as_f64().unwrap() <= limit, "{p}");
    let h = &p["haq"];
    let hist = h["history"].as_array().unwrap();
    assert_eq!(hist.len(), 8);
    assert_eq!(h["episodes"], 8);
    for e in hist {
        assert!(e["latency_ms"].as_f64().unwrap() <= limit, "{e}");
        for key in ["bits", "proposed", "reward", "accuracy", "actions"] {
            assert!(e.get(key).is_some(), "episode lacks {key}: {e}");
        }
    }
    let best = h["best_episode"].as_u64().unwrap() as usize;
    let bits: Vec<Json> = p["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| serde_json::json!([l["w_bits"], l["a_bits"]]))
        .collect();
    assert_eq!(Json::Array(bits), hist[best]["bits"]);
    let file = read_json(&dir.join("p.json"));
    assert_eq!(file["haq"]["history"], h["history"]);
    let svg = std::fs::read_to_string(dir.join("p.curve.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("HAQ learning curve"));
    assert_eq!(
        svg.matches("<circle").count(),
        8 + 2,
        "one dot per episode + legend"
    );
    let state = read_json(&dir.join("p.haq-state.json"));
    assert_eq!(state["episodes"], h["history"]);
}

#[test]
fn same_seed_same_plan_and_history_and_resume_continues_exactly() {
    let dir = TempDir::new("haqseed");
    train_mlp(dir.path(), "m.safetensors", &[]);
    let (lat, _) = w8a8(dir.path());
    let budget = format!("{}", lat * 0.6);
    let args = |n: &'static str| {
        vec![
            "--hardware".to_string(),
            "bitfusion".into(),
            "--max-latency-ms".into(),
            budget.clone(),
            "--episodes".into(),
            n.into(),
        ]
    };
    let a8 = args("8");
    let a8: Vec<&str> = a8.iter().map(String::as_str).collect();
    let first = haq(dir.path(), "a.json", &a8);
    let second = haq(dir.path(), "b.json", &a8);
    assert_eq!(first["layers"], second["layers"]);
    assert_eq!(first["haq"]["history"], second["haq"]["history"]);
    assert_eq!(
        std::fs::read(dir.join("a.haq-state.json")).unwrap(),
        std::fs::read(dir.join("b.haq-state.json")).unwrap(),
        "bit-identical saved state"
    );

    // Five episodes, then three more with --resume: the 8-episode result.
    let a5 = args("5");
    let a5: Vec<&str> = a5.iter().map(String::as_str).collect();
    haq(dir.path(), "r.json", &a5);
    let mut more = a8.clone();
    more.push("--resume");
    let resumed = haq(dir.path(), "r.json", &more);
    assert_eq!(resumed["haq"]["resumed_episodes"], 5);
    assert_eq!(resumed["haq"]["history"], first["haq"]["history"]);
    assert_eq!(resumed["layers"], first["layers"]);

    // Other settings against a saved state: exit 2, nothing overwritten.
    let before = std::fs::read(dir.join("r.json")).unwrap();
    let mut args = vec!["search", "--model", "m.safetensors", "--out", "r.json"];
    args.extend_from_slice(FAST);
    args.extend_from_slice(&a8);
    args.extend_from_slice(&["--resume", "--seed", "7"]);
    expect_error(&dir, &args, 2, &["resume", "other settings"]);
    assert_eq!(std::fs::read(dir.join("r.json")).unwrap(), before);
}

#[test]
fn haq_energy_budget_holds() {
    let dir = TempDir::new("haqenergy");
    train_mlp(dir.path(), "m.safetensors", &[]);
    let (_, energy) = w8a8(dir.path());
    let budget = format!("{}", energy * 0.5);
    let p = haq(
        dir.path(),
        "p.json",
        &[
            "--hardware",
            "bitfusion",
            "--max-energy-mj",
            &budget,
            "--episodes",
            "6",
        ],
    );
    let limit = energy * 0.5 * (1.0 + 1e-9);
    assert!(p["energy_mj"].as_f64().unwrap() <= limit);
    for e in p["haq"]["history"].as_array().unwrap() {
        assert!(e["energy_mj"].as_f64().unwrap() <= limit, "{e}");
    }
}

#[test]
fn haq_unreachable_budget_or_missing_data_exits_2_before_any_episode() {
    let dir = TempDir::new("haqinfeasible");
    train_mlp(dir.path(), "m.safetensors", &[]);
    let (lat, _) = w8a8(dir.path());
    let tiny = format!("{}", lat * 1e-3);
    let mut args = vec!["search", "--model", "m.safetensors", "--out", "p.json"];
    args.extend_from_slice(FAST);
    args.extend_from_slice(&[
        "--hardware",
        "bitfusion",
        "--max-latency-ms",
        &tiny,
        "--episodes",
        "5",
    ]);
    expect_error(&dir, &args, 2, &["max_latency_ms", "smallest"]);
    assert!(!dir.join("p.json").exists());
    assert!(!dir.join("p.haq-state.json").exists(), "no episode ran");

    let missing = [
        "search",
        "--model",
        "m.safetensors",
        "--out",
        "p.json",
        "--method",
        "haq",
        "--avg-bits",
        "4",
    ];
    expect_error(&dir, &missing, 2, &["--data"]);
    let resume_other = [
        "search",
        "--model",
        "m.safetensors",
        "--out",
        "p.json",
        "--method",
        "uniform",
        "--avg-bits",
        "4",
        "--resume",
    ];
    expect_error(&dir, &resume_other, 2, &["--resume"]);
}

#[test]
fn haq_kmeans_size_budget_holds_and_the_plan_quantizes() {
    let dir = TempDir::new("haqkmeans");
    train_mlp(dir.path(), "m.safetensors", &[]);
    let info = parse_json(
        &expect_ok(dir.path(), &["info", "--json", "--model", "m.safetensors"]),
        "info",
    );
    let n: f64 = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["params"].as_f64().unwrap())
        .sum();
    // Three bits per weight plus room for the codebooks.
    let limit_bytes = n * 3.0 / 8.0 + 3.0 * 4.0 * 64.0;
    let mb = format!("{}", limit_bytes / (1024.0 * 1024.0));
    let p = haq(
        dir.path(),
        "p.json",
        &[
            "--weight-quantizer",
            "kmeans",
            "--max-size-mb",
            &mb,
            "--episodes",
            "6",
        ],
    );
    let hist = p["haq"]["history"].as_array().unwrap();
    assert_eq!(
        p["haq"]["steps_per_episode"].as_u64().unwrap() as usize,
        p["layers"].as_array().unwrap().len(),
        "one decision (weights) per layer"
    );
    for e in hist {
        assert!(
            e["size_bytes"].as_f64().unwrap() <= limit_bytes.floor(),
            "{e}"
        );
    }
    assert!(p["size_bytes"].as_f64().unwrap() <= limit_bytes.floor());
    assert_eq!(p["constraints"]["quantizer"], "kmeans");
    for l in p["layers"].as_array().unwrap() {
        assert_eq!(l["quantizer"], "kmeans", "{l}");
        assert_eq!(l["a_bits"], 32);
        assert!(
            l.get("kmeans_iters").is_none(),
            "the final plan uses the default"
        );
    }
    // The plan goes through `mpq quantize` and reloads bit-identically.
    expect_ok(
        dir.path(),
        &[
            "quantize",
            "--model",
            "m.safetensors",
            "--policy",
            "p.json",
            "--data",
            SYNTH,
            "--out",
            "q",
            "--quiet",
        ],
    );
    let s = read_json(&dir.join("q/summary.json"));
    assert_eq!(s["roundtrip_bit_identical"], true, "{s}");
    assert_eq!(s["size_bytes"], p["size_bytes"]);
}
