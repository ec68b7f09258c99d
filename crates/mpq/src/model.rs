//! A [`Model`]: a graph plus what is needed to use it again (architecture, input shape,
//! classes, input normalisation, training summary: [`ModelMeta`]), saved as safetensors whose
//! metadata holds that description under the key `mpq`. [`Model::load`] and [`Model::open`]
//! (`zoo:NAME`, `PATH.safetensors`, `PATH.onnx`, a plain PyTorch `state_dict` with `--arch`)
//! are defined in the `loader` module, above `zoo`, `onnx` and `export`, which build models.

use std::collections::HashMap;
use std::path::Path;

use crate::data::Normalization;
use crate::graph::Graph;
use crate::quant::PlanHooks;
use crate::{Error, Result};

pub use crate::meta::{META_KEY, ModelHint, ModelMeta};

/// A graph with its metadata.
#[derive(Debug, Clone)]
pub struct Model {
    /// The executable graph and its weights.
    pub graph: Graph,
    /// What the model is.
    pub meta: ModelMeta,
    /// For a packed quantized model: hooks that quantize its input activations as the
    /// simulation did (its weights already hold the dequantized values).
    pub quantized: Option<PlanHooks>,
}

impl Model {
    /// Saves weights and metadata as safetensors (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.quantized.is_some() {
            return Err(Error::config(
                "model",
                "a packed quantized model is saved by the export, not as FP32",
            ));
        }
        let mut md = HashMap::new();
        // One key only: safetensors writes metadata in HashMap order, and byte-identical files
        // for identical runs need a deterministic header.
        md.insert(META_KEY.to_string(), serde_json::to_string(&self.meta)?);
        self.graph.params().save(path, md)
    }

    /// Trainable scalars (weights, biases, BatchNorm affine parameters).
    pub fn num_params(&self) -> usize {
        self.graph.params().num_trainable()
    }

    /// The label smoothing the model was trained with, if `mpq train` recorded it.
    pub fn training_label_smoothing(&self) -> Option<f64> {
        self.meta.training.as_ref()?["config"]["label_smoothing"].as_f64()
    }

    /// The base learning rate the model was trained with, if `mpq train` recorded it.
    pub fn training_lr(&self) -> Option<f64> {
        self.meta.training.as_ref()?["config"]["lr"].as_f64()
    }

    /// The training samples `mpq train --holdout` kept out of training, as `(count, seed)` of
    /// [`crate::data::Dataset::split_holdout`], when the model was trained on `data`.
    pub fn training_holdout(&self, data: &str) -> Option<(usize, u64)> {
        let t = self.meta.training.as_ref()?;
        if t["data"].as_str()? != data {
            return None;
        }
        let n = usize::try_from(t["holdout"].as_u64()?).ok()?;
        let seed = t["config"]["seed"].as_u64()?;
        (n > 0).then_some((n, seed))
    }

    /// The normalisation to feed this model: its own, else `fallback` (the data set's).
    pub fn normalization_or(&self, fallback: &Normalization) -> Normalization {
        self.meta
            .normalization
            .clone()
            .unwrap_or_else(|| fallback.clone())
    }
}
