//! A run folder as `mpq quickstart` leaves it (`model.safetensors`, `fp.json`,
//! `settings.json`, `sensitivity.json`, `plans/<method>.json`,
//! `quantized/<method>/summary.json`), read tolerantly: a missing file is noted in
//! [`RunFolder::missing`], a file that does not parse in [`RunFolder::unreadable`], and the
//! rest is kept.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::graph::LayerInfo;
use crate::model::{Model, ModelHint};
use crate::search::Sensitivities;
use crate::sensitivity::SensitivityTable;
use crate::train::EvalStats;
use crate::{Error, QuantPlan, Result};

/// The order methods appear in; others follow alphabetically.
pub const METHOD_ORDER: [&str; 9] = [
    "uniform", "random", "hawq-v1", "pareto", "ilp", "haq", "cw-hawq", "cw-ilp", "limpq",
];

/// The FP32 model's test numbers (`fp.json`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct FpStats {
    /// Test accuracy, a fraction.
    pub accuracy: f64,
    /// Mean test loss.
    #[serde(default)]
    pub loss: Option<f64>,
    /// Test samples.
    #[serde(default)]
    pub samples: Option<usize>,
}

/// The parts of a `quantized/<method>/summary.json` (what `mpq quantize` writes) the report
/// shows.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QuantizedSummary {
    /// Accuracy after calibration, before fine-tuning.
    pub before_finetune: EvalStats,
    /// Accuracy after fine-tuning.
    pub after_finetune: EvalStats,
    /// Fine-tuning epochs run.
    #[serde(default)]
    pub finetune_epochs: usize,
    /// Weight storage with quantizer metadata (bytes).
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Parameter-weighted mean weight bits.
    #[serde(default)]
    pub avg_w_bits: Option<f64>,
    /// Bit operations per sample.
    #[serde(default)]
    pub bops: Option<f64>,
}

/// One search method's results: its policy and, when quantized, the summary.
#[derive(Debug, Clone)]
pub struct MethodRun {
    /// The method (the policy's file stem, `plans/<method>.json`).
    pub method: String,
    /// The policy.
    pub plan: QuantPlan,
    /// The policy file as JSON (method sections such as `haq` and `cw_hawq`).
    pub raw: serde_json::Value,
    /// `quantized/<method>/summary.json`, when present and readable.
    pub summary: Option<QuantizedSummary>,
}

/// Everything readable in a run folder.
#[derive(Debug)]
pub struct RunFolder {
    /// The folder.
    pub dir: PathBuf,
    /// `settings.json` (a free-form object).
    pub settings: Option<serde_json::Map<String, serde_json::Value>>,
    /// `fp.json`.
    pub fp: Option<FpStats>,
    /// `sensitivity.json` as the analysis wrote it.
    pub sensitivity: Option<SensitivityTable>,
    /// `sensitivity.json` as the search reads it (for Ω).
    pub sensitivities: Option<Sensitivities>,
    /// The FP model, when `model.safetensors` loads.
    pub model: Option<Model>,
    /// The model's layer table.
    pub layers: Option<Vec<LayerInfo>>,
    /// One entry per readable `plans/<method>.json`, in [`METHOD_ORDER`].
    pub methods: Vec<MethodRun>,
    /// `plans/pareto.frontier.json`.
    pub frontier: Option<serde_json::Value>,
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

fn parse_json<T: DeserializeOwned>(path: &Path) -> std::result::Result<Option<T>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| e.to_string())
}

impl RunFolder {
    /// Reads `dir`. Fails only when `dir` is not a folder or holds none of the run's files.
    pub fn load(dir: &Path) -> Result<RunFolder> {
        let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
        if !meta.is_dir() {
            return Err(Error::config(
                "run",
                format!("{} is not a folder", dir.display()),
            ));
        }
        let mut run = RunFolder {
            dir: dir.to_path_buf(),
            settings: None,
            fp: None,
            sensitivity: None,
            sensitivities: None,
            model: None,
            layers: None,
            methods: Vec::new(),
            frontier: None,
            missing: Vec::new(),
            unreadable: Vec::new(),
        };
        let mut found = 0usize;
        let model_path = dir.join("model.safetensors");
        if model_path.exists() {
            found += 1;
            match Model::load(&model_path, &ModelHint::default(), &candle::Device::Cpu)
                .and_then(|m| Ok((m.graph.layer_infos()?, m)))
            {
                Ok((layers, model)) => {
                    run.layers = Some(layers);
                    run.model = Some(model);
                }
                Err(e) => run.unreadable.push(format!("model.safetensors: {e}")),
            }
        } else {
            run.missing
                .push("model.safetensors (the FP model: latency, energy and Ω need it)".into());
        }
        run.settings = run.json("settings.json", "the run's settings", &mut found);
        run.fp = run.json("fp.json", "the FP32 accuracy", &mut found);
        let sens_path = dir.join("sensitivity.json");
        run.sensitivity = run.json(
            "sensitivity.json",
            "per-layer sensitivity and the spectral density",
            &mut found,
        );
        if run.sensitivity.is_some() {
            run.sensitivities = Sensitivities::load(&sens_path).ok();
        }
        run.load_plans(&mut found)?;
        if found == 0 && run.unreadable.is_empty() {
            return Err(Error::config(
                "run",
                format!(
                    "{} holds no run files (model.safetensors, fp.json, settings.json, \
                     sensitivity.json, plans/*.json); run `mpq quickstart --out {}` first",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        Ok(run)
    }

    /// Parses `rel` into `T`, noting it as missing (with `what` it holds) or unreadable.
    fn json<T: DeserializeOwned>(&mut self, rel: &str, what: &str, found: &mut usize) -> Option<T> {
        let path = self.dir.join(rel);
        match parse_json(&path) {
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

    fn load_plans(&mut self, found: &mut usize) -> Result<()> {
        let plans_dir = self.dir.join("plans");
        let mut stems: Vec<String> = match std::fs::read_dir(&plans_dir) {
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
            let raw: serde_json::Value = match parse_json(&self.dir.join(&rel)) {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    self.unreadable.push(format!("{rel}: {e}"));
                    continue;
                }
            };
            let plan: QuantPlan = match serde_json::from_value(raw.clone()) {
                Ok(p) => p,
                Err(e) => {
                    self.unreadable
                        .push(format!("{rel}: not a policy (QuantPlan) JSON: {e}"));
                    continue;
                }
            };
            if let Some(layers) = &self.layers
                && let Err(e) = plan.validate(layers)
            {
                self.unreadable
                    .push(format!("{rel}: does not fit model.safetensors: {e}"));
                continue;
            }
            let srel = format!("quantized/{method}/summary.json");
            let summary = match parse_json::<QuantizedSummary>(&self.dir.join(&srel)) {
                Ok(Some(s)) => Some(s),
                Ok(None) => {
                    self.missing
                        .push(format!("{srel} (accuracy of the {method} plan)"));
                    None
                }
                Err(e) => {
                    self.unreadable.push(format!("{srel}: {e}"));
                    None
                }
            };
            if method == "pareto" {
                match parse_json(&self.dir.join("plans/pareto.frontier.json")) {
                    Ok(Some(v)) => self.frontier = Some(v),
                    Ok(None) => self
                        .missing
                        .push("plans/pareto.frontier.json (the Pareto frontier)".into()),
                    Err(e) => self
                        .unreadable
                        .push(format!("plans/pareto.frontier.json: {e}")),
                }
            }
            self.methods.push(MethodRun {
                method,
                plan,
                raw,
                summary,
            });
        }
        Ok(())
    }

    /// The layer names, in model order: the model's, else the first plan's, else the
    /// sensitivity table's.
    pub fn layer_names(&self) -> Vec<String> {
        if let Some(l) = &self.layers {
            return l.iter().map(|l| l.name.clone()).collect();
        }
        if let Some(m) = self.methods.first() {
            return m.plan.layers.iter().map(|l| l.name.clone()).collect();
        }
        self.sensitivity
            .as_ref()
            .map(|s| s.layers.iter().map(|l| l.name.clone()).collect())
            .unwrap_or_default()
    }
}
