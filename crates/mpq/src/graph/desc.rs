//! [`GraphDesc`]: the structure of a graph (nodes, output, input shape, parameter shapes)
//! as plain serde data, saved in the metadata of models that are not zoo architectures
//! (imported ONNX models) so their safetensors files load on their own.

use candle::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{Graph, Node, NodeId, ParamKind, ParamStore};
use crate::Result;

/// Shape and kind of one parameter of a [`GraphDesc`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamDesc {
    /// `state_dict` name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// A statistics buffer rather than a trainable tensor.
    pub buffer: bool,
    /// An integer (step counter) rather than an `f32` tensor.
    #[serde(default)]
    pub int: bool,
}

/// A graph's structure without its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphDesc {
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// The output node.
    pub output: NodeId,
    /// Per-sample input shape.
    pub input_shape: Vec<usize>,
    /// Parameters in store order.
    pub params: Vec<ParamDesc>,
}

impl Graph {
    /// The structure of this graph.
    pub fn describe(&self) -> GraphDesc {
        GraphDesc {
            nodes: self.nodes.clone(),
            output: self.output,
            input_shape: self.input_shape.clone(),
            params: self
                .params
                .iter()
                .map(|p| ParamDesc {
                    name: p.name.clone(),
                    shape: p.var.dims().to_vec(),
                    buffer: p.kind == ParamKind::Buffer,
                    int: p.var.dtype() == DType::I64,
                })
                .collect(),
        }
    }
}

impl GraphDesc {
    /// A graph of this structure with zero-valued parameters (to be loaded into).
    pub fn build(&self, device: &Device) -> Result<Graph> {
        // The description comes from a file: check what it would allocate first.
        crate::limits::check_input(&self.input_shape)?;
        let mut total: u128 = 0;
        for p in &self.params {
            let bytes = crate::limits::elements(&p.shape).saturating_mul(if p.int { 8 } else { 4 });
            total = total.saturating_add(bytes);
            crate::limits::check_bytes(
                &format!(
                    "the model's parameters (up to {} of shape {})",
                    p.name,
                    crate::limits::shape_string(&p.shape)
                ),
                total,
            )?;
        }
        let mut params = ParamStore::new(device);
        for p in &self.params {
            let dtype = if p.int { DType::I64 } else { DType::F32 };
            let kind = if p.buffer {
                ParamKind::Buffer
            } else {
                ParamKind::Trainable
            };
            params.insert(
                &p.name,
                Tensor::zeros(p.shape.as_slice(), dtype, device)?,
                kind,
            )?;
        }
        Graph::from_parts(
            self.nodes.clone(),
            self.output,
            self.input_shape.clone(),
            params,
        )
    }
}
