//! The file formats (`docs/file-formats.md`): files written by the previous version of mpq
//! (`tests/fixtures/v0`, no `format`/`version` fields) load with the one type that reads each
//! format today, with their numbers intact, and the current writer reproduces them byte for
//! byte apart from the new header; files of another format or a newer version are refused.

use std::path::{Path, PathBuf};

use mpq::Versioned;
use mpq::run::{QuantizeSummary, RunSettings, RunSummary};
use mpq::search::haq::HaqHistory;
use mpq::search::{FrontierFile, Policy};
use mpq::sensitivity::SensitivityTable;
use mpq::train::EvalStats;

fn v0(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v0")
        .join(name)
}

/// Loads `name` as `T`, and checks that writing it again gives the same JSON after the
/// `format`/`version` header: the same bytes when `exact`, else the same fields and values
/// (an agent's record in a policy was written with sorted keys).
fn round_trip<T: Versioned>(name: &str, format: &str, exact: bool) -> T {
    let old = String::from_utf8(std::fs::read(v0(name)).unwrap()).unwrap();
    let value = T::load(v0(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let new = String::from_utf8(value.to_bytes().unwrap()).unwrap();
    let header = format!("{{\n  \"format\": \"{format}\",\n  \"version\": 1,\n");
    let body = new
        .strip_prefix(&header)
        .unwrap_or_else(|| panic!("{name}: header {new:.80}"));
    let body = format!("{{\n{body}");
    if exact {
        assert_eq!(body, old, "{name} is written differently");
    } else {
        let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(parse(&body), parse(&old), "{name} changed");
    }
    value
}

#[test]
fn every_version_0_file_loads_and_is_written_the_same_way() {
    let fp: EvalStats = round_trip("fp.json", "mpq.eval", true);
    assert_eq!((fp.accuracy, fp.samples), (0.941, 2000));

    let sens: SensitivityTable = round_trip("sensitivity.json", "mpq.sensitivity", true);
    assert_eq!(sens.layers.len(), 5);
    let conv1 = sens.layer("conv1").unwrap();
    assert!(conv1.trace.is_some() && conv1.top_eigenvalue.is_some());
    assert!(conv1.channel_traces.as_ref().is_some_and(|c| c.len() == 6));
    assert!(sens.density.is_some());

    let limpq: SensitivityTable = round_trip("limpq.json", "mpq.sensitivity", true);
    let searched = limpq.layers.iter().filter(|l| l.limpq.is_some()).count();
    assert_eq!(searched, 3);
    assert!(limpq.limpq.is_some());

    for m in [
        "uniform", "random", "hawq-v1", "pareto", "ilp", "haq", "cw-ilp", "cw-hawq", "limpq",
    ] {
        let agent = m == "haq" || m == "cw-hawq";
        let p: Policy = round_trip(&format!("plans/{m}.json"), "mpq.policy", !agent);
        assert_eq!(p.plan.method, m);
        assert_eq!(p.plan.layers.len(), 5);
        assert!(p.plan.size_bytes.is_some() && p.plan.bops.is_some());
        match m {
            "ilp" => assert!(p.solver.as_ref().unwrap().proven_optimal),
            "pareto" => assert_eq!(p.frontier.as_ref().unwrap().json, "pareto.frontier.json"),
            "haq" => {
                let h = p.haq.as_ref().unwrap();
                assert_eq!((h.episodes, h.history.len()), (12, 12));
                assert!(h.settings.is_some());
            }
            "cw-hawq" => assert_eq!(p.cw_hawq.as_ref().unwrap().history.len(), 12),
            "limpq" => {
                assert_eq!(p.limpq.as_ref().unwrap().alpha, 2.0);
                assert_eq!(p.plan.constraints.pins.as_ref().unwrap().len(), 2);
            }
            _ => {}
        }
    }
    let f: FrontierFile = round_trip("plans/pareto.frontier.json", "mpq.frontier", true);
    assert!(f.chosen < f.points.len() && f.uniform.len() == 6);

    let state: HaqHistory = round_trip("plans/haq.haq-state.json", "mpq.haq-state", true);
    assert_eq!(state.episodes.len(), 12);
    assert_eq!(state.settings.config.evaluator.val_samples, 2000);

    let q: QuantizeSummary = round_trip("quantize-summary.json", "mpq.quantize-summary", true);
    assert!(q.roundtrip_bit_identical && q.size_bytes == 17_516);

    // The run's own files changed shape: they load, with their numbers.
    let s = RunSettings::load(v0("settings.json")).unwrap();
    assert_eq!(s.budget.as_ref().map(|b| b.avg_w_bits), Some(3.0));
    assert_eq!((s.haq_episodes, s.fast), (Some(12), Some(true)));
    let run = RunSummary::load(v0("summary.json")).unwrap();
    assert_eq!(run.results.len(), 9);
    let uniform = &run.results[0];
    assert_eq!(uniform.method, "uniform");
    assert_eq!(uniform.accuracy_before, Some(0.9335));
    assert_eq!(uniform.accuracy_after, Some(0.9405));
    assert_eq!(run.fp32.size_bytes, 177_704);
}

#[test]
fn another_format_or_a_newer_version_is_an_input_error() {
    let text = std::fs::read_to_string(v0("plans/ilp.json")).unwrap();
    let newer = text.replacen('{', "{\"format\": \"mpq.policy\", \"version\": 99,", 1);
    let err = Policy::parse(newer.as_bytes(), "ilp.json").unwrap_err();
    assert!(err.is_input_error(), "{err}");
    assert!(err.to_string().contains("version 99"), "{err}");
    let as_sens = SensitivityTable::parse(
        Policy::load(v0("plans/ilp.json"))
            .unwrap()
            .to_bytes()
            .unwrap()
            .as_slice(),
        "ilp.json",
    )
    .unwrap_err();
    assert!(as_sens.to_string().contains("mpq.policy"), "{as_sens}");
}
