//! `mpq search --method cw-hawq | cw-ilp` (CW-HAWQ, Qian et al. 2020, docs/algorithms.md §3): per-channel
//! plans that meet the budget and follow the channel trace order, the same seed gives the same
//! plan and history, the plan goes through `mpq quantize` (QAT, packed export) bit-exactly,
//! and wrong inputs exit 2 before any episode.

use super::*;

type Json = serde_json::Value;

/// The DDPG settings of a small, fast run.
const FAST: &[&str] = &[
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

/// The MLP and its channel-trace sensitivity in `dir`.
fn setup(dir: &Path) {
    train_mlp(dir, "m.safetensors", &[]);
    expect_ok(
        dir,
        &[
            "analyze",
            "--model",
            "m.safetensors",
            "--data",
            SYNTH,
            "--metric",
            "channel-trace",
            "--batches",
            "1",
            "--batch-size",
            "16",
            "--max-iter",
            "12",
            "--out",
            "ct.json",
            "--quiet",
        ],
    );
}

fn search(dir: &Path, method: &str, out: &str, extra: &[&str]) -> Json {
    let mut args = vec![
        "search",
        "--model",
        "m.safetensors",
        "--sensitivity",
        "ct.json",
        "--method",
        method,
        "--avg-bits",
        "3",
        "--out",
        out,
    ];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    parse_json(&expect_ok(dir, &args), "mpq search --json")
}

/// Per layer: channel widths of the plan, and channel traces of the sensitivity JSON.
fn widths_and_traces(dir: &Path, plan: &Json) -> Vec<(Vec<u64>, Vec<f64>)> {
    let sens: Json = serde_json::from_slice(&std::fs::read(dir.join("ct.json")).unwrap()).unwrap();
    plan["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let bits: Vec<u64> = l["channel_w_bits"]
                .as_array()
                .unwrap_or_else(|| panic!("no channel_w_bits in {l}"))
                .iter()
                .map(|b| b.as_u64().unwrap())
                .collect();
            let row = sens["layers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == l["name"])
                .unwrap();
            let traces: Vec<f64> = row["channel_traces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_f64().unwrap())
                .collect();
            (bits, traces)
        })
        .collect()
}

#[test]
fn cw_plans_meet_the_budget_follow_the_trace_order_and_repeat_with_the_seed() {
    let dir = TempDir::new("cwhawq");
    setup(dir.path());
    for (method, extra) in [("cw-ilp", vec![]), ("cw-hawq", vec!["--episodes", "6"])] {
        let p = search(dir.path(), method, "p.json", &extra);
        assert_eq!(p["method"], method);
        assert!(p["avg_w_bits"].as_f64().unwrap() <= 3.0 + 1e-9, "{p}");
        for (bits, traces) in widths_and_traces(dir.path(), &p) {
            assert!(bits.iter().all(|b| [2, 4, 8].contains(b)), "{bits:?}");
            for i in 0..bits.len() {
                for j in 0..bits.len() {
                    if traces[i] > traces[j] {
                        assert!(bits[i] >= bits[j], "{method}: {bits:?} vs {traces:?}");
                    }
                }
            }
        }
        if method == "cw-ilp" {
            // Only the agent's policy has a history section (no `null` placeholder) and a
            // learning curve.
            assert!(p.get("cw_hawq").is_none(), "{p}");
            assert!(!dir.join("p.curve.svg").exists());
        }
        if method == "cw-hawq" {
            let h = &p["cw_hawq"];
            assert_eq!(h["episodes"], 6);
            assert_eq!(h["curve"], "p.curve.svg");
            let svg = std::fs::read_to_string(dir.join("p.curve.svg")).unwrap();
            assert!(svg.contains("CW-HAWQ learning curve: 6 episodes"), "{svg}");
            assert_eq!(h["history"].as_array().unwrap().len(), 6);
            let again = search(dir.path(), method, "q.json", &extra);
            assert_eq!(again["layers"], p["layers"]);
            assert_eq!(again["cw_hawq"]["history"], h["history"]);
            let other = search(
                dir.path(),
                method,
                "r.json",
                &["--episodes", "6", "--seed", "7"],
            );
            assert_ne!(other["cw_hawq"]["history"], h["history"]);
        }
    }
    // The plan goes through QAT and the packed export bit-exactly.
    let s = parse_json(
        &expect_ok(
            dir.path(),
            &[
                "quantize",
                "--model",
                "m.safetensors",
                "--policy",
                "p.json",
                "--data",
                SYNTH,
                "--finetune-epochs",
                "1",
                "--out",
                "q",
                "--json",
                "--quiet",
            ],
        ),
        "mpq quantize --json",
    );
    assert_eq!(s["roundtrip_bit_identical"], true, "{s}");
    let e = parse_json(
        &expect_ok(
            dir.path(),
            &[
                "eval",
                "--model",
                "q/model.safetensors",
                "--data",
                SYNTH,
                "--json",
            ],
        ),
        "mpq eval --json",
    );
    assert_eq!(e["accuracy"], s["after_finetune"]["accuracy"]);
    assert_eq!(e["size_bytes"], s["size_bytes"]);
}

#[test]
fn cw_input_errors_exit_2_before_any_work() {
    let dir = TempDir::new("cwerr");
    setup(dir.path());
    let base = [
        "search",
        "--model",
        "m.safetensors",
        "--method",
        "cw-hawq",
        "--avg-bits",
        "3",
        "--out",
        "p.json",
        "--quiet",
    ];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        v
    }
    expect_error(
        &dir,
        &with(&base, &["--sensitivity", "ct.json"]),
        2,
        &["--data"],
    );
    expect_error(
        &dir,
        &with(&base, &["--data", SYNTH]),
        2,
        &["channel-trace"],
    );
    // A table without channel traces.
    expect_ok(
        dir.path(),
        &[
            "analyze",
            "--model",
            "m.safetensors",
            "--data",
            SYNTH,
            "--metric",
            "trace",
            "--batch-size",
            "16",
            "--max-iter",
            "4",
            "--out",
            "t.json",
            "--quiet",
        ],
    );
    expect_error(
        &dir,
        &with(&base, &["--data", SYNTH, "--sensitivity", "t.json"]),
        2,
        &["channel_traces"],
    );
    // Two activation widths, and an unreachable budget.
    expect_error(
        &dir,
        &with(
            &base,
            &[
                "--data",
                SYNTH,
                "--sensitivity",
                "ct.json",
                "--a-bits",
                "4,8",
            ],
        ),
        2,
        &["one activation bit-width"],
    );
    let mut v = with(&base, &["--data", SYNTH, "--sensitivity", "ct.json"]);
    v[6] = "1.5";
    expect_error(&dir, &v, 2, &["infeasible"]);
    assert!(!dir.join("p.json").exists());
}

#[test]
fn train_holdout_keeps_the_reward_split_out_of_training() {
    let dir = TempDir::new("holdout");
    let t = train_mlp(dir.path(), "m.safetensors", &["--holdout", "16"]);
    assert_eq!(t["holdout"], 16);
    assert_eq!(t["train_samples"], 48);
    let again = train_mlp(dir.path(), "n.safetensors", &["--holdout", "16"]);
    let loss = |v: &Json| v["history"][0]["train_loss"].clone();
    assert_eq!(loss(&again), loss(&t));
    let all = train_mlp(dir.path(), "a.safetensors", &[]);
    assert_eq!(all["train_samples"], 64);
    assert_ne!(loss(&all), loss(&t));
    expect_error(
        &dir,
        &[
            "train",
            "--arch",
            "mlp",
            "--data",
            SYNTH,
            "--epochs",
            "1",
            "--holdout",
            "64",
            "--out",
            "x.safetensors",
        ],
        2,
        &["holdout"],
    );
    assert!(!dir.join("x.safetensors").exists());
}
