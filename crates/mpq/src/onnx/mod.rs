//! ONNX in and out: [`load`] imports an ONNX CNN as a trainable [`crate::graph::Graph`]
//! (opsets 11–21, the operator set in [`SUPPORTED_OPS`]); [`export_qdq`] writes a quantized
//! graph as ONNX with QuantizeLinear/DequantizeLinear pairs carrying the plan.
//!
//! The protobuf messages are a hand-written subset of `onnx.proto` ([`proto`]), encoded and
//! decoded with `prost`: no `protoc` and no build script. See `docs/onnx.md`.

mod consts;
mod export;
mod import;
pub mod proto;

use std::path::Path;

use candle::Device;
use prost::Message;

use crate::meta::{ModelMeta, ZooConfig};
use crate::model::Model;
use crate::{Error, Result};

pub use export::{QDQ_OPSET, export_qdq, qdq_model};
pub use import::{OPSETS, SUPPORTED_OPS};

/// The `arch` of imported models' metadata.
pub const ARCH: &str = "onnx";

/// Decodes ONNX protobuf bytes; `path` names the file in errors.
pub fn decode(bytes: &[u8], path: &Path) -> Result<proto::ModelProto> {
    let m = proto::ModelProto::decode(bytes).map_err(|e| {
        Error::corrupt(
            path,
            format!("not a valid ONNX model (truncated or not ONNX): {e}"),
        )
    })?;
    if m.ir_version <= 0 || m.graph.is_none() {
        return Err(Error::corrupt(
            path,
            "not a valid ONNX model (no IR version or no graph)",
        ));
    }
    Ok(m)
}

/// Imports the ONNX file at `path` as a model on `device`: a graph whose weights are the
/// file's initializers (trainable), named after the ONNX graph (see the `import` module).
pub fn load(path: &Path, device: &Device) -> Result<Model> {
    let bytes = crate::io::read(path)?;
    from_bytes(&bytes, path, device)
}

/// [`load`] of the bytes of an ONNX file; `path` names it in errors. Constants and shapes are
/// checked against the memory budget ([`crate::limits`]) before they are allocated.
pub fn from_bytes(bytes: &[u8], path: &Path, device: &Device) -> Result<Model> {
    let proto = decode(bytes, path)?;
    import_proto(&proto, device).map_err(|e| match e {
        Error::InvalidConfig { field, reason } if field == "onnx" => {
            Error::corrupt(path, format!("ONNX import: {reason}"))
        }
        e => e,
    })
}

/// Imports a decoded ONNX model.
pub fn import_proto(proto: &proto::ModelProto, device: &Device) -> Result<Model> {
    let im = import::import(proto, device)?;
    let shapes = im.graph.infer_shapes()?;
    let classes = shapes[im.graph.output()][0];
    let config = ZooConfig::new(im.graph.input_shape().to_vec(), classes);
    let mut meta = ModelMeta::new(ARCH, config);
    meta.graph = Some(im.graph.describe());
    // A model mpq exported reads normalised images, and says how they were normalised.
    meta.normalization = proto
        .metadata_props
        .iter()
        .find(|p| p.key == "mpq.normalization")
        .and_then(|p| serde_json::from_str(&p.value).ok());
    meta.training = Some(serde_json::json!({
        "source": "onnx",
        "opset": im.opset,
        "producer": im.producer,
        "initializers": im.initializers.iter().map(|(p, o)| (p.clone(), o.clone())).collect::<std::collections::BTreeMap<_, _>>(),
    }));
    Ok(Model {
        graph: im.graph,
        meta,
        quantized: None,
    })
}
