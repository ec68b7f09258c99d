//! `mpq search` with HAWQ-V3's paired formats and ratio budgets, a hardware CSV that prices
//! only the allowed choices (latency, size and BitOps in one file), and `--table` problems
//! without a model; bad formats, ratios and tables exit 2 with one line and no file.

use super::search_hw::{layer_table, write_sensitivity};
use super::*;

type Json = serde_json::Value;

const LENET: &[&str] = &["--model", "zoo:lenet5"];

fn layer_bits(plan: &Json) -> Vec<(u64, u64)> {
    plan["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["w_bits"].as_u64().unwrap(), l["a_bits"].as_u64().unwrap()))
        .collect()
}

#[test]
fn formats_ratio_budgets_and_tables_from_the_command_line() {
    let dir = TempDir::new("formats");
    let layers = layer_table(dir.path(), LENET);
    write_sensitivity(dir.path(), "s.json", &layers);
    // A hardware table with rows for W4A4 and W8A8 only: latency, size and BitOps.
    let mut hw = String::from("layer,w_bits,a_bits,latency_ms,size_bits,bops\n");
    let mut lo_hi = [0.0f64; 2];
    for (name, params, macs) in &layers {
        for (k, b) in [4.0f64, 8.0].into_iter().enumerate() {
            let latency = macs * b * b * 1e-9;
            lo_hi[k] += latency;
            hw.push_str(&format!(
                "{name},{b},{b},{latency},{},{}\n",
                params * b + 32.0,
                macs * b * b
            ));
        }
    }
    std::fs::write(dir.path().join("hw.csv"), &hw).unwrap();
    let mut args = vec!["search", "--json", "--quiet", "--out", "p.json"];
    args.extend_from_slice(LENET);
    args.extend_from_slice(&[
        "--method",
        "ilp",
        "--sensitivity",
        "s.json",
        "--formats",
        "4/4,8/8",
        "--hardware",
        "hw.csv",
        "--latency-ratio",
        "0.5",
    ]);
    let plan = parse_json(&expect_ok(dir.path(), &args), "search --formats");
    let bits = layer_bits(&plan);
    assert!(
        bits.iter().all(|b| *b == (4, 4) || *b == (8, 8)),
        "{bits:?}"
    );
    assert!(bits.contains(&(4, 4)) && bits.contains(&(8, 8)), "{bits:?}");
    let latency = plan["latency_ms"].as_f64().unwrap();
    assert!(
        latency <= lo_hi[0] + 0.5 * (lo_hi[1] - lo_hi[0]) + 1e-15,
        "{latency}"
    );
    // The size and BitOps the plan reports are the table's.
    let (mut size, mut bops) = (0.0, 0.0);
    for ((_, params, macs), (w, a)) in layers.iter().zip(&bits) {
        size += params * *w as f64 + 32.0;
        bops += macs * (*w * *a) as f64;
    }
    assert_eq!(plan["size_bytes"].as_f64().unwrap(), (size / 8.0).ceil());
    assert_eq!(plan["bops"].as_f64().unwrap(), bops);
    assert_eq!(plan["constraints"]["latency_ratio"], 0.5);

    // The same problem as a table alone: no model.
    let mut table = String::from("layer,w_bits,a_bits,omega,bops\n");
    for (i, (name, _, macs)) in layers.iter().enumerate() {
        for b in [4.0f64, 8.0] {
            let omega = (i + 1) as f64 * 4f64.powf(-b);
            table.push_str(&format!("{name},{b},{b},{omega},{}\n", macs * b * b));
        }
    }
    std::fs::write(dir.path().join("problem.csv"), &table).unwrap();
    let args = [
        "search",
        "--json",
        "--quiet",
        "--out",
        "t.json",
        "--table",
        "problem.csv",
        "--method",
        "ilp",
        "--bops-ratio",
        "0.3",
    ];
    let plan = parse_json(&expect_ok(dir.path(), &args), "search --table");
    let bits = layer_bits(&plan);
    assert!(
        bits.iter().all(|b| *b == (4, 4) || *b == (8, 8)),
        "{bits:?}"
    );
    assert!(dir.path().join("t.json").exists());

    // Bad input: one line, exit 2, nothing written.
    let bad = |extra: &[&str], fragments: &[&str]| {
        let mut args = vec!["search", "--out", "bad.json", "--method", "ilp"];
        args.extend_from_slice(extra);
        let msg = expect_error(&dir, &args, 2, fragments);
        assert_eq!(msg.trim_end().lines().count(), 1, "{msg}");
    };
    let model = ["--model", "zoo:lenet5", "--sensitivity", "s.json"];
    bad(
        &[&model[..], &["--formats", "3/3", "--a-bits", "4,8"]].concat(),
        &["formats", "3/3", "outside the candidate bits"],
    );
    bad(
        &[&model[..], &["--formats", "4/4,8/8", "--bops-ratio", "1.5"]].concat(),
        &["bops-ratio", "between 0 and 1"],
    );
    bad(
        &[&model[..], &["--formats", "4/4", "--size-ratio", "-0.2"]].concat(),
        &["size-ratio"],
    );
    let first = &layers[0].0;
    for (name, body, says) in [
        ("nan.csv", format!("{first},4,4,1,NaN\n"), "bops \"NaN\""),
        ("gap.csv", format!("{first},4,4,1,\n"), "bops is missing"),
    ] {
        std::fs::write(
            dir.path().join(name),
            format!("layer,w_bits,a_bits,omega,bops\n{body}"),
        )
        .unwrap();
        bad(&["--table", name, "--bops-ratio", "0.5"], &[name, says]);
    }
    bad(
        &[
            "--table",
            "problem.csv",
            "--bops-ratio",
            "0.5",
            "--pin",
            "conv9=8",
        ],
        &["conv9"],
    );
    bad(
        &[
            "--table",
            "problem.csv",
            "--max-bops",
            "1",
            "--hardware",
            "hw.csv",
        ],
        &["--table", "costs"],
    );
}
