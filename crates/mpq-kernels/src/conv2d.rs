//! `conv2d`: the fast CPU convolution as candle custom ops with backward.
//!
//! Dense convs with dilation 1 run as direct AVX-512 loops where the CPU has them (`direct`,
//! `direct_gw`; unstrided 1x1 convs as a GEMM), other dense and grouped convs as im2col +
//! GEMM (`conv_gemm`), depthwise convs as direct loops (`depthwise`). The backward pass calls the same fast kernels for the
//! input, weight and bias gradients (those gradients are not themselves differentiable).

use crate::op::{Arg, CpuOp, Grad, Op};
use crate::params::{Conv2dParams, ConvGeom};
use crate::storage::{fast_path, with_f32};
use crate::{conv_gemm, depthwise, reference};
use candle::{CpuStorage, Result, Shape, Tensor, bail};

/// 2-D convolution of `x` with `w` (plus `bias`), differentiable in all three.
///
/// On CPU with `f32` tensors this runs the fast kernels of this crate; on other devices or
/// dtypes it falls back to candle's `conv2d` (square parameters) or to
/// [`reference::conv2d_slow`].
///
/// # Shapes
/// - `x`: `[n, c, h, w]` (any strides), `w`: `[o, c / groups, kh, kw]`, `bias`: `[o]`
/// - returns `[n, o, oh, ow]` with `oh = (h + 2·ph − dh·(kh − 1) − 1) / sh + 1` (same for `ow`)
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: &Conv2dParams) -> Result<Tensor> {
    let g = ConvGeom::new(x, w, p)?;
    if let Some(b) = bias
        && b.dims() != [g.o]
    {
        bail!("conv2d: bias should be [{}], got {:?}", g.o, b.dims())
    }
    let all: Vec<&Tensor> = [Some(x), Some(w), bias].into_iter().flatten().collect();
    if !fast_path(&all) {
        return fallback(x, w, bias, p);
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match bias {
        None => x.apply_op2(&w, Op(Conv2dOp { p: *p })),
        Some(b) => x.apply_op3(&w, &b.contiguous()?, Op(Conv2dOp { p: *p })),
    }
}

/// candle's own ops, for devices and dtypes the fast kernels do not cover.
fn fallback(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: &Conv2dParams) -> Result<Tensor> {
    if !p.is_square() {
        return reference::conv2d_slow(x, w, bias, p);
    }
    let y = x.conv2d(w, p.padding[0], p.stride[0], p.dilation[0], p.groups)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}

/// The conv custom op: `CpuOp<2>` on `(x, w)` without bias, `CpuOp<3>` on `(x, w, bias)`.
struct Conv2dOp {
    p: Conv2dParams,
}

impl Conv2dOp {
    fn fwd(&self, x: Arg<'_>, w: Arg<'_>, b: Option<Arg<'_>>) -> Result<(Vec<f32>, Shape)> {
        let g = ConvGeom::from_dims(x.dims(), w.dims(), &self.p)?;
        let (xs, ws) = (x.f32()?, w.f32()?);
        let bs = b.map(Arg::f32).transpose()?;
        let y = if g.is_depthwise() {
            depthwise::forward(xs, ws, bs, &g)
        } else {
            conv_gemm::forward(xs, ws, bs, None, &g)
        };
        Ok((y, g.out_dims().into()))
    }

    /// Gradients for `x` (skipped when `x` is not tracked), `w` (skipped when neither `w`
    /// nor a bias is tracked) and, if `bias`, the bias.
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        bias: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let input = if x.track_op() {
            InputGrad::FRESH
        } else {
            InputGrad::Skip
        };
        grads(x, w, dy, &self.p, input, w.track_op(), bias)
    }
}

/// What [`grads`] computes of the input gradient.
#[derive(Clone, Copy)]
pub(crate) enum InputGrad<'a> {
    Skip,
    /// `mask ⊙ (onto + ∂x)`, both shaped as `x` and optional.
    Compute {
        onto: Option<&'a Tensor>,
        mask: Option<&'a Tensor>,
    },
}

impl InputGrad<'_> {
    pub(crate) const FRESH: Self = InputGrad::Compute {
        onto: None,
        mask: None,
    };
}

/// The input gradient (as `input` asks), the weight gradient (if `weight` or `bias`) and the
/// bias gradient (if `bias`) of the convolution of `x` with `w` from the output gradient `dy`.
pub(crate) fn grads(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    p: &Conv2dParams,
    input: InputGrad<'_>,
    weight: bool,
    bias: bool,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let g = ConvGeom::new(x, w, p)?;
    let dev = x.device();
    let dy = dy.contiguous()?;
    let gx = match input {
        InputGrad::Skip => None,
        InputGrad::Compute { onto, mask } => {
            for (t, what) in [(onto, "gradient to add onto"), (mask, "mask")] {
                if let Some(t) = t
                    && t.dims() != x.dims()
                {
                    bail!(
                        "conv2d: {what} {:?} does not match x {:?}",
                        t.dims(),
                        x.dims()
                    )
                }
            }
            let onto = onto.map(Tensor::contiguous).transpose()?;
            let mask = mask.map(Tensor::contiguous).transpose()?;
            let dx = with_f32(&dy, |d| {
                with_f32(w, |wv| {
                    with_opt_f32(onto.as_ref(), |ov| {
                        with_opt_u8(mask.as_ref(), |mv| {
                            if !g.is_depthwise() {
                                return Ok(conv_gemm::grad_input(d, wv, ov, mv, &g));
                            }
                            let mut dx = depthwise::grad_input(d, wv, &g);
                            if let Some(ov) = ov {
                                dx.iter_mut().zip(ov).for_each(|(a, b)| *a += b);
                            }
                            if let Some(mv) = mv {
                                conv_gemm::zero_masked(&mut dx, mv);
                            }
                            Ok(dx)
                        })
                    })
                })
            })?;
            Some(Tensor::from_vec(dx, x.dims(), dev)?)
        }
    };
    if !weight && !bias {
        return Ok((gx, None, None));
    }
    let (dw, db) = with_f32(x, |xv| {
        with_f32(&dy, |d| {
            Ok(if g.is_depthwise() {
                depthwise::grad_weight(xv, d, &g, bias)
            } else {
                conv_gemm::grad_weight(xv, d, &g, bias)
            })
        })
    })?;
    let gw = Tensor::from_vec(dw, w.dims(), dev)?;
    let gb = db.map(|db| Tensor::from_vec(db, g.o, dev)).transpose()?;
    Ok((gx, Some(gw), gb))
}

/// `f(Some(data))` of an optional `f32` CPU tensor, `f(None)` without one.
fn with_opt_f32<R>(t: Option<&Tensor>, f: impl FnOnce(Option<&[f32]>) -> Result<R>) -> Result<R> {
    match t {
        Some(t) => with_f32(t, |v| f(Some(v))),
        None => f(None),
    }
}

/// `f(Some(data))` of an optional contiguous `u8` CPU tensor, `f(None)` without one.
fn with_opt_u8<R>(t: Option<&Tensor>, f: impl FnOnce(Option<&[u8]>) -> Result<R>) -> Result<R> {
    let Some(t) = t else { return f(None) };
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle::Storage::Cpu(CpuStorage::U8(v)), Some((a, b))) => f(Some(&v[a..b])),
        _ => bail!("conv2d: expected a contiguous CPU u8 mask"),
    }
}

impl CpuOp<2> for Conv2dOp {
    fn name(&self) -> &'static str {
        "mpq-conv2d"
    }

    fn forward(&self, [x, w]: [Arg<'_>; 2]) -> Result<(Vec<f32>, Shape)> {
        self.fwd(x, w, None)
    }

    fn backward(&self, g: Grad<'_, 2>) -> Result<[Option<Tensor>; 2]> {
        let [x, w] = g.args;
        let (gx, gw, _) = self.grads(x, w, g.dy, false)?;
        Ok([gx, gw])
    }
}

impl CpuOp<3> for Conv2dOp {
    fn name(&self) -> &'static str {
        "mpq-conv2d-bias"
    }

    fn forward(&self, [x, w, b]: [Arg<'_>; 3]) -> Result<(Vec<f32>, Shape)> {
        self.fwd(x, w, Some(b))
    }

    fn backward(&self, g: Grad<'_, 3>) -> Result<[Option<Tensor>; 3]> {
        let [x, w, _] = g.args;
        let (gx, gw, gb) = self.grads(x, w, g.dy, true)?;
        Ok([gx, gw, gb])
    }
}
