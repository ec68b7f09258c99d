//! [`GraphBuilder`]: builds a [`Graph`] node by node, inferring shapes as it goes (so a
//! Linear layer knows its input features and an input the model cannot take fails at build
//! time, naming the layer) and initialising weights from a seeded generator.

use std::collections::HashMap;

use candle::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

use super::info::infer_node_shape;
use super::{
    BatchNormSpec, Conv2dSpec, Graph, LinearSpec, Node, NodeId, Op, ParamKind, ParamStore, PoolSpec,
};
use crate::{Error, Result};

/// How convolution weights are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvInit {
    /// PyTorch's default: `U(-1/√fan_in, 1/√fan_in)` (kaiming-uniform with a = √5).
    PyTorchDefault,
    /// torchvision ResNet/MobileNet: `N(0, √(2/fan_out))` (kaiming-normal, fan-out, ReLU).
    KaimingNormalFanOut,
}

/// Builds a [`Graph`].
pub struct GraphBuilder {
    nodes: Vec<Node>,
    shapes: Vec<Vec<usize>>,
    params: ParamStore,
    rng: ChaCha8Rng,
    conv_init: ConvInit,
    names: HashMap<String, NodeId>,
    /// Bytes of the parameters created so far (checked against [`crate::limits`]).
    param_bytes: u128,
}

impl GraphBuilder {
    /// A builder whose node 0 is the input of per-sample shape `input_shape`; weights are drawn
    /// from a generator seeded with `seed`.
    pub fn new(input_shape: &[usize], device: &Device, seed: u64) -> Self {
        GraphBuilder {
            nodes: vec![Node {
                name: "input".into(),
                op: Op::Input,
                inputs: vec![],
            }],
            shapes: vec![input_shape.to_vec()],
            params: ParamStore::new(device),
            rng: ChaCha8Rng::seed_from_u64(seed),
            conv_init: ConvInit::PyTorchDefault,
            names: HashMap::new(),
            param_bytes: 0,
        }
    }

    /// Sets how later convolutions are initialised.
    pub fn conv_init(&mut self, init: ConvInit) -> &mut Self {
        self.conv_init = init;
        self
    }

    /// The input node.
    pub fn input(&self) -> NodeId {
        0
    }

    /// Per-sample output shape of a node built so far.
    pub fn shape(&self, id: NodeId) -> &[usize] {
        &self.shapes[id]
    }

    /// Adds a node, inferring its shape; fails with a shape error naming it.
    pub fn push(&mut self, name: &str, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let in_shapes: Vec<&[usize]> = inputs.iter().map(|&i| self.shapes[i].as_slice()).collect();
        let shape = infer_node_shape(name, &op, &in_shapes)?;
        crate::limits::check_shape_with(&shape, 4, || {
            format!(
                "the output {} of node {name} (a batch of 1)",
                crate::limits::shape_string(&shape)
            )
        })?;
        let id = self.nodes.len();
        if self.names.insert(name.to_string(), id).is_some() {
            return Err(Error::config(
                "graph",
                format!("duplicate node name {name:?}"),
            ));
        }
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs: inputs.to_vec(),
        });
        self.shapes.push(shape);
        Ok(id)
    }

    /// Adds a named parameter with the given value (imported weights).
    pub fn insert_param(&mut self, name: &str, value: Tensor, kind: ParamKind) -> Result<()> {
        self.reserve(name, value.dims())?;
        self.params.insert(name, value, kind)?;
        Ok(())
    }

    /// Counts a parameter of `shape` (4 bytes per value) against the memory budget, before
    /// its values are drawn: the parameter alone and all parameters so far must fit.
    fn reserve(&mut self, name: &str, shape: &[usize]) -> Result<()> {
        let bytes = crate::limits::elements(shape).saturating_mul(4);
        let what = || {
            format!(
                "parameter {name} of shape {}",
                crate::limits::shape_string(shape)
            )
        };
        crate::limits::check_bytes(&what(), bytes)?;
        self.param_bytes = self.param_bytes.saturating_add(bytes);
        crate::limits::check_bytes(
            &format!("the model's parameters (up to {})", what()),
            self.param_bytes,
        )
    }

    /// Whether a node is already named `name`.
    pub fn has_node(&self, name: &str) -> bool {
        self.names.contains_key(name) || name == "input"
    }

    fn anon(&self, kind: &str) -> String {
        format!("_{kind}{}", self.nodes.len())
    }

    fn param(
        &mut self,
        name: String,
        shape: &[usize],
        values: Vec<f32>,
        kind: ParamKind,
    ) -> Result<()> {
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?;
        self.params.insert(&name, t, kind)?;
        Ok(())
    }

    fn uniform(&mut self, n: usize, bound: f64) -> Vec<f32> {
        let d = Uniform::new_inclusive(-bound, bound).expect("bound should be finite and positive");
        (0..n).map(|_| d.sample(&mut self.rng) as f32).collect()
    }

    fn normal(&mut self, n: usize, std: f64) -> Vec<f32> {
        let d = Normal::new(0.0, std).expect("std should be finite and positive");
        (0..n).map(|_| d.sample(&mut self.rng) as f32).collect()
    }

    /// A 2-D convolution named `name` (parameters `name.weight`, `name.bias`).
    pub fn conv2d(&mut self, name: &str, x: NodeId, spec: Conv2dSpec) -> Result<NodeId> {
        let id = self.push(name, Op::Conv2d(spec), &[x])?;
        let wshape = spec.weight_shape();
        self.reserve(&format!("{name}.weight"), &wshape)?;
        let n: usize = wshape.iter().product();
        let fan_in = (n / spec.out_channels).max(1) as f64;
        let fan_out =
            (spec.out_channels * spec.kernel[0] * spec.kernel[1] / spec.groups).max(1) as f64;
        let w = match self.conv_init {
            ConvInit::PyTorchDefault => self.uniform(n, 1.0 / fan_in.sqrt()),
            ConvInit::KaimingNormalFanOut => self.normal(n, (2.0 / fan_out).sqrt()),
        };
        self.param(format!("{name}.weight"), &wshape, w, ParamKind::Trainable)?;
        if spec.bias {
            let b = match self.conv_init {
                ConvInit::PyTorchDefault => self.uniform(spec.out_channels, 1.0 / fan_in.sqrt()),
                ConvInit::KaimingNormalFanOut => vec![0.0; spec.out_channels],
            };
            self.param(
                format!("{name}.bias"),
                &[spec.out_channels],
                b,
                ParamKind::Trainable,
            )?;
        }
        Ok(id)
    }

    /// A fully connected layer; input features are taken from `x`'s (flat) shape.
    pub fn linear(
        &mut self,
        name: &str,
        x: NodeId,
        out_features: usize,
        bias: bool,
    ) -> Result<NodeId> {
        let in_features = match self.shapes[x].as_slice() {
            [f] => *f,
            other => {
                return Err(Error::ShapeMismatch {
                    name: format!("layer {name}"),
                    expected: "a flat input [features]".into(),
                    got: format!("{other:?}"),
                });
            }
        };
        let spec = LinearSpec {
            in_features,
            out_features,
            bias,
        };
        let id = self.push(name, Op::Linear(spec), &[x])?;
        self.reserve(&format!("{name}.weight"), &[out_features, in_features])?;
        let bound = 1.0 / (in_features as f64).sqrt();
        let w = self.uniform(in_features * out_features, bound);
        self.param(
            format!("{name}.weight"),
            &[out_features, in_features],
            w,
            ParamKind::Trainable,
        )?;
        if bias {
            let b = self.uniform(out_features, bound);
            self.param(
                format!("{name}.bias"),
                &[out_features],
                b,
                ParamKind::Trainable,
            )?;
        }
        Ok(id)
    }

    /// BatchNorm2d over `x`'s channels (eps 1e-5, momentum 0.1; weight 1, bias 0).
    pub fn batch_norm(&mut self, name: &str, x: NodeId) -> Result<NodeId> {
        let channels = self.shapes[x].first().copied().unwrap_or(0);
        let spec = BatchNormSpec {
            channels,
            eps: 1e-5,
            momentum: 0.1,
        };
        let id = self.push(name, Op::BatchNorm2d(spec), &[x])?;
        self.param(
            format!("{name}.weight"),
            &[channels],
            vec![1.0; channels],
            ParamKind::Trainable,
        )?;
        self.param(
            format!("{name}.bias"),
            &[channels],
            vec![0.0; channels],
            ParamKind::Trainable,
        )?;
        self.param(
            format!("{name}.running_mean"),
            &[channels],
            vec![0.0; channels],
            ParamKind::Buffer,
        )?;
        self.param(
            format!("{name}.running_var"),
            &[channels],
            vec![1.0; channels],
            ParamKind::Buffer,
        )?;
        let counter = Tensor::zeros((), DType::I64, &Device::Cpu)?;
        self.params.insert(
            &format!("{name}.num_batches_tracked"),
            counter,
            ParamKind::Buffer,
        )?;
        Ok(id)
    }

    /// ReLU.
    pub fn relu(&mut self, x: NodeId) -> Result<NodeId> {
        let name = self.anon("relu");
        self.push(&name, Op::Relu, &[x])
    }

    /// ReLU6.
    pub fn relu6(&mut self, x: NodeId) -> Result<NodeId> {
        let name = self.anon("relu6");
        self.push(&name, Op::Relu6, &[x])
    }

    /// Max pooling.
    pub fn max_pool(&mut self, x: NodeId, p: PoolSpec) -> Result<NodeId> {
        let name = self.anon("maxpool");
        self.push(&name, Op::MaxPool2d(p), &[x])
    }

    /// Average pooling.
    pub fn avg_pool(&mut self, x: NodeId, p: PoolSpec) -> Result<NodeId> {
        let name = self.anon("avgpool");
        self.push(&name, Op::AvgPool2d(p), &[x])
    }

    /// Global average pooling to `[C, 1, 1]`.
    pub fn global_avg_pool(&mut self, x: NodeId) -> Result<NodeId> {
        let name = self.anon("gap");
        self.push(&name, Op::GlobalAvgPool, &[x])
    }

    /// Element-wise sum (residual).
    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        let name = self.anon("add");
        self.push(&name, Op::Add, &[a, b])
    }

    /// Flatten to `[features]`.
    pub fn flatten(&mut self, x: NodeId) -> Result<NodeId> {
        let name = self.anon("flatten");
        self.push(&name, Op::Flatten, &[x])
    }

    /// Dropout with probability `p`.
    pub fn dropout(&mut self, x: NodeId, p: f64) -> Result<NodeId> {
        let name = self.anon("dropout");
        self.push(&name, Op::Dropout { p }, &[x])
    }

    /// Finishes the graph with `output` as the logits node.
    pub fn finish(self, output: NodeId) -> Result<Graph> {
        Graph::from_parts(self.nodes, output, self.shapes[0].clone(), self.params)
    }
}

impl Graph {
    /// Assembles a graph from nodes in topological order (node 0 the input), checking that
    /// every input refers to an earlier node and every parameter a node needs exists.
    pub fn from_parts(
        nodes: Vec<Node>,
        output: NodeId,
        input_shape: Vec<usize>,
        params: ParamStore,
    ) -> Result<Graph> {
        if output >= nodes.len() {
            return Err(Error::config("graph", "output node out of range"));
        }
        let mut last_use: Vec<NodeId> = (0..nodes.len()).collect();
        for (id, n) in nodes.iter().enumerate() {
            for &i in &n.inputs {
                if i >= id {
                    return Err(Error::config(
                        "graph",
                        format!("node {} reads a later node", n.name),
                    ));
                }
                last_use[i] = id;
            }
        }
        let g = Graph {
            nodes,
            output,
            input_shape,
            params,
            last_use,
        };
        // Every activation of one sample must fit the memory budget (the graph may come from
        // a file).
        for (node, shape) in g.nodes.iter().zip(g.infer_shapes()?) {
            crate::limits::check_shape_with(&shape, 4, || {
                format!(
                    "the output {} of node {} (a batch of 1)",
                    crate::limits::shape_string(&shape),
                    node.name
                )
            })?;
        }
        Ok(g)
    }
}
