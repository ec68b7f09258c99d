//! Activation-range calibration (docs/algorithms.md §7.2.2): an [`Observer`] sees every calibration batch
//! of one tensor and proposes a clipping range by min-max, a percentile, or the clip that
//! minimises the mean squared quantization error.

use serde::{Deserialize, Serialize};

use super::params::{QuantParams, fake_quant_values};
use crate::Result;

/// How an observer turns what it saw into a range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum RangeMethod {
    /// The smallest and largest values seen.
    MinMax,
    /// The given percentile (e.g. 99.99) of the values (and its mirror for the low end).
    Percentile(f64),
    /// The clip (a fraction of the min-max range, searched on a grid of 100) that minimises
    /// the mean squared error of fake quantization at the requested bit-width.
    Mse,
}

/// Values kept per observed batch for percentile and MSE estimates.
const PER_BATCH: usize = 1 << 16;
/// Values kept in total.
const CAP: usize = 1 << 21;

/// Collects range statistics of one tensor over calibration batches.
#[derive(Debug, Clone)]
pub struct Observer {
    method: RangeMethod,
    min: f32,
    max: f32,
    samples: Vec<f32>,
    sum_abs: f64,
    count: u64,
}

impl Observer {
    /// An observer using `method`.
    pub fn new(method: RangeMethod) -> Self {
        Observer {
            method,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            samples: Vec::new(),
            sum_abs: 0.0,
            count: 0,
        }
    }

    /// Records one batch. Min and max are exact; percentile and MSE use a deterministic
    /// strided subsample (at most 65,536 values a batch, 2M in total).
    pub fn observe(&mut self, values: &[f32]) {
        for &v in values {
            if v.is_finite() {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
                self.sum_abs += f64::from(v.abs());
                self.count += 1;
            }
        }
        if self.method == RangeMethod::MinMax || self.samples.len() >= CAP {
            return;
        }
        let stride = values.len().div_ceil(PER_BATCH).max(1);
        self.samples.extend(
            values
                .iter()
                .step_by(stride)
                .copied()
                .filter(|v| v.is_finite()),
        );
        self.samples.truncate(CAP);
    }

    /// Mean absolute value of everything observed (for LSQ's `2·mean|x|/√Qp` step init).
    pub fn mean_abs(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_abs / self.count as f64
        }
    }

    /// Whether nothing finite has been observed.
    pub fn is_empty(&self) -> bool {
        self.min > self.max
    }

    /// The clipping range `(lo, hi)` for a `bits`-bit code (`signed`: symmetric around 0).
    pub fn range(&self, bits: u32, signed: bool) -> Result<(f32, f32)> {
        if self.is_empty() {
            return Ok((0.0, 0.0));
        }
        let (lo, hi) = (self.min.min(0.0), self.max.max(0.0));
        Ok(match self.method {
            RangeMethod::MinMax => (lo, hi),
            RangeMethod::Percentile(p) => {
                let mut s = self.samples.clone();
                s.sort_by(f32::total_cmp);
                let q = |f: f64| s[((f * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
                let f = (p / 100.0).clamp(0.0, 1.0);
                (q(1.0 - f).min(0.0), q(f).max(0.0))
            }
            RangeMethod::Mse => {
                let mut best = (f64::INFINITY, lo, hi);
                for k in 1..=100 {
                    let r = k as f32 / 100.0;
                    let (clo, chi) = (lo * r, hi * r);
                    let p = if signed {
                        QuantParams::symmetric(clo.abs().max(chi.abs()), bits)?
                    } else {
                        QuantParams::asymmetric(clo, chi, bits)?
                    };
                    let err: f64 = fake_quant_values(&self.samples, &p)
                        .iter()
                        .zip(&self.samples)
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum();
                    if err < best.0 {
                        best = (err, clo, chi);
                    }
                }
                (best.1, best.2)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_is_exact_over_batches() {
        let mut o = Observer::new(RangeMethod::MinMax);
        o.observe(&[0.5, 1.0, 2.0]);
        o.observe(&[-0.25, 3.5, f32::NAN]);
        assert_eq!(o.range(8, false).unwrap(), (-0.25, 3.5));
    }

    #[test]
    fn percentile_ignores_rare_outliers() {
        let mut o = Observer::new(RangeMethod::Percentile(99.0));
        let mut v: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        v.push(1000.0);
        o.observe(&v);
        let (lo, hi) = o.range(8, false).unwrap();
        assert_eq!(lo, 0.0);
        assert!((0.98..=1.0).contains(&hi), "{hi}");
    }

    #[test]
    fn mse_clip_beats_min_max_on_heavy_tails() {
        let mut v: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        v.extend([20.0, 25.0]);
        let mut mse = Observer::new(RangeMethod::Mse);
        mse.observe(&v);
        let (lo, hi) = mse.range(4, false).unwrap();
        assert!(hi < 25.0);
        let err = |lo, hi| -> f64 {
            let p = QuantParams::asymmetric(lo, hi, 4).unwrap();
            fake_quant_values(&v, &p)
                .iter()
                .zip(&v)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum()
        };
        assert!(err(lo, hi) < err(0.0, 25.0));
    }
}
