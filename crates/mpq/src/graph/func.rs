//! Parameter-free operators beyond the zoo's set, for imported (ONNX) models: the activations
//! (LeakyReLU, sigmoid, hard sigmoid/swish, clip, softmax), element-wise products, scalar
//! affine maps, concatenation and the reshaping family (reshape, transpose, pad, mean over
//! axes). Each is made of differentiable candle operations, so training, the fast reverse
//! pass (locally, under autograd) and the Hessian executors all run them unchanged.
//!
//! Axes are per-sample (axis 0 is the first non-batch dimension); the batch dimension is
//! never reshaped, transposed or reduced.

use candle::Tensor;
use serde::{Deserialize, Serialize};

use super::exec::join;
use crate::{Error, Result};

/// A parameter-free operator of [`super::Op::Func`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FuncOp {
    /// `x` if `x ≥ 0` else `alpha·x`.
    LeakyRelu {
        /// Slope of the negative part.
        alpha: f64,
    },
    /// `1 / (1 + e^(−x))`.
    Sigmoid,
    /// `max(0, min(1, alpha·x + beta))`.
    HardSigmoid {
        /// Slope.
        alpha: f64,
        /// Offset.
        beta: f64,
    },
    /// `x · max(0, min(1, x/6 + 1/2))`.
    HardSwish,
    /// `min(max(x, lo), hi)`.
    Clip {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// Softmax over a per-sample axis.
    Softmax {
        /// Per-sample axis.
        axis: usize,
    },
    /// ONNX `QuantizeLinear` with a scalar scale and zero point, the codes kept as floats:
    /// `clamp(round_half_even(x / scale) + zero_point, qmin, qmax)`. An imported QDQ model
    /// reads `DequantizeLinear(QuantizeLinear(x))` as fake quantization (this, then an
    /// affine map); rounding has no gradient, so such a graph evaluates but does not train.
    Quantize {
        /// The step.
        scale: f64,
        /// The code of 0.
        zero_point: f64,
        /// Smallest code of the carrier type.
        qmin: f64,
        /// Largest code of the carrier type.
        qmax: f64,
    },
    /// `x·mul + add` with scalars (ONNX Mul/Add/Sub/Div by a constant scalar).
    Affine {
        /// Factor.
        mul: f64,
        /// Offset.
        add: f64,
    },
    /// Element-wise product of two inputs (broadcasting per sample).
    Mul,
    /// Concatenation of all inputs along a per-sample axis.
    Concat {
        /// Per-sample axis.
        axis: usize,
    },
    /// Reshape to a per-sample shape.
    Reshape {
        /// Target per-sample shape.
        shape: Vec<usize>,
    },
    /// Permutation of the per-sample axes.
    Transpose {
        /// `perm[i]` is the input axis that becomes output axis `i`.
        perm: Vec<usize>,
    },
    /// Zero padding: `(before, after)` per per-sample axis.
    Pad {
        /// Padding of each per-sample axis.
        pads: Vec<(usize, usize)>,
    },
    /// Mean over per-sample axes.
    Mean {
        /// The axes reduced (ascending).
        axes: Vec<usize>,
        /// Whether reduced axes stay as size 1.
        keep_dims: bool,
    },
}

impl FuncOp {
    /// A short name of the operator.
    pub fn kind(&self) -> &'static str {
        match self {
            FuncOp::LeakyRelu { .. } => "leaky_relu",
            FuncOp::Sigmoid => "sigmoid",
            FuncOp::HardSigmoid { .. } => "hard_sigmoid",
            FuncOp::HardSwish => "hard_swish",
            FuncOp::Clip { .. } => "clip",
            FuncOp::Softmax { .. } => "softmax",
            FuncOp::Affine { .. } => "affine",
            FuncOp::Quantize { .. } => "quantize",
            FuncOp::Mul => "mul",
            FuncOp::Concat { .. } => "concat",
            FuncOp::Reshape { .. } => "reshape",
            FuncOp::Transpose { .. } => "transpose",
            FuncOp::Pad { .. } => "pad",
            FuncOp::Mean { .. } => "mean",
        }
    }

    /// Number of inputs the operator takes (`None`: one or more).
    pub fn arity(&self) -> Option<usize> {
        match self {
            FuncOp::Mul => Some(2),
            FuncOp::Concat { .. } => None,
            _ => Some(1),
        }
    }
}

fn hard_sigmoid(x: &Tensor, alpha: f64, beta: f64) -> Result<Tensor> {
    Ok(x.affine(alpha, beta)?.relu()?.minimum(1f64)?)
}

/// Applies `op` to a batch.
///
/// # Shapes
/// Inputs `[N, ...]` (per-sample shapes as `infer_func_shape` accepts) → `[N, ...]`.
pub fn eval_func(op: &FuncOp, xs: &[&Tensor]) -> Result<Tensor> {
    let x = *xs
        .first()
        .ok_or_else(|| Error::config("graph", format!("{} has no input", op.kind())))?;
    Ok(match op {
        FuncOp::LeakyRelu { alpha } => {
            let neg = x.minimum(0f64)?;
            (x.relu()? + (neg * *alpha)?)?
        }
        FuncOp::Sigmoid => candle_nn::ops::sigmoid(x)?,
        FuncOp::HardSigmoid { alpha, beta } => hard_sigmoid(x, *alpha, *beta)?,
        FuncOp::HardSwish => (x * hard_sigmoid(x, 1.0 / 6.0, 0.5)?)?,
        FuncOp::Clip { lo, hi } => x.maximum(*lo)?.minimum(*hi)?,
        FuncOp::Softmax { axis } => candle_nn::ops::softmax(x, axis + 1)?,
        FuncOp::Affine { mul, add } => x.affine(*mul, *add)?,
        FuncOp::Quantize {
            scale,
            zero_point,
            qmin,
            qmax,
        } => {
            // Division, not multiplication by 1/scale: the ONNX definition, bit for bit.
            let s = Tensor::new(*scale as f32, x.device())?.to_dtype(x.dtype())?;
            let v = x.broadcast_div(&s)?;
            let half = Tensor::new(0.5f32, x.device())?
                .to_dtype(x.dtype())?
                .broadcast_as(v.shape())?;
            let tie = (&v - v.floor()?)?.eq(&half)?;
            let even = (v.affine(0.5, 0.0)?.round()? * 2.0)?;
            tie.where_cond(&even, &v.round()?)?
                .affine(1.0, *zero_point)?
                .clamp(*qmin, *qmax)?
        }
        FuncOp::Mul => {
            let y = xs
                .get(1)
                .ok_or_else(|| Error::config("graph", "mul takes two inputs"))?;
            x.broadcast_mul(y)?
        }
        FuncOp::Concat { axis } => Tensor::cat(xs, axis + 1)?,
        FuncOp::Reshape { shape } => {
            let mut s = vec![x.dim(0)?];
            s.extend_from_slice(shape);
            x.reshape(s)?
        }
        FuncOp::Transpose { perm } => {
            let mut p = vec![0];
            p.extend(perm.iter().map(|a| a + 1));
            x.permute(p)?.contiguous()?
        }
        FuncOp::Pad { pads } => {
            let mut y = x.clone();
            for (axis, &(lo, hi)) in pads.iter().enumerate() {
                if lo > 0 || hi > 0 {
                    y = y.pad_with_zeros(axis + 1, lo, hi)?;
                }
            }
            y
        }
        FuncOp::Mean { axes, keep_dims } => {
            let mut y = x.clone();
            for &a in axes.iter().rev() {
                y = if *keep_dims {
                    y.mean_keepdim(a + 1)?
                } else {
                    y.mean(a + 1)?
                };
            }
            y
        }
    })
}

fn bad(name: &str, expected: impl Into<String>, got: &[usize]) -> Error {
    Error::ShapeMismatch {
        name: format!("layer {name}"),
        expected: expected.into(),
        got: format!("[{}]", join(got)),
    }
}

fn axis_in(name: &str, axis: usize, x: &[usize]) -> Result<()> {
    if axis >= x.len() {
        return Err(bad(name, format!("an input with axis {axis}"), x));
    }
    Ok(())
}

/// Per-sample output shape of `op` on inputs of per-sample shapes `inputs`.
pub(crate) fn infer_func_shape(name: &str, op: &FuncOp, inputs: &[&[usize]]) -> Result<Vec<usize>> {
    let x = *inputs
        .first()
        .ok_or_else(|| Error::config("graph", format!("node {name} has no input")))?;
    if let Some(n) = op.arity()
        && inputs.len() != n
    {
        return Err(Error::config(
            "graph",
            format!("{name}: {} takes {n} input(s)", op.kind()),
        ));
    }
    Ok(match op {
        FuncOp::LeakyRelu { .. }
        | FuncOp::Sigmoid
        | FuncOp::HardSigmoid { .. }
        | FuncOp::HardSwish
        | FuncOp::Clip { .. }
        | FuncOp::Quantize { .. }
        | FuncOp::Affine { .. } => x.to_vec(),
        FuncOp::Softmax { axis } => {
            axis_in(name, *axis, x)?;
            x.to_vec()
        }
        FuncOp::Mul => broadcast(name, x, inputs[1])?,
        FuncOp::Concat { axis } => {
            axis_in(name, *axis, x)?;
            let mut out = x.to_vec();
            for y in &inputs[1..] {
                let same_rest = y.len() == x.len()
                    && y.iter()
                        .zip(x)
                        .enumerate()
                        .all(|(i, (a, b))| i == *axis || a == b);
                if !same_rest {
                    return Err(bad(name, format!("inputs like [{}]", join(x)), y));
                }
                out[*axis] += y[*axis];
            }
            out
        }
        FuncOp::Reshape { shape } => {
            if shape.iter().product::<usize>() != x.iter().product::<usize>() {
                return Err(bad(
                    name,
                    format!("{} elements per sample", shape.iter().product::<usize>()),
                    x,
                ));
            }
            shape.clone()
        }
        FuncOp::Transpose { perm } => {
            let mut seen = vec![false; x.len()];
            for &p in perm {
                if p >= x.len() || std::mem::replace(&mut seen[p], true) {
                    return Err(bad(
                        name,
                        format!("a permutation of {} axes", perm.len()),
                        x,
                    ));
                }
            }
            if perm.len() != x.len() {
                return Err(bad(name, format!("{} axes", perm.len()), x));
            }
            perm.iter().map(|&p| x[p]).collect()
        }
        FuncOp::Pad { pads } => {
            if pads.len() != x.len() {
                return Err(bad(name, format!("{} axes", pads.len()), x));
            }
            x.iter()
                .zip(pads)
                .map(|(d, (lo, hi))| d + lo + hi)
                .collect()
        }
        FuncOp::Mean { axes, keep_dims } => {
            let mut out = Vec::new();
            for (i, &d) in x.iter().enumerate() {
                if axes.contains(&i) {
                    if *keep_dims {
                        out.push(1);
                    }
                } else {
                    out.push(d);
                }
            }
            if let Some(&a) = axes.iter().find(|&&a| a >= x.len()) {
                return Err(bad(name, format!("an input with axis {a}"), x));
            }
            out
        }
    })
}

/// Numpy-style broadcast of two per-sample shapes.
fn broadcast(name: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let at = |s: &[usize], i: usize| -> usize {
        let off = n - s.len();
        if i < off { 1 } else { s[i - off] }
    };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(bad(
                name,
                format!("a shape broadcastable with [{}]", join(a)),
                b,
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    #[test]
    fn hard_swish_matches_formula() {
        let v = [-4.0f32, -1.0, 0.0, 1.0, 4.0];
        let x = Tensor::new(&v, &Device::Cpu)
            .unwrap()
            .reshape((1, 5))
            .unwrap();
        let y: Vec<f32> = eval_func(&FuncOp::HardSwish, &[&x])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (a, b) in v.iter().zip(&y) {
            let want = a * (a / 6.0 + 0.5).clamp(0.0, 1.0);
            assert!((want - b).abs() < 1e-6, "{a}: {want} vs {b}");
        }
    }

    #[test]
    fn mean_and_concat_shapes() {
        let m = FuncOp::Mean {
            axes: vec![1, 2],
            keep_dims: false,
        };
        assert_eq!(infer_func_shape("m", &m, &[&[8, 4, 4]]).unwrap(), vec![8]);
        let c = FuncOp::Concat { axis: 0 };
        assert_eq!(
            infer_func_shape("c", &c, &[&[2, 4, 4], &[3, 4, 4]]).unwrap(),
            vec![5, 4, 4]
        );
        assert!(infer_func_shape("c", &c, &[&[2, 4, 4], &[3, 5, 4]]).is_err());
    }
}
