//! A run folder as `mpq quickstart` leaves it (layout in [`crate::run`]), read tolerantly
//! and without loading the model: a missing file is noted in [`RunFolder::missing`], a file
//! that does not parse in [`RunFolder::unreadable`], and the rest is kept.

use std::path::{Path, PathBuf};

use crate::graph::LayerInfo;
use crate::io::Versioned;
use crate::run::{QuantizeSummary, RunPaths, RunSettings, RunSummary, check_folder};
use crate::search::{FrontierFile, Policy};
use crate::sensitivity::SensitivityTable;
use crate::train::EvalStats;
use crate::{Error, Result};

/// The order methods appear in (the quickstart's); others follow alphabetically.
pub const METHOD_ORDER: [&str; 9] = [
    "uniform", "random", "hawq-v1", "pareto", "ilp", "haq", "cw-ilp", "cw-hawq", "limpq",
];

/// One search method's results: its policy and, when quantized, the summary.
#[derive(Debug, Clone)]
pub struct MethodRun {
    /// The method (the policy's file stem, `plans/<method>.json`).
    pub method: String,
    /// The policy.
    pub policy: Policy,
    /// `quantized/<method>/summary.json`, when present and readable.
    pub summary: Option<QuantizeSummary>,
}

/// Everything readable in a run folder.
#[derive(Debug)]
pub struct RunFolder {
    /// The folder.
    pub dir: PathBuf,
    /// `settings.json`.
    pub settings: Option<RunSettings>,
    /// `fp.json`.
    pub fp: Option<EvalStats>,
    /// `sensitivity.json`.
    pub sensitivity: Option<SensitivityTable>,
    /// `summary.json`: the results computed with the model.
    pub summary: Option<RunSummary>,
    /// One entry per readable `plans/<method>.json`, in [`METHOD_ORDER`].
    pub methods: Vec<MethodRun>,
    /// `plans/pareto.frontier.json`.
    pub frontier: Option<FrontierFile>,
    /// `compare/compare.json`: the comparison with error bars (`mpq compare`).
    pub compare: Option<crate::compare::CompareFile>,
    /// What the run lacks (relative paths, with what it would have shown).
    pub missing: Vec<String>,
    /// Files that exist but could not be read (`path: reason`).
    pub unreadable: Vec<String>,
}

/// The rank of `method` in [`METHOD_ORDER`] (unknown methods last, then by name).
pub fn method_rank(method: &str) -> (usize, String) {
    let i = METHOD_ORDER
        .iter()
        .position(|m| *m == method)
        .unwrap_or(METHOD_ORDER.len());
    (i, method.to_string())
}

/// Reads `path` as `T`: `Ok(None)` when it does not exist, `Err(reason)` when it does not
/// parse.
fn read<T: Versioned>(path: &Path) -> std::result::Result<Option<T>, String> {
    match std::fs::read(path) {
        Ok(bytes) => T::parse(&bytes, &path.display().to_string())
            .map(Some)
            .map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

impl RunFolder {
    /// Reads `dir`. Fails only when `dir` is not a folder or holds none of the run's files.
    pub fn load(dir: &Path) -> Result<RunFolder> {
        check_folder(dir)?;
        let mut run = RunFolder {
            dir: dir.to_path_buf(),
            settings: None,
            fp: None,
            sensitivity: None,
            summary: None,
            methods: Vec::new(),
            frontier: None,
            compare: None,
            missing: Vec::new(),
            unreadable: Vec::new(),
        };
        let mut found = 0usize;
        run.settings = run.file("settings.json", "the run's settings", &mut found);
        run.fp = run.file("fp.json", "the FP32 accuracy", &mut found);
        run.sensitivity = run.file(
            "sensitivity.json",
            "per-layer sensitivity and the spectral density",
            &mut found,
        );
        run.summary = run.file(
            "summary.json",
            "the results computed with the model: latency, energy and Ω on one scale",
            &mut found,
        );
        run.load_plans(&mut found);
        run.compare = run.file(
            "compare/compare.json",
            "the comparison with uniform and random plans, with error bars",
            &mut found,
        );
        if found == 0 && run.unreadable.is_empty() {
            return Err(Error::config(
                "run",
                format!(
                    "{} holds no run files (fp.json, settings.json, sensitivity.json, \
                     summary.json, plans/*.json); run `mpq quickstart --out {}` first",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        Ok(run)
    }

    /// Reads `rel` as `T`, noting it as missing (with `what` it holds) or unreadable.
    fn file<T: Versioned>(&mut self, rel: &str, what: &str, found: &mut usize) -> Option<T> {
        match read(&self.dir.join(rel)) {
            Ok(Some(v)) => {
                *found += 1;
                Some(v)
            }
            Ok(None) => {
                self.missing.push(format!("{rel} ({what})"));
                None
            }
            Err(e) => {
                *found += 1;
                self.unreadable.push(format!("{rel}: {e}"));
                None
            }
        }
    }

    fn load_plans(&mut self, found: &mut usize) {
        let paths = RunPaths::new(&self.dir);
        let mut stems: Vec<String> = match std::fs::read_dir(self.dir.join("plans")) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| {
                    n.ends_with(".json") && !n.starts_with('.') && n.matches('.').count() == 1
                })
                .map(|n| n.trim_end_matches(".json").to_string())
                .collect(),
            Err(_) => Vec::new(),
        };
        stems.sort_by_key(|m| method_rank(m));
        if stems.is_empty() {
            self.missing
                .push("plans/*.json (search results: no plan to compare)".into());
        }
        for method in stems {
            *found += 1;
            let rel = format!("plans/{method}.json");
            let policy: Policy = match read(&paths.plan(&method)) {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    self.unreadable.push(format!("{rel}: {e}"));
                    continue;
                }
            };
            if let Some(layers) = self.layers()
                && let Err(e) = policy.plan.validate(layers)
            {
                self.unreadable
                    .push(format!("{rel}: does not fit the run's model: {e}"));
                continue;
            }
            let srel = format!("quantized/{method}/summary.json");
            let summary = match read(&paths.quantized(&method).join("summary.json")) {
                Ok(Some(s)) => Some(s),
                Ok(None) => {
                    let what = format!("{srel} (accuracy of the {method} plan)");
                    self.missing.push(what);
                    None
                }
                Err(e) => {
                    self.unreadable.push(format!("{srel}: {e}"));
                    None
                }
            };
            if let Some(fref) = &policy.frontier {
                let frel = format!("plans/{}", fref.json);
                match read(&self.dir.join(&frel)) {
                    Ok(Some(f)) => self.frontier = Some(f),
                    Ok(None) => self.missing.push(format!("{frel} (the Pareto frontier)")),
                    Err(e) => self.unreadable.push(format!("{frel}: {e}")),
                }
            }
            self.methods.push(MethodRun {
                method,
                policy,
                summary,
            });
        }
    }

    /// The model's quantizable layers, from `summary.json`.
    pub fn layers(&self) -> Option<&[LayerInfo]> {
        self.summary
            .as_ref()
            .map(|s| s.layers.as_slice())
            .filter(|l| !l.is_empty())
    }

    /// The layer names, in model order: the summary's, else the first plan's, else the
    /// sensitivity table's.
    pub fn layer_names(&self) -> Vec<String> {
        if let Some(l) = self.layers() {
            return l.iter().map(|l| l.name.clone()).collect();
        }
        if let Some(m) = self.methods.first() {
            return m
                .policy
                .plan
                .layers
                .iter()
                .map(|l| l.name.clone())
                .collect();
        }
        self.sensitivity
            .as_ref()
            .map(|s| s.layers.iter().map(|l| l.name.clone()).collect())
            .unwrap_or_default()
    }
}
