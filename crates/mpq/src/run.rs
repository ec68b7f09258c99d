//! The files a run leaves besides plans and sensitivities (`docs/file-formats.md`): the
//! summary of `mpq quantize` (`DIR/summary.json`), and the run folder of `mpq quickstart`
//! (`settings.json`, `fp.json`, the results in `summary.json`). Each is one type, written and
//! read through [`Versioned`]; the report reads them and never loads a model.
//!
//! ```text
//! DIR/model.safetensors  fp.json  settings.json  sensitivity.json  limpq.json  summary.json
//! DIR/plans/<method>.json            (pareto: <method>.frontier.json/.svg; agents: .curve.svg)
//! DIR/quantized/<method>/{model.safetensors, model.onnx, plan.json, summary.json}
//! DIR/report.html, DIR/report-<plot>.svg
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::export::ExportStats;
use crate::graph::LayerInfo;
use crate::io::Versioned;
use crate::train::{EvalStats, LrRangeResult};
use crate::{Error, Result};

/// What `mpq quantize` measured and wrote (`DIR/summary.json` next to the packed model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizeSummary {
    /// Architecture of the model.
    pub arch: String,
    /// The search method that produced the plan.
    pub method: String,
    /// Whether BatchNorm was folded into the convolutions before quantizing.
    pub fold_bn: bool,
    /// Test accuracy and loss of the FP32 model.
    pub fp32: EvalStats,
    /// After calibration, before fine-tuning (post-training quantization).
    pub before_finetune: EvalStats,
    /// After fine-tuning (equal to `before_finetune` without fine-tuning).
    pub after_finetune: EvalStats,
    /// The written file, loaded back and evaluated.
    pub reloaded: EvalStats,
    /// Whether the reloaded weights equal the simulation's bit for bit and the reloaded
    /// model's test logits equal the simulation's.
    pub roundtrip_bit_identical: bool,
    /// Fine-tuning epochs run.
    pub finetune_epochs: usize,
    /// Fine-tuning wall time.
    pub finetune_seconds: f64,
    /// Weight storage with scales and zero points, the plan's reported size (bytes).
    pub size_bytes: u64,
    /// Weight storage without quantizer metadata (bytes).
    pub size_bytes_weights_only: u64,
    /// FP32 weight storage (bytes).
    pub fp32_size_bytes: u64,
    /// Predicted bytes of the packed file without its header (codes, scales, biases,
    /// activation parameters).
    pub stored_bytes: u64,
    /// Parameter-weighted mean weight bits.
    pub avg_w_bits: f64,
    /// Compression ratio against FP32 weights.
    pub compression: f64,
    /// Bit operations per sample.
    pub bops: f64,
    /// Byte breakdown of the written file.
    pub export: ExportStats,
    /// The packed model.
    pub model_path: PathBuf,
    /// The QDQ ONNX export (`DIR/model.onnx`).
    pub onnx_path: PathBuf,
    /// Bytes of the QDQ ONNX export.
    pub onnx_bytes: u64,
    /// Total wall time.
    pub seconds: f64,
    /// HAWQ's block-wise fine-tuning, one record per stage in the order run (empty when
    /// every layer was fine-tuned at once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageRecord>,
    /// The fine-tuning learning rate used (absent without fine-tuning, and in files written
    /// before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune_lr: Option<f64>,
    /// Where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune_lr_source: Option<LrSource>,
    /// The range test that picked it, when no rate was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_range: Option<LrRangeResult>,
}

/// Where `mpq quantize`'s fine-tuning learning rate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSource {
    /// Given (`--lr`).
    Given,
    /// A fifth (`DefaultLr::training_fraction`) of the model's recorded training rate,
    /// the smaller of the two candidates.
    TrainingRecipe,
    /// The range test's rate, the smaller of the two candidates (or the only one).
    RangeTest,
}

impl std::fmt::Display for LrSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LrSource::Given => "given",
            LrSource::TrainingRecipe => "training recipe",
            LrSource::RangeTest => "range test",
        })
    }
}

/// One stage of HAWQ's block-wise fine-tuning (docs/algorithms.md §1.5): block `π(t)`
/// quantized, then the network fine-tuned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// 1-based stage number.
    pub stage: usize,
    /// The block (layer name or name prefix) quantized at this stage.
    pub block: String,
    /// The layers it quantized.
    pub layers: Vec<String>,
    /// Whether blocks of earlier stages were held fixed (`frozen`) or kept training through
    /// the straight-through estimator (`ste`).
    pub earlier_blocks: String,
    /// Test accuracy and loss once the block is quantized, before the stage's fine-tuning.
    pub before: EvalStats,
    /// After the stage's fine-tuning.
    pub after: EvalStats,
}

impl Versioned for QuantizeSummary {
    const FORMAT: &'static str = "mpq.quantize-summary";
    const VERSION: u32 = 1;
    const WHAT: &'static str = "a quantize summary";
}

/// `fp.json` of a run folder: the FP32 model's test accuracy.
impl Versioned for EvalStats {
    const FORMAT: &'static str = "mpq.eval";
    const VERSION: u32 = 1;
    const WHAT: &'static str = "an evaluation";
}

/// The budget of a quickstart run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunBudget {
    /// Activation bits of the average-bit methods.
    pub a_bits: u32,
    /// Average weight bits of every method but HAQ.
    pub avg_w_bits: f64,
    /// HAQ's hardware model.
    pub haq_hardware: String,
    /// HAQ's latency budget (ms).
    pub haq_max_latency_ms: f64,
    /// The W8A8 latency it halves (ms).
    pub w8a8_latency_ms: f64,
}

/// `settings.json` of a run folder: what ran, with which lengths and seed (fields in
/// alphabetical order, as earlier versions wrote them). Every field is optional, so a folder
/// put together by hand or by another tool can say what it knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    /// The budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<RunBudget>,
    /// CW-HAWQ's episodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cw_hawq_episodes: Option<usize>,
    /// The data reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Whether this was the `--fast` run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast: Option<bool>,
    /// Fine-tuning epochs of each plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finetune_epochs: Option<usize>,
    /// HAQ's episodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub haq_episodes: Option<usize>,
    /// Training samples held out for the agents' rewards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holdout: Option<usize>,
    /// The flags of LIMPQ's indicator training.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limpq_training: Option<String>,
    /// The architecture.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The mpq version that ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mpq_version: Option<String>,
    /// The seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Training epochs of the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_epochs: Option<usize>,
}

impl Versioned for RunSettings {
    const FORMAT: &'static str = "mpq.run-settings";
    const VERSION: u32 = 1;
    const WHAT: &'static str = "run settings";
}

/// One plan's row of the results (`None`: not available in this run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// The method (`fp32` for the reference row).
    pub method: String,
    /// Weight storage with scales (bytes).
    pub size_bytes: Option<f64>,
    /// Parameter-weighted mean weight bits.
    pub avg_w_bits: Option<f64>,
    /// Bit operations per sample.
    pub bops: Option<f64>,
    /// Simulated latency on BitFusion (ms, batch 1).
    pub latency_ms: Option<f64>,
    /// Simulated energy on BitFusion (mJ).
    pub energy_mj: Option<f64>,
    /// Test accuracy after calibration, before fine-tuning (fraction).
    pub accuracy_before: Option<f64>,
    /// Test accuracy after fine-tuning (fraction).
    pub accuracy_after: Option<f64>,
    /// Search wall time (the policy's `seconds`).
    pub search_seconds: Option<f64>,
    /// Ω of the plan on the shared trace scale (`Σ Tr(H_i)/n_i · ‖Q(W_i) − W_i‖²` with the
    /// plan's own quantizer, plus the activation term).
    #[serde(default)]
    pub omega: Option<f64>,
    /// Bytes of the packed model file.
    #[serde(default)]
    pub file_bytes: Option<u64>,
}

/// The FP32 model of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FpRow {
    /// Test accuracy (fraction).
    pub accuracy: f64,
    /// Mean test loss.
    pub loss: f64,
    /// Trainable parameters.
    pub params: usize,
    /// Test samples.
    pub samples: usize,
    /// FP32 weight storage (bytes).
    pub size_bytes: u64,
}

/// `summary.json` of a run folder: the results of every plan, computed with the model (the
/// report shows them without loading it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The FP32 model.
    pub fp32: FpRow,
    /// The model's quantizable layers.
    #[serde(default)]
    pub layers: Vec<LayerInfo>,
    /// The model file.
    pub model: String,
    /// One row per plan, in method order.
    pub results: Vec<ResultRow>,
    /// Wall time of the run (s).
    #[serde(default)]
    pub seconds: f64,
    /// Whether the run trained the model (false: reused).
    #[serde(default)]
    pub trained: bool,
}

impl Versioned for RunSummary {
    const FORMAT: &'static str = "mpq.run-summary";
    const VERSION: u32 = 1;
    const WHAT: &'static str = "a run summary";

    /// Version 0 named the accuracies `ptq_accuracy` and `accuracy`.
    fn upgrade(object: &mut serde_json::Map<String, serde_json::Value>, _: u32) -> Result<()> {
        let rows = object.get_mut("results").and_then(|r| r.as_array_mut());
        for row in rows.into_iter().flatten() {
            if let Some(r) = row.as_object_mut() {
                for (old, new) in [
                    ("ptq_accuracy", "accuracy_before"),
                    ("accuracy", "accuracy_after"),
                ] {
                    if let Some(v) = r.remove(old) {
                        r.insert(new.into(), v);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The paths of a run folder.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPaths {
    /// The folder.
    pub dir: PathBuf,
}

impl RunPaths {
    /// The run folder `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> RunPaths {
        RunPaths { dir: dir.into() }
    }

    /// `DIR/model.safetensors`, the FP32 model.
    pub fn model(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }

    /// `DIR/<name>` (`fp.json`, `settings.json`, `sensitivity.json`, `limpq.json`, …).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `DIR/plans/<method>.json`.
    pub fn plan(&self, method: &str) -> PathBuf {
        self.dir.join("plans").join(format!("{method}.json"))
    }

    /// `DIR/quantized/<method>`.
    pub fn quantized(&self, method: &str) -> PathBuf {
        self.dir.join("quantized").join(method)
    }
}

/// Checks that `dir` is a folder.
pub fn check_folder(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if meta.is_dir() {
        Ok(())
    } else {
        Err(Error::config(
            "run",
            format!("{} is not a folder", dir.display()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_0_run_summary_loads_with_renamed_accuracies() {
        let text = r#"{"fp32": {"accuracy": 0.9, "loss": 0.3, "params": 10, "samples": 5,
            "size_bytes": 40}, "model": "m", "trained": true, "seconds": 2.0,
            "results": [{"method": "ilp", "accuracy": 0.8, "ptq_accuracy": 0.7,
            "size_bytes": 12, "avg_w_bits": 3.0, "bops": 5.0, "latency_ms": null,
            "energy_mj": null, "search_seconds": 0.1, "file_bytes": 99}]}"#;
        let s = RunSummary::parse(text.as_bytes(), "summary.json").unwrap();
        let r = &s.results[0];
        assert_eq!(
            (r.accuracy_before, r.accuracy_after),
            (Some(0.7), Some(0.8))
        );
        assert_eq!((r.file_bytes, r.omega), (Some(99), None));
        assert!(s.layers.is_empty());
        let back = RunSummary::parse(&s.to_bytes().unwrap(), "s").unwrap();
        assert_eq!(back, s);
    }
}
