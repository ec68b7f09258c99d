//! `mpq compare` (docs/compare.md): a comparison killed part way resumes without measuring
//! its finished cells again and ends where an uninterrupted one does; a plan built to lose
//! is flagged worse than uniform beyond noise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mpq::Versioned;
use mpq::compare::{RowKind, WORSE};
use mpq::pipeline::{
    self, Analysis, AnalyzeRequest, BudgetSpec, CompareRequest, FinetuneOptions, Method,
    ModelSource, SearchRequest, Split, TrainFrom, TrainRequest,
};
use mpq::plan::QuantPlan;
use mpq::progress::{NoProgress, Progress};
use mpq::quant::CalibrationConfig;
use mpq::search::{Budget, Policy};
use mpq::sensitivity::{AnalyzeConfig, Metric, SampleConfig};
use mpq::train::TrainConfig;

use crate::util::temp_dir;

const DATA: &str = "mnist10k";

/// Seeded synthetic images (1,000 training, 200 test): enough to exercise the cells and
/// their resumption in a fraction of mnist10k's time.
const SMALL: &str = "synthetic:1x28x28:10:1000";

/// The zoo MLP trained two epochs on `data` (on mnist10k accurate enough for low bits to
/// cost accuracy), its Hessian traces, and the data reference.
fn trained_on(dir: &Path, data: &str) -> (ModelSource, PathBuf, String) {
    let out = dir.join("mlp.safetensors");
    let req = TrainRequest {
        from: TrainFrom::Arch {
            name: "mlp".into(),
            width: None,
        },
        data: data.into(),
        config: TrainConfig {
            epochs: 2,
            seed: 0,
            ..TrainConfig::default()
        },
        holdout: 0,
        out: out.clone(),
    };
    pipeline::train(&req, &mut NoProgress).unwrap();
    let model = ModelSource::new(out.display().to_string());
    let sens = dir.join("sens.json");
    let mut config = AnalyzeConfig::new(Metric::Trace);
    config.trace.max_iter = 20;
    let analysis = Analysis::Hessian {
        config,
        sample: SampleConfig::default(),
        split: Split::Train,
        svg: None,
    };
    let req = AnalyzeRequest {
        model: model.clone(),
        data: data.into(),
        analysis,
        seed: 0,
        out: sens.clone(),
    };
    pipeline::analyze(&req, &mut NoProgress).unwrap();
    (model, sens, data.to_string())
}

fn trained(dir: &Path) -> (ModelSource, PathBuf, String) {
    trained_on(dir, DATA)
}

fn request((model, sens, data): &(ModelSource, PathBuf, String), out: PathBuf) -> CompareRequest {
    let mut t = SearchRequest::new(model.clone(), Method::Uniform);
    (t.w_bits, t.a_bits) = (Some(vec![2, 3, 4, 8]), Some(vec![8]));
    CompareRequest {
        template: t,
        data: data.clone(),
        methods: vec![
            Method::Uniform,
            Method::Random { max_tries: 100 },
            Method::Ilp,
        ],
        budgets: [3.0, 4.0]
            .map(|b| BudgetSpec {
                limits: Budget::avg_bits(b),
                bops_as: None,
            })
            .to_vec(),
        plans: Vec::new(),
        sensitivity: Some(sens.clone()),
        indicators: None,
        random_plans: 4,
        seeds: 2,
        finetune: FinetuneOptions {
            epochs: 1,
            lr: Some(0.01),
            batch_size: 256,
            all_at_once: true,
            ..FinetuneOptions::default()
        },
        calibration: CalibrationConfig::default(),
        resamples: 500,
        seed: 5,
        out,
    }
}

/// Every cell file with its bytes and modification time.
fn cells(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.join("cells")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let t = std::fs::metadata(&p).unwrap().modified().unwrap();
                out.insert(p.clone(), (std::fs::read(&p).unwrap(), t));
            }
        }
    }
    out
}

/// Kills the run (a panic) at the `n`-th status line.
struct KillAt(usize);

impl Progress for KillAt {
    fn note(&mut self, _: &str) {
        self.0 -= 1;
        if self.0 == 0 {
            panic!("killed");
        }
    }
}

#[test]
fn a_comparison_killed_part_way_resumes_without_redoing_finished_cells() {
    let dir = temp_dir("compare-resume");
    let model = trained_on(&dir, SMALL);
    // The uninterrupted run.
    let whole = pipeline::compare(&request(&model, dir.join("whole")), &mut NoProgress).unwrap();
    assert_eq!(whole.cells_reused, 0);
    let total = whole.cells_run;
    // Budgets × (uniform, ilp: a plan and 2 fine-tunings; 4 random plans, 2 fine-tuned),
    // and the uniform references: at least 2 × (3 + 3 + 6) cells.
    assert!(total >= 24, "{total} cells");

    // Killed at the 15th status line (after the analysis and several cells).
    let out = dir.join("killed");
    let req = request(&model, out.clone());
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pipeline::compare(&req, &mut KillAt(15))
    }));
    assert!(killed.is_err(), "the run should have been killed");
    assert!(!out.join("compare.json").exists());
    let before = cells(&out);
    let finished = before
        .keys()
        .filter(|p| !p.to_string_lossy().ends_with(".plan.json"))
        .count();
    assert!(finished >= 5 && finished < total, "{finished} of {total}");

    // The rerun measures only what the kill left undone ...
    std::thread::sleep(std::time::Duration::from_millis(20));
    let resumed = pipeline::compare(&req, &mut NoProgress).unwrap();
    assert_eq!(resumed.cells_reused, finished);
    assert_eq!(resumed.cells_run, total - finished);
    // ... leaves every finished cell as it was (not rewritten) ...
    let after = cells(&out);
    for (p, (bytes, t)) in &before {
        if p.to_string_lossy().ends_with(".plan.json") {
            continue;
        }
        assert_eq!(
            &after[p],
            &(bytes.clone(), *t),
            "{} was rewritten",
            p.display()
        );
    }
    // ... and ends where the uninterrupted run did, byte for byte.
    let read = |d: &str| std::fs::read(dir.join(d).join("compare.json")).unwrap();
    assert_eq!(read("killed"), read("whole"));

    // A third run measures nothing; more seeds measure only the new fine-tunings.
    let again = pipeline::compare(&req, &mut NoProgress).unwrap();
    assert_eq!((again.cells_run, again.cells_reused), (0, total));
    let mut more = req.clone();
    more.seeds = 3;
    let grown = pipeline::compare(&more, &mut NoProgress).unwrap();
    // One more fine-tuning per method plan and uniform reference, and of the third random
    // plan of each budget where there is one (the MLP has few plans near 3 bits).
    let random_third = (whole.file.budgets.iter())
        .filter(|b| {
            let cell = out.join("cells").join(&b.key).join("random-2.json");
            mpq::compare::PlanCell::load(cell).unwrap().error.is_none()
        })
        .count();
    let plans_tuned = (whole.file.budgets.iter())
        .flat_map(|b| &b.rows)
        .filter(|r| r.kind == RowKind::Method && r.name != "uniform" && r.error.is_none())
        .count()
        + whole.file.uniform.len()
        + random_third;
    assert_eq!(grown.cells_run, plans_tuned);
}

#[test]
fn a_plan_built_to_lose_is_flagged_worse_than_uniform() {
    let dir = temp_dir("compare-lose");
    let model = trained(&dir);
    // Every layer at 2-bit weights and activations: far under the 4-bit budget's cost, and
    // far below uniform W4A8's accuracy.
    let layers = model.0.open().unwrap().graph.layer_infos().unwrap();
    let loser = dir.join("w2a2.json");
    Policy::new(QuantPlan::uniform(&layers, 2, 2))
        .save(&loser)
        .unwrap();
    let mut req = request(&model, dir.join("cmp"));
    req.methods = vec![Method::Uniform];
    req.budgets.truncate(1);
    req.budgets[0].limits = Budget::avg_bits(4.0);
    req.plans = vec![("w2a2-everywhere".into(), loser)];
    req.seeds = 1;
    let r = pipeline::compare(&req, &mut NoProgress).unwrap();
    let b = &r.file.budgets[0];
    let row = |name: &str| b.rows.iter().find(|r| r.name == name).unwrap();
    let v = row("w2a2-everywhere").verdict.clone().unwrap();
    assert_eq!(v.against, "w4a8");
    assert_eq!(v.headline(), WORSE, "{v:?}");
    assert!(v.ptq.hi < 0.0, "{v:?}");
    assert_ne!(row("uniform").verdict.as_ref().unwrap().headline(), WORSE);
    assert_eq!(
        r.file.losers(),
        [(b.label.clone(), "w2a2-everywhere".to_string())]
    );
    // compare.md says so.
    let md = std::fs::read_to_string(dir.join("cmp").join("compare.md")).unwrap();
    assert!(md.contains("Worse beyond noise: w2a2-everywhere."), "{md}");
    // A plan over the budget is refused as a cell, not compared.
    let big = dir.join("w8a8.json");
    Policy::new(QuantPlan::uniform(&layers, 8, 8))
        .save(&big)
        .unwrap();
    req.plans = vec![("too-big".into(), big)];
    let r = pipeline::compare(&req, &mut NoProgress).unwrap();
    let too_big = r.file.budgets[0]
        .rows
        .iter()
        .find(|r| r.name == "too-big")
        .unwrap();
    assert!(
        too_big.error.as_ref().unwrap().contains("over the budget"),
        "{too_big:?}"
    );
    assert!(too_big.verdict.is_none());
}
