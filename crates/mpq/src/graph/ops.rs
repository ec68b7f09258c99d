//! The tensor operations the executor calls for each node kind. On CPU these dispatch to
//! the fast kernels of `mpq-kernels`; elsewhere they use candle's own operations.

use candle::{D, Tensor};

use super::{Conv2dSpec, PoolSpec};
use crate::Result;

/// 2-D convolution with optional bias (fast `mpq-kernels` op on CPU; candle elsewhere).
///
/// # Shapes
/// `x`: `[N, Cin, H, W]`, `w`: `[Cout, Cin/groups, kh, kw]`, `bias`: `[Cout]` →
/// `[N, Cout, OH, OW]`.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, spec: &Conv2dSpec) -> Result<Tensor> {
    let p = conv_params(spec);
    if stock_ops() {
        return Ok(mpq_kernels::reference::conv2d_slow(x, w, bias, &p)?);
    }
    Ok(mpq_kernels::conv2d(x, w, bias, &p)?)
}

/// The kernels' parameters of a conv node.
pub(crate) fn conv_params(spec: &Conv2dSpec) -> mpq_kernels::Conv2dParams {
    mpq_kernels::Conv2dParams {
        stride: spec.stride,
        padding: spec.padding,
        dilation: spec.dilation,
        groups: spec.groups,
    }
}

/// `max(x, 0)`: the fused one-pass op of `mpq-kernels` (candle's own `relu` under stock ops).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if stock_ops() {
        return Ok(x.relu()?);
    }
    Ok(mpq_kernels::relu(x)?)
}

/// Whether `MPQ_STOCK_OPS=1` (read once) or [`set_stock_ops`] asks for candle's own
/// operations instead of the fast kernels (for benchmarks that measure what the kernels gain).
pub fn stock_ops() -> bool {
    static STOCK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    FORCE_STOCK.load(std::sync::atomic::Ordering::Relaxed)
        || *STOCK.get_or_init(|| std::env::var("MPQ_STOCK_OPS").is_ok_and(|v| v == "1"))
}

static FORCE_STOCK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every later forward pass use candle's own operations (`true`), as `MPQ_STOCK_OPS=1`
/// does, or go back to the environment's choice (`false`). Process-wide; both paths compute
/// the same values to rounding, so flipping it between passes is harmless.
pub fn set_stock_ops(on: bool) {
    FORCE_STOCK.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Fully connected layer `x · wᵀ + b`.
///
/// # Shapes
/// `x`: `[N, in]`, `w`: `[out, in]`, `bias`: `[out]` → `[N, out]`.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    Ok(match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// Batch normalisation with batch statistics (training mode).
/// Returns `(y, batch_mean, biased_batch_var)`; the statistics are detached, shape `[C]`.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    batch_norm_train_relu(x, gamma, beta, eps, false)
}

/// [`batch_norm_train`], followed by ReLU when `relu` — one op of `mpq-kernels` (the two
/// stock ops under [`stock_ops`]).
pub fn batch_norm_train_relu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (y, mean, var) = if stock_ops() {
        let (y, m, v) = mpq_kernels::reference::batch_norm_train_slow(x, gamma, beta, eps)?;
        (if relu { y.relu()? } else { y }, m, v)
    } else if relu {
        mpq_kernels::batch_norm_train_relu(x, gamma, beta, eps)?
    } else {
        mpq_kernels::batch_norm_train(x, gamma, beta, eps)?
    };
    Ok((y, mean.detach(), var.detach()))
}

/// [`batch_norm_eval`], followed by ReLU in the same op when `relu`.
pub fn batch_norm_eval_relu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    (mean, var): (&Tensor, &Tensor),
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    Ok(if relu {
        mpq_kernels::batch_norm_eval_relu(x, gamma, beta, mean, var, eps)?
    } else {
        mpq_kernels::batch_norm_eval(x, gamma, beta, mean, var, eps)?
    })
}

/// Batch normalisation with running statistics (evaluation mode).
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    batch_norm_eval_relu(x, gamma, beta, (mean, var), eps, false)
}

fn pool_params(p: &PoolSpec) -> mpq_kernels::PoolParams {
    mpq_kernels::PoolParams {
        kernel: p.kernel,
        stride: p.stride,
        padding: p.padding,
    }
}

/// Max pooling (padding acts as -inf).
pub fn max_pool2d(x: &Tensor, p: &PoolSpec) -> Result<Tensor> {
    Ok(mpq_kernels::max_pool2d(x, &pool_params(p))?)
}

/// Average pooling (padding counts as zeros).
pub fn avg_pool2d(x: &Tensor, p: &PoolSpec) -> Result<Tensor> {
    Ok(mpq_kernels::avg_pool2d(x, &pool_params(p))?)
}

/// Mean over the spatial dimensions, keeping them as `1x1`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?)
}

/// `min(max(x, 0), 6)`.
pub fn relu6(x: &Tensor) -> Result<Tensor> {
    if stock_ops() {
        return Ok(x.relu()?.minimum(6f64)?);
    }
    Ok(mpq_kernels::relu6(x)?)
}
