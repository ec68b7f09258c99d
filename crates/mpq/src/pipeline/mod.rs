//! The workflow: one typed request and outcome per stage, the same for every front end (the
//! `mpq` command line, a library user, the comparison harness). Each stage opens its inputs
//! from references (`zoo:NAME`, a file, `mnist10k`), checks option combinations, runs the
//! library, writes its outputs atomically, and reports progress and status lines through
//! [`Progress`](crate::progress::Progress); nothing here prints.
//!
//! | stage | request | outcome | writes |
//! | --- | --- | --- | --- |
//! | [`info`] | [`ModelSource`] | [`InfoOutcome`] | - |
//! | [`train()`] | [`TrainRequest`] | [`TrainOutcome`] | the model |
//! | [`eval`] | [`EvalRequest`] | [`EvalOutcome`] | - |
//! | [`analyze`] | [`AnalyzeRequest`] | [`AnalyzeOutcome`] | sensitivity file (+ density plot) |
//! | [`search`] | [`SearchRequest`] | [`SearchOutcome`] | policy (+ frontier, curve, state) |
//! | [`quantize()`] | [`QuantizeRequest`] | [`crate::run::QuantizeSummary`] | packed model, QDQ ONNX, plan, summary |
//! | [`hw`] | [`HwRequest`] | [`HwOutcome`] | lookup table CSV (optional) |
//! | [`report`] | [`ReportRequest`] | [`crate::report::ReportOutcome`] | `report.html`, plots, `summary.json` |
//! | [`run_all`] | [`RunAllRequest`] | [`RunAllOutcome`] | a whole run folder |
//!
//! ```no_run
//! use mpq::pipeline::{self, ModelSource, SearchRequest, Method};
//! use mpq::progress::NoProgress;
//! use mpq::search::Budget;
//!
//! let mut req = SearchRequest::new(ModelSource::new("lenet5.safetensors"), Method::Ilp);
//! req.sensitivity = Some("s.json".into());
//! req.budget.limits = Budget::avg_bits(3.0);
//! let outcome = pipeline::search(&req, &mut NoProgress).unwrap();
//! println!("{} bytes", outcome.policy.plan.size_bytes.unwrap_or(0));
//! ```

mod analyze;
mod compare;
mod eval;
mod hw;
mod names;
mod quantize;
mod report;
mod reward;
mod run_all;
mod search;
pub mod stages;
mod train;

pub use analyze::{ACT_ERROR_BITS, Analysis, AnalyzeOutcome, AnalyzeRequest, Split, analyze};
pub use compare::{CompareOutcome, CompareRequest, compare};
pub use eval::{EvalOutcome, EvalRequest, eval};
pub use hw::{HwOutcome, HwRequest, hw};
pub use quantize::{
    DefaultLr, FinetuneOptions, QuantizeConfig, QuantizeRequest, QuantizerChoice, bit_equal,
    quantize, quantize_model, same_weights,
};
pub use report::{ReportRequest, report, summarize};
pub use reward::{RewardConfig, RewardEvaluator};
pub use run_all::{
    HOLDOUT, RunAllOutcome, RunAllRequest, Stage, StageRequest, run_all, shell_join, stages,
};
pub use search::{
    AgentOptions, BudgetSpec, HaqOptions, Method, MethodKind, OmegaOptions, SearchOutcome,
    SearchRequest, UniformReference, WeightQuantizer, search,
};
pub use train::{TrainFrom, TrainOutcome, TrainRequest, train};

use candle::Device;
use serde::Serialize;

use crate::data::{self, DataSplits};
use crate::graph::LayerInfo;
use crate::model::{Model, ModelHint};
use crate::{Error, Result};

/// A model reference (`PATH.safetensors`, `PATH.onnx`, `zoo:NAME`) with the fallbacks for
/// files that do not describe themselves (a PyTorch `state_dict`) and for zoo models.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSource {
    /// The reference.
    pub reference: String,
    /// Architecture, input shape, classes, width, and the seed of fresh zoo weights.
    pub hint: ModelHint,
}

impl ModelSource {
    /// A reference without fallbacks.
    pub fn new(reference: impl Into<String>) -> ModelSource {
        ModelSource {
            reference: reference.into(),
            hint: ModelHint::default(),
        }
    }

    /// Opens the model on [`device`]; parameters that are not finite are an error
    /// ([`crate::guard`]).
    pub fn open(&self) -> Result<Model> {
        let model = Model::open(&self.reference, &self.hint, &device())?;
        crate::guard::check_params(&model.graph, &format!("model {}", self.reference))?;
        Ok(model)
    }
}

/// The model's file, when the reference names an existing file (not `zoo:NAME`).
pub(crate) fn model_file(src: &ModelSource) -> Option<&std::path::Path> {
    let p = std::path::Path::new(&src.reference);
    p.is_file().then_some(p)
}

/// The compute device (CPU; CUDA when built with the `cuda` feature and a GPU is present).
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

/// The data set `reference` names, with splits seeded by `seed`.
pub fn load_data(reference: &str, seed: u64) -> Result<DataSplits> {
    let opts = data::LoadOptions {
        seed,
        ..Default::default()
    };
    data::load(reference, &opts)
}

/// The data's sample shape must be what the model takes, and its classes fit the outputs.
pub fn check_shape(model: &Model, splits: &DataSplits) -> Result<()> {
    let want = model.graph.input_shape();
    let got = splits.test.shape();
    if want != got {
        return Err(Error::ShapeMismatch {
            name: format!("data {} for model {}", splits.name, model.meta.arch),
            expected: format!("{want:?}"),
            got: format!("{got:?}"),
        });
    }
    let classes = model.meta.config.classes;
    if splits.test.classes() > classes {
        return Err(Error::config(
            "data",
            format!(
                "{} has {} classes but the model outputs {classes}",
                splits.name,
                splits.test.classes()
            ),
        ));
    }
    Ok(())
}

/// Opens `model` and `data`, checks that they fit each other, and drops the samples the
/// model's training held out from the training split (see [`exclude_holdout`]).
pub fn open_with_data(model: &ModelSource, data: &str, seed: u64) -> Result<(Model, DataSplits)> {
    let m = model.open()?;
    let mut splits = load_data(data, seed)?;
    check_shape(&m, &splits)?;
    exclude_holdout(&m, &mut splits);
    Ok((m, splits))
}

/// Drops from `splits.train` the samples the model's training held out (`mpq train
/// --holdout`, the same seeded split), when it was trained on the same data: they score the
/// agents' plans, and no analysis, calibration or fine-tune may see them.
pub(crate) fn exclude_holdout(model: &Model, splits: &mut DataSplits) {
    if let Some((n, seed)) = model.training_holdout(&splits.name)
        && n < splits.train.len()
    {
        splits.train = splits.train.split_holdout(n, seed).0;
    }
}

/// What `mpq info` shows: the model and its quantizable layers.
#[derive(Debug, Clone, Serialize)]
pub struct InfoOutcome {
    /// The model reference.
    pub model: String,
    /// Its architecture.
    pub arch: String,
    /// Per-sample input shape.
    pub input_shape: Vec<usize>,
    /// Classes.
    pub classes: usize,
    /// Quantizable layers.
    pub quantizable_layers: usize,
    /// Trainable parameters.
    pub params: usize,
    /// Parameters in the quantizable layers' weights.
    pub weight_params: usize,
    /// Multiply-accumulates per sample.
    pub macs: u64,
    /// The layer table.
    pub layers: Vec<LayerInfo>,
}

/// The layer table of a model.
pub fn info(model: &ModelSource) -> Result<InfoOutcome> {
    let m = model.open()?;
    let layers = m.graph.layer_infos()?;
    Ok(InfoOutcome {
        model: model.reference.clone(),
        arch: m.meta.arch.clone(),
        input_shape: m.graph.input_shape().to_vec(),
        classes: m.meta.config.classes,
        quantizable_layers: layers.len(),
        params: m.num_params(),
        weight_params: layers.iter().map(|l| l.params).sum(),
        macs: layers.iter().map(|l| l.macs).sum(),
        layers,
    })
}

/// `OUT` with its extension replaced by `suffix` (`p.json` → `p.frontier.json`).
pub fn side_path(out: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    out.with_extension(suffix)
}
