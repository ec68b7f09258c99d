//! Static shape inference and the [`LayerInfo`] table (shapes, parameters, MACs per sample)
//! that every cost model reads. MACs follow the usual convention (docs/algorithms.md §0.3):
//! conv `Cin·Cout·kh·kw·OH·OW/groups`, linear `in·out`.

use serde::{Deserialize, Serialize};

use super::exec::join;
use super::{Graph, Op};
use crate::{Error, Result};

/// The kind of a quantizable layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerOp {
    /// Dense convolution (groups = 1).
    Conv,
    /// Depthwise convolution (groups = input channels = output channels).
    DepthwiseConv,
    /// Grouped convolution (other group counts).
    GroupedConv,
    /// Fully connected layer.
    Linear,
}

/// Static facts about one quantizable layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Position among the quantizable layers (0-based).
    pub index: usize,
    /// Dotted name (`layer1.0.conv1`).
    pub name: String,
    /// Layer kind.
    pub op: LayerOp,
    /// Weight shape (`[out, in/groups, kh, kw]` or `[out, in]`).
    pub weight_shape: Vec<usize>,
    /// Weight elements (biases excluded, as in every method's size accounting).
    pub params: usize,
    /// Bias elements.
    pub bias_params: usize,
    /// Per-sample input activation shape.
    pub input_shape: Vec<usize>,
    /// Per-sample output shape.
    pub output_shape: Vec<usize>,
    /// Elements of the input activation per sample.
    pub input_elems: usize,
    /// Multiply-accumulates per sample.
    pub macs: u64,
    /// Output channels (features).
    pub out_channels: usize,
}

impl LayerInfo {
    /// The table row of a fully connected layer `in_features → out_features` with a bias,
    /// for building layer tables without a graph (hand-written or published tables).
    pub fn linear(index: usize, name: &str, out_features: usize, in_features: usize) -> Self {
        LayerInfo {
            index,
            name: name.into(),
            op: LayerOp::Linear,
            weight_shape: vec![out_features, in_features],
            params: out_features * in_features,
            bias_params: out_features,
            input_shape: vec![in_features],
            output_shape: vec![out_features],
            input_elems: in_features,
            macs: (out_features * in_features) as u64,
            out_channels: out_features,
        }
    }
}

fn mismatch(name: &str, expected: impl Into<String>, got: &[usize]) -> Error {
    Error::ShapeMismatch {
        name: format!("layer {name}"),
        expected: expected.into(),
        got: format!("[{}]", join(got)),
    }
}

fn spatial(name: &str, input: &[usize]) -> Result<(usize, usize, usize)> {
    match input {
        [c, h, w] => Ok((*c, *h, *w)),
        other => Err(mismatch(name, "a [C, H, W] input", other)),
    }
}

fn window_out(
    name: &str,
    size: usize,
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    input: &[usize],
) -> Result<usize> {
    // Checked: sizes come from files (ONNX attributes, graph descriptions) and must not
    // overflow; an overflow is a window that does not fit.
    let span = k
        .checked_sub(1)
        .and_then(|k1| d.checked_mul(k1))
        .and_then(|x| x.checked_add(1));
    let padded = p.checked_mul(2).and_then(|pp| size.checked_add(pp));
    let (Some(span), Some(padded)) = (span, padded) else {
        return Err(Error::ShapeMismatch {
            name: format!("layer {name}"),
            expected: format!("a window that fits (kernel {k}, padding {p}, dilation {d})"),
            got: format!("[{}]", join(input)),
        });
    };
    if padded < span || s == 0 {
        return Err(Error::ShapeMismatch {
            name: format!("layer {name}"),
            expected: format!(
                "spatial size >= {} (kernel {k}, padding {p}, dilation {d})",
                span.saturating_sub(2 * p)
            ),
            got: format!("[{}]", join(input)),
        });
    }
    Ok((padded - span) / s + 1)
}

/// Output shape (per sample) of a node given its inputs' shapes.
pub(crate) fn infer_node_shape(name: &str, op: &Op, inputs: &[&[usize]]) -> Result<Vec<usize>> {
    let first = || {
        inputs
            .first()
            .copied()
            .ok_or_else(|| Error::config("graph", format!("node {name} has no input")))
    };
    Ok(match op {
        Op::Input => first()?.to_vec(),
        Op::Conv2d(s) => {
            let x = first()?;
            let (c, h, w) = spatial(name, x)?;
            if c != s.in_channels
                || s.groups == 0
                || c % s.groups != 0
                || s.out_channels % s.groups != 0
            {
                return Err(mismatch(
                    name,
                    format!("{} input channels (groups {})", s.in_channels, s.groups),
                    x,
                ));
            }
            let oh = window_out(
                name,
                h,
                s.kernel[0],
                s.stride[0],
                s.padding[0],
                s.dilation[0],
                x,
            )?;
            let ow = window_out(
                name,
                w,
                s.kernel[1],
                s.stride[1],
                s.padding[1],
                s.dilation[1],
                x,
            )?;
            vec![s.out_channels, oh, ow]
        }
        Op::Linear(s) => {
            let x = first()?;
            if x != [s.in_features] {
                return Err(mismatch(name, format!("[{}]", s.in_features), x));
            }
            vec![s.out_features]
        }
        Op::BatchNorm2d(s) => {
            let x = first()?;
            let (c, _, _) = spatial(name, x)?;
            if c != s.channels {
                return Err(mismatch(name, format!("{} channels", s.channels), x));
            }
            x.to_vec()
        }
        Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
            let x = first()?;
            let (c, h, w) = spatial(name, x)?;
            if p.padding[0] * 2 > p.kernel[0] || p.padding[1] * 2 > p.kernel[1] {
                return Err(Error::config(
                    "graph",
                    format!("{name}: pooling padding must be at most half the kernel"),
                ));
            }
            let oh = window_out(name, h, p.kernel[0], p.stride[0], p.padding[0], 1, x)?;
            let ow = window_out(name, w, p.kernel[1], p.stride[1], p.padding[1], 1, x)?;
            vec![c, oh, ow]
        }
        Op::GlobalAvgPool => {
            let (c, _, _) = spatial(name, first()?)?;
            vec![c, 1, 1]
        }
        Op::Add => {
            let (a, b) = match inputs {
                [a, b] => (*a, *b),
                _ => {
                    return Err(Error::config(
                        "graph",
                        format!("{name}: add takes two inputs"),
                    ));
                }
            };
            if a != b {
                return Err(mismatch(name, format!("both inputs [{}]", join(a)), b));
            }
            a.to_vec()
        }
        Op::Flatten => vec![first()?.iter().product()],
        Op::Relu | Op::Relu6 | Op::Dropout { .. } => first()?.to_vec(),
        Op::Func(f) => super::func::infer_func_shape(name, f, inputs)?,
    })
}

impl Graph {
    /// Per-sample output shape of every node, in node order.
    pub fn infer_shapes(&self) -> Result<Vec<Vec<usize>>> {
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let shape = if matches!(node.op, Op::Input) {
                self.input_shape.clone()
            } else {
                let ins: Vec<&[usize]> =
                    node.inputs.iter().map(|&i| shapes[i].as_slice()).collect();
                infer_node_shape(&node.name, &node.op, &ins)?
            };
            shapes.push(shape);
        }
        Ok(shapes)
    }

    /// The static table of quantizable layers.
    pub fn layer_infos(&self) -> Result<Vec<LayerInfo>> {
        let shapes = self.infer_shapes()?;
        let mut out = Vec::new();
        for (id, node) in self.nodes.iter().enumerate() {
            let input_shape = node
                .inputs
                .first()
                .map(|&i| shapes[i].clone())
                .unwrap_or_default();
            let output_shape = shapes[id].clone();
            let (op, weight_shape, bias, macs, out_channels) = match &node.op {
                Op::Conv2d(s) => {
                    let op = if s.groups == 1 {
                        LayerOp::Conv
                    } else if s.groups == s.in_channels && s.groups == s.out_channels {
                        LayerOp::DepthwiseConv
                    } else {
                        LayerOp::GroupedConv
                    };
                    let ws = s.weight_shape();
                    let per_out: usize = ws[1] * ws[2] * ws[3];
                    let macs =
                        (s.out_channels * per_out * output_shape[1] * output_shape[2]) as u64;
                    (
                        op,
                        ws,
                        if s.bias { s.out_channels } else { 0 },
                        macs,
                        s.out_channels,
                    )
                }
                Op::Linear(s) => (
                    LayerOp::Linear,
                    vec![s.out_features, s.in_features],
                    if s.bias { s.out_features } else { 0 },
                    (s.in_features * s.out_features) as u64,
                    s.out_features,
                ),
                _ => continue,
            };
            out.push(LayerInfo {
                index: out.len(),
                name: node.name.clone(),
                op,
                params: weight_shape.iter().product(),
                weight_shape,
                bias_params: bias,
                input_elems: input_shape.iter().product(),
                input_shape,
                output_shape,
                macs,
                out_channels,
            });
        }
        Ok(out)
    }
}
