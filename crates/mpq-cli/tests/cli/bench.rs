//! `mpq bench`: the JSON report of one quick workload, and unknown workload names.

use super::{TempDir, expect_error, expect_ok, parse_json};

#[test]
fn bench_json_has_the_documented_keys() {
    let dir = TempDir::new("bench");
    let args = [
        "bench",
        "--json",
        "--quiet",
        "--repeats",
        "1",
        "--only",
        "lenet5_fwd_bwd",
    ];
    let stdout = expect_ok(dir.path(), &args);
    let v = parse_json(&stdout, "mpq bench --json");
    let machine = &v["machine"];
    assert!(machine["cores"].as_u64().is_some_and(|c| c >= 1), "{v}");
    for key in ["cpu_model", "avx2", "avx512f", "fma", "kernels_isa"] {
        assert!(machine.get(key).is_some(), "machine.{key} missing: {v}");
    }
    assert!(v["threads"].as_u64().is_some_and(|t| t >= 1), "{v}");
    assert_eq!(v["ops"], "mpq-kernels", "{v}");
    let workloads = v["workloads"].as_array().expect("workloads array");
    assert_eq!(workloads.len(), 1, "{v}");
    let w = &workloads[0];
    assert_eq!(w["name"], "lenet5_fwd_bwd");
    assert_eq!(w["runs"], 1);
    for key in ["median_s", "min_s", "gflop", "gflops_per_s"] {
        let x = w[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert!(x > 0.0 && x.is_finite(), "{key} = {x}");
    }
    assert!(dir.listing().is_empty(), "bench writes no file");
}

#[test]
fn bench_unknown_workload_is_input_error() {
    let dir = TempDir::new("bench-unknown");
    expect_error(
        &dir,
        &["bench", "--only", "resnet21_fwd"],
        2,
        &["resnet21_fwd", "lenet5_fwd_bwd"],
    );
}
