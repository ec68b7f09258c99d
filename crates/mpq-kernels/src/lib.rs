//! Fast CPU kernels for mpq, as candle custom ops with backward passes.
//!
//! - [`conv2d`]: direct AVX-512 loops for dense convs with dilation 1, any stride (forward and
//!   both gradients), im2col + GEMM (the `gemm` crate, runtime-dispatched AVX2/AVX-512) for
//!   unstrided 1x1, dilated and grouped convs, direct loops for depthwise; parallel over the
//!   batch with rayon.
//! - [`batch_norm_train`] / [`batch_norm_eval`]: one statistics pass and one fused
//!   elementwise pass per direction.
//! - [`mod@reference`]: the same ops from plain candle ops, used as test oracles and as the
//!   fallback on non-CPU devices and non-`f32` dtypes.
//! - [`relu`], [`relu6`], [`masked`]: one fused pass forward and backward (candle's take four
//!   or more).
//! - [`channel_affine`], [`add_masked`], [`add_relu`], [`conv2d_masked`], [`conv2d_grads`],
//!   [`conv2d_grads_into`]: plain (non-autograd) passes for mpq's hand-written reverse passes
//!   (the Hessian executor's in `sensitivity`, the training step's in `graph`).
//! - [`tune_allocator`]: glibc `malloc` settings that keep large freed buffers for reuse.
//!
//! This is the only mpq crate allowed `unsafe`; it is confined to the GEMM call, the
//! `#[target_feature]` dispatch in `simd`, the AVX-512 intrinsics of `direct`, `direct_gw`,
//! `depthwise_avx512` and `polyphase`, the unzeroed output buffers of `uninit` and the
//! `mallopt` call in `alloc`. Hand-written loops
//! have a scalar fallback that [`simd::set_force_scalar`] (or `MPQ_KERNELS_SCALAR=1`)
//! selects for testing (the direct conv kernels then give way to im2col + GEMM).

mod alloc;
mod batch_norm;
mod channel_affine;
mod conv2d;
mod conv_gemm;
mod depthwise;
mod depthwise_avx512;
mod direct;
mod direct_gw;
mod im2col;
mod op;
mod params;
mod polyphase;
pub mod reference;
pub(crate) mod relu;
mod scratch;
pub mod simd;
mod storage;
mod uninit;

pub use alloc::tune_allocator;
pub use batch_norm::{
    batch_norm_eval, batch_norm_eval_relu, batch_norm_train, batch_norm_train_grads,
    batch_norm_train_relu,
};
pub use channel_affine::{
    add_masked, add_relu, channel_affine, conv2d_grads, conv2d_grads_into, conv2d_masked,
};
pub use conv2d::conv2d;
pub use params::Conv2dParams;
pub use relu::{masked, relu, relu_grad, relu6};

// Pooling with padding (added by the lead; keep these two lines).
mod pool;
pub use pool::{PoolParams, avg_pool2d, avg_pool2d_slow, max_pool2d, max_pool2d_slow};

// Fake quantization (clipped STE) and LSQ (Esser et al., ICLR 2020).
mod fake_quant;
mod lsq;
pub use fake_quant::{fake_quant, fake_quant_slow, round_half_even};
pub use lsq::{lsq, lsq_bounds, lsq_grad_scale, lsq_init_step, lsq_slow};
