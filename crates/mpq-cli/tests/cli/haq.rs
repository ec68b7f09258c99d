//! `mpq search --method haq` (HAQ, Wang et al., CVPR 2019): budgets hold in every episode,
//! the history and curve are written, the same seed gives the same plan and history, `--resume`
//! continues a saved search exactly, and an unreachable budget exits 2 before any episode.

use super::*;

type Json = serde_json::Value;

/// `mpq search --method haq` of the MLP into `out`, fast settings, then `extra`.
fn haq_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    search_args("haq", out, &[AGENT_FAST, extra].concat())
}

fn haq(dir: &Path, out: &str, extra: &[&str]) -> Json {
    expect_json(dir, &haq_args(out, extra))
}

/// A HAQ search on BitFusion into `p.json` under half the MLP's W8A8 `cost` (`latency_ms` or
/// `energy_mj`): the policy, after checking that it and every episode meet the budget, and
/// the budget.
fn half_w8a8_search(dir: &Path, cost: &str, episodes: &str) -> (Json, f64) {
    let (lat, energy) = w8a8(dir);
    let half = 0.5 * if cost == "latency_ms" { lat } else { energy };
    let (flag, budget) = (
        format!("--max-{}", cost.replace('_', "-")),
        half.to_string(),
    );
    let extra = [
        "--hardware",
        "bitfusion",
        &flag,
        &budget,
        "--episodes",
        episodes,
    ];
    let p = haq(dir, "p.json", &extra);
    let limit = half * (1.0 + 1e-9);
    assert!(p[cost].as_f64().unwrap() <= limit, "{p}");
    for e in p["haq"]["history"].as_array().unwrap() {
        assert!(e[cost].as_f64().unwrap() <= limit, "{e}");
    }
    (p, limit)
}

fn read_json(path: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The W8A8 latency and energy of the MLP on BitFusion.
fn w8a8(dir: &Path) -> (f64, f64) {
    let v = expect_json(
        dir,
        &[
            "hw",
            "--model",
            "m.safetensors",
            "--hardware",
            "bitfusion",
            "--json",
        ],
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
    let (p, _) = half_w8a8_search(dir.path(), "latency_ms", "8");
    assert_eq!(p["method"], "haq");
    let h = &p["haq"];
    let hist = h["history"].as_array().unwrap();
    assert_eq!(hist.len(), 8);
    assert_eq!(h["episodes"], 8);
    for e in hist {
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
    let state = std::fs::read(dir.join("r.haq-state.json")).unwrap();
    let args = haq_args("r.json", &[&a8[..], &["--resume", "--seed", "7"]].concat());
    expect_error(&dir, &args, 2, &["resume", "other settings"]);
    assert_eq!(std::fs::read(dir.join("r.json")).unwrap(), before);
    assert_eq!(std::fs::read(dir.join("r.haq-state.json")).unwrap(), state);

    // Resuming a finished search with as many or fewer episodes replays it and leaves the
    // state as it was (it used to be rewritten down to the episodes replayed).
    let resumed = haq(dir.path(), "r.json", &more);
    assert_eq!(resumed["haq"]["history"], first["haq"]["history"]);
    let mut fewer = a5.clone();
    fewer.push("--resume");
    haq(dir.path(), "r.json", &fewer);
    assert_eq!(std::fs::read(dir.join("r.haq-state.json")).unwrap(), state);

    // A state that does not replay (episode 3 edited): exit 2 naming the episode, and the
    // file kept byte for byte (it used to be cut to the three episodes before it).
    let mut edited: Json = serde_json::from_slice(&state).unwrap();
    let bits = &mut edited["episodes"][3]["bits"][0][0];
    *bits = Json::from(if bits.as_u64() == Some(2) { 3 } else { 2 });
    let edited = serde_json::to_vec_pretty(&edited).unwrap();
    std::fs::write(dir.join("r.haq-state.json"), &edited).unwrap();
    expect_error(&dir, &haq_args("r.json", &more), 2, &["episode 3", "kept"]);
    assert_eq!(std::fs::read(dir.join("r.haq-state.json")).unwrap(), edited);
}

#[test]
fn haq_energy_budget_holds() {
    let dir = TempDir::new("haqenergy");
    train_mlp(dir.path(), "m.safetensors", &[]);
    let (p, _) = half_w8a8_search(dir.path(), "energy_mj", "6");
    assert_eq!(p["haq"]["history"].as_array().unwrap().len(), 6);
}

#[test]
fn haq_unreachable_budget_or_missing_data_exits_2_before_any_episode() {
    let dir = TempDir::new("haqinfeasible");
    train_mlp(dir.path(), "m.safetensors", &[]);
    let (lat, _) = w8a8(dir.path());
    let tiny = format!("{}", lat * 1e-3);
    let extra = [
        "--hardware",
        "bitfusion",
        "--max-latency-ms",
        &tiny,
        "--episodes",
        "5",
    ];
    let args = haq_args("p.json", &extra);
    expect_error(&dir, &args, 2, &["max_latency_ms", "smallest"]);
    assert!(!dir.join("p.json").exists());
    assert!(!dir.join("p.haq-state.json").exists(), "no episode ran");

    let missing = search_args("haq", "p.json", &["--avg-bits", "4"]);
    expect_error(&dir, &missing, 2, &["--data"]);
    let resume_other = search_args("uniform", "p.json", &["--avg-bits", "4", "--resume"]);
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
    let printed = quantize_json(dir.path(), ["m.safetensors", "p.json", SYNTH, "q"], &[]);
    let s = read_json(&dir.join("q/summary.json"));
    assert_eq!(printed["size_bytes"], s["size_bytes"]);
    assert_eq!(s["roundtrip_bit_identical"], true, "{s}");
    assert_eq!(s["size_bytes"], p["size_bytes"]);
}
