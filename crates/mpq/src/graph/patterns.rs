//! Frozen switching patterns of the nonlinearities (ReLU, ReLU6, max-pool), the device behind
//! the eval-mode Hessian passes (PyHessian: Yao et al. 2020; HAWQ: Dong et al. 2019; HAWQ-V2:
//! Dong et al. 2020): one base pass records each nonlinearity's pattern, later passes apply
//! the recorded pattern instead of the nonlinearity, so the loss along `w + tv` is smooth and
//! differences of gradients converge to autodiff's Hessian (why: the `sensitivity` module's
//! `forward` executor, and `docs/benchmarks.md`, "Hessian").
//!
//! Max-pools are frozen exactly when windows do not overlap (`kernel == stride`, no padding);
//! other max-pools run unfrozen.

use candle::Tensor;

use super::{PoolSpec, ops};
use crate::Result;

/// One batch's recorded patterns, per node: a u8 mask for ReLU (`z > 0`), a u8 code for ReLU6
/// (0 below, 1 inside, 2 at or above 6), a u8 mask of each window's maxima for max-pool.
pub(crate) type Patterns = Vec<Option<Tensor>>;

/// What a pass does with the patterns.
pub(crate) enum PatternMode<'a> {
    /// Compute the nonlinearities normally and record their patterns.
    Record(&'a mut Patterns),
    /// Apply recorded patterns.
    Frozen(&'a Patterns),
    /// Compute the nonlinearities normally.
    Free,
}

impl PatternMode<'_> {
    /// The ReLU of node `id` on `z` (differentiable).
    pub(crate) fn relu(&mut self, id: usize, z: &Tensor) -> Result<Tensor> {
        match self {
            PatternMode::Record(p) => {
                p[id] = Some(z.gt(0f64)?);
                ops::relu(z)
            }
            // One pass each way; keeps only the u8 mask for backward (candle's `where_cond`
            // for f64).
            PatternMode::Frozen(p) => match &p[id] {
                Some(m) => Ok(mpq_kernels::masked(z, m)?),
                None => Ok(z.relu()?),
            },
            PatternMode::Free => ops::relu(z),
        }
    }

    /// The ReLU6 of node `id` on `z` (differentiable).
    pub(crate) fn relu6(&mut self, id: usize, z: &Tensor) -> Result<Tensor> {
        match self {
            PatternMode::Record(p) => {
                let code = (z.gt(0f64)? + z.ge(6f64)?)?;
                p[id] = Some(code);
                ops::relu6(z)
            }
            PatternMode::Frozen(p) => match &p[id] {
                Some(code) => {
                    let top = (code.eq(2f64)?.to_dtype(z.dtype())? * 6.0)?;
                    Ok(code.eq(1f64)?.where_cond(z, &top)?)
                }
                None => ops::relu6(z),
            },
            PatternMode::Free => ops::relu6(z),
        }
    }

    /// The max-pool of node `id` on `z` (differentiable).
    pub(crate) fn max_pool(&mut self, id: usize, z: &Tensor, spec: &PoolSpec) -> Result<Tensor> {
        let disjoint = spec.kernel == spec.stride && spec.padding == [0, 0];
        match self {
            PatternMode::Record(p) if disjoint => {
                let y = ops::max_pool2d(z, spec)?;
                let zc = covered(z, spec)?;
                let up = y.upsample_nearest2d(zc.dim(2)?, zc.dim(3)?)?;
                p[id] = Some(zc.eq(&up)?);
                Ok(y)
            }
            PatternMode::Frozen(p) if disjoint => match &p[id] {
                // The mean of the elements that were the window's maximum at `w` (one, except
                // for ties): linear in `z`, and its backward is average pooling's, which every
                // dtype has right (candle 0.11's own max-pool backward scales by count/k²).
                Some(at_max) => {
                    let m = at_max.to_dtype(z.dtype())?;
                    let num = ops::avg_pool2d(&(covered(z, spec)? * &m)?, spec)?;
                    let den = ops::avg_pool2d(&m, spec)?;
                    Ok((num / den)?)
                }
                None => ops::max_pool2d(z, spec),
            },
            _ => ops::max_pool2d(z, spec),
        }
    }
}

/// The part of `z` (`[N, C, H, W]`) that non-overlapping windows (`kernel == stride`, no
/// padding) cover: the first `k·⌊H/k⌋` rows and `k·⌊W/k⌋` columns.
fn covered(z: &Tensor, spec: &PoolSpec) -> Result<Tensor> {
    let (h, w) = (z.dim(2)?, z.dim(3)?);
    let (kh, kw) = (spec.kernel[0].max(1), spec.kernel[1].max(1));
    Ok(z.narrow(2, 0, h / kh * kh)?.narrow(3, 0, w / kw * kw)?)
}
