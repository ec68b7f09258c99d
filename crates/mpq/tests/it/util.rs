//! Shared helpers of the integration tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};

/// Asserts `|a_i - b_i| <= atol + rtol * |b_i|` element-wise, with a message naming the first
/// offending index.
#[track_caller]
pub(crate) fn assert_close(a: &[f64], b: &[f64], atol: f64, rtol: f64) {
    assert_eq!(
        a.len(),
        b.len(),
        "length mismatch: {} vs {}",
        a.len(),
        b.len()
    );
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let excess = (x - y).abs() - (atol + rtol * y.abs());
        // NaN counts as a failure (and as the worst one).
        let bad = excess > 0.0 || excess.is_nan();
        if bad && worst.is_none_or(|(_, w)| excess > w || excess.is_nan()) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "not close at index {i}: {} vs {} (atol {atol}, rtol {rtol}; {} elements)",
            a[i],
            b[i],
            a.len()
        );
    }
}

/// Every element of a tensor as f64, flattened in row-major order.
pub(crate) fn to_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .expect("tensor should convert to f64")
}

/// `n` values drawn uniformly from `[lo, hi]` with a seeded generator.
pub(crate) fn uniform(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = Uniform::new_inclusive(lo, hi).expect("valid range");
    (0..n).map(|_| d.sample(&mut rng)).collect()
}

/// A CPU f32 tensor of the given shape holding `values` (given as f64).
pub(crate) fn tensor(values: &[f64], shape: &[usize]) -> Tensor {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("shape should match the values")
}

/// `values` rounded to f32 and back, so references see exactly what the graph sees.
pub(crate) fn as_f32(values: &[f64]) -> Vec<f64> {
    values.iter().map(|&x| x as f32 as f64).collect()
}

/// Central finite differences (in f64) of `f` at `x0`, step `eps`.
pub(crate) fn numeric_grad(f: impl Fn(&[f64]) -> f64, x0: &[f64], eps: f64) -> Vec<f64> {
    let mut x = x0.to_vec();
    (0..x0.len())
        .map(|i| {
            x[i] = x0[i] + eps;
            let up = f(&x);
            x[i] = x0[i] - eps;
            let down = f(&x);
            x[i] = x0[i];
            (up - down) / (2.0 * eps)
        })
        .collect()
}

/// A fresh, unique, existing temporary directory for one test.
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "mpq-it-{tag}-{}-{n}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir should be creatable");
    dir
}
