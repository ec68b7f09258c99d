//! ONNX → [`Graph`]: every node of the CNN operator set becomes a node of our own graph
//! (so every method can take gradients through it), initializers become trainable parameters
//! and exporter boilerplate (shape chains, casts, constant pads) folds to constants
//! ([`super::consts`]).
//!
//! Layer names: a Conv/Gemm/MatMul/BatchNormalization whose weight initializer is named
//! `P.weight` (PyTorch's module names) is the layer `P`; otherwise (folded BatchNorm gives
//! generated names such as `onnx::Conv_88`) the name is the node's scope,
//! `/layer1/layer1.0/conv1/Conv` → `layer1.0.conv1`. Parameters are `LAYER.weight`,
//! `LAYER.bias`, ... so plans, sensitivity rows and the packed export line up as for zoo models.

use std::collections::{HashMap, HashSet};

use candle::{DType, Device, Tensor};

use super::consts::{BATCH, Const, FoldResult, norm_axis, resolve_shape};
use super::proto::{AttributeProto, ModelProto, NodeProto, data_type};
use crate::graph::{
    BatchNormSpec, Conv2dSpec, FuncOp, Graph, GraphBuilder, LinearSpec, NodeId, Op, ParamKind,
    PoolSpec,
};
use crate::{Error, Result};

/// ONNX operator types the importer converts (standard domain).
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "DequantizeLinear",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pad",
    "QuantizeLinear",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Squeeze",
    "Sub",
    "Transpose",
    "Unsqueeze",
];

/// Opsets of the standard domain the importer accepts.
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

#[derive(Debug, Clone)]
enum Value {
    Node(NodeId),
    Const(Const),
}

type R<T> = FoldResult<T>;

/// The imported graph and the ONNX names of what became parameters.
pub(crate) struct Imported {
    pub graph: Graph,
    /// `(parameter, ONNX initializer)` for every imported weight.
    pub initializers: Vec<(String, String)>,
    pub opset: i64,
    pub producer: String,
}

struct Importer<'a> {
    b: GraphBuilder,
    device: Device,
    nodes: &'a [NodeProto],
    values: HashMap<String, Value>,
    init_names: HashSet<String>,
    consumers: HashMap<String, Vec<usize>>,
    skip: HashSet<usize>,
    opset: i64,
    static_batch: Option<usize>,
    initializers: Vec<(String, String)>,
    /// ONNX element type of every initializer (the zero points of QDQ pairs say the codes'
    /// range).
    init_types: Vec<(String, i32)>,
}

fn attr<'n>(n: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).map_or(default, |a| a.i)
}

fn attr_f(n: &NodeProto, name: &str, default: f32) -> f32 {
    attr(n, name).map_or(default, |a| a.f)
}

fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

fn attr_s(n: &NodeProto, name: &str) -> Option<String> {
    attr(n, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// The dotted module path of an exporter node name (`/layer1/layer1.0/conv1/Conv` →
/// `layer1.0.conv1` with `drop_last`).
pub(crate) fn scope_name(node_name: &str, drop_last: bool) -> String {
    let comps: Vec<&str> = node_name.split('/').filter(|c| !c.is_empty()).collect();
    let comps = if drop_last && comps.len() > 1 {
        &comps[..comps.len() - 1]
    } else {
        &comps[..]
    };
    let mut segs: Vec<String> = Vec::new();
    for c in comps {
        match segs.last() {
            Some(last) if c.starts_with(&format!("{last}.")) => {
                segs.pop();
                segs.push(c.to_string());
            }
            _ => segs.push(c.to_string()),
        }
    }
    segs.join(".")
}

fn ints2(v: Option<Vec<i64>>, default: [usize; 2], what: &str) -> R<[usize; 2]> {
    match v {
        None => Ok(default),
        Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 0) => Ok([v[0] as usize, v[1] as usize]),
        Some(v) => Err(format!("{what} {v:?}: only 2-D, non-negative values")),
    }
}

/// Symmetric padding from ONNX `pads` / `auto_pad` for a window `k` (dilated span), stride
/// `s` over `size`.
fn padding(
    n: &NodeProto,
    kernel: [usize; 2],
    stride: [usize; 2],
    dil: [usize; 2],
    size: [usize; 2],
) -> R<[usize; 2]> {
    let auto = attr_s(n, "auto_pad").unwrap_or_default();
    match auto.as_str() {
        "" | "NOTSET" => match attr_ints(n, "pads") {
            None => Ok([0, 0]),
            Some(p)
                if p.len() == 4 && p[0] == p[2] && p[1] == p[3] && p.iter().all(|&x| x >= 0) =>
            {
                Ok([p[0] as usize, p[1] as usize])
            }
            Some(p) => Err(format!(
                "pads {p:?}: only symmetric 2-D padding is supported"
            )),
        },
        "VALID" => Ok([0, 0]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut out = [0; 2];
            for i in 0..2 {
                let bad = || format!("auto_pad {auto} with kernel {kernel:?}, stride {stride:?}");
                if stride[i] == 0 || kernel[i] == 0 || size[i] == 0 {
                    return Err(bad());
                }
                let span = (kernel[i] - 1)
                    .checked_mul(dil[i])
                    .and_then(|x| x.checked_add(1))
                    .ok_or_else(bad)?;
                let o = size[i].div_ceil(stride[i]);
                let total = ((o - 1) * stride[i])
                    .checked_add(span)
                    .ok_or_else(bad)?
                    .saturating_sub(size[i]);
                if !total.is_multiple_of(2) {
                    return Err(format!("auto_pad {auto} needs asymmetric padding here"));
                }
                out[i] = total / 2;
            }
            Ok(out)
        }
        other => Err(format!("auto_pad {other:?}")),
    }
}

impl Importer<'_> {
    fn input_name(n: &NodeProto, k: usize) -> Option<&str> {
        n.input.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    fn value(&self, n: &NodeProto, k: usize) -> R<Value> {
        let name = Importer::input_name(n, k).ok_or_else(|| format!("input {k} is missing"))?;
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| format!("input {name:?} is not produced by any earlier node"))
    }

    fn node_in(&self, n: &NodeProto, k: usize) -> R<NodeId> {
        match self.value(n, k)? {
            Value::Node(id) => Ok(id),
            Value::Const(_) => Err(format!("input {k} is a constant; expected an activation")),
        }
    }

    fn const_in(&self, n: &NodeProto, k: usize) -> R<Const> {
        match self.value(n, k)? {
            Value::Const(c) => Ok(c),
            Value::Node(_) => Err(format!(
                "input {k} ({}) must be a constant (an initializer)",
                n.input[k]
            )),
        }
    }

    fn opt_const(&self, n: &NodeProto, k: usize) -> R<Option<Const>> {
        match Importer::input_name(n, k) {
            None => Ok(None),
            Some(_) => self.const_in(n, k).map(Some),
        }
    }

    fn shape(&self, id: NodeId) -> Vec<usize> {
        self.b.shape(id).to_vec()
    }

    fn unique(&self, base: &str, fallback: String) -> String {
        let base = if base.is_empty() {
            fallback
        } else {
            base.to_string()
        };
        if !self.b.has_node(&base) {
            return base;
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|c| !self.b.has_node(c))
            .expect("some suffix is free")
    }

    fn node_name(&self, idx: usize, n: &NodeProto) -> String {
        self.unique(
            &scope_name(&n.name, false),
            format!("{}_{idx}", n.op_type.to_lowercase()),
        )
    }

    /// The layer name of a weighted node whose weight is input `k`.
    fn layer_name(&self, idx: usize, n: &NodeProto, k: usize) -> String {
        let from_init = Importer::input_name(n, k)
            .filter(|w| self.init_names.contains(*w))
            .and_then(|w| w.strip_suffix(".weight"))
            .filter(|p| !p.is_empty() && !self.b.has_node(p));
        match from_init {
            Some(p) => p.to_string(),
            None => self.unique(
                &scope_name(&n.name, true),
                format!("{}_{idx}", n.op_type.to_lowercase()),
            ),
        }
    }

    fn push(&mut self, name: &str, op: Op, inputs: &[NodeId]) -> R<Value> {
        self.b
            .push(name, op, inputs)
            .map(Value::Node)
            .map_err(|e| e.to_string())
    }

    fn param(
        &mut self,
        name: String,
        c: &Const,
        dims: &[usize],
        kind: ParamKind,
        onnx: Option<&str>,
    ) -> R<()> {
        let t = Tensor::from_vec(c.f32s(), dims, &Device::Cpu).map_err(|e| e.to_string())?;
        let t = t.to_device(&self.device).map_err(|e| e.to_string())?;
        if let Some(o) = onnx {
            self.initializers.push((name.clone(), o.to_string()));
        }
        self.b
            .insert_param(&name, t, kind)
            .map_err(|e| e.to_string())
    }

    fn func(&mut self, idx: usize, n: &NodeProto, f: FuncOp, inputs: &[NodeId]) -> R<Value> {
        let name = self.node_name(idx, n);
        self.push(&name, Op::Func(f), inputs)
    }

    fn unary(&mut self, idx: usize, n: &NodeProto, op: Op) -> R<Value> {
        let x = self.node_in(n, 0)?;
        let name = self.node_name(idx, n);
        self.push(&name, op, &[x])
    }

    fn convert(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        match n.op_type.as_str() {
            "Constant" => constant(n),
            "Identity" => self.value(n, 0),
            "Cast" => self.cast(n),
            "Shape" => self.shape_of(n),
            "Gather" => {
                let (data, idxs) = (self.const_in(n, 0)?, self.const_in(n, 1)?);
                Ok(Value::Const(data.gather(&idxs, attr_i(n, "axis", 0))?))
            }
            "Unsqueeze" | "Squeeze" => self.squeeze(idx, n),
            "ConstantOfShape" => {
                let shape = self.const_in(n, 0)?.ints()?;
                let (v, int) = match attr(n, "value").and_then(|a| a.t.as_ref()) {
                    Some(t) => {
                        let c = Const::from_proto(t)?;
                        (c.single().ok_or("value must hold one element")?, c.int)
                    }
                    None => (0.0, false),
                };
                let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
                let count = super::consts::check_len("ConstantOfShape", &dims)?;
                Ok(Value::Const(Const::new(dims, vec![v; count], int)))
            }
            "Slice" => self.slice(n),
            "Concat" => self.concat(idx, n),
            "Add" | "Sub" | "Mul" | "Div" => self.binary(idx, n),
            "Reshape" => self.reshape(idx, n),
            "Transpose" => self.transpose(idx, n),
            "Conv" => self.conv(idx, n),
            "Gemm" => self.gemm(idx, n),
            "MatMul" => self.matmul(idx, n),
            "BatchNormalization" => self.batch_norm(idx, n),
            "Relu" => self.unary(idx, n, Op::Relu),
            "Clip" => self.clip(idx, n),
            "LeakyRelu" => {
                let alpha = attr_f(n, "alpha", 0.01) as f64;
                let x = self.node_in(n, 0)?;
                self.func(idx, n, FuncOp::LeakyRelu { alpha }, &[x])
            }
            "Sigmoid" => {
                let x = self.node_in(n, 0)?;
                self.func(idx, n, FuncOp::Sigmoid, &[x])
            }
            "HardSigmoid" => {
                let x = self.node_in(n, 0)?;
                let (alpha, beta) = (
                    attr_f(n, "alpha", 0.2) as f64,
                    attr_f(n, "beta", 0.5) as f64,
                );
                self.func(idx, n, FuncOp::HardSigmoid { alpha, beta }, &[x])
            }
            "HardSwish" => {
                let x = self.node_in(n, 0)?;
                self.func(idx, n, FuncOp::HardSwish, &[x])
            }
            "Softmax" => self.softmax(idx, n),
            "MaxPool" | "AveragePool" => self.pool(idx, n),
            "GlobalAveragePool" => self.unary(idx, n, Op::GlobalAvgPool),
            "ReduceMean" => self.reduce_mean(idx, n),
            "Flatten" => self.flatten(idx, n),
            "Dropout" => {
                let x = self.node_in(n, 0)?;
                let p = match self.opt_const(n, 1)? {
                    Some(c) => c.single().ok_or("ratio must be a scalar")?,
                    None => attr_f(n, "ratio", 0.5) as f64,
                };
                let name = self.node_name(idx, n);
                self.push(&name, Op::Dropout { p }, &[x])
            }
            "Pad" => self.pad(idx, n),
            "QuantizeLinear" => self.quantize_linear(idx, n),
            "DequantizeLinear" => self.dequantize_linear(idx, n),
            other => Err(format!("{other} is not supported")),
        }
    }

    fn cast(&self, n: &NodeProto) -> R<Value> {
        let to = attr_i(n, "to", 1);
        let float = matches!(to, 1 | 10 | 11 | 16);
        match self.value(n, 0)? {
            Value::Const(mut c) => {
                if !float {
                    c.data
                        .iter_mut()
                        .filter(|v| **v != BATCH)
                        .for_each(|v| *v = v.trunc());
                }
                c.int = !float;
                Ok(Value::Const(c))
            }
            Value::Node(id) if to == 1 => Ok(Value::Node(id)),
            Value::Node(_) => Err(format!("cast of an activation to type {to}")),
        }
    }

    fn shape_of(&self, n: &NodeProto) -> R<Value> {
        let dims: Vec<f64> = match self.value(n, 0)? {
            Value::Node(id) => std::iter::once(BATCH)
                .chain(self.shape(id).iter().map(|&d| d as f64))
                .collect(),
            Value::Const(c) => c.dims.iter().map(|&d| d as f64).collect(),
        };
        let r = dims.len() as i64;
        let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let start = clampi(attr_i(n, "start", 0));
        let end = clampi(attr_i(n, "end", r));
        let d = dims[start..end.max(start)].to_vec();
        Ok(Value::Const(Const::new(vec![d.len()], d, true)))
    }

    fn axes_of(&self, n: &NodeProto) -> R<Option<Vec<i64>>> {
        match attr_ints(n, "axes") {
            Some(a) => Ok(Some(a)),
            None => self.opt_const(n, 1)?.map(|c| c.ints()).transpose(),
        }
    }

    fn squeeze(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        let axes = self.axes_of(n)?;
        let unsq = n.op_type == "Unsqueeze";
        match self.value(n, 0)? {
            Value::Const(c) => Ok(Value::Const(if unsq {
                c.unsqueeze(&axes.ok_or("unsqueeze without axes")?)?
            } else {
                c.squeeze(&axes.unwrap_or_default())?
            })),
            Value::Node(x) => {
                let mut full = vec![0usize];
                full.extend(self.shape(x));
                let c = Const::new(full.clone(), vec![0.0; full.iter().product()], false);
                let out = if unsq {
                    c.unsqueeze(&axes.ok_or("unsqueeze without axes")?)?
                } else {
                    c.squeeze(&axes.unwrap_or_default())?
                };
                if out.dims.first() != Some(&0) {
                    return Err("squeezes or unsqueezes the batch axis".into());
                }
                let shape = out.dims[1..].to_vec();
                self.func(idx, n, FuncOp::Reshape { shape }, &[x])
            }
        }
    }

    fn slice(&self, n: &NodeProto) -> R<Value> {
        let data = self.const_in(n, 0)?;
        let (starts, ends, axes, steps) = match attr_ints(n, "starts") {
            Some(s) => (
                s,
                attr_ints(n, "ends").unwrap_or_default(),
                attr_ints(n, "axes"),
                None,
            ),
            None => (
                self.const_in(n, 1)?.ints()?,
                self.const_in(n, 2)?.ints()?,
                self.opt_const(n, 3)?.map(|c| c.ints()).transpose()?,
                self.opt_const(n, 4)?.map(|c| c.ints()).transpose()?,
            ),
        };
        Ok(Value::Const(data.slice(
            &starts,
            &ends,
            axes.as_deref(),
            steps.as_deref(),
        )?))
    }

    fn concat(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        let vals = (0..n.input.len())
            .map(|k| self.value(n, k))
            .collect::<R<Vec<_>>>()?;
        let axis = attr_i(n, "axis", 0);
        let consts: Vec<&Const> = vals
            .iter()
            .filter_map(|v| match v {
                Value::Const(c) => Some(c),
                Value::Node(_) => None,
            })
            .collect();
        if consts.len() == vals.len() {
            return Ok(Value::Const(Const::concat(&consts, axis)?));
        }
        if !consts.is_empty() {
            return Err("concatenation of activations with constants".into());
        }
        let ids: Vec<NodeId> = vals
            .iter()
            .filter_map(|v| match v {
                Value::Node(id) => Some(*id),
                Value::Const(_) => None,
            })
            .collect();
        let axis = norm_axis(axis, self.shape(ids[0]).len() + 1)?;
        if axis == 0 {
            return Err("concatenation along the batch axis".into());
        }
        self.func(idx, n, FuncOp::Concat { axis: axis - 1 }, &ids)
    }

    fn binary(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        let op = n.op_type.as_str();
        match (self.value(n, 0)?, self.value(n, 1)?) {
            (Value::Const(a), Value::Const(b)) => Ok(Value::Const(a.binary(&b, op)?)),
            (Value::Node(a), Value::Node(b)) => match op {
                "Add" if self.shape(a) == self.shape(b) => {
                    let name = self.node_name(idx, n);
                    self.push(&name, Op::Add, &[a, b])
                }
                "Add" => Err("broadcasting sum of two activations".into()),
                "Mul" => self.func(idx, n, FuncOp::Mul, &[a, b]),
                _ => Err(format!("{op} of two activations")),
            },
            (x, c) => {
                let (node_first, x, c) = match (x, c) {
                    (Value::Node(x), Value::Const(c)) => (true, x, c),
                    (Value::Const(c), Value::Node(x)) => (false, x, c),
                    _ => unreachable!("both-const and both-node handled above"),
                };
                let v = c
                    .single()
                    .ok_or_else(|| format!("{op} with a non-scalar constant {:?}", c.dims))?;
                let (mul, add) = match (op, node_first) {
                    ("Add", _) => (1.0, v),
                    ("Mul", _) => (v, 0.0),
                    ("Sub", true) => (1.0, -v),
                    ("Sub", false) => (-1.0, v),
                    ("Div", true) => (1.0 / v, 0.0),
                    _ => return Err("division by an activation".into()),
                };
                self.func(idx, n, FuncOp::Affine { mul, add }, &[x])
            }
        }
    }

    fn reshape(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        let target = self.const_in(n, 1)?;
        let x = match self.value(n, 0)? {
            Value::Const(c) => return Ok(Value::Const(c.reshape(&target.ints()?)?)),
            Value::Node(x) => x,
        };
        let dims = self.shape(x);
        let numel: usize = dims.iter().product();
        let t = &target.data;
        let Some((&first, rest)) = t.split_first() else {
            return Err("reshape to a scalar".into());
        };
        let rest_i: Vec<i64> = rest
            .iter()
            .map(|&v| {
                if v == BATCH || v.fract() != 0.0 {
                    Err(format!("reshape target {t:?} moves the batch axis"))
                } else {
                    Ok(v as i64)
                }
            })
            .collect::<R<_>>()?;
        let batch_kept = first == BATCH
            || first == 0.0
            || self.static_batch.is_some_and(|b| first == b as f64)
            || (first == -1.0
                && !rest_i.contains(&-1)
                && !rest_i.contains(&0)
                && rest_i
                    .iter()
                    .try_fold(1i64, |a, &d| a.checked_mul(d))
                    .is_some_and(|p| p == numel as i64));
        if !batch_kept {
            return Err(format!("reshape target {t:?} changes the batch axis"));
        }
        let out = resolve_shape(&dims, &rest_i)?;
        if out == dims {
            return Ok(Value::Node(x));
        }
        let name = self.node_name(idx, n);
        if out.len() == 1 {
            return self.push(&name, Op::Flatten, &[x]);
        }
        self.push(&name, Op::Func(FuncOp::Reshape { shape: out }), &[x])
    }

    fn transpose(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        let perm = attr_ints(n, "perm").unwrap_or_default();
        match self.value(n, 0)? {
            Value::Const(c) => Ok(Value::Const(c.transpose(&perm)?)),
            Value::Node(x) => {
                if perm.first() != Some(&0) {
                    return Err(format!("perm {perm:?} moves the batch axis"));
                }
                let perm = perm[1..]
                    .iter()
                    .map(|&p| usize::try_from(p - 1).map_err(|_| format!("perm {p}")))
                    .collect::<R<Vec<_>>>()?;
                self.func(idx, n, FuncOp::Transpose { perm }, &[x])
            }
        }
    }

    fn conv(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        let x = self.node_in(n, 0)?;
        let w = self.const_in(n, 1)?;
        let bias = self.opt_const(n, 2)?;
        let &[co, cig, kh, kw] = w.dims.as_slice() else {
            return Err(format!(
                "weight of shape {:?}: only 2-D convolutions",
                w.dims
            ));
        };
        let &[c, h, wd] = self.shape(x).as_slice() else {
            return Err(format!(
                "input of shape {:?}: expected [C, H, W]",
                self.shape(x)
            ));
        };
        let group = attr_i(n, "group", 1);
        if group < 1 {
            return Err(format!("group {group}: must be at least 1"));
        }
        let groups = group as usize;
        if co == 0 || cig == 0 || kh == 0 || kw == 0 {
            return Err(format!("an empty weight of shape {:?}", w.dims));
        }
        if co % groups != 0 {
            return Err(format!(
                "{co} output channels are not a multiple of group {groups}"
            ));
        }
        if cig * groups != c {
            return Err(format!(
                "{c} input channels do not match weight {:?} with {groups} groups",
                w.dims
            ));
        }
        if let Some(k) = attr_ints(n, "kernel_shape")
            && k != [kh as i64, kw as i64]
        {
            return Err(format!("kernel_shape {k:?} disagrees with the weight"));
        }
        let stride = ints2(attr_ints(n, "strides"), [1, 1], "strides")?;
        let dilation = ints2(attr_ints(n, "dilations"), [1, 1], "dilations")?;
        if stride.contains(&0) || dilation.contains(&0) {
            return Err(format!(
                "strides {stride:?} and dilations {dilation:?} must be at least 1"
            ));
        }
        let padding = padding(n, [kh, kw], stride, dilation, [h, wd])?;
        for (i, (size, k)) in [(h, kh), (wd, kw)].into_iter().enumerate() {
            let reach = dilation[i] * (k - 1) + 1;
            if size + 2 * padding[i] < reach {
                return Err(format!(
                    "a kernel reaching {reach} pixels over an input of {size} padded by {}",
                    padding[i]
                ));
            }
        }
        if let Some(b) = &bias
            && b.len() != co
        {
            return Err(format!("bias of {} values for {co} channels", b.len()));
        }
        let spec = Conv2dSpec {
            in_channels: c,
            out_channels: co,
            kernel: [kh, kw],
            stride,
            padding,
            dilation,
            groups,
            bias: bias.is_some(),
        };
        let name = self.layer_name(idx, n, 1);
        let v = self.push(&name, Op::Conv2d(spec), &[x])?;
        let (wn, bn) = (
            n.input[1].clone(),
            Importer::input_name(n, 2).map(str::to_string),
        );
        self.param(
            format!("{name}.weight"),
            &w,
            &w.dims,
            ParamKind::Trainable,
            Some(&wn),
        )?;
        if let Some(b) = bias {
            self.param(
                format!("{name}.bias"),
                &b,
                &[co],
                ParamKind::Trainable,
                bn.as_deref(),
            )?;
        }
        Ok(v)
    }

    fn flat_input(&self, x: NodeId) -> R<usize> {
        match self.shape(x).as_slice() {
            [k] => Ok(*k),
            s => Err(format!(
                "input of shape {s:?}: expected flat features (flatten first)"
            )),
        }
    }

    fn linear(
        &mut self,
        idx: usize,
        n: &NodeProto,
        x: NodeId,
        w: Const,
        bias: Option<Const>,
    ) -> R<Value> {
        let &[out, inp] = w.dims.as_slice() else {
            return Err(format!("weight of shape {:?}", w.dims));
        };
        let k = self.flat_input(x)?;
        if k != inp {
            return Err(format!(
                "{k} input features for a weight of shape [{out}, {inp}]"
            ));
        }
        let bias = match bias {
            Some(b) if b.len() == out => Some(b),
            Some(b) if b.len() == 1 => Some(Const::new(vec![out], vec![b.data[0]; out], false)),
            Some(b) => return Err(format!("bias of shape {:?} for {out} outputs", b.dims)),
            None => None,
        };
        let spec = LinearSpec {
            in_features: inp,
            out_features: out,
            bias: bias.is_some(),
        };
        let name = self.layer_name(idx, n, 1);
        let v = self.push(&name, Op::Linear(spec), &[x])?;
        let wn = n.input[1].clone();
        self.param(
            format!("{name}.weight"),
            &w,
            &[out, inp],
            ParamKind::Trainable,
            Some(&wn),
        )?;
        if let Some(b) = bias {
            let bn = Importer::input_name(n, 2).map(str::to_string);
            self.param(
                format!("{name}.bias"),
                &b,
                &[out],
                ParamKind::Trainable,
                bn.as_deref(),
            )?;
        }
        Ok(v)
    }

    fn gemm(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        if attr_i(n, "transA", 0) != 0 {
            return Err("transA = 1".into());
        }
        let x = self.node_in(n, 0)?;
        let b = self.const_in(n, 1)?;
        if b.dims.len() != 2 {
            return Err(format!("B of shape {:?}", b.dims));
        }
        let mut w = if attr_i(n, "transB", 0) != 0 {
            b
        } else {
            b.transpose(&[1, 0])?
        };
        let alpha = attr_f(n, "alpha", 1.0) as f64;
        if alpha != 1.0 {
            w.data.iter_mut().for_each(|v| *v *= alpha);
        }
        let beta = attr_f(n, "beta", 1.0) as f64;
        let bias = self.opt_const(n, 2)?.map(|mut c| {
            c.data.iter_mut().for_each(|v| *v *= beta);
            c
        });
        self.linear(idx, n, x, w, bias)
    }

    fn matmul(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        let x = self.node_in(n, 0)?;
        let b = self.const_in(n, 1)?;
        if b.dims.len() != 2 {
            return Err(format!(
                "B of shape {:?}: only a 2-D constant right operand",
                b.dims
            ));
        }
        let w = b.transpose(&[1, 0])?;
        let out = w.dims[0];
        // `MatMul` + `Add(bias)` is one Linear layer.
        let fused = self
            .consumers
            .get(&n.output[0])
            .and_then(|c| match c.as_slice() {
                [j] if self.nodes[*j].op_type == "Add" => Some(*j),
                _ => None,
            });
        let mut bias = None;
        let nodes = self.nodes;
        if let Some(j) = fused {
            let add = &nodes[j];
            let other = add.input.iter().position(|s| *s != n.output[0]);
            if let Some(k) = other
                && let Ok(Value::Const(c)) = self.value(add, k)
                && c.len() == out
                && c.dims.iter().filter(|&&d| d != 1).count() <= 1
            {
                bias = Some((j, c));
            }
        }
        let (bias_name, bias) = match bias {
            Some((j, c)) => {
                self.skip.insert(j);
                let add = &nodes[j];
                let k = add
                    .input
                    .iter()
                    .position(|s| *s != n.output[0])
                    .unwrap_or(1);
                (Some((add.output[0].clone(), add.input[k].clone())), Some(c))
            }
            None => (None, None),
        };
        let v = self.linear(idx, n, x, w, bias)?;
        if let Some((out_name, init)) = bias_name {
            if let Some(last) = self.initializers.last_mut() {
                last.1 = init;
            }
            self.values.insert(out_name, v.clone());
        }
        Ok(v)
    }

    fn batch_norm(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        if n.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err("training-mode outputs (running statistics)".into());
        }
        let x = self.node_in(n, 0)?;
        let c = match self.shape(x).as_slice() {
            [c, _, _] => *c,
            s => return Err(format!("input of shape {s:?}: expected [C, H, W]")),
        };
        let parts = (1..5).map(|k| self.const_in(n, k)).collect::<R<Vec<_>>>()?;
        if parts.iter().any(|p| p.len() != c) {
            return Err(format!("statistics do not have {c} channels"));
        }
        let spec = BatchNormSpec {
            channels: c,
            eps: attr_f(n, "epsilon", 1e-5) as f64,
            momentum: 1.0 - attr_f(n, "momentum", 0.9) as f64,
        };
        let name = self.layer_name(idx, n, 1);
        let v = self.push(&name, Op::BatchNorm2d(spec), &[x])?;
        let names = ["weight", "bias", "running_mean", "running_var"];
        for (k, (p, suffix)) in parts.iter().zip(names).enumerate() {
            let kind = if k < 2 {
                ParamKind::Trainable
            } else {
                ParamKind::Buffer
            };
            let onnx = n.input[k + 1].clone();
            self.param(format!("{name}.{suffix}"), p, &[c], kind, Some(&onnx))?;
        }
        let counter = Tensor::zeros((), DType::I64, &self.device).map_err(|e| e.to_string())?;
        self.b
            .insert_param(
                &format!("{name}.num_batches_tracked"),
                counter,
                ParamKind::Buffer,
            )
            .map_err(|e| e.to_string())?;
        Ok(v)
    }

    fn clip(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        let x = self.node_in(n, 0)?;
        let (lo, hi) = if self.opset >= 11 {
            let get = |k: usize, d: f64| -> R<f64> {
                Ok(match self.opt_const(n, k)? {
                    Some(c) => c.single().ok_or("clip bound must be a scalar")?,
                    None => d,
                })
            };
            (get(1, f64::NEG_INFINITY)?, get(2, f64::INFINITY)?)
        } else {
            (
                attr_f(n, "min", f32::MIN) as f64,
                attr_f(n, "max", f32::MAX) as f64,
            )
        };
        let name = self.node_name(idx, n);
        let op = match (lo, hi) {
            (0.0, 6.0) => Op::Relu6,
            (0.0, h) if h.is_infinite() => Op::Relu,
            (lo, hi) => Op::Func(FuncOp::Clip { lo, hi }),
        };
        self.push(&name, op, &[x])
    }

    fn softmax(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        let x = self.node_in(n, 0)?;
        let rank = self.shape(x).len() + 1;
        let default = if self.opset >= 13 { -1 } else { 1 };
        if self.opset < 13 && rank > 2 {
            return Err("opset < 13 softmax of a rank > 2 input".into());
        }
        let axis = norm_axis(attr_i(n, "axis", default), rank)?;
        if axis == 0 {
            return Err("softmax over the batch axis".into());
        }
        self.func(idx, n, FuncOp::Softmax { axis: axis - 1 }, &[x])
    }

    fn pool(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        if n.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err("the indices output".into());
        }
        let x = self.node_in(n, 0)?;
        let &[_, h, w] = self.shape(x).as_slice() else {
            return Err(format!(
                "input of shape {:?}: expected [C, H, W]",
                self.shape(x)
            ));
        };
        let kernel = ints2(attr_ints(n, "kernel_shape"), [0, 0], "kernel_shape")?;
        if kernel.contains(&0) {
            return Err("kernel_shape missing".into());
        }
        let stride = ints2(attr_ints(n, "strides"), [1, 1], "strides")?;
        if ints2(attr_ints(n, "dilations"), [1, 1], "dilations")? != [1, 1] {
            return Err("dilated pooling".into());
        }
        let pad = padding(n, kernel, stride, [1, 1], [h, w])?;
        if attr_i(n, "ceil_mode", 0) != 0
            && (0..2).any(|i| ([h, w][i] + 2 * pad[i]).saturating_sub(kernel[i]) % stride[i] != 0)
        {
            return Err("ceil_mode = 1 with a partial last window".into());
        }
        let spec = PoolSpec {
            kernel,
            stride,
            padding: pad,
        };
        let op = if n.op_type == "MaxPool" {
            Op::MaxPool2d(spec)
        } else {
            if pad != [0, 0] && attr_i(n, "count_include_pad", 0) == 0 {
                return Err("count_include_pad = 0 with padding".into());
            }
            Op::AvgPool2d(spec)
        };
        let name = self.node_name(idx, n);
        self.push(&name, op, &[x])
    }

    fn reduce_mean(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        let x = self.node_in(n, 0)?;
        let dims = self.shape(x);
        let rank = dims.len() + 1;
        let axes = self.axes_of(n)?.unwrap_or_default();
        if axes.is_empty() {
            return Err("mean over every axis (the batch too)".into());
        }
        let mut axes = axes
            .iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<R<Vec<_>>>()?;
        axes.sort_unstable();
        axes.dedup();
        if axes[0] == 0 {
            return Err("mean over the batch axis".into());
        }
        let keep = attr_i(n, "keepdims", 1) != 0;
        let name = self.node_name(idx, n);
        if dims.len() == 3 && axes == [2, 3] {
            if keep {
                return self.push(&name, Op::GlobalAvgPool, &[x]);
            }
            let gap = self.unique(&format!("{name}.pool"), String::new());
            let Value::Node(g) = self.push(&gap, Op::GlobalAvgPool, &[x])? else {
                unreachable!("push returns a node")
            };
            return self.push(&name, Op::Flatten, &[g]);
        }
        let axes = axes.iter().map(|a| a - 1).collect();
        self.push(
            &name,
            Op::Func(FuncOp::Mean {
                axes,
                keep_dims: keep,
            }),
            &[x],
        )
    }

    fn flatten(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        let x = self.node_in(n, 0)?;
        let rank = self.shape(x).len() + 1;
        let a = attr_i(n, "axis", 1);
        let axis = if a < 0 { a + rank as i64 } else { a };
        if axis != 1 {
            return Err(format!("flatten at axis {axis} mixes the batch axis"));
        }
        if rank == 2 {
            return Ok(Value::Node(x));
        }
        self.unary(idx, n, Op::Flatten)
    }

    fn pad(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        let x = self.node_in(n, 0)?;
        let mode = attr_s(n, "mode").unwrap_or_else(|| "constant".into());
        if mode != "constant" {
            return Err(format!("mode {mode:?}"));
        }
        let pads = match attr_ints(n, "pads") {
            Some(p) => p,
            None => self.const_in(n, 1)?.ints()?,
        };
        let value = match self.opt_const(n, 2)? {
            Some(c) => c.single().unwrap_or(0.0),
            None => attr_f(n, "value", 0.0) as f64,
        };
        if value != 0.0 {
            return Err(format!("constant value {value} (only zero padding)"));
        }
        if Importer::input_name(n, 3).is_some() {
            return Err("the axes input".into());
        }
        let r = self.shape(x).len() + 1;
        if pads.len() != 2 * r || pads.iter().any(|&p| p < 0) || pads[0] != 0 || pads[r] != 0 {
            return Err(format!(
                "pads {pads:?}: non-negative, none on the batch axis"
            ));
        }
        let pads = (1..r)
            .map(|i| (pads[i] as usize, pads[r + i] as usize))
            .collect();
        self.func(idx, n, FuncOp::Pad { pads }, &[x])
    }
}

fn constant(n: &NodeProto) -> R<Value> {
    let a = n.attribute.first().ok_or("Constant without a value")?;
    let c = match a.name.as_str() {
        "value" => Const::from_proto(a.t.as_ref().ok_or("value without a tensor")?)?,
        "value_float" => Const::scalar(a.f as f64, false),
        "value_int" => Const::scalar(a.i as f64, true),
        "value_floats" => Const::new(
            vec![a.floats.len()],
            a.floats.iter().map(|&v| v as f64).collect(),
            false,
        ),
        "value_ints" => Const::new(
            vec![a.ints.len()],
            a.ints.iter().map(|&v| v as f64).collect(),
            true,
        ),
        other => return Err(format!("Constant with a {other} attribute")),
    };
    Ok(Value::Const(c))
}

fn unsupported(n: &NodeProto, idx: usize, reason: Option<&str>) -> String {
    let op = if n.domain.is_empty() || n.domain == "ai.onnx" {
        n.op_type.clone()
    } else {
        format!("{}::{}", n.domain, n.op_type)
    };
    let name = if n.name.is_empty() {
        format!("#{idx}")
    } else {
        n.name.clone()
    };
    match reason {
        Some(r) => format!("{op} (node {name}): {r}"),
        None => format!("{op} (node {name})"),
    }
}

/// Runs `f` with what is left of the memory budget `limit` once `used` bytes are taken; a
/// limit error then says how much was taken.
fn within_budget<T>(limit: u64, used: u128, f: impl FnOnce() -> R<T>) -> R<T> {
    let left = u128::from(limit).saturating_sub(used).max(1) as u64;
    crate::limits::with_memory_limit(left, f).map_err(|r| {
        if crate::limits::is_limit_message(&r) && used > 0 {
            format!(
                "{r}; the model's constants and weights already take {} of the {} budget",
                crate::limits::format_bytes(used),
                crate::limits::format_bytes(limit.into())
            )
        } else {
            r
        }
    })
}

/// Imports a decoded model on `device`.
pub(crate) fn import(model: &ModelProto, device: &Device) -> Result<Imported> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(1, |o| o.version);
    if !OPSETS.contains(&opset) {
        return Err(Error::config(
            "onnx",
            format!(
                "opset {opset} is outside the supported {}..={}",
                OPSETS.start(),
                OPSETS.end()
            ),
        ));
    }
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::config("onnx", "the model has no graph"))?;
    let items: Vec<String> = g
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            !(n.domain.is_empty() || n.domain == "ai.onnx")
                || !SUPPORTED_OPS.contains(&n.op_type.as_str())
        })
        .map(|(i, n)| unsupported(n, i, None))
        .collect();
    if !items.is_empty() {
        return Err(Error::UnsupportedOnnxOps { items });
    }
    let mut values = HashMap::new();
    let mut init_names = HashSet::new();
    // Constants stay alive for the whole import: each one is checked against what is left of
    // the memory budget (a scoped budget), not the whole budget.
    let limit = crate::limits::memory_limit()?;
    let mut const_bytes: u128 = 0;
    for t in &g.initializer {
        let c = within_budget(limit, const_bytes, || Const::from_proto(t))
            .map_err(|e| Error::config("onnx", e))?;
        const_bytes += c.len() as u128 * 8;
        init_names.insert(t.name.clone());
        values.insert(t.name.clone(), Value::Const(c));
    }
    let input = g
        .input
        .iter()
        .find(|i| !init_names.contains(&i.name))
        .ok_or_else(|| Error::config("onnx", "the graph has no input"))?;
    let dims: Vec<Option<i64>> = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
        .map(|s| s.dim.iter().map(|d| d.dim_value).collect())
        .ok_or_else(|| Error::config("onnx", format!("input {:?} has no shape", input.name)))?;
    let per_sample: Vec<usize> = dims
        .iter()
        .skip(1)
        .map(|d| d.filter(|&v| v > 0).map(|v| v as usize))
        .collect::<Option<Vec<_>>>()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Error::config(
                "onnx",
                format!(
                    "input {:?} needs static per-sample dimensions, got {dims:?}",
                    input.name
                ),
            )
        })?;
    crate::limits::check_input(&per_sample)?;
    let static_batch = dims.first().copied().flatten().map(|b| b.max(0) as usize);
    values.insert(input.name.clone(), Value::Node(0));
    let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for s in n.input.iter().filter(|s| !s.is_empty()) {
            consumers.entry(s.clone()).or_default().push(i);
        }
    }
    let mut im = Importer {
        b: GraphBuilder::new(&per_sample, device, 0),
        device: device.clone(),
        nodes: &g.node,
        values,
        init_names,
        consumers,
        skip: HashSet::new(),
        opset,
        static_batch,
        initializers: Vec::new(),
        init_types: g
            .initializer
            .iter()
            .map(|t| (t.name.clone(), t.data_type))
            .collect(),
    };
    for (i, n) in g.node.iter().enumerate() {
        if im.skip.contains(&i) {
            continue;
        }
        // (The parameters the graph builder creates are counted by the builder itself,
        // against the same scoped budget.)
        let v = within_budget(limit, const_bytes, || im.convert(i, n)).map_err(|r| {
            if crate::limits::is_limit_message(&r) {
                // Not an unsupported operator: a constant too large for the memory budget.
                Error::config("onnx", unsupported(n, i, Some(&r)))
            } else {
                Error::UnsupportedOnnxOps {
                    items: vec![unsupported(n, i, Some(&r))],
                }
            }
        })?;
        let out = n
            .output
            .first()
            .ok_or_else(|| Error::config("onnx", format!("node {:?} has no output", n.name)))?;
        if let Value::Const(c) = &v {
            const_bytes += c.len() as u128 * 8;
        }
        im.values.insert(out.clone(), v);
    }
    let out_name = &g
        .output
        .first()
        .ok_or_else(|| Error::config("onnx", "the graph has no output"))?
        .name;
    let out = match im.values.get(out_name) {
        Some(Value::Node(id)) if *id > 0 => *id,
        _ => {
            return Err(Error::config(
                "onnx",
                format!("output {out_name:?} is not computed from the input"),
            ));
        }
    };
    if im.b.shape(out).len() != 1 {
        return Err(Error::config(
            "onnx",
            format!(
                "output {out_name:?} has per-sample shape {:?}; expected [classes]",
                im.b.shape(out)
            ),
        ));
    }
    let initializers = im.initializers;
    let graph = im.b.finish(out)?;
    Ok(Imported {
        graph,
        initializers,
        opset,
        producer: format!("{} {}", model.producer_name, model.producer_version)
            .trim()
            .to_string(),
    })
}

/// QDQ models (docs/onnx.md, "Importing a QDQ model"): `DequantizeLinear` of constant codes
/// folds into the float weight it stands for; `QuantizeLinear` then `DequantizeLinear` of an
/// activation becomes fake quantization ([`FuncOp::Quantize`] and an affine map), so a model
/// mpq exported evaluates at the exported accuracy.
impl Importer<'_> {
    /// The ONNX element type of the constant named `name`: an initializer's, or a `Constant`
    /// node's value.
    fn element_type(&self, name: &str) -> Option<i32> {
        if let Some((_, t)) = self.init_types.iter().find(|(n, _)| n == name) {
            return Some(*t);
        }
        self.nodes
            .iter()
            .find(|n| n.op_type == "Constant" && n.output.first().is_some_and(|o| o == name))
            .and_then(|n| attr(n, "value"))
            .and_then(|a| a.t.as_ref())
            .map(|t| t.data_type)
    }

    /// The codes' range of the zero point's type (uint8 when there is none).
    fn code_range(&self, n: &NodeProto) -> R<(f64, f64)> {
        let t = match Self::input_name(n, 2) {
            Some(name) => self
                .element_type(name)
                .ok_or_else(|| format!("the type of the zero point {name:?} is unknown"))?,
            None => data_type::UINT8,
        };
        match t {
            data_type::INT8 => Ok((-128.0, 127.0)),
            data_type::UINT8 => Ok((0.0, 255.0)),
            5 => Ok((-32768.0, 32767.0)),
            4 => Ok((0.0, 65535.0)),
            other => Err(format!("zero points of ONNX type {other}")),
        }
    }

    /// Scale and zero point per entry of axis `axis` of a tensor of `dims` (one pair when
    /// they are scalars).
    fn qdq_params(&self, n: &NodeProto, dims: Option<&[usize]>) -> R<(Vec<f64>, Vec<f64>, usize)> {
        if attr_i(n, "block_size", 0) != 0 {
            return Err("blocked quantization (block_size)".into());
        }
        let scale = self.const_in(n, 1)?;
        let zero = self
            .opt_const(n, 2)?
            .map_or_else(|| vec![0.0; scale.data.len()], |z| z.data);
        if zero.len() != scale.data.len() {
            return Err("scale and zero point of different lengths".into());
        }
        let axis = match dims {
            Some(d) if scale.data.len() > 1 => norm_axis(attr_i(n, "axis", 1), d.len())?,
            _ => 0,
        };
        if let Some(d) = dims
            && scale.data.len() > 1
            && d.get(axis) != Some(&scale.data.len())
        {
            return Err(format!(
                "{} scales for axis {axis} of a tensor of shape {d:?}",
                scale.data.len()
            ));
        }
        if scale.data.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err("scales must be finite and positive".into());
        }
        Ok((scale.data, zero, axis))
    }

    fn dequantize_linear(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        match self.value(n, 0)? {
            Value::Const(c) => {
                let (scale, zero, axis) = self.qdq_params(n, Some(&c.dims))?;
                let inner: usize = c.dims[axis.min(c.dims.len())..].iter().skip(1).product();
                let data = c
                    .data
                    .iter()
                    .enumerate()
                    .map(|(i, &q)| {
                        let k = if scale.len() > 1 {
                            (i / inner.max(1)) % scale.len()
                        } else {
                            0
                        };
                        // In f32, as a runtime computes it.
                        ((q as f32 - zero[k] as f32) * scale[k] as f32) as f64
                    })
                    .collect();
                Ok(Value::Const(Const::new(c.dims.clone(), data, false)))
            }
            Value::Node(x) => {
                let (scale, zero, _) = self.qdq_params(n, None)?;
                if scale.len() != 1 {
                    return Err("per-channel DequantizeLinear of an activation".into());
                }
                let (s, z) = (scale[0], zero[0]);
                self.func(
                    idx,
                    n,
                    FuncOp::Affine {
                        mul: s,
                        add: -z * s,
                    },
                    &[x],
                )
            }
        }
    }

    fn quantize_linear(&mut self, idx: usize, n: &NodeProto) -> R<Value> {
        let (qmin, qmax) = self.code_range(n)?;
        match self.value(n, 0)? {
            Value::Const(_) => Err("QuantizeLinear of a constant".into()),
            Value::Node(x) => {
                let (scale, zero, _) = self.qdq_params(n, None)?;
                if scale.len() != 1 {
                    return Err("per-channel QuantizeLinear of an activation".into());
                }
                let op = FuncOp::Quantize {
                    scale: scale[0],
                    zero_point: zero[0],
                    qmin,
                    qmax,
                };
                self.func(idx, n, op, &[x])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scope_name;
    use crate::Error;
    use crate::onnx::proto::{
        Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
        TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto, data_type,
    };

    /// A model `x [1, 4] → Flatten → Add(const) → y` whose constant is `const_node`'s output.
    fn model_with(const_node: NodeProto, inits: Vec<TensorProto>) -> ModelProto {
        let dim = |v| Dimension {
            dim_value: Some(v),
            dim_param: None,
        };
        let input = ValueInfoProto {
            name: "x".into(),
            r#type: Some(TypeProto {
                tensor_type: Some(TensorTypeProto {
                    elem_type: data_type::FLOAT,
                    shape: Some(TensorShapeProto {
                        dim: vec![dim(1), dim(4)],
                    }),
                }),
            }),
        };
        let node = |op: &str, inputs: &[&str], out: &str| NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.into()],
            name: out.into(),
            ..Default::default()
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(GraphProto {
                node: vec![const_node, node("Add", &["x", "c"], "y")],
                initializer: inits,
                input: vec![input],
                output: vec![ValueInfoProto {
                    name: "y".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn huge_constant_of_shape_is_refused_before_allocating() {
        // ConstantOfShape [10^6, 10^6] allocated 8 TB and aborted the process.
        let shape = TensorProto {
            name: "s".into(),
            dims: vec![2],
            data_type: data_type::INT64,
            int64_data: vec![1_000_000, 1_000_000],
            ..Default::default()
        };
        let node = NodeProto {
            op_type: "ConstantOfShape".into(),
            input: vec!["s".into()],
            output: vec!["c".into()],
            name: "fill".into(),
            ..Default::default()
        };
        let model = model_with(node, vec![shape]);
        let err = crate::limits::with_memory_limit(1 << 30, || {
            crate::onnx::import_proto(&model, &candle::Device::Cpu)
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(err.is_input_error(), "{msg}");
        assert!(!matches!(err, Error::UnsupportedOnnxOps { .. }), "{msg}");
        assert!(msg.contains("ConstantOfShape (node fill)"), "{msg}");
        assert!(msg.contains("1000000x1000000"), "{msg}");
        assert!(
            msg.contains("needs 7.3 TiB, over the memory limit of"),
            "{msg}"
        );
        assert!(msg.contains("of the 1.0 GiB budget"), "{msg}");
    }

    #[test]
    fn folded_constants_count_against_one_budget() {
        // Found by `cargo fuzz` (target onnx): ConstantOfShape, Concat and Reshape of ~256 MB
        // each, every one under the budget alone, took 1.1 GB together.
        let bytes = include_bytes!("../../tests/fixtures/onnx/fuzz-oom-folded-constants.onnx");
        let err = crate::limits::with_memory_limit(256 << 20, || {
            crate::onnx::from_bytes(bytes, std::path::Path::new("f.onnx"), &candle::Device::Cpu)
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(err.is_input_error(), "{msg}");
        assert!(msg.contains("over the memory limit"), "{msg}");
        assert!(msg.contains("already take"), "{msg}");
    }

    #[test]
    fn overflowing_initializer_dims_are_errors() {
        let t = TensorProto {
            name: "c".into(),
            dims: vec![1 << 40, 1 << 40],
            data_type: data_type::FLOAT,
            ..Default::default()
        };
        let id = NodeProto {
            op_type: "Identity".into(),
            input: vec!["c".into()],
            output: vec!["c2".into()],
            ..Default::default()
        };
        let err =
            crate::onnx::import_proto(&model_with(id, vec![t]), &candle::Device::Cpu).unwrap_err();
        assert!(err.is_input_error(), "{err}");
    }

    #[test]
    fn scope_names_follow_module_paths() {
        assert_eq!(
            scope_name("/layer1/layer1.0/conv1/Conv", true),
            "layer1.0.conv1"
        );
        assert_eq!(
            scope_name("/layer2/layer2.0/downsample/downsample.0/Conv", true),
            "layer2.0.downsample.0"
        );
        assert_eq!(scope_name("/conv1/Conv", true), "conv1");
        assert_eq!(scope_name("/Relu_1", false), "Relu_1");
        assert_eq!(scope_name("", true), "");
    }
}
