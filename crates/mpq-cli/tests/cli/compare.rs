//! `mpq compare` from the command line: a small comparison prints its JSON and writes
//! compare.json, compare.md and its plot; a rerun measures nothing; bad budgets, methods and
//! plans exit 2 with one line.

use super::*;

#[test]
fn compare_writes_its_files_resumes_and_refuses_bad_input() {
    let dir = TempDir::new("compare");
    train_mlp(dir.path(), "m.safetensors", &[]);
    let args = [
        "compare",
        "--json",
        "--quiet",
        "--model",
        "m.safetensors",
        "--data",
        SYNTH,
        "--methods",
        "uniform,random",
        "--avg-bits",
        "3,4",
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
        "cmp",
    ];
    let v = expect_json(dir.path(), &args);
    let budgets = v["budgets"].as_array().unwrap();
    assert_eq!(budgets.len(), 2);
    assert_eq!(budgets[0]["label"], "--avg-bits 3 --a-bits 8");
    assert!(v["cells_run"].as_u64().unwrap() > 0);
    assert_eq!(v["cells_reused"], 0);
    for f in [
        "compare.json",
        "compare.md",
        "compare-avg-bits-ptq.svg",
        "compare-avg-bits-finetuned.svg",
    ] {
        assert!(dir.path().join("cmp").join(f).is_file(), "{f}");
    }
    // The analysis the random plans' Ω needs was computed into the folder.
    assert!(dir.path().join("cmp/sensitivity.json").is_file());
    let again = expect_json(dir.path(), &args);
    assert_eq!(again["cells_run"], 0);
    assert_eq!(again["cells_reused"], v["cells_run"]);

    let base = [
        "compare",
        "--model",
        "m.safetensors",
        "--data",
        SYNTH,
        "--out",
        "bad",
    ];
    expect_error(
        &dir,
        &with(&base, &["--methods", "uniform"]),
        2,
        &["at least one budget"],
    );
    expect_error(
        &dir,
        &with(
            &base,
            &[
                "--methods",
                "uniform",
                "--avg-bits",
                "3",
                "--seeds",
                "2",
                "--finetune-epochs",
                "0",
            ],
        ),
        2,
        &["--finetune-epochs"],
    );
    expect_error(
        &dir,
        &with(
            &base,
            &[
                "--methods",
                "uniform",
                "--avg-bits",
                "3",
                "--plan",
                "nopath",
            ],
        ),
        2,
        &["NAME=PATH"],
    );
    expect_error(
        &dir,
        &with(
            &base,
            &[
                "--methods",
                "uniform",
                "--avg-bits",
                "3",
                "--plan",
                "uniform=p.json",
            ],
        ),
        2,
        &["taken by a method"],
    );
    expect_error(
        &dir,
        &with(&base, &["--methods", "nosuch", "--avg-bits", "3"]),
        2,
        &["nosuch"],
    );
}
