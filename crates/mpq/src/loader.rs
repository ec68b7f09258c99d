//! Loading dispatch for [`Model`]: [`Model::load`] reads a saved model (plain, packed
//! quantized, or a PyTorch `state_dict` with a [`ModelHint`]) and [`Model::open`] resolves a
//! `--model` reference (`zoo:NAME`, `PATH.onnx`, `PATH.safetensors`).
//!
//! It sits above `model`, `zoo`, `onnx` and `export`: those depend only on the shared types
//! in `meta` and `model`, and nothing imports this module (its methods are called on
//! [`Model`]).

use std::path::Path;

use candle::Device;

use crate::meta::{META_KEY, ModelHint, ModelMeta};
use crate::model::Model;
use crate::{Error, Result, zoo};

impl Model {
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
}
