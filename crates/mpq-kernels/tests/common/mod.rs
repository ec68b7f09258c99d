//! Shared test helpers: a deterministic xorshift generator for test data and shapes, and the
//! relative-error assertion.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

use candle::{DType, Device, Result, Tensor};

/// Deterministic xorshift generator for test data and shapes.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [-1, 1).
    pub(crate) fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// A CPU tensor of uniform values in [-1, 1).
    pub(crate) fn tensor(&mut self, dims: &[usize]) -> Result<Tensor> {
        let n = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.uniform()).collect();
        Tensor::from_vec(v, dims, &Device::Cpu)
    }

    /// `n` values in [-amp, amp), a quarter of them exactly on half steps `(k + 0.5)·step`.
    pub(crate) fn data(&mut self, n: usize, amp: f32, step: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                if self.below(4) == 0 {
                    let k = self.below(2 * (amp / step) as usize + 1) as f32 - amp / step;
                    (k.round() + 0.5) * step
                } else {
                    self.uniform() * amp
                }
            })
            .collect()
    }
}

/// `max |a − b| / max |b|` must not exceed `rtol`.
pub(crate) fn assert_close(a: &Tensor, b: &Tensor, rtol: f64, what: &str) -> Result<()> {
    assert_eq!(a.dims(), b.dims(), "{what}: shape");
    let a: Vec<f64> = a.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let b: Vec<f64> = b.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let scale = b.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        err / scale <= rtol,
        "{what}: relative error {:.3e} > {rtol:.1e} (max abs err {err:.3e}, scale {scale:.3e})",
        err / scale
    );
    Ok(())
}
