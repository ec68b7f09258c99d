//! Applying a plan end to end (what `mpq quantize` runs): fold BatchNorm when the plan says
//! so, calibrate activation ranges, measure post-training-quantization accuracy, optionally
//! fine-tune under the plan (QAT with the straight-through or LSQ quantizers), export the
//! packed model, then load the written file back and check that it reproduces the
//! simulation bit for bit (HAWQ-V3, Yao et al., ICML 2021: the simulated and the deployed
//! integer model must agree). `reward.rs` scores plans for HAQ's search the same way, on a
//! split held out of the training data.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle::Tensor;

use super::ModelSource;
use super::stages::{self, EarlierBlocks, StageConfig};
use crate::cost::CostTable;
use crate::data::{DataSplits, Normalization};
use crate::export;
use crate::graph::{Hooks, NoHooks};
use crate::io::Versioned;
use crate::model::{Model, ModelHint};
use crate::outputs::{StagedFolder, refuse_overwrite};
use crate::plan::{QuantizerKind, WeightRange};
use crate::progress::Progress;
use crate::quant::{CalibrationConfig, PlanHooks, prepare_graph};
use crate::run::{LrSource, QuantizeSummary};
use crate::search::Policy;
use crate::train::{self, EvalStats, LrRangeConfig, LrRangeResult, Schedule, TrainConfig};
use crate::{Error, QuantPlan, Result};

/// The quantizer that `mpq quantize --quantizer` puts on every layer of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantizerChoice {
    /// Symmetric max-abs scales.
    Symmetric,
    /// Symmetric scales from the clip that minimises `‖Q(W) − W‖²`.
    SymmetricMse,
    /// Asymmetric min/max with zero points.
    Asymmetric,
    /// Learned step sizes (LSQ).
    Lsq,
    /// HAQ's k-means codebook.
    Kmeans,
}

impl QuantizerChoice {
    /// The plan's quantizer and weight range.
    pub fn kind(self) -> (QuantizerKind, WeightRange) {
        match self {
            QuantizerChoice::Symmetric => (QuantizerKind::Symmetric, WeightRange::MaxAbs),
            QuantizerChoice::SymmetricMse => (QuantizerKind::Symmetric, WeightRange::Mse),
            QuantizerChoice::Asymmetric => (QuantizerKind::Asymmetric, WeightRange::MaxAbs),
            QuantizerChoice::Lsq => (QuantizerKind::Lsq, WeightRange::MaxAbs),
            QuantizerChoice::Kmeans => (QuantizerKind::KMeans, WeightRange::MaxAbs),
        }
    }
}

/// Quantization-aware fine-tuning under the plan (SGD, cosine schedule).
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneOptions {
    /// Epochs (0: post-training quantization only).
    pub epochs: usize,
    /// Learning rate; `None`: [`DefaultLr`]'s rule (a range test on the model as it will be
    /// fine-tuned, capped at a fifth of the model's recorded training rate).
    pub lr: Option<f64>,
    /// Samples per step.
    pub batch_size: usize,
    /// Weight decay.
    pub weight_decay: f64,
    /// With a plan that carries HAWQ's fine-tuning order: what earlier blocks do while later
    /// stages fine-tune.
    pub earlier_blocks: EarlierBlocks,
    /// Fine-tune every layer at once even when the plan carries a fine-tuning order.
    pub all_at_once: bool,
}

impl Default for FinetuneOptions {
    fn default() -> Self {
        FinetuneOptions {
            epochs: 0,
            lr: None,
            batch_size: 64,
            weight_decay: 5e-4,
            earlier_blocks: EarlierBlocks::Ste,
            all_at_once: false,
        }
    }
}

/// `mpq quantize`: apply a policy file to a model and export it.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeRequest {
    /// The float model.
    pub model: ModelSource,
    /// The policy file.
    pub policy: PathBuf,
    /// Data: the training split calibrates and fine-tunes, the test split measures.
    pub data: String,
    /// Fine-tuning.
    pub finetune: FinetuneOptions,
    /// A quantizer for every layer instead of the policy's.
    pub quantizer: Option<QuantizerChoice>,
    /// Keep BatchNorm separate (overrides the policy).
    pub no_fold_bn: bool,
    /// Activation calibration.
    pub calibration: CalibrationConfig,
    /// Seed of the data splits and the fine-tuning.
    pub seed: u64,
    /// Output folder.
    pub out: PathBuf,
}

impl QuantizeRequest {
    /// Applies `policy` to `model` into the folder `out`: calibration on `data`, no
    /// fine-tuning, the policy's quantizers, seed 0.
    pub fn new(
        model: ModelSource,
        policy: impl Into<PathBuf>,
        data: impl Into<String>,
        out: impl Into<PathBuf>,
    ) -> Self {
        QuantizeRequest {
            model,
            policy: policy.into(),
            data: data.into(),
            finetune: FinetuneOptions::default(),
            quantizer: None,
            no_fold_bn: false,
            calibration: CalibrationConfig::default(),
            seed: 0,
            out: out.into(),
        }
    }
}

/// Opens the model, policy and data of `req`, applies the overrides, and runs
/// [`quantize_model`]: `out/model.safetensors`, `model.onnx`, `plan.json`, `summary.json`.
/// A written model that does not reproduce the simulation is an error.
pub fn quantize(req: &QuantizeRequest, progress: &mut dyn Progress) -> Result<QuantizeSummary> {
    let mut inputs = vec![("policy", req.policy.as_path())];
    inputs.extend(super::model_file(&req.model).map(|m| ("model", m)));
    let outputs: Vec<PathBuf> = std::iter::once(req.out.clone())
        .chain(OUTPUT_FILES.iter().map(|f| req.out.join(f)))
        .collect();
    let outputs: Vec<&Path> = outputs.iter().map(PathBuf::as_path).collect();
    refuse_overwrite(&inputs, &outputs)?;
    if req.out.is_file() {
        return Err(Error::config(
            "out",
            format!("{} is a file, not a folder", req.out.display()),
        ));
    }
    let model = req.model.open()?;
    let layers = model.graph.layer_infos()?;
    let mut plan = Policy::load(&req.policy)?.plan.for_model(&layers)?;
    if let Some(q) = req.quantizer {
        let (kind, range) = q.kind();
        for l in &mut plan.layers {
            l.quantizer = kind;
            l.weight_range = range;
        }
    }
    if req.no_fold_bn {
        plan.fold_bn = false;
    }
    plan.validate(&layers)?;
    let mut splits = super::load_data(&req.data, req.seed)?;
    super::check_shape(&model, &splits)?;
    super::exclude_holdout(&model, &mut splits);
    let f = &req.finetune;
    let finetune = (f.epochs > 0).then(|| TrainConfig {
        epochs: f.epochs,
        batch_size: f.batch_size,
        lr: f.lr.unwrap_or(0.0),
        weight_decay: f.weight_decay,
        schedule: Schedule::Cosine,
        seed: req.seed,
        ..TrainConfig::default()
    });
    if let Some(tc) = &finetune {
        tc.validate()?;
    }
    let staged = plan.finetune_order.is_some() && !f.all_at_once;
    let cfg = QuantizeConfig {
        calibration: req.calibration.clone(),
        finetune,
        eval_batch_size: 256,
        stages: staged.then_some(f.earlier_blocks),
        default_lr: f.lr.is_none().then(|| DefaultLr::for_model(&model)),
    };
    progress.note(&format!(
        "quantizing {} with {} ({} layers in the policy)",
        model.meta.arch,
        req.policy.display(),
        plan.layers.len()
    ));
    let s = quantize_model(&model, &plan, &splits, &cfg, &req.out, progress)?;
    if !s.roundtrip_bit_identical {
        return Err(Error::config(
            "export",
            format!(
                "internal error: the written model does not reproduce the simulation (see {})",
                req.out.join("summary.json").display()
            ),
        ));
    }
    Ok(s)
}

/// Settings of [`quantize_model`].
#[derive(Debug, Clone)]
pub struct QuantizeConfig {
    /// Activation calibration.
    pub calibration: CalibrationConfig,
    /// Fine-tuning under the plan; `None` for post-training quantization only.
    pub finetune: Option<TrainConfig>,
    /// Samples per evaluation batch.
    pub eval_batch_size: usize,
    /// Run HAWQ's fine-tuning stages when the plan carries an order (each stage fine-tunes
    /// for the configured epochs), with earlier blocks training or frozen; `None`: every
    /// layer at once.
    pub stages: Option<EarlierBlocks>,
    /// Pick the fine-tuning learning rate by this rule (replacing `finetune`'s); `None`: use
    /// `finetune`'s as given.
    pub default_lr: Option<DefaultLr>,
}

/// The default fine-tuning learning rate (docs/quantization.md, "The fine-tuning learning
/// rate"): the smaller of the range test's rate ([`train::lr_range_test`], run on the model as
/// it will be fine-tuned: BatchNorm folded or not, under the plan's quantizers) and
/// `training_fraction` of the rate the model was trained with, when `mpq train` recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultLr {
    /// The model's recorded training learning rate.
    pub training_lr: Option<f64>,
    /// The fraction of it that caps the fine-tuning rate.
    pub training_fraction: f64,
    /// The range test (its batch size, momentum, weight decay and seed are the
    /// fine-tuning's).
    pub range: LrRangeConfig,
}

impl DefaultLr {
    /// The rule for `model`: its recorded training rate, a fifth of it, the default range test.
    pub fn for_model(model: &Model) -> Self {
        DefaultLr {
            training_lr: model.training_lr(),
            training_fraction: 0.2,
            range: LrRangeConfig::default(),
        }
    }

    /// Runs the range test on `graph` under `hooks` (restoring both) with `tc`'s batch size,
    /// momentum, weight decay and seed; returns the rate, where it came from, and the test.
    pub fn pick(
        &self,
        graph: &crate::graph::Graph,
        train_set: &crate::data::Dataset,
        norm: &Normalization,
        tc: &TrainConfig,
        hooks: &mut dyn Hooks,
    ) -> Result<(f64, LrSource, LrRangeResult)> {
        let range = LrRangeConfig {
            batch_size: tc.batch_size,
            momentum: tc.momentum,
            weight_decay: tc.weight_decay,
            seed: tc.seed,
            ..self.range.clone()
        };
        let r = train::lr_range_test(graph, train_set, norm, &range, hooks)?;
        let cap = (self.training_lr)
            .map(|lr| lr * self.training_fraction)
            .filter(|lr| lr.is_finite() && *lr > 0.0);
        Ok(match cap {
            Some(c) if c < r.lr => (c, LrSource::TrainingRecipe, r),
            _ => (r.lr, LrSource::RangeTest, r),
        })
    }
}

fn eval(
    graph: &crate::graph::Graph,
    splits: &DataSplits,
    norm: &Normalization,
    cfg: &QuantizeConfig,
    hooks: &mut dyn Hooks,
) -> Result<EvalStats> {
    train::evaluate(graph, &splits.test, norm, cfg.eval_batch_size, hooks)
}

/// The files [`quantize_model`] writes into its folder.
pub(crate) const OUTPUT_FILES: [&str; 4] = [
    "model.safetensors",
    "model.onnx",
    "plan.json",
    "summary.json",
];

/// Quantizes `model` under `plan` on `splits` and writes `out_dir/model.safetensors`,
/// `out_dir/model.onnx`, `out_dir/plan.json` and `out_dir/summary.json`, as one: a run
/// stopped at any point leaves the folder's previous files or all of the new ones
/// ([`StagedFolder`]); other files in the folder stay.
pub fn quantize_model(
    model: &Model,
    plan: &QuantPlan,
    splits: &DataSplits,
    cfg: &QuantizeConfig,
    out_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<QuantizeSummary> {
    let start = Instant::now();
    if model.quantized.is_some() {
        return Err(Error::config("model", "the model is already quantized"));
    }
    let layers = model.graph.layer_infos()?;
    plan.validate(&layers)?;
    let cost = CostTable::new(&layers, plan)?;
    let fp_cost = CostTable::new(&layers, &QuantPlan::uniform(&[], 32, 32))?;
    let norm = model.normalization_or(&splits.normalization);
    let fp32 = eval(&model.graph, splits, &norm, cfg, &mut NoHooks)?;

    let graph = prepare_graph(&model.graph, plan)?;
    let stored_bytes = CostTable::new(&graph.layer_infos()?, plan)?.stored_bytes;
    let mut hooks = PlanHooks::calibrate(&graph, plan, &splits.train, &norm, &cfg.calibration)?;
    let before = eval(&graph, splits, &norm, cfg, &mut hooks)?;
    let mut finetune = cfg.finetune.clone();
    let (mut lr_source, mut lr_range) = (None, None);
    if let Some(tc) = finetune.as_mut().filter(|tc| tc.epochs > 0) {
        lr_source = Some(LrSource::Given);
        if let Some(rule) = &cfg.default_lr {
            let (lr, source, r) = rule.pick(&graph, &splits.train, &norm, tc, &mut hooks)?;
            progress.note(&format!(
                "fine-tuning learning rate {lr:.3e} ({source}: range test stable up to {:.3e} in \
                 {} steps{})",
                r.stable_lr,
                r.steps,
                match rule.training_lr {
                    Some(t) => format!(", trained at {t}"),
                    None => String::new(),
                }
            ));
            tc.lr = lr;
            lr_source = Some(source);
            lr_range = Some(r);
        }
        tc.validate()?;
    }
    let (after, epochs, ft_seconds, stage_log) = match (&finetune, cfg.stages) {
        (Some(tc), Some(earlier)) if tc.epochs > 0 && plan.finetune_order.is_some() => {
            let t0 = Instant::now();
            let sc = StageConfig {
                calibration: &cfg.calibration,
                train: tc,
                earlier,
                eval_batch_size: cfg.eval_batch_size,
            };
            let (h, log) = stages::run(&graph, plan, splits, &norm, &sc, progress)?;
            hooks = h;
            let after = eval(&graph, splits, &norm, cfg, &mut hooks)?;
            (
                after,
                tc.epochs * log.len(),
                t0.elapsed().as_secs_f64(),
                log,
            )
        }
        (Some(tc), _) if tc.epochs > 0 => {
            let report =
                train::train_with(&graph, &splits.train, None, &norm, tc, &mut hooks, progress)?;
            let after = eval(&graph, splits, &norm, cfg, &mut hooks)?;
            (after, tc.epochs, report.seconds, Vec::new())
        }
        _ => (before, 0, 0.0, Vec::new()),
    };

    let folder = StagedFolder::begin(out_dir)?;
    let staged_model = folder.path().join("model.safetensors");
    let stats = export::save_packed(&staged_model, &model.meta, &graph, &hooks)?;
    let onnx_bytes = crate::onnx::export_qdq(
        &folder.path().join("model.onnx"),
        &graph,
        &mut hooks,
        Some(&norm),
    )?;
    let reloaded_model = Model::load(&staged_model, &ModelHint::default(), graph.device())?;
    let (model_path, onnx_path) = (
        out_dir.join("model.safetensors"),
        out_dir.join("model.onnx"),
    );
    let mut reloaded_hooks = reloaded_model
        .quantized
        .clone()
        .ok_or_else(|| Error::corrupt(&staged_model, "written without quantization metadata"))?;
    let reloaded = eval(
        &reloaded_model.graph,
        splits,
        &norm,
        cfg,
        &mut reloaded_hooks,
    )?;
    let identical = same_weights(&graph, &mut hooks, &reloaded_model)?
        && reloaded == after
        && same_logits(
            &graph,
            &mut hooks,
            &reloaded_model,
            &mut reloaded_hooks,
            splits,
            &norm,
        )?;

    let mut plan_out = plan.clone();
    cost.fill_plan(&mut plan_out);
    Policy::new(plan_out).save(folder.path().join("plan.json"))?;
    let summary = QuantizeSummary {
        arch: model.meta.arch.clone(),
        method: plan.method.clone(),
        fold_bn: plan.fold_bn,
        fp32,
        before_finetune: before,
        after_finetune: after,
        reloaded,
        roundtrip_bit_identical: identical,
        finetune_epochs: epochs,
        finetune_seconds: ft_seconds,
        size_bytes: cost.size_bytes,
        size_bytes_weights_only: cost.size_bytes_weights_only,
        fp32_size_bytes: fp_cost.size_bytes,
        stored_bytes,
        avg_w_bits: cost.avg_w_bits,
        compression: cost.compression,
        bops: cost.bops,
        export: stats,
        model_path,
        onnx_path,
        onnx_bytes,
        seconds: start.elapsed().as_secs_f64(),
        stages: stage_log,
        finetune_lr: finetune.as_ref().filter(|tc| tc.epochs > 0).map(|tc| tc.lr),
        finetune_lr_source: lr_source,
        lr_range,
    };
    summary.save(folder.path().join("summary.json"))?;
    folder.commit()?;
    Ok(summary)
}

/// Whether every parameter of the reloaded model equals what the simulation computes with:
/// the hooked (fake-quantized) weights of quantized layers, the raw values otherwise.
pub fn same_weights(
    graph: &crate::graph::Graph,
    hooks: &mut PlanHooks,
    reloaded: &Model,
) -> Result<bool> {
    for p in graph.params().iter() {
        let sim = match p.name.strip_suffix(".weight") {
            Some(layer) => hooks.weight(layer, p.var.as_tensor())?,
            None => p.var.as_tensor().clone(),
        };
        let Some(r) = reloaded.graph.params().get(&p.name) else {
            return Ok(false);
        };
        if !bit_equal(&sim, r.as_tensor())? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn same_logits(
    graph: &crate::graph::Graph,
    hooks: &mut PlanHooks,
    reloaded: &Model,
    reloaded_hooks: &mut PlanHooks,
    splits: &DataSplits,
    norm: &Normalization,
) -> Result<bool> {
    let n = splits.test.len().min(256);
    let idx: Vec<usize> = (0..n).collect();
    let x = crate::data::to_tensor(&splits.test, &idx, norm, graph.device())?;
    let mode = crate::graph::Mode::Eval;
    let a = graph.forward_with(&x, &mut crate::graph::ForwardOptions::new(mode, hooks))?;
    let b = reloaded.graph.forward_with(
        &x,
        &mut crate::graph::ForwardOptions::new(mode, reloaded_hooks),
    )?;
    bit_equal(&a, &b)
}

/// Whether two tensors have the same shape and the same `f32` bit patterns.
pub fn bit_equal(a: &Tensor, b: &Tensor) -> Result<bool> {
    if a.dims() != b.dims() || a.dtype() != b.dtype() {
        return Ok(false);
    }
    if a.dtype() != candle::DType::F32 {
        let (a, b) = (
            a.flatten_all()?.to_dtype(candle::DType::F64)?,
            b.flatten_all()?.to_dtype(candle::DType::F64)?,
        );
        return Ok(a.to_vec1::<f64>()? == b.to_vec1::<f64>()?);
    }
    let a: Vec<f32> = a.flatten_all()?.to_vec1()?;
    let b: Vec<f32> = b.flatten_all()?.to_vec1()?;
    Ok(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()))
}
