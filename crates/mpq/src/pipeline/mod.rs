//! Applying a plan end to end (what `mpq quantize` runs): fold BatchNorm when the plan says
//! so, calibrate activation ranges, measure post-training-quantization accuracy, optionally
//! fine-tune under the plan (QAT with the straight-through or LSQ quantizers), export the
//! packed model, then load the written file back and check that it reproduces the
//! simulation bit for bit (HAWQ-V3, Yao et al., ICML 2021: the simulated and the deployed
//! integer model must agree). `reward.rs` scores plans for HAQ's search the same way, on a
//! split held out of the training data.

mod reward;

pub use reward::{RewardConfig, RewardEvaluator};

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle::Tensor;
use serde::Serialize;

use crate::cost::CostTable;
use crate::data::{DataSplits, Normalization};
use crate::export::{self, ExportStats};
use crate::graph::{Hooks, NoHooks};
use crate::model::{Model, ModelHint};
use crate::progress::Progress;
use crate::quant::{CalibrationConfig, PlanHooks, prepare_graph};
use crate::train::{self, EvalStats, TrainConfig};
use crate::{Error, QuantPlan, Result};

/// Settings of [`quantize`].
#[derive(Debug, Clone)]
pub struct QuantizeConfig {
    /// Activation calibration.
    pub calibration: CalibrationConfig,
    /// Fine-tuning under the plan; `None` for post-training quantization only.
    pub finetune: Option<TrainConfig>,
    /// Samples per evaluation batch.
    pub eval_batch_size: usize,
}

/// What [`quantize`] measured and wrote (`summary.json`).
#[derive(Debug, Clone, Serialize)]
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
    /// activation parameters; [`CostTable::stored_bytes`] of the graph as exported).
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

/// Quantizes `model` under `plan` on `splits` and writes `out_dir/model.safetensors`,
/// `out_dir/plan.json` and `out_dir/summary.json`.
pub fn quantize(
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
    let (after, epochs, ft_seconds) = match &cfg.finetune {
        Some(tc) if tc.epochs > 0 => {
            let report =
                train::train_with(&graph, &splits.train, None, &norm, tc, &mut hooks, progress)?;
            let after = eval(&graph, splits, &norm, cfg, &mut hooks)?;
            (after, tc.epochs, report.seconds)
        }
        _ => (before, 0, 0.0),
    };

    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let model_path = out_dir.join("model.safetensors");
    let stats = export::save_packed(&model_path, &model.meta, &graph, &hooks)?;
    let onnx_path = out_dir.join("model.onnx");
    let onnx_bytes = crate::onnx::export_qdq(&onnx_path, &graph, &mut hooks, Some(&norm))?;
    let reloaded_model = Model::load(&model_path, &ModelHint::default(), graph.device())?;
    let mut reloaded_hooks = reloaded_model
        .quantized
        .clone()
        .ok_or_else(|| Error::corrupt(&model_path, "written without quantization metadata"))?;
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
    plan_out.save(out_dir.join("plan.json"))?;
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
    };
    crate::io::write_json(&out_dir.join("summary.json"), &summary)?;
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
