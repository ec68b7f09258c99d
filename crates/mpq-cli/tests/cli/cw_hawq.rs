//! `mpq search --method cw-hawq | cw-ilp` (CW-HAWQ, Qian et al. 2020, docs/algorithms.md §3): per-channel
//! plans that meet the budget and follow the channel trace order, the same seed gives the same
//! plan and history, the plan goes through `mpq quantize` (QAT, packed export) bit-exactly,
//! and wrong inputs exit 2 before any episode.

use super::*;

type Json = serde_json::Value;

/// The MLP and its channel-trace sensitivity in `dir`.
fn setup(dir: &Path) {
    train_mlp(dir, "m.safetensors", &[]);
    let metric = [
        "--metric",
        "channel-trace",
        "--batches",
        "1",
        "--max-iter",
        "12",
    ];
    let args = analyze_args("m.safetensors", "ct.json", &metric);
    expect_ok(dir, &with(&args, &["--quiet"]));
}

fn search(dir: &Path, method: &str, out: &str, extra: &[&str]) -> Json {
    let budget = ["--sensitivity", "ct.json", "--avg-bits", "3"];
    let args = search_args(method, out, &[&budget, AGENT_FAST, extra].concat());
    expect_json(dir, &args)
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
            // Four episodes, then two more with --resume: the six-episode search, and its
            // saved state, exactly.
            search(dir.path(), method, "s.json", &["--episodes", "4"]);
            let resumed = search(
                dir.path(),
                method,
                "s.json",
                &[&extra[..], &["--resume"]].concat(),
            );
            assert_eq!(resumed["cw_hawq"]["resumed_episodes"], 4);
            assert_eq!(resumed["cw_hawq"]["state"], "s.cw-state.json");
            assert_eq!(resumed["cw_hawq"]["history"], h["history"]);
            assert_eq!(resumed["layers"], p["layers"]);
            assert_eq!(
                std::fs::read(dir.join("s.cw-state.json")).unwrap(),
                std::fs::read(dir.join("p.cw-state.json")).unwrap()
            );
        }
    }
    // The plan goes through QAT and the packed export bit-exactly.
    let files = ["m.safetensors", "p.json", SYNTH, "q"];
    let s = quantize_json(dir.path(), files, &["--finetune-epochs", "1"]);
    assert_eq!(s["roundtrip_bit_identical"], true, "{s}");
    let e = eval_json(dir.path(), "q/model.safetensors", SYNTH);
    assert_eq!(e["accuracy"], s["after_finetune"]["accuracy"]);
    assert_eq!(e["size_bytes"], s["size_bytes"]);
}

#[test]
fn cw_input_errors_exit_2_before_any_work() {
    let dir = TempDir::new("cwerr");
    setup(dir.path());
    let base = search_args("cw-hawq", "p.json", &["--avg-bits", "3", "--quiet"]);
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
    let metric = ["--metric", "trace", "--max-iter", "4", "--quiet"];
    expect_ok(
        dir.path(),
        &analyze_args("m.safetensors", "t.json", &metric),
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
    let tight = [
        "--avg-bits",
        "1.5",
        "--quiet",
        "--data",
        SYNTH,
        "--sensitivity",
        "ct.json",
    ];
    expect_error(
        &dir,
        &search_args("cw-hawq", "p.json", &tight),
        2,
        &["infeasible"],
    );
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
    let train = train_args("mlp", SYNTH, "1", "x.safetensors");
    expect_error(&dir, &with(&train, &["--holdout", "64"]), 2, &["holdout"]);
    assert!(!dir.join("x.safetensors").exists());
}
