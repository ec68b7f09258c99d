//! `mpq report --run DIR`: the results table of `report.html` holds exactly the numbers of
//! the run's JSON files (policies, quantize summaries, `fp.json`, and `mpq hw` for the
//! simulated latency and energy), both in its `data-value` attributes and, rounded, in the
//! visible cells; a run with missing or corrupt parts still renders and names them; a folder
//! that is not a run is an input error.

use super::*;

type Json = serde_json::Value;

fn read_json(path: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A run folder built with the real CLI on the synthetic set: the MLP, its sensitivity, four
/// searches (uniform, pareto, ilp, haq) and each plan quantized with one fine-tuning epoch.
fn build_run(dir: &Path) -> Vec<&'static str> {
    std::fs::create_dir_all(dir.join("plans")).unwrap();
    train_mlp(dir, "model.safetensors", &[]);
    let fp = eval_json(dir, "model.safetensors", SYNTH);
    let fp = serde_json::json!({"accuracy": fp["accuracy"], "loss": fp["loss"], "samples": fp["samples"]});
    std::fs::write(dir.join("fp.json"), fp.to_string()).unwrap();
    std::fs::write(
        dir.join("settings.json"),
        r#"{"data": "synthetic:1x8x8:3:64", "arch": "mlp", "seed": 0, "budgets": {"avg_bits": 4}}"#,
    )
    .unwrap();
    let metric = ["--metric", "all", "--batches", "1", "--max-iter", "12"];
    let args = analyze_args("model.safetensors", "sensitivity.json", &metric);
    expect_ok(dir, &with(&args, &["--lanczos-steps", "12", "--quiet"]));
    let methods = ["uniform", "pareto", "ilp", "haq"];
    for m in methods {
        let out = format!("plans/{m}.json");
        let mut args = vec![
            "search",
            "--model",
            "model.safetensors",
            "--method",
            m,
            "--out",
            &out,
            "--quiet",
        ];
        if m == "haq" {
            args.extend_from_slice(&[
                "--data",
                SYNTH,
                "--avg-bits",
                "4",
                "--episodes",
                "4",
                "--warmup",
                "2",
                "--val-samples",
                "16",
                "--calib-samples",
                "16",
                "--hidden1",
                "16",
                "--hidden2",
                "16",
            ]);
        } else {
            args.extend_from_slice(&[
                "--sensitivity",
                "sensitivity.json",
                "--avg-bits",
                "4",
                "--a-bits",
                "4,8",
            ]);
        }
        expect_ok(dir, &args);
        let q = format!("quantized/{m}");
        let files: [&str; 4] = ["model.safetensors", &out, SYNTH, &q];
        quantize_json(dir, files, &["--finetune-epochs", "1"]);
    }
    // The comparison at the same budget (one fine-tuning seed).
    let compare = [
        "compare",
        "--model",
        "model.safetensors",
        "--data",
        SYNTH,
        "--methods",
        "uniform,random,ilp",
        "--sensitivity",
        "sensitivity.json",
        "--avg-bits",
        "4",
        "--a-bits",
        "8",
        "--random-plans",
        "3",
        "--seeds",
        "1",
        "--lr",
        "0.01",
        "--resamples",
        "200",
        "--out",
        "compare",
        "--quiet",
    ];
    expect_ok(dir, &compare);
    methods.to_vec()
}

/// `(data-key, data-value, visible text)` of every number cell of the results row of
/// `method`.
fn row_cells(html: &str, method: &str) -> Vec<(String, Option<f64>, String)> {
    let start = html
        .find(&format!(r#"<tr data-method="{method}""#))
        .unwrap_or_else(|| panic!("no results row for {method}"));
    let row = &html[start..start + html[start..].find("</tr>").unwrap()];
    let mut out = Vec::new();
    for td in row.split("<td").skip(1) {
        let Some(k) = td.find(r#"data-key=""#) else {
            continue;
        };
        let key = td[k + 10..].split('"').next().unwrap().to_string();
        let value = td.find(r#"data-value=""#).map(|v| {
            td[v + 12..]
                .split('"')
                .next()
                .unwrap()
                .parse::<f64>()
                .unwrap()
        });
        let text = td[td.find('>').unwrap() + 1..td.find("</td>").unwrap()].to_string();
        out.push((key, value, text));
    }
    out
}

/// The visible text as a number (`15.85 k` → 15850, `-` → None).
fn shown(text: &str) -> Option<f64> {
    let t = text.trim();
    if t == "-" {
        return None;
    }
    let (num, mult) = match t.rsplit_once(' ') {
        Some((n, "k")) => (n, 1e3),
        Some((n, "M")) => (n, 1e6),
        Some((n, "G")) => (n, 1e9),
        _ => (t, 1.0),
    };
    Some(num.parse::<f64>().unwrap_or_else(|_| panic!("cell {t:?}")) * mult)
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()) + 1e-12
}

fn check_cell(
    cells: &[(String, Option<f64>, String)],
    key: &str,
    expected: Option<f64>,
    ctx: &str,
) {
    let (_, value, text) = cells
        .iter()
        .find(|c| c.0 == key)
        .unwrap_or_else(|| panic!("{ctx}: no {key} cell"));
    match expected {
        None => assert_eq!((value, text.as_str()), (&None, "-"), "{ctx}: {key}"),
        Some(e) => {
            let v = value.unwrap_or_else(|| panic!("{ctx}: {key} has no data-value"));
            assert!(close(v, e, 1e-12), "{ctx}: {key} data-value {v} != {e}");
            let s = shown(text).unwrap();
            // Percent columns show the fraction ×100 with two decimals; others four digits.
            let (s, tol) = if key.starts_with("accuracy") {
                (s / 100.0, 0.006)
            } else {
                (s, 0.003)
            };
            assert!(close(s, e, tol), "{ctx}: {key} shows {text:?} for {e}");
        }
    }
}

#[test]
fn report_numbers_equal_the_run_files_and_gaps_are_listed() {
    let tmp = TempDir::new("report");
    let run = tmp.join("run");
    let methods = build_run(&run);
    let stdout = expect_ok(&run, &["report", "--run", "."]);
    assert!(stdout.contains("report.html"), "{stdout}");
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    // Self-contained: no external scripts, styles or images (only the SVG namespace URL).
    assert!(!html.contains("<script src") && !html.contains("https://"));
    assert_eq!(
        html.matches("http://").count(),
        html.matches("http://www.w3.org/2000/svg").count()
    );
    assert!(
        !html.contains("NaN") && !html.contains("inf<"),
        "non-finite numbers"
    );
    assert!(
        !html.contains(r#"id="missing""#),
        "a complete run lacks nothing"
    );
    // Every section but CW-HAWQ's curve (the run has no CW-HAWQ plan).
    let plots = mpq::report::PLOTS
        .into_iter()
        .filter(|id| *id != "cw-curve");
    for id in ["settings", "results"].into_iter().chain(plots) {
        let at = html
            .find(&format!(r#"<section id="{id}">"#))
            .unwrap_or_else(|| panic!("no section {id}"));
        let body = &html[at..at + html[at..].find("</section>").unwrap()];
        assert!(!body.contains("not available"), "section {id} is empty");
        if id != "settings" && id != "results" {
            // Each plot is also a standalone SVG file, the same drawing as the inline one.
            let svg = std::fs::read_to_string(run.join(format!("report-{id}.svg")))
                .unwrap_or_else(|e| panic!("report-{id}.svg: {e}"));
            assert!(
                svg.starts_with("<svg") && svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#),
                "report-{id}.svg is not a standalone SVG"
            );
            assert!(
                body.contains(&svg),
                "report-{id}.svg differs from the inline plot"
            );
        }
    }

    // The machine-readable block.
    let a = html.find(r#"id="mpq-report-data">"#).unwrap() + 21;
    let data: Json = serde_json::from_str(&html[a..a + html[a..].find("</script>").unwrap()])
        .expect("report data block is JSON");
    let rows = data["results"].as_array().unwrap();

    let fp = read_json(&run.join("fp.json"));
    let cells = row_cells(&html, "fp32");
    check_cell(&cells, "accuracy_after", fp["accuracy"].as_f64(), "fp32");

    for m in &methods {
        let ctx = format!("method {m}");
        let plan = read_json(&run.join(format!("plans/{m}.json")));
        let summary = read_json(&run.join(format!("quantized/{m}/summary.json")));
        let hw = parse_json(
            &expect_ok(
                &run,
                &[
                    "hw",
                    "--model",
                    "model.safetensors",
                    "--hardware",
                    "bitfusion",
                    "--policy",
                    &format!("plans/{m}.json"),
                    "--json",
                    "--quiet",
                ],
            ),
            "hw",
        );
        // The policy and the quantize summary agree on the costs; the report shows them.
        for key in ["size_bytes", "avg_w_bits", "bops"] {
            assert!(
                close(
                    plan[key].as_f64().unwrap(),
                    summary[key].as_f64().unwrap(),
                    1e-12
                ),
                "{ctx}: {key} differs between policy and summary"
            );
        }
        let expected = [
            ("size_bytes", plan["size_bytes"].as_f64()),
            ("avg_w_bits", plan["avg_w_bits"].as_f64()),
            ("bops", plan["bops"].as_f64()),
            ("latency_ms", hw["latency_ms"].as_f64()),
            ("energy_mj", hw["energy_mj"].as_f64()),
            (
                "accuracy_before",
                summary["before_finetune"]["accuracy"].as_f64(),
            ),
            (
                "accuracy_after",
                summary["after_finetune"]["accuracy"].as_f64(),
            ),
            ("search_seconds", plan["seconds"].as_f64()),
        ];
        let cells = row_cells(&html, m);
        let row = rows
            .iter()
            .find(|r| r["method"] == *m)
            .unwrap_or_else(|| panic!("{ctx}: not in the data block"));
        for (key, e) in expected {
            assert!(e.is_some(), "{ctx}: {key} missing from the run files");
            check_cell(&cells, key, e, &ctx);
            assert!(
                close(row[key].as_f64().unwrap(), e.unwrap(), 1e-12),
                "{ctx}: data {key}"
            );
        }
        // Ω on the shared scale: the pareto plan's own Ω is on it.
        if *m == "pareto" {
            let o = row["omega"].as_f64().expect("pareto's Ω");
            assert!(
                close(o, plan["omega"].as_f64().unwrap(), 1e-6),
                "{ctx}: Ω {o}"
            );
        }
    }

    // Remove and corrupt parts: the report renders the rest and names them.
    std::fs::remove_file(run.join("quantized/ilp/summary.json")).unwrap();
    std::fs::remove_file(run.join("sensitivity.json")).unwrap();
    std::fs::write(run.join("plans/uniform.json"), "{ not json").unwrap();
    let out = mpq_in(&run, &["report", "--run", "."]);
    let ctx = describe(&["report"], &out);
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one note line\n{ctx}");
    for f in [
        "quantized/ilp/summary.json",
        "sensitivity.json",
        "plans/uniform.json (unreadable)",
    ] {
        assert!(stderr.contains(f), "stderr should name {f}\n{ctx}");
    }
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    let at = html.find(r#"<section id="missing""#).expect("missing list");
    let missing = &html[at..at + html[at..].find("</section>").unwrap()];
    for f in [
        "quantized/ilp/summary.json",
        "sensitivity.json",
        "plans/uniform.json: ",
    ] {
        assert!(missing.contains(f), "the missing list should name {f}");
    }
    assert!(
        html.contains(r#"<tr data-method="pareto""#) && !html.contains(r#"data-method="uniform""#)
    );
    let cells = row_cells(&html, "ilp");
    check_cell(&cells, "accuracy_after", None, "ilp without summary");
    assert!(html.contains(r#"<section id="bitmap"><h2>"#) && html.contains("<svg"));
    // Plots the run can no longer draw leave no stale file behind.
    for id in ["sensitivity", "activations", "density"] {
        assert!(!run.join(format!("report-{id}.svg")).exists(), "stale {id}");
    }
    assert!(run.join("report-bitmap.svg").is_file());
}

#[test]
fn report_of_no_run_is_an_input_error() {
    let dir = TempDir::new("reportnone");
    expect_error(&dir, &["report", "--run", "nothere"], 2, &["nothere"]);
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    expect_error(
        &dir,
        &["report", "--run", "empty"],
        2,
        &["empty", "holds no run files"],
    );
}
