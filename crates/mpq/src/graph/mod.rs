//! The introspectable model graph that every method runs on.
//!
//! A [`Graph`] is a list of [`Node`]s in topological order plus a [`ParamStore`] holding
//! the weights under PyTorch `state_dict` names (`layer1.0.conv1.weight`). Quantizable layers
//! (Conv2d, Linear) are named by their dotted module path; the executor ([`Graph::forward`])
//! calls [`Hooks`] on each one's weight and input activation, which is how fake
//! quantization, activation perturbations and calibration observers plug in.

mod build;
mod desc;
mod exec;
mod fold;
mod func;
mod fusion;
mod info;
mod ops;
mod params;
mod patterns;
mod reverse;

pub use build::{ConvInit, GraphBuilder};
pub use desc::{GraphDesc, ParamDesc};
pub use exec::{ForwardOptions, Hooks, Mode, NoHooks};
pub use func::{FuncOp, eval_func};
pub use info::{LayerInfo, LayerOp};
pub use ops::{
    avg_pool2d, batch_norm_eval, batch_norm_eval_relu, batch_norm_train, batch_norm_train_relu,
    conv2d, global_avg_pool, linear, max_pool2d, relu, relu6, set_stock_ops, stock_ops,
};
pub use params::{Param, ParamKind, ParamStore};
pub(crate) use params::{load_tensors_from, save_tensors};
pub(crate) use patterns::{PatternMode, Patterns};
pub(crate) use reverse::{Analysed, LayerGrads, Perturbation, Prefix, applies as reverse_applies};

use serde::{Deserialize, Serialize};

/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// Hyper-parameters of a 2-D convolution (PyTorch `nn.Conv2d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2dSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Zero padding along height and width (both sides).
    pub padding: [usize; 2],
    /// Dilation along height and width.
    pub dilation: [usize; 2],
    /// Groups (1: dense; `in_channels`: depthwise).
    pub groups: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl Conv2dSpec {
    /// A square `k`x`k` convolution with stride `s`, padding `p`, no dilation, no groups.
    pub fn new(cin: usize, cout: usize, k: usize, s: usize, p: usize, bias: bool) -> Self {
        Conv2dSpec {
            in_channels: cin,
            out_channels: cout,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            dilation: [1, 1],
            groups: 1,
            bias,
        }
    }

    /// The same convolution with `groups` groups.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Weight shape `[out, in/groups, kh, kw]`.
    pub fn weight_shape(&self) -> Vec<usize> {
        vec![
            self.out_channels,
            self.in_channels / self.groups,
            self.kernel[0],
            self.kernel[1],
        ]
    }
}

/// Hyper-parameters of a fully connected layer (PyTorch `nn.Linear`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearSpec {
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

/// Hyper-parameters of 2-D batch normalisation (PyTorch `nn.BatchNorm2d`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchNormSpec {
    /// Channels.
    pub channels: usize,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Running-average momentum (PyTorch convention: new = (1-m)·old + m·batch).
    pub momentum: f64,
}

/// Window of a max or average pooling (no ceil mode; average pooling counts padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Stride along height and width.
    pub stride: [usize; 2],
    /// Padding along height and width.
    pub padding: [usize; 2],
}

impl PoolSpec {
    /// A square window `k` with stride `s` and padding `p`.
    pub fn new(k: usize, s: usize, p: usize) -> Self {
        PoolSpec {
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
        }
    }
}

/// What a node computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Op {
    /// The model input, `[N, C, H, W]` (or `[N, F]`).
    Input,
    /// Quantizable 2-D convolution; parameters `NAME.weight` (and `NAME.bias`).
    Conv2d(Conv2dSpec),
    /// Quantizable fully connected layer; parameters `NAME.weight` `[out, in]` (and `NAME.bias`).
    Linear(LinearSpec),
    /// Batch normalisation; parameters `NAME.weight`, `NAME.bias`, buffers
    /// `NAME.running_mean`, `NAME.running_var`, `NAME.num_batches_tracked`.
    BatchNorm2d(BatchNormSpec),
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// Max pooling.
    MaxPool2d(PoolSpec),
    /// Average pooling.
    AvgPool2d(PoolSpec),
    /// Mean over the spatial dimensions, keeping them as 1x1 (`AdaptiveAvgPool2d(1)`).
    GlobalAvgPool,
    /// Element-wise sum of two inputs (residual connection).
    Add,
    /// `[N, ...]` → `[N, prod(...)]`.
    Flatten,
    /// Dropout with drop probability `p` (identity in eval mode).
    Dropout {
        /// Probability of zeroing an element in training.
        p: f64,
    },
    /// A parameter-free operator of imported models (activations, reshaping, products).
    Func(FuncOp),
}

impl Op {
    /// Whether the node is a quantizable layer (its weight and input activation get hooks).
    pub fn is_quantizable(&self) -> bool {
        matches!(self, Op::Conv2d(_) | Op::Linear(_))
    }

    /// A short name of the operator.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv2d(_) => "conv",
            Op::Linear(_) => "linear",
            Op::BatchNorm2d(_) => "batchnorm",
            Op::Relu => "relu",
            Op::Relu6 => "relu6",
            Op::MaxPool2d(_) => "maxpool",
            Op::AvgPool2d(_) => "avgpool",
            Op::GlobalAvgPool => "global_avgpool",
            Op::Add => "add",
            Op::Flatten => "flatten",
            Op::Dropout { .. } => "dropout",
            Op::Func(f) => f.kind(),
        }
    }
}

/// One node of a [`Graph`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Dotted module path (`layer1.0.conv1`); parameter names are `NAME.weight` etc.
    pub name: String,
    /// What the node computes.
    pub op: Op,
    /// The nodes whose outputs it consumes, in order.
    pub inputs: Vec<NodeId>,
}

/// A model: nodes in topological order, the output node, the input shape and the weights.
#[derive(Debug, Clone)]
pub struct Graph {
    nodes: Vec<Node>,
    output: NodeId,
    input_shape: Vec<usize>,
    params: ParamStore,
    /// For each node, the last node that reads it (itself if none): frees values early.
    last_use: Vec<NodeId>,
}

impl Graph {
    /// The nodes in topological (execution) order; node 0 is the input.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node whose value is the model output (logits).
    pub fn output(&self) -> NodeId {
        self.output
    }

    /// Shape of one input sample, e.g. `[3, 32, 32]`.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The weights and buffers.
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Mutable access to the weights and buffers (loading checkpoints).
    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    /// The node with the given name.
    pub fn node(&self, name: &str) -> Option<(NodeId, &Node)> {
        self.nodes.iter().enumerate().find(|(_, n)| n.name == name)
    }

    /// Names of the quantizable layers (Conv2d, Linear) in execution order.
    pub fn quantizable_layers(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.op.is_quantizable())
            .map(|n| n.name.as_str())
            .collect()
    }

    /// For each node, the last node that reads it (itself if none).
    pub(crate) fn last_use(&self) -> &[NodeId] {
        &self.last_use
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &candle::Device {
        self.params.device()
    }
}
