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
        let bytes = crate::io::read(path)?;
        Model::from_bytes(&bytes, path, hint, device)
    }

    /// [`Model::load`] of the bytes of a safetensors file (plain, packed quantized, or a
    /// PyTorch `state_dict` given `hint.arch`); `path` names the file in errors. Every shape
    /// and count the file declares is checked against the memory budget
    /// ([`crate::limits`]) before it is allocated.
    pub fn from_bytes(
        bytes: &[u8],
        path: &Path,
        hint: &ModelHint,
        device: &Device,
    ) -> Result<Model> {
        let (tensors, metadata) = crate::graph::load_tensors_from(bytes, path, device)?;
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::meta::ZooConfig;

    /// A safetensors file with no tensors and `meta` as its mpq metadata.
    fn file_with_meta(meta: &ModelMeta) -> Vec<u8> {
        let md = HashMap::from([(META_KEY.to_string(), serde_json::to_string(meta).unwrap())]);
        let none: Vec<(&str, candle::Tensor)> = Vec::new();
        safetensors::tensor::serialize(none, Some(md)).unwrap()
    }

    fn load_error(bytes: &[u8]) -> Error {
        crate::limits::with_memory_limit(1 << 30, || {
            Model::from_bytes(
                bytes,
                Path::new("m.safetensors"),
                &ModelHint::default(),
                &Device::Cpu,
            )
        })
        .unwrap_err()
    }

    #[test]
    fn metadata_with_huge_classes_or_input_is_refused_before_building() {
        // classes = 10^12 in the metadata: building LeNet-5's last layer aborted the process.
        let meta = ModelMeta::new("lenet5", ZooConfig::new([1, 28, 28], 1_000_000_000_000));
        let err = load_error(&file_with_meta(&meta));
        assert!(matches!(err, Error::MemoryLimit { .. }), "{err}");
        assert!(err.to_string().contains("fc3"), "{err}");
        let meta = ModelMeta::new("lenet5", ZooConfig::new([3, 100_000, 100_000], 10));
        let err = load_error(&file_with_meta(&meta));
        let msg = err.to_string();
        assert!(err.is_input_error());
        assert!(
            msg.starts_with("the model's input shape 3x100000x100000 (a batch of 1) needs 112 GiB"),
            "{msg}"
        );
        // A width of 1e300 (MobileNetV2) overflowed the channel arithmetic.
        let mut cfg = ZooConfig::new([3, 32, 32], 10);
        cfg.width = 1e300;
        let err = load_error(&file_with_meta(&ModelMeta::new("mobilenetv2", cfg)));
        assert!(matches!(err, Error::MemoryLimit { .. }), "{err}");
    }

    #[test]
    fn graph_descriptions_with_huge_parameters_are_refused() {
        let model = zoo::build("lenet5", &ZooConfig::new([1, 28, 28], 10), 0).unwrap();
        let mut meta = ModelMeta::new("onnx", model.meta.config.clone());
        let mut desc = model.graph.describe();
        desc.params[0].shape = vec![1 << 40, 1 << 40];
        meta.graph = Some(desc.clone());
        let err = load_error(&file_with_meta(&meta));
        assert!(matches!(err, Error::MemoryLimit { .. }), "{err}");
        assert!(err.to_string().contains("conv1.weight"), "{err}");
        // An input of 2.8·10^9 values per sample, which no parameter reveals.
        desc = model.graph.describe();
        desc.input_shape = vec![1, 28, 100_000_000];
        meta.graph = Some(desc);
        assert!(load_error(&file_with_meta(&meta)).is_input_error());
    }

    #[test]
    fn zoo_references_with_huge_classes_are_refused() {
        let hint = ModelHint {
            classes: Some(1_000_000_000),
            ..ModelHint::default()
        };
        let err = crate::limits::with_memory_limit(1 << 30, || {
            Model::open("zoo:lenet5", &hint, &Device::Cpu)
        })
        .unwrap_err();
        assert!(matches!(err, Error::MemoryLimit { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("fc3"), "{msg}");
        assert!(msg.contains("over the memory limit of 1.0 GiB"), "{msg}");
    }
}
