//! `mpq search` (hawq-v1, pareto, ilp, budgets, pins, ties, pre-flight) and `mpq hw`
//! (simulated latency and energy, CSV lookup tables), checked on the JSON they print and the
//! files they leave.

use super::*;

type Json = serde_json::Value;

/// `(name, params, macs)` of every layer, from `mpq info --json`.
pub(super) fn layer_table(dir: &Path, model: &[&str]) -> Vec<(String, f64, f64)> {
    let mut args = vec!["info", "--json"];
    args.extend_from_slice(model);
    let v = parse_json(&expect_ok(dir, &args), "mpq info --json");
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["params"].as_f64().unwrap(),
                l["macs"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// A hand-written sensitivity table (the layout `mpq analyze` writes): curvatures that differ
/// per layer, no `weight_error`, so search computes it from the model's weights, and measured
/// activation errors beside the activation traces (as `mpq analyze` writes them).
pub(super) fn write_sensitivity(dir: &Path, name: &str, layers: &[(String, f64, f64)]) -> Vec<f64> {
    let mut eig = Vec::new();
    let rows: Vec<Json> = layers
        .iter()
        .enumerate()
        .map(|(i, (n, params, macs))| {
            let curv = [3.0, 0.5, 1.7, 0.9, 2.3, 0.2, 1.1, 0.7, 4.0, 1.3][i % 10];
            let e = curv * (1.0 + (i % 3) as f64);
            eig.push(e);
            let act_error: serde_json::Map<String, Json> = (2..=8)
                .map(|b| (b.to_string(), (macs / params * 4f64.powi(-b)).into()))
                .collect();
            serde_json::json!({
                "name": n, "op": "conv", "params": *params as u64, "macs": *macs as u64,
                "trace": curv * params, "trace_stderr": 0.01, "trace_per_param": curv,
                "top_eigenvalue": e, "act_trace": curv * 0.5, "channel_traces": null,
                "act_error": act_error,
            })
        })
        .collect();
    let v = serde_json::json!({
        "model": "zoo:resnet8", "metric": "all", "estimator": "hutchinson", "seed": 0,
        "batches": 1, "batch_size": 8, "hvp_count": 1, "seconds": 0.1, "layers": rows,
    });
    std::fs::write(dir.join(name), v.to_string()).unwrap();
    eig
}

/// Runs `mpq search` on ResNet-8 with `args` and `--json`; returns the printed policy and
/// checks that it is the one written to `out`.
fn search(dir: &Path, out: &str, args: &[&str]) -> Json {
    let mut all = vec!["search", "--json", "--quiet", "--out", out];
    all.extend_from_slice(R8);
    all.extend_from_slice(args);
    let printed = parse_json(&expect_ok(dir, &all), "mpq search --json");
    let file: Json = serde_json::from_slice(&std::fs::read(dir.join(out)).unwrap()).unwrap();
    for key in [
        "method",
        "constraints",
        "seconds",
        "layers",
        "size_bytes",
        "avg_w_bits",
        "bops",
        "omega",
        "latency_ms",
        "energy_mj",
    ] {
        assert!(file.get(key).is_some(), "policy file lacks {key}: {file}");
        assert_eq!(printed[key], file[key], "{key}: stdout and file differ");
    }
    printed
}

/// `(w_bits, a_bits)` of layer `name` in a policy.
fn bits_of(plan: &Json, name: &str) -> (u64, u64) {
    let l = plan["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no layer {name} in {plan}"));
    (l["w_bits"].as_u64().unwrap(), l["a_bits"].as_u64().unwrap())
}

/// Average weight bits and GBOPs recomputed from the per-layer bits and the model's table.
fn recompute(plan: &Json, layers: &[(String, f64, f64)]) -> (f64, f64) {
    let (mut bits, mut n, mut bops) = (0.0, 0.0, 0.0);
    for (name, params, macs) in layers {
        let (w, a) = bits_of(plan, name);
        bits += params * w as f64;
        n += params;
        bops += macs * (w * a) as f64;
    }
    (bits / n, bops / 1e9)
}

fn num(v: &Json, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[test]
fn ilp_pareto_hawq_meet_budgets_pins_and_ties() {
    let dir = TempDir::new("searchmethods");
    let layers = layer_table(dir.path(), R8);
    write_sensitivity(dir.path(), "s.json", &layers);
    let max_bops = 0.75 * 781_504.0 * 4.0 * 8.0 / 1e9;
    let bops = format!("{max_bops}");
    let budget = [
        "--sensitivity",
        "s.json",
        "--avg-bits",
        "4",
        "--max-bops",
        &bops,
        "--pin-first-last",
        "8",
        "--tie",
        "layer2.0.conv2,layer2.0.downsample.0",
        "--tie",
        "layer3.0.conv2,layer3.0.downsample.0",
        "--pin",
        "layer1.0.conv1=6/8",
    ];
    for method in ["ilp", "pareto", "hawq-v1", "uniform", "random"] {
        let out = format!("{method}.json");
        let mut args = vec!["--method", method];
        args.extend_from_slice(&budget);
        let p = search(dir.path(), &out, &args);
        assert_eq!(p["method"], method);
        // The budgets hold, recomputed from the per-layer bits.
        let (avg, gbops) = recompute(&p, &layers);
        assert!(avg <= 4.0 + 1e-12, "{method}: average bits {avg}");
        assert!(gbops <= max_bops * (1.0 + 1e-12), "{method}: {gbops} GBOPs");
        assert!((avg - num(&p, "avg_w_bits")).abs() < 1e-12, "{method}");
        assert!((gbops * 1e9 - num(&p, "bops")).abs() < 1e-3, "{method}");
        // Pins and ties hold.
        assert_eq!(bits_of(&p, "conv1"), (8, 8), "{method}");
        assert_eq!(bits_of(&p, "fc"), (8, 8), "{method}");
        assert_eq!(bits_of(&p, "layer1.0.conv1"), (6, 8), "{method}");
        for (a, b) in [
            ("layer2.0.conv2", "layer2.0.downsample.0"),
            ("layer3.0.conv2", "layer3.0.downsample.0"),
        ] {
            assert_eq!(bits_of(&p, a), bits_of(&p, b), "{method}: {a} tied to {b}");
        }
        assert_eq!(p["constraints"]["avg_bits"], 4.0);
        assert_eq!(p["constraints"]["pins"]["first"], serde_json::json!([8, 8]));
        assert_eq!(p["constraints"]["ties"].as_array().unwrap().len(), 2);
        assert!(num(&p, "omega").is_finite() && num(&p, "seconds") >= 0.0);
        assert!(p["preflight"]["budgets"].as_array().unwrap().len() == 2);
    }
    // The ILP is exact: no other method reaches a smaller Ω under the same constraints.
    let omega = |m: &str| {
        let v: Json =
            serde_json::from_slice(&std::fs::read(dir.join(&format!("{m}.json"))).unwrap())
                .unwrap();
        num(&v, "omega")
    };
    for m in ["pareto", "uniform", "random"] {
        assert!(
            omega("ilp") <= omega(m) * (1.0 + 1e-12),
            "ilp {} > {m} {}",
            omega("ilp"),
            omega(m)
        );
    }
    // hawq-v1 prices error with λ/n (eigen); so does the ILP with --omega-metric eigen.
    let mut args = vec!["--method", "ilp", "--omega-metric", "eigen"];
    args.extend_from_slice(&budget);
    let eig = search(dir.path(), "ilp-eigen.json", &args);
    assert!(num(&eig, "omega") <= omega("hawq-v1") * (1.0 + 1e-12));
    assert!(num(&eig, "omega") != omega("ilp"), "the metric changes Ω");
    let ilp: Json = serde_json::from_slice(&std::fs::read(dir.join("ilp.json")).unwrap()).unwrap();
    assert_eq!(ilp["solver"]["proven_optimal"], true, "{ilp}");
    assert!(ilp["solver"]["nodes"].as_u64().unwrap() >= 1);
}

#[test]
fn pareto_writes_the_whole_frontier_with_the_chosen_point_on_it() {
    let dir = TempDir::new("pareto");
    let layers = layer_table(dir.path(), R8);
    write_sensitivity(dir.path(), "s.json", &layers);
    let common = ["--sensitivity", "s.json", "--a-bits", "8"];
    let mut args = vec!["--method", "pareto", "--avg-bits", "4"];
    args.extend_from_slice(&common);
    let p = search(dir.path(), "p.json", &args);
    assert_eq!(p["frontier"]["json"], "p.frontier.json");
    let f: Json =
        serde_json::from_slice(&std::fs::read(dir.join("p.frontier.json")).unwrap()).unwrap();
    let svg = std::fs::read_to_string(dir.join("p.frontier.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for label in ["W2", "W4", "W8"] {
        assert!(svg.contains(label), "uniform plan {label} not marked");
    }
    let points = f["points"].as_array().unwrap();
    assert!(points.len() > 5, "{f}");
    // Sizes strictly increase and Ω strictly decreases along the frontier.
    for w in points.windows(2) {
        assert!(num(&w[0], "size_bits") < num(&w[1], "size_bits"));
        assert!(num(&w[0], "omega") > num(&w[1], "omega"));
    }
    // The chosen point is on the frontier: its bits are the plan's, and it is the largest
    // point within the budget.
    let chosen = f["chosen"].as_u64().unwrap() as usize;
    assert_eq!(p["frontier"]["chosen"].as_u64(), Some(chosen as u64));
    let plan_bits: Vec<String> = layers
        .iter()
        .map(|(n, _, _)| bits_of(&p, n).0.to_string())
        .collect();
    assert_eq!(points[chosen]["w_bits"], plan_bits.join(","));
    assert!((num(&points[chosen], "avg_w_bits") - num(&p, "avg_w_bits")).abs() < 1e-12);
    assert!((num(&points[chosen], "omega") - num(&p, "omega")).abs() <= 1e-12 * num(&p, "omega"));
    assert!(num(&points[chosen], "avg_w_bits") <= 4.0);
    if let Some(next) = points.get(chosen + 1) {
        assert!(num(next, "avg_w_bits") > 4.0);
    }
    // Any other budget is answered by the frontier alone: its point under 3 bits is the plan
    // a new search at 3 bits finds, and that plan is the ILP optimum too.
    let under3 = points
        .iter()
        .rposition(|q| num(q, "avg_w_bits") <= 3.0)
        .unwrap();
    let mut args = vec!["--method", "pareto", "--avg-bits", "3"];
    args.extend_from_slice(&common);
    let p3 = search(dir.path(), "p3.json", &args);
    let bits3: Vec<String> = layers
        .iter()
        .map(|(n, _, _)| bits_of(&p3, n).0.to_string())
        .collect();
    assert_eq!(points[under3]["w_bits"], bits3.join(","));
    let mut args = vec!["--method", "ilp", "--avg-bits", "3"];
    args.extend_from_slice(&common);
    let i3 = search(dir.path(), "i3.json", &args);
    let (o_ilp, o_par) = (num(&i3, "omega"), num(&points[under3], "omega"));
    assert!(
        (o_ilp - o_par).abs() <= 1e-9 * o_par,
        "ilp {o_ilp} vs frontier {o_par}"
    );
}

#[test]
fn hawq_v1_bits_follow_the_eigenvalue_order() {
    let dir = TempDir::new("hawq");
    let layers = layer_table(dir.path(), R8);
    let eig = write_sensitivity(dir.path(), "s.json", &layers);
    let p = search(
        dir.path(),
        "h.json",
        &[
            "--method",
            "hawq-v1",
            "--sensitivity",
            "s.json",
            "--avg-bits",
            "4",
        ],
    );
    let (avg, _) = recompute(&p, &layers);
    assert!(avg <= 4.0 + 1e-12);
    // Bits never increase along descending λ/n.
    let mut order: Vec<(f64, u64)> = layers
        .iter()
        .zip(&eig)
        .map(|((n, params, _), e)| (e / params, bits_of(&p, n).0))
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0));
    for w in order.windows(2) {
        assert!(w[0].1 >= w[1].1, "bits rise along the order: {order:?}");
    }
    let ft = p["finetune_order"].as_array().unwrap();
    assert_eq!(ft.len(), layers.len(), "{p}");
    let names: BTreeSet<&str> = ft.iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(names.len(), layers.len());
}

#[test]
fn mse_weight_range_is_recorded_and_lowers_omega() {
    let dir = TempDir::new("searchmse");
    let layers = layer_table(dir.path(), R8);
    write_sensitivity(dir.path(), "s.json", &layers);
    let run = |out: &str, method: &str, range: &str| {
        search(
            dir.path(),
            out,
            &[
                "--method",
                method,
                "--sensitivity",
                "s.json",
                "--avg-bits",
                "3",
                "--w-bits",
                "2,3,4,8",
                "--weight-range",
                range,
            ],
        )
    };
    for method in ["uniform", "ilp", "pareto"] {
        let max_abs = run("a.json", method, "max-abs");
        let mse = run("b.json", method, "mse");
        for l in mse["layers"].as_array().unwrap() {
            assert_eq!(l["weight_range"], "mse", "{l}");
        }
        for l in max_abs["layers"].as_array().unwrap() {
            assert!(l.get("weight_range").is_none(), "{l}");
        }
        // The MSE clip is chosen among ranges that include max-abs, so every weight error,
        // and hence the optimum of Omega, can only go down; at 3 bits it goes down strictly.
        assert!(
            num(&mse, "omega") < num(&max_abs, "omega"),
            "{method}: {} vs {}",
            mse["omega"],
            max_abs["omega"]
        );
        assert!(recompute(&mse, &layers).0 <= 3.0 + 1e-12);
    }
}

#[test]
fn search_reads_mpq_analyze_output() {
    let dir = TempDir::new("searchanalyze");
    let mlp = ["--model", "zoo:mlp", "--input", "1x8x8", "--classes", "3"];
    let mut args = vec!["analyze", "--data", SYNTH, "--metric", "all"];
    args.extend_from_slice(&mlp);
    args.extend([
        "--batch-size",
        "16",
        "--probes",
        "3",
        "--max-iter",
        "12",
        "--lanczos-steps",
        "6",
        "--quiet",
        "--out",
        "s.json",
    ]);
    expect_ok(dir.path(), &args);
    let layers = layer_table(dir.path(), &mlp);
    for method in ["ilp", "pareto", "hawq-v1"] {
        let mut args = vec!["search", "--json", "--quiet", "--method", method];
        args.extend_from_slice(&mlp);
        args.extend([
            "--sensitivity",
            "s.json",
            "--avg-bits",
            "5",
            "--hardware",
            "bismo",
            "--out",
            "p.json",
        ]);
        let p = parse_json(&expect_ok(dir.path(), &args), "search --json");
        assert!(recompute(&p, &layers).0 <= 5.0 + 1e-12, "{p}");
        assert!(num(&p, "omega").is_finite(), "{p}");
        assert!(
            num(&p, "latency_ms") > 0.0 && num(&p, "energy_mj") > 0.0,
            "{p}"
        );
        assert_eq!(p["constraints"]["hardware"], "bismo");
    }
}

#[test]
fn latency_and_energy_budgets_hold_on_the_simulator() {
    let dir = TempDir::new("searchlatency");
    let layers = layer_table(dir.path(), R8);
    write_sensitivity(dir.path(), "s.json", &layers);
    let hw = |policy: &str| hw_json(dir.path(), R8, "bitfusion", Some(policy));
    // Halfway between the smallest (every layer 2/4) and the largest (8/8) plan.
    let u8 = search(
        dir.path(),
        "u8.json",
        &["--method", "uniform", "--w-bits", "8", "--a-bits", "8"],
    );
    write_uniform_policy(dir.path(), "w2a4.json", &layers, 2, 4);
    let (hi, lo) = (hw("u8.json"), hw("w2a4.json"));
    let mid = |key: &str| 0.5 * (num(&lo, key) + num(&hi, key));
    let (lat_limit, energy_limit) = (mid("latency_ms"), mid("energy_mj"));
    let (limit, energy) = (format!("{lat_limit}"), format!("{energy_limit}"));
    let p = search(
        dir.path(),
        "l.json",
        &[
            "--method",
            "ilp",
            "--sensitivity",
            "s.json",
            "--hardware",
            "bitfusion",
            "--max-latency-ms",
            &limit,
            "--max-energy-mj",
            &energy,
        ],
    );
    assert_eq!(u8["latency_ms"], Json::Null, "no hardware, no latency");
    let sim = hw("l.json");
    assert_eq!(
        sim["latency_ms"], p["latency_ms"],
        "plan and `mpq hw` agree"
    );
    assert_eq!(sim["energy_mj"], p["energy_mj"]);
    assert!(num(&p, "latency_ms") <= lat_limit * (1.0 + 1e-12));
    assert!(num(&p, "energy_mj") <= energy_limit * (1.0 + 1e-12));
    assert_eq!(p["constraints"]["max_latency_ms"], lat_limit);
}

#[test]
fn infeasible_requests_exit_2_with_the_smallest_value_and_no_file() {
    let dir = TempDir::new("searchinfeasible");
    let layers = layer_table(dir.path(), R8);
    write_sensitivity(dir.path(), "s.json", &layers);
    // The smallest latency any plan reaches: every layer at the smallest candidates (2/4).
    write_uniform_policy(dir.path(), "w2a4.json", &layers, 2, 4);
    let w2a4 = hw_json(dir.path(), R8, "bitfusion", Some("w2a4.json"));
    let min_latency = num(&w2a4, "latency_ms");
    let min_bops = 781_504.0 * 2.0 * 4.0 / 1e9;
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (
            vec!["--avg-bits", "1.9"],
            vec!["avg_bits".into(), "2.000000".into()],
        ),
        (
            vec!["--max-bops", "0.001"],
            vec!["max_bops_g".into(), format!("{min_bops:.6}")],
        ),
        (
            vec!["--hardware", "bitfusion", "--max-latency-ms", "1e-9"],
            vec!["max_latency_ms".into(), format!("{min_latency:.6}")],
        ),
        // Pins raise the smallest achievable value.
        (
            vec!["--avg-bits", "2", "--pin", "layer3.0.conv2=8"],
            vec!["avg_bits".into(), "CANNOT BE MET".into(), "pins".into()],
        ),
        // A tie between layers pinned to different bits leaves them no candidate.
        (
            vec![
                "--pin",
                "layer2.0.conv2=4,layer2.0.downsample.0=8",
                "--tie",
                "layer2.0.conv2,layer2.0.downsample.0",
            ],
            vec![
                "no allowed candidate".into(),
                "layer2.0.conv2, layer2.0.downsample.0".into(),
            ],
        ),
    ];
    for method in ["ilp", "pareto", "hawq-v1", "uniform", "random"] {
        for (extra, fragments) in &cases {
            let mut args = vec![
                "search",
                "--method",
                method,
                "--sensitivity",
                "s.json",
                "--out",
                "p.json",
            ];
            args.extend_from_slice(R8);
            args.extend_from_slice(extra);
            let frags: Vec<&str> = fragments.iter().map(String::as_str).collect();
            let stderr = expect_error(&dir, &args, 2, &frags);
            assert_eq!(
                stderr.lines().filter(|l| l.starts_with("error")).count(),
                1,
                "{stderr}"
            );
        }
    }
    assert!(!dir.join("p.json").exists() && !dir.join("p.frontier.json").exists());
    // An output path that cannot be written (a folder): exit 2, no side file, no temp file.
    std::fs::create_dir(dir.join("taken")).unwrap();
    let mut args = vec![
        "search",
        "--method",
        "pareto",
        "--sensitivity",
        "s.json",
        "--avg-bits",
        "4",
        "--out",
        "taken",
        "--quiet",
    ];
    args.extend_from_slice(R8);
    expect_error(&dir, &args, 2, &["taken"]);
}

#[test]
fn contradictory_or_incomplete_search_flags_exit_2() {
    let dir = TempDir::new("searchusage");
    let layers = layer_table(dir.path(), R8);
    write_sensitivity(dir.path(), "s.json", &layers);
    let run = |extra: &[&str], fragments: &[&str]| {
        let mut args = vec!["search", "--out", "p.json"];
        args.extend_from_slice(R8);
        args.extend_from_slice(extra);
        let before = dir.listing();
        let out = mpq_in(dir.path(), &args);
        let ctx = describe(&args, &out);
        assert_eq!(out.status.code(), Some(2), "{ctx}");
        let stderr = text(&out.stderr);
        for f in fragments {
            assert!(stderr.contains(f), "{f:?} missing\n{ctx}");
        }
        assert!(!stderr.contains("panicked"), "{ctx}");
        assert_eq!(before, dir.listing(), "no file written\n{ctx}");
    };
    // Two size budgets: rejected by the argument parser itself.
    for pair in [
        ["--avg-bits", "3", "--max-size-mb", "1"],
        ["--avg-bits", "3", "--compression", "8"],
        ["--max-size-mb", "1", "--compression", "8"],
    ] {
        let mut args = vec!["--method", "uniform"];
        args.extend_from_slice(&pair);
        run(&args, &["cannot be used with"]);
    }
    // HAQ under a weight-only budget searches weight bits only: one activation width.
    run(
        &[
            "--method",
            "haq",
            "--data",
            "synthetic:3x8x8:3:64",
            "--avg-bits",
            "3",
            "--a-bits",
            "4,8",
        ],
        &["weight bits only", "one --a-bits value"],
    );
    run(
        &[
            "--method",
            "ilp",
            "--max-latency-ms",
            "1",
            "--sensitivity",
            "s.json",
        ],
        &["--max-latency-ms", "--hardware"],
    );
    run(
        &["--method", "uniform", "--max-energy-mj", "1"],
        &["--max-energy-mj", "--hardware"],
    );
    for m in ["ilp", "pareto", "hawq-v1"] {
        run(&["--method", m, "--avg-bits", "4"], &["--sensitivity", m]);
    }
    run(
        &[
            "--method",
            "ilp",
            "--sensitivity",
            "s.json",
            "--pin",
            "conv9=4",
        ],
        &["conv9"],
    );
    run(
        &[
            "--method",
            "ilp",
            "--sensitivity",
            "s.json",
            "--tie",
            "conv1,conv9",
        ],
        &["conv9"],
    );
    run(
        &["--method", "uniform", "--pin-first-last", "9"],
        &["pin-first-last"],
    );
    run(
        &[
            "--method",
            "uniform",
            "--hardware",
            "tpu-v9",
            "--avg-bits",
            "4",
        ],
        &["tpu-v9", "bitfusion"],
    );
    run(
        &["--method", "pareto", "--sensitivity", "missing.json"],
        &["missing.json"],
    );
    // A hardware table without an energy column cannot price an energy budget.
    std::fs::write(dir.join("lat.csv"), "conv1,8,8,0.5\n").unwrap();
    run(
        &[
            "--method",
            "uniform",
            "--hardware",
            "lat.csv",
            "--max-energy-mj",
            "1",
        ],
        &["energy"],
    );
}

// ---------------------------------------------------------------------------------------------
// mpq hw
// ---------------------------------------------------------------------------------------------

/// A policy with every layer of `layers` at `w`/`a`.
fn write_uniform_policy(dir: &Path, name: &str, layers: &[(String, f64, f64)], w: u32, a: u32) {
    let rows: Vec<Json> = layers
        .iter()
        .map(|(n, _, _)| serde_json::json!({"name": n, "w_bits": w, "a_bits": a}))
        .collect();
    write_plan(dir, name, "uniform", rows.into());
}

fn hw_json(dir: &Path, model: &[&str], hardware: &str, policy: Option<&str>) -> Json {
    let mut args = vec!["hw", "--json", "--hardware", hardware];
    args.extend_from_slice(model);
    if let Some(p) = policy {
        args.extend(["--policy", p]);
    }
    parse_json(&expect_ok(dir, &args), "mpq hw --json")
}

fn rows(v: &Json) -> &Vec<Json> {
    v["layers"].as_array().unwrap()
}

#[test]
fn hw_latency_and_energy_never_decrease_with_bits() {
    let dir = TempDir::new("hwmono");
    let layers = layer_table(dir.path(), R8);
    for (name, b) in [("w2.json", 2), ("w4.json", 4), ("w8.json", 8)] {
        write_uniform_policy(dir.path(), name, &layers, b, b);
    }
    for hardware in ["bitfusion", "bismo", "bismo-cloud"] {
        let runs: Vec<Json> = ["w2.json", "w4.json", "w8.json"]
            .iter()
            .map(|p| hw_json(dir.path(), R8, hardware, Some(p)))
            .collect();
        for pair in runs.windows(2) {
            let (lo, hi) = (&pair[0], &pair[1]);
            for key in ["latency_ms", "energy_mj"] {
                assert!(num(lo, key) <= num(hi, key), "{hardware} {key}");
                for (a, b) in rows(lo).iter().zip(rows(hi)) {
                    assert!(num(a, key) <= num(b, key), "{hardware} {key} {}", a["name"]);
                }
            }
            assert!(num(lo, "energy_mj") < num(hi, "energy_mj"), "{hardware}");
        }
        // No policy: W8A8, and it says so.
        let default = hw_json(dir.path(), R8, hardware, None);
        assert!(default["bits_from"].as_str().unwrap().contains("W8A8"));
        assert_eq!(default["layers"], runs[2]["layers"]);
    }
}

#[test]
fn hw_bitfusion_fuses_bricks_and_flags_memory_bound_layers() {
    let dir = TempDir::new("hwbitfusion");
    let r18 = ["--model", "zoo:resnet18"];
    let layers = layer_table(dir.path(), &r18);
    for (name, b) in [("w2.json", 2), ("w4.json", 4), ("w8.json", 8)] {
        write_uniform_policy(dir.path(), name, &layers, b, b);
    }
    let layer = |v: &Json, name: &str| -> Json {
        rows(v).iter().find(|r| r["name"] == name).cloned().unwrap()
    };
    let run = |p: &str| hw_json(dir.path(), &r18, "bitfusion", Some(p));
    let (w2, w4, w8) = (run("w2.json"), run("w4.json"), run("w8.json"));
    let conv = "layer1.0.conv1";
    for v in [&w2, &w4, &w8] {
        assert_eq!(layer(v, conv)["bound"], "compute", "{}", layer(v, conv));
    }
    let lat = |v: &Json| num(&layer(v, conv), "latency_ms");
    assert!((lat(&w8) / lat(&w4) - 4.0).abs() < 1e-9, "4/4 is 4x 8/8");
    assert!((lat(&w8) / lat(&w2) - 16.0).abs() < 1e-9, "2/2 is 16x 8/8");
    // At batch 1 the 512x1000 classifier moves a weight byte per MAC: memory-bound.
    let fc = layer(&w8, "fc");
    assert_eq!(fc["bound"], "memory", "{fc}");
    assert!(num(&fc, "memory_ms") > num(&fc, "compute_ms"));
    assert_eq!(num(&fc, "latency_ms"), num(&fc, "memory_ms"));
    let flagged: Vec<&str> = w8["memory_bound_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        flagged.contains(&"fc") && !flagged.contains(&conv),
        "{flagged:?}"
    );
    // The human table says the same.
    let mut args = vec!["hw", "--hardware", "bitfusion", "--policy", "w8.json"];
    args.extend_from_slice(&r18);
    let table = expect_ok(dir.path(), &args);
    let fc_line = table.lines().find(|l| l.starts_with("fc ")).unwrap();
    assert!(fc_line.trim_end().ends_with("memory"), "{table}");
    assert!(
        table.contains("memory-bound") && table.contains("total"),
        "{table}"
    );
}

#[test]
fn hw_csv_lookup_round_trips() {
    let dir = TempDir::new("hwcsv");
    let layers = layer_table(dir.path(), R8);
    write_uniform_policy(dir.path(), "w4.json", &layers, 4, 8);
    for hardware in ["bitfusion", "bismo"] {
        let sim = hw_json(dir.path(), R8, hardware, Some("w4.json"));
        // Write the simulator's numbers as a lookup table and read it back.
        let mut csv = String::from("layer,w_bits,a_bits,latency_ms,energy_mj\n");
        for r in rows(&sim) {
            csv.push_str(&format!(
                "{},{},{},{},{}\n",
                r["name"].as_str().unwrap(),
                r["w_bits"],
                r["a_bits"],
                num(r, "latency_ms"),
                num(r, "energy_mj")
            ));
        }
        std::fs::write(dir.join("t.csv"), csv).unwrap();
        let back = hw_json(dir.path(), R8, "t.csv", Some("w4.json"));
        assert_eq!(back["latency_ms"], sim["latency_ms"], "{hardware}");
        assert_eq!(back["energy_mj"], sim["energy_mj"], "{hardware}");
        for (a, b) in rows(&sim).iter().zip(rows(&back)) {
            assert_eq!(a["latency_ms"], b["latency_ms"]);
            assert_eq!(a["energy_mj"], b["energy_mj"]);
            assert_eq!(b["bound"], "table");
        }
        // --export-csv writes the whole grid; it reads back with the same numbers too.
        let mut args = vec![
            "hw",
            "--json",
            "--hardware",
            hardware,
            "--export-csv",
            "grid.csv",
        ];
        args.extend_from_slice(R8);
        expect_ok(dir.path(), &args);
        let grid = hw_json(dir.path(), R8, "grid.csv", Some("w4.json"));
        assert_eq!(grid["latency_ms"], sim["latency_ms"]);
        assert_eq!(grid["energy_mj"], sim["energy_mj"]);
    }
}

#[test]
fn hw_bad_inputs_exit_2() {
    let dir = TempDir::new("hwbad");
    let layers = layer_table(dir.path(), R8);
    write_uniform_policy(dir.path(), "w4.json", &layers, 4, 4);
    std::fs::write(dir.join("partial.csv"), "conv1,4,4,0.5,0.1\n").unwrap();
    std::fs::write(dir.join("junk.csv"), "conv1,four,4,0.5\n").unwrap();
    std::fs::write(dir.join("bad.toml"), "name = \"x\"\nclock_mz = 1\n").unwrap();
    write_policy(dir.path(), "unknown.json", &[("conv9", 4, 4)]);
    let cases: [(&str, Option<&str>, &[&str]); 6] = [
        ("missing.toml", None, &["missing.toml"]),
        ("tpu-v9", None, &["tpu-v9", "bitfusion"]),
        ("bad.toml", None, &["bad.toml"]),
        ("junk.csv", None, &["junk.csv", "line 1"]),
        (
            "partial.csv",
            Some("w4.json"),
            &["layer1.0.conv1", "w_bits=4", "a_bits=4"],
        ),
        ("bitfusion", Some("unknown.json"), &["conv9"]),
    ];
    for (hardware, policy, fragments) in cases {
        let mut args = vec!["hw", "--hardware", hardware];
        args.extend_from_slice(R8);
        if let Some(p) = policy {
            args.extend(["--policy", p]);
        }
        let stderr = expect_error(&dir, &args, 2, fragments);
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("error")).count(),
            1,
            "{stderr}"
        );
    }
}

#[test]
fn eval_with_hardware_reports_the_simulated_latency_and_energy() {
    let dir = TempDir::new("evalhw");
    let mlp = ["--model", "zoo:mlp", "--input", "1x8x8", "--classes", "3"];
    let layers = layer_table(dir.path(), &mlp);
    write_uniform_policy(dir.path(), "w4.json", &layers, 4, 8);
    let sim = hw_json(dir.path(), &mlp, "bismo", Some("w4.json"));
    let mut args = vec![
        "eval",
        "--data",
        SYNTH,
        "--policy",
        "w4.json",
        "--hardware",
        "bismo",
        "--json",
    ];
    args.extend_from_slice(&mlp);
    let e = parse_json(&expect_ok(dir.path(), &args), "mpq eval --json");
    assert_eq!(e["latency_ms"], sim["latency_ms"], "{e}");
    assert_eq!(e["energy_mj"], sim["energy_mj"], "{e}");
    assert_eq!(e["hardware"], "bismo");
    assert_eq!(e["avg_w_bits"], 4.0);
}
