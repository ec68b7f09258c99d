//! QDQ export: a quantized graph (BatchNorm folded as the plan says, the simulation's hooks)
//! as ONNX opset 21 where every quantized layer reads
//! `DequantizeLinear(QuantizeLinear(x))` and a weight stored as integer codes behind a
//! `DequantizeLinear` (per output channel on axis 0, or per tensor).
//!
//! Carriers: codes of every width (2–8 bits) are stored as `int8` (signed codes) or `uint8`
//! (unsigned, or with a zero point), restricted to the plan's range: weight codes are written
//! in range, and an activation whose range is narrower than its carrier is clipped to
//! `[s·(qmin − z), s·(qmax − z)]` before `QuantizeLinear`, which makes the runtime's codes the
//! simulation's. The plan's bit-widths are in the model metadata (`mpq.bits`, `mpq.plan`).
//! K-means (codebook) weights have no linear QDQ form: they are stored as the simulation's
//! dequantized `f32` values. The model input is the normalised image (`mpq.normalization`).

use std::collections::BTreeMap;
use std::path::Path;

use candle::{DType, Tensor};
use prost::Message;

use super::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto, TypeProto,
    ValueInfoProto, attr_type, data_type,
};
use crate::data::Normalization;
use crate::graph::{FuncOp, Graph, Hooks, Op};
use crate::quant::{PlanHooks, QuantParams};
use crate::{Error, QuantPlan, Result};

/// The opset of exported models (int4/uint4 exist from 21; codes use int8/uint8 carriers).
pub const QDQ_OPSET: i64 = 21;

/// An attribute `name` of type `kind` with no value set; the callers fill in theirs.
fn attr(name: &str, kind: i32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: kind,
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: v,
        ..attr(name, attr_type::INT)
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: v,
        ..attr(name, attr_type::FLOAT)
    }
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        ints: v.iter().map(|&x| x as i64).collect(),
        ..attr(name, attr_type::INTS)
    }
}

fn f32_tensor(name: &str, dims: &[usize], v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn i64_tensor(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: data_type::INT64,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// Integer codes in the `int8` (`signed`) or `uint8` carrier.
fn code_tensor(name: &str, dims: &[usize], codes: &[f32], signed: bool) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: if signed {
            data_type::INT8
        } else {
            data_type::UINT8
        },
        raw_data: codes
            .iter()
            .map(|&c| if signed { (c as i8) as u8 } else { c as u8 })
            .collect(),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    let mut dim = vec![Dimension {
        dim_value: None,
        dim_param: Some("N".into()),
    }];
    dim.extend(dims.iter().map(|&d| Dimension {
        dim_value: Some(d as i64),
        dim_param: None,
    }));
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
}

/// The carrier of codes in `[qmin, qmax]`: `(signed, carrier_lo, carrier_hi)`.
fn carrier(qmin: f32, qmax: f32) -> Result<(bool, f32, f32)> {
    let c = if qmin < 0.0 {
        (true, -128.0, 127.0)
    } else {
        (false, 0.0, 255.0)
    };
    if qmin < c.1 || qmax > c.2 {
        return Err(Error::config(
            "export",
            format!("codes [{qmin}, {qmax}] do not fit an 8-bit carrier"),
        ));
    }
    Ok(c)
}

struct Writer {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

impl Writer {
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: name.to_string(),
            op_type: op.to_string(),
            attribute: attrs,
            ..Default::default()
        });
    }

    fn scalar(&mut self, name: &str, v: f32) -> String {
        if !self.inits.iter().any(|t| t.name == name) {
            self.inits.push(f32_tensor(name, &[], &[v]));
        }
        name.to_string()
    }

    /// `Clip → QuantizeLinear → DequantizeLinear` of the input of layer `layer`, with a
    /// scalar scale and zero point (per-tensor activations, the form runtimes fuse into
    /// integer kernels). The simulation computes `round_half_even(x / s)` as the ONNX
    /// specification says; a runtime that multiplies by `1/s` instead (tract does) gives the
    /// neighbouring code where the two roundings straddle a tie, a few codes in ten million.
    fn quantize_activation(&mut self, layer: &str, x: &str, q: &QuantParams) -> Result<String> {
        let (s, z) = (q.scale[0], q.zero_point[0]);
        let (signed, lo, hi) = carrier(q.qmin, q.qmax)?;
        let mut src = x.to_string();
        if q.qmin > lo || q.qmax < hi {
            let (a, b) = (s * (q.qmin - z), s * (q.qmax - z));
            let lo_n = self.scalar(&format!("{layer}.input.clip_min"), a);
            let hi_n = self.scalar(&format!("{layer}.input.clip_max"), b);
            let out = format!("{layer}.input.clipped");
            self.node(
                "Clip",
                &format!("{layer}.input.clip"),
                &[&src, &lo_n, &hi_n],
                &out,
                vec![],
            );
            src = out;
        }
        let sn = format!("{layer}.input.scale");
        self.inits.push(f32_tensor(&sn, &[], &[s]));
        let zn = format!("{layer}.input.zero_point");
        self.inits.push(code_tensor(&zn, &[], &[z], signed));
        let qn = format!("{layer}.input.quantized");
        let dq = format!("{layer}.input.dequantized");
        self.node(
            "QuantizeLinear",
            &format!("{layer}.input.quantize"),
            &[&src, &sn, &zn],
            &qn,
            vec![],
        );
        self.node(
            "DequantizeLinear",
            &format!("{layer}.input.dequantize"),
            &[&qn, &sn, &zn],
            &dq,
            vec![],
        );
        Ok(dq)
    }

    /// The weight of `layer` as codes + `DequantizeLinear`, or as `f32` values.
    fn weight(
        &mut self,
        layer: &str,
        w: &Tensor,
        hooks: &mut PlanHooks,
    ) -> Result<(String, Option<BitsEntry>)> {
        let name = format!("{layer}.weight");
        let dims = w.dims().to_vec();
        let codebook = hooks.weight_codebook(layer, w)?.is_some();
        let uniform = if codebook {
            None
        } else {
            hooks.weight_quant_params(layer, w)?
        };
        let Some(q) = uniform else {
            // Full precision, or a k-means codebook: the simulated values as they are.
            let v = values(&hooks.weight(layer, w)?)?;
            self.inits.push(f32_tensor(&name, &dims, &v));
            return Ok((name, None));
        };
        let v = values(w)?;
        let ch = q.channels().max(1);
        let per = v.len() / ch;
        let codes: Vec<f32> = v
            .iter()
            .enumerate()
            .map(|(i, &x)| q.code(x, if ch > 1 { i / per } else { 0 }))
            .collect();
        let (signed, _, _) = carrier(q.qmin, q.qmax)?;
        let cn = format!("{layer}.weight_quantized");
        let sn = format!("{layer}.weight_scale");
        let zn = format!("{layer}.weight_zero_point");
        self.inits.push(code_tensor(&cn, &dims, &codes, signed));
        let pdims: Vec<usize> = if ch > 1 { vec![ch] } else { vec![] };
        self.inits.push(f32_tensor(&sn, &pdims, &q.scale));
        self.inits
            .push(code_tensor(&zn, &pdims, &q.zero_point, signed));
        let attrs = if ch > 1 {
            vec![attr_int("axis", 0)]
        } else {
            vec![]
        };
        self.node(
            "DequantizeLinear",
            &format!("{layer}.weight_dequantize"),
            &[&cn, &sn, &zn],
            &name,
            attrs,
        );
        Ok((
            name,
            Some(BitsEntry {
                w_bits: Some(q.bits),
                channel_w_bits: q.channel_bits.clone(),
                w_range: [q.qmin, q.qmax],
                w_carrier: if signed { "int8" } else { "uint8" },
                per_channel: ch > 1,
                ..BitsEntry::default()
            }),
        ))
    }
}

/// What metadata `mpq.bits` says about one layer.
#[derive(Debug, Default, serde::Serialize)]
struct BitsEntry {
    w_bits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel_w_bits: Option<Vec<u32>>,
    w_range: [f32; 2],
    w_carrier: &'static str,
    per_channel: bool,
    a_bits: Option<u32>,
    a_range: Option<[f32; 2]>,
    a_carrier: Option<&'static str>,
}

/// The QDQ ONNX model of `graph` (the graph the plan runs on, [`crate::quant::prepare_graph`])
/// under `hooks`.
pub fn qdq_model(
    graph: &Graph,
    hooks: &mut PlanHooks,
    norm: Option<&Normalization>,
) -> Result<ModelProto> {
    let plan: QuantPlan = hooks.plan().clone();
    let mut w = Writer {
        nodes: Vec::new(),
        inits: Vec::new(),
    };
    let shapes = graph.infer_shapes()?;
    let nodes = graph.nodes();
    let name_of = |id: usize| -> String {
        if id == 0 {
            "input".into()
        } else if id == graph.output() {
            "logits".into()
        } else {
            nodes[id].name.clone()
        }
    };
    let param = |s: &str| -> Result<Tensor> { Ok(graph.params().var(s)?.as_tensor().clone()) };
    let mut bits: BTreeMap<String, BitsEntry> = BTreeMap::new();
    for (id, node) in nodes.iter().enumerate().skip(1) {
        let ins: Vec<String> = node.inputs.iter().map(|&i| name_of(i)).collect();
        let x = ins.first().cloned().unwrap_or_default();
        let out = name_of(id);
        let nm = &node.name;
        match &node.op {
            Op::Input => w.node("Identity", nm, &[&x], &out, vec![]),
            Op::Conv2d(_) | Op::Linear(_) => {
                let aq = hooks.activation_params(nm)?;
                let xin = match &aq {
                    Some(q) => w.quantize_activation(nm, &x, q)?,
                    None => x.clone(),
                };
                let (wn, entry) = w.weight(nm, &param(&format!("{nm}.weight"))?, hooks)?;
                let mut entry = entry.unwrap_or_default();
                if let Some(q) = &aq {
                    let (signed, _, _) = carrier(q.qmin, q.qmax)?;
                    entry.a_bits = Some(q.bits);
                    entry.a_range = Some([q.qmin, q.qmax]);
                    entry.a_carrier = Some(if signed { "int8" } else { "uint8" });
                }
                bits.insert(nm.clone(), entry);
                let mut inputs = vec![xin.as_str(), wn.as_str()];
                let bn = format!("{nm}.bias");
                let has_bias = matches!(&node.op, Op::Conv2d(s) if s.bias)
                    || matches!(&node.op, Op::Linear(s) if s.bias);
                if has_bias {
                    let b = param(&bn)?;
                    w.inits.push(f32_tensor(&bn, b.dims(), &values(&b)?));
                    inputs.push(&bn);
                }
                match &node.op {
                    Op::Conv2d(s) => {
                        let attrs = vec![
                            attr_ints("kernel_shape", &s.kernel),
                            attr_ints("strides", &s.stride),
                            attr_ints(
                                "pads",
                                &[s.padding[0], s.padding[1], s.padding[0], s.padding[1]],
                            ),
                            attr_ints("dilations", &s.dilation),
                            attr_int("group", s.groups as i64),
                        ];
                        w.node("Conv", nm, &inputs, &out, attrs);
                    }
                    _ => w.node("Gemm", nm, &inputs, &out, vec![attr_int("transB", 1)]),
                }
            }
            Op::BatchNorm2d(s) => {
                let mut inputs = vec![x.clone()];
                for p in ["weight", "bias", "running_mean", "running_var"] {
                    let n = format!("{nm}.{p}");
                    let t = param(&n)?;
                    w.inits.push(f32_tensor(&n, t.dims(), &values(&t)?));
                    inputs.push(n);
                }
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let attrs = vec![
                    attr_float("epsilon", s.eps as f32),
                    attr_float("momentum", (1.0 - s.momentum) as f32),
                ];
                w.node("BatchNormalization", nm, &refs, &out, attrs);
            }
            Op::Relu => w.node("Relu", nm, &[&x], &out, vec![]),
            Op::Relu6 => {
                let (lo, hi) = (
                    w.scalar("mpq.const.zero", 0.0),
                    w.scalar("mpq.const.six", 6.0),
                );
                w.node("Clip", nm, &[&x, &lo, &hi], &out, vec![]);
            }
            Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
                let mut attrs = vec![
                    attr_ints("kernel_shape", &p.kernel),
                    attr_ints("strides", &p.stride),
                    attr_ints(
                        "pads",
                        &[p.padding[0], p.padding[1], p.padding[0], p.padding[1]],
                    ),
                ];
                let op = if matches!(node.op, Op::MaxPool2d(_)) {
                    "MaxPool"
                } else {
                    attrs.push(attr_int("count_include_pad", 1));
                    "AveragePool"
                };
                w.node(op, nm, &[&x], &out, attrs);
            }
            Op::GlobalAvgPool => {
                // Two means (width, then height), as the simulation computes it, so that a
                // quantized layer after it sees the same values to the last bit.
                let (aw, ah) = (format!("{nm}.axes_w"), format!("{nm}.axes_h"));
                w.inits.push(i64_tensor(&aw, &[3]));
                w.inits.push(i64_tensor(&ah, &[2]));
                let mid = format!("{nm}.mean_w");
                let keep = || vec![attr_int("keepdims", 1)];
                w.node("ReduceMean", &format!("{nm}.w"), &[&x, &aw], &mid, keep());
                w.node("ReduceMean", nm, &[&mid, &ah], &out, keep());
            }
            Op::Add => w.node("Add", nm, &[&x, &ins[1]], &out, vec![]),
            Op::Flatten => w.node("Flatten", nm, &[&x], &out, vec![attr_int("axis", 1)]),
            Op::Dropout { .. } => w.node("Identity", nm, &[&x], &out, vec![]),
            Op::Func(f) => func_node(&mut w, nm, f, &ins, &out),
        }
    }
    let mut meta = vec![
        ("mpq.format", "qdq/1".to_string()),
        ("mpq.plan", serde_json::to_string(&plan)?),
        ("mpq.bits", serde_json::to_string(&bits)?),
        ("mpq.fold_bn", plan.fold_bn.to_string()),
    ];
    if let Some(n) = norm {
        meta.push(("mpq.normalization", serde_json::to_string(n)?));
    }
    let out_shape = &shapes[graph.output()];
    Ok(ModelProto {
        ir_version: 10,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: QDQ_OPSET,
        }],
        producer_name: "mpq".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(GraphProto {
            node: w.nodes,
            name: "mpq_qdq".into(),
            initializer: w.inits,
            input: vec![value_info("input", graph.input_shape())],
            output: vec![value_info("logits", out_shape)],
            ..Default::default()
        }),
        metadata_props: meta
            .into_iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.into(),
                value: v,
            })
            .collect(),
        ..Default::default()
    })
}

fn func_node(w: &mut Writer, nm: &str, f: &FuncOp, ins: &[String], out: &str) {
    let x = ins[0].as_str();
    match f {
        FuncOp::LeakyRelu { alpha } => w.node(
            "LeakyRelu",
            nm,
            &[x],
            out,
            vec![attr_float("alpha", *alpha as f32)],
        ),
        FuncOp::Sigmoid => w.node("Sigmoid", nm, &[x], out, vec![]),
        FuncOp::HardSigmoid { alpha, beta } => w.node(
            "HardSigmoid",
            nm,
            &[x],
            out,
            vec![
                attr_float("alpha", *alpha as f32),
                attr_float("beta", *beta as f32),
            ],
        ),
        FuncOp::HardSwish => w.node("HardSwish", nm, &[x], out, vec![]),
        FuncOp::Clip { lo, hi } => {
            let a = w.scalar(&format!("{nm}.min"), *lo as f32);
            let b = w.scalar(&format!("{nm}.max"), *hi as f32);
            w.node("Clip", nm, &[x, &a, &b], out, vec![]);
        }
        FuncOp::Softmax { axis } => w.node(
            "Softmax",
            nm,
            &[x],
            out,
            vec![attr_int("axis", *axis as i64 + 1)],
        ),
        FuncOp::Quantize {
            scale,
            zero_point,
            qmin,
            ..
        } => {
            // The codes as the runtime's integers, then back to floats as the graph keeps them.
            let sn = format!("{nm}.scale");
            w.inits.push(f32_tensor(&sn, &[], &[*scale as f32]));
            let zn = format!("{nm}.zero_point");
            w.inits
                .push(code_tensor(&zn, &[], &[*zero_point as f32], *qmin < 0.0));
            let mid = format!("{nm}.codes");
            w.node("QuantizeLinear", nm, &[x, &sn, &zn], &mid, vec![]);
            w.node(
                "Cast",
                &format!("{nm}.cast"),
                &[&mid],
                out,
                vec![attr_int("to", i64::from(data_type::FLOAT))],
            );
        }
        FuncOp::Affine { mul, add } => {
            let m = w.scalar(&format!("{nm}.mul"), *mul as f32);
            let a = w.scalar(&format!("{nm}.add"), *add as f32);
            let mid = format!("{nm}.scaled");
            w.node("Mul", &format!("{nm}.mul"), &[x, &m], &mid, vec![]);
            w.node("Add", nm, &[&mid, &a], out, vec![]);
        }
        FuncOp::Mul => w.node("Mul", nm, &[x, &ins[1]], out, vec![]),
        FuncOp::Concat { axis } => {
            let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
            w.node(
                "Concat",
                nm,
                &refs,
                out,
                vec![attr_int("axis", *axis as i64 + 1)],
            );
        }
        FuncOp::Reshape { shape } => {
            let sn = format!("{nm}.shape");
            let mut s = vec![0i64];
            s.extend(shape.iter().map(|&d| d as i64));
            w.inits.push(i64_tensor(&sn, &s));
            w.node("Reshape", nm, &[x, &sn], out, vec![]);
        }
        FuncOp::Transpose { perm } => {
            let mut p = vec![0usize];
            p.extend(perm.iter().map(|a| a + 1));
            w.node("Transpose", nm, &[x], out, vec![attr_ints("perm", &p)]);
        }
        FuncOp::Pad { pads } => {
            let pn = format!("{nm}.pads");
            let mut v = vec![0i64];
            v.extend(pads.iter().map(|p| p.0 as i64));
            v.push(0);
            v.extend(pads.iter().map(|p| p.1 as i64));
            w.inits.push(i64_tensor(&pn, &v));
            w.node("Pad", nm, &[x, &pn], out, vec![]);
        }
        FuncOp::Mean { axes, keep_dims } => {
            let an = format!("{nm}.axes");
            let a: Vec<i64> = axes.iter().map(|&a| a as i64 + 1).collect();
            w.inits.push(i64_tensor(&an, &a));
            w.node(
                "ReduceMean",
                nm,
                &[x, &an],
                out,
                vec![attr_int("keepdims", i64::from(*keep_dims))],
            );
        }
    }
}

/// Writes [`qdq_model`] to `path` atomically; returns the bytes written.
pub fn export_qdq(
    path: &Path,
    graph: &Graph,
    hooks: &mut PlanHooks,
    norm: Option<&Normalization>,
) -> Result<u64> {
    let bytes = qdq_model(graph, hooks, norm)?.encode_to_vec();
    crate::io::write_atomic(path, &bytes)?;
    Ok(bytes.len() as u64)
}
