//! A [`Model`]: a graph plus what is needed to use it again (architecture, input shape,
//! classes, input normalisation, training summary), saved as safetensors whose metadata
//! holds that description under the key `mpq`. Also resolves `--model` references
//! (`zoo:NAME`, `PATH.safetensors`, a plain PyTorch `state_dict` with `--arch`).

use std::collections::HashMap;
use std::path::Path;

use candle::Device;
use serde::{Deserialize, Serialize};

use crate::data::Normalization;
use crate::graph::Graph;
use crate::quant::PlanHooks;
use crate::zoo::{self, ZooConfig};
use crate::{Error, Result};

/// Metadata key holding the JSON [`ModelMeta`].
pub const META_KEY: &str = "mpq";

/// What a saved model says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Zoo architecture name.
    pub arch: String,
    /// Input shape, classes and width the graph was built for.
    pub config: ZooConfig,
    /// Input normalisation the model was trained with (`None`: use the data set's).
    pub normalization: Option<Normalization>,
    /// Free-form training summary (epochs, accuracy, time, settings).
    pub training: Option<serde_json::Value>,
    /// Present in packed quantized models ([`crate::export`]): the plan and the layout of
    /// the packed tensors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<crate::export::PackedMeta>,
    /// The graph's structure, for models that are not zoo architectures (`arch` `onnx`:
    /// imported models); `None` for zoo models, which `arch` and `config` rebuild.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<crate::graph::GraphDesc>,
}

impl ModelMeta {
    /// Metadata for a fresh zoo model.
    pub fn new(arch: &str, config: ZooConfig) -> Self {
        ModelMeta {
            arch: arch.to_string(),
            config,
            normalization: None,
            training: None,
            quantization: None,
            graph: None,
        }
    }
}

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

/// Fallbacks for building a model whose file does not describe itself (a PyTorch
/// `state_dict`) or a zoo reference (`--arch`, `--input`, `--classes`, `--width`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelHint {
    /// Architecture name.
    pub arch: Option<String>,
    /// Per-sample input shape.
    pub input_shape: Option<Vec<usize>>,
    /// Number of classes.
    pub classes: Option<usize>,
    /// Width multiplier.
    pub width: Option<f64>,
    /// Seed of fresh zoo weights.
    pub seed: u64,
}

impl ModelHint {
    fn config(&self, arch: &str) -> ZooConfig {
        let mut cfg = ZooConfig::default_for(arch);
        if let Some(s) = &self.input_shape {
            cfg.input_shape = s.clone();
        }
        if let Some(k) = self.classes {
            cfg.classes = k;
        }
        if let Some(w) = self.width {
            cfg.width = w;
        }
        cfg
    }
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

    /// Loads a model saved by [`Model::save`], or a PyTorch `state_dict` given `hint.arch`.
    pub fn load(path: &Path, hint: &ModelHint, device: &Device) -> Result<Model> {
        let (tensors, metadata) = crate::graph::load_tensors(path, device)?;
        let meta = match metadata.get(META_KEY) {
            Some(json) => serde_json::from_str::<ModelMeta>(json)
                .map_err(|e| Error::corrupt(path, format!("invalid mpq metadata: {e}")))?,
            None => {
                let Some(arch) = &hint.arch else {
                    return Err(Error::config(
                        "model",
                        format!(
                            "{} has no mpq metadata: pass --arch (and --input, --classes) to load it as a PyTorch state_dict",
                            path.display()
                        ),
                    ));
                };
                ModelMeta::new(arch, hint.config(arch))
            }
        };
        let mut graph = match &meta.graph {
            Some(desc) => desc.build(device)?,
            None => zoo::build_graph(&meta.arch, &meta.config, hint.seed, device)?,
        };
        if let Some(packed) = &meta.quantization {
            let (graph, hooks) = crate::export::unpack(path, tensors, packed, graph)?;
            return Ok(Model {
                graph,
                meta,
                quantized: Some(hooks),
            });
        }
        graph.params_mut().assign_strict(path, tensors)?;
        Ok(Model {
            graph,
            meta,
            quantized: None,
        })
    }

    /// Resolves a `--model` reference: `zoo:NAME` (fresh weights) or a safetensors path.
    pub fn open(reference: &str, hint: &ModelHint, device: &Device) -> Result<Model> {
        if let Some(arch) = reference.strip_prefix("zoo:") {
            return zoo::build_on(arch, &hint.config(arch), hint.seed, device);
        }
        let path = Path::new(reference);
        match path.extension().and_then(|e| e.to_str()) {
            Some("onnx") => crate::onnx::load(path, device),
            _ => Model::load(path, hint, device),
        }
    }

    /// Trainable scalars (weights, biases, BatchNorm affine parameters).
    pub fn num_params(&self) -> usize {
        self.graph.params().num_trainable()
    }

    /// The label smoothing the model was trained with, if `mpq train` recorded it.
    pub fn training_label_smoothing(&self) -> Option<f64> {
        self.meta.training.as_ref()?["config"]["label_smoothing"].as_f64()
    }

    /// The normalisation to feed this model: its own, else `fallback` (the data set's).
    pub fn normalization_or(&self, fallback: &Normalization) -> Normalization {
        self.meta
            .normalization
            .clone()
            .unwrap_or_else(|| fallback.clone())
    }
}
