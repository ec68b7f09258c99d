//! Uniform quantization parameters: `q = clamp(round(x/s) + z, qmin, qmax)`,
//! `x̂ = s·(q − z)` (docs/algorithms.md §7.2.1).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Integer range of a `bits`-bit code: signed symmetric `[−(2^(b−1)−1), 2^(b−1)−1]`
/// (HAWQ's narrow range, so zero stays exact and the range is symmetric) or unsigned
/// `[0, 2^b − 1]`.
pub fn quant_range(bits: u32, signed: bool) -> Result<(f32, f32)> {
    if !(2..=8).contains(&bits) {
        return Err(Error::config("bits", format!("{bits} is outside 2..8")));
    }
    Ok(if signed {
        let m = ((1u32 << (bits - 1)) - 1) as f32;
        (-m, m)
    } else {
        (0.0, ((1u32 << bits) - 1) as f32)
    })
}

/// Scale, zero point and integer range of one quantized tensor.
///
/// With [`QuantParams::channel_bits`] (CW-HAWQ's per-channel widths, symmetric only) channel
/// `c` uses the narrow signed range of its own width, `±(2^(b_c−1)−1)`, and `qmin`/`qmax`
/// hold the widest channel's range. Because a symmetric max-abs scale `s_c = max|x_c|/m_c`
/// maps every element of its channel into `[−m_c, m_c]` before rounding, clamping to the
/// widest range gives the same codes as clamping per channel, so the per-tensor-range fake
/// quantization kernel simulates per-channel widths exactly (tested against
/// [`fake_quant_values`], which clamps per channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantParams {
    /// Bits of the integer code (the widest channel's with `channel_bits`).
    pub bits: u32,
    /// Per-channel code widths along `axis` (symmetric signed codes only); `None`: every
    /// channel uses `bits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_bits: Option<Vec<u32>>,
    /// One scale per tensor (`len 1`) or per channel along `axis`.
    pub scale: Vec<f32>,
    /// Zero points, same length as `scale` (0 for symmetric).
    pub zero_point: Vec<f32>,
    /// Smallest code.
    pub qmin: f32,
    /// Largest code.
    pub qmax: f32,
    /// Channel axis for per-channel parameters.
    pub axis: Option<usize>,
}

/// Smallest scale used, so an all-zero channel does not divide by zero.
const MIN_SCALE: f32 = 1e-12;

impl QuantParams {
    /// Symmetric signed parameters from max-abs: `s = max|x| / qmax` (per tensor).
    pub fn symmetric(max_abs: f32, bits: u32) -> Result<Self> {
        let (qmin, qmax) = quant_range(bits, true)?;
        Ok(QuantParams {
            bits,
            channel_bits: None,
            scale: vec![(max_abs / qmax).max(MIN_SCALE)],
            zero_point: vec![0.0],
            qmin,
            qmax,
            axis: None,
        })
    }

    /// Symmetric signed per-channel parameters from each channel's max-abs.
    pub fn symmetric_per_channel(max_abs: &[f32], bits: u32, axis: usize) -> Result<Self> {
        let (qmin, qmax) = quant_range(bits, true)?;
        Ok(QuantParams {
            bits,
            channel_bits: None,
            scale: max_abs.iter().map(|m| (m / qmax).max(MIN_SCALE)).collect(),
            zero_point: vec![0.0; max_abs.len()],
            qmin,
            qmax,
            axis: Some(axis),
        })
    }

    /// Asymmetric (affine) parameters covering `[min(lo,0), max(hi,0)]` with an integer zero
    /// point in the unsigned range.
    pub fn asymmetric(lo: f32, hi: f32, bits: u32) -> Result<Self> {
        let (qmin, qmax) = quant_range(bits, false)?;
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let scale = ((hi - lo) / (qmax - qmin)).max(MIN_SCALE);
        let zp = (qmin - lo / scale).round_ties_even().clamp(qmin, qmax);
        Ok(QuantParams {
            bits,
            channel_bits: None,
            scale: vec![scale],
            zero_point: vec![zp],
            qmin,
            qmax,
            axis: None,
        })
    }

    /// Unsigned parameters for a non-negative activation (after ReLU): `s = hi / (2^b − 1)`.
    pub fn unsigned(hi: f32, bits: u32) -> Result<Self> {
        let (qmin, qmax) = quant_range(bits, false)?;
        Ok(QuantParams {
            bits,
            channel_bits: None,
            scale: vec![(hi.max(0.0) / qmax).max(MIN_SCALE)],
            zero_point: vec![0.0],
            qmin,
            qmax,
            axis: None,
        })
    }

    /// Asymmetric (affine) per-channel parameters from each channel's `(min, max)`.
    pub fn asymmetric_per_channel(lo: &[f32], hi: &[f32], bits: u32, axis: usize) -> Result<Self> {
        let mut scale = Vec::with_capacity(lo.len());
        let mut zero_point = Vec::with_capacity(lo.len());
        for (&l, &h) in lo.iter().zip(hi) {
            let one = QuantParams::asymmetric(l, h, bits)?;
            scale.push(one.scale[0]);
            zero_point.push(one.zero_point[0]);
        }
        let (qmin, qmax) = quant_range(bits, false)?;
        Ok(QuantParams {
            bits,
            channel_bits: None,
            scale,
            zero_point,
            qmin,
            qmax,
            axis: Some(axis),
        })
    }

    /// Symmetric signed per-channel parameters where channel `c` has its own width
    /// `bits[c]` (each `2..=8`): `s_c = max|x_c| / (2^(b_c−1)−1)`.
    pub fn symmetric_channel_bits(max_abs: &[f32], bits: &[u32], axis: usize) -> Result<Self> {
        if max_abs.len() != bits.len() || bits.is_empty() {
            return Err(Error::config(
                "channel_w_bits",
                format!("{} widths for {} channels", bits.len(), max_abs.len()),
            ));
        }
        let mut scale = Vec::with_capacity(bits.len());
        for (&m, &b) in max_abs.iter().zip(bits) {
            let (_, qmax) = quant_range(b, true)?;
            scale.push((m / qmax).max(MIN_SCALE));
        }
        let widest = bits.iter().copied().max().unwrap_or(8);
        let (qmin, qmax) = quant_range(widest, true)?;
        Ok(QuantParams {
            bits: widest,
            channel_bits: Some(bits.to_vec()),
            scale,
            zero_point: vec![0.0; bits.len()],
            qmin,
            qmax,
            axis: Some(axis),
        })
    }

    /// LSQ parameters (docs/algorithms.md §5.2): learned step(s) `s`, zero point 0 and the full range
    /// `[−Qn, Qp]`. LSQ's `round(clamp(x/s, −Qn, Qp))·s` equals this uniform quantizer's
    /// `s·(clamp(round(x/s), −Qn, Qp) − 0)` bit for bit (the bounds are integers), which is
    /// how LSQ-trained layers are exported.
    pub fn lsq(step: &[f32], bits: u32, signed: bool, axis: Option<usize>) -> Result<Self> {
        if !(2..=8).contains(&bits) {
            return Err(Error::config("bits", format!("{bits} is outside 2..8")));
        }
        let (qn, qp) = mpq_kernels::lsq_bounds(bits, signed);
        Ok(QuantParams {
            bits,
            channel_bits: None,
            scale: step.to_vec(),
            zero_point: vec![0.0; step.len()],
            qmin: -qn,
            qmax: qp,
            axis: if step.len() > 1 { axis } else { None },
        })
    }

    /// Code width of channel `c`.
    #[inline]
    pub fn bits_of(&self, c: usize) -> u32 {
        match &self.channel_bits {
            Some(b) => b[c],
            None => self.bits,
        }
    }

    /// Code range `(qmin, qmax)` of channel `c`.
    #[inline]
    pub fn range(&self, c: usize) -> (f32, f32) {
        match &self.channel_bits {
            Some(b) => {
                let m = ((1u32 << (b[c] - 1)) - 1) as f32;
                (-m, m)
            }
            None => (self.qmin, self.qmax),
        }
    }

    /// Number of channels the parameters describe (1 per tensor).
    pub fn channels(&self) -> usize {
        self.scale.len()
    }

    /// The integer code of `x` in channel `c`.
    #[inline]
    pub fn code(&self, x: f32, c: usize) -> f32 {
        let (lo, hi) = self.range(c);
        ((x / self.scale[c]).round_ties_even() + self.zero_point[c]).clamp(lo, hi)
    }

    /// The dequantized value of code `q` in channel `c`.
    #[inline]
    pub fn dequant(&self, q: f32, c: usize) -> f32 {
        self.scale[c] * (q - self.zero_point[c])
    }
}

/// Clip candidates of [`mse_symmetric_max`]: `k/CLIP_GRID` of the max-abs, `k = 1..=CLIP_GRID`.
pub const CLIP_GRID: usize = 100;

/// The symmetric range `m* = (k/100)·max|x|` (`k = 1..=100`) whose `bits`-bit narrow signed
/// quantizer gives the least `Σ (Q(x) − x)²` over `x` (ties: the larger range). Rounding is
/// half to even, as in [`QuantParams::code`], so the error minimised is exactly the one the
/// quantizer makes. Returns 0 for an all-zero `x`.
pub fn mse_symmetric_max(x: &[f32], bits: u32) -> Result<f32> {
    let max_abs = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if max_abs == 0.0 || !max_abs.is_finite() {
        return Ok(max_abs);
    }
    let (_, qmax) = quant_range(bits, true)?;
    let clip = |k: usize| max_abs * k as f32 / CLIP_GRID as f32;
    let err = |k: usize| -> f64 {
        let s = (clip(k) / qmax).max(MIN_SCALE);
        x.iter()
            .map(|&v| {
                // Clamping before rounding is the same for integer bounds.
                let q = round_half_even_small((v / s).clamp(-qmax, qmax)) * s;
                f64::from(q - v).powi(2)
            })
            .sum()
    };
    // Each candidate's sum is sequential, so evaluating candidates in parallel (large
    // tensors) gives the same errors and the same choice.
    let errs: Vec<f64> = if x.len() >= MSE_PARALLEL_MIN {
        (1..=CLIP_GRID).into_par_iter().map(err).collect()
    } else {
        (1..=CLIP_GRID).map(err).collect()
    };
    let mut best = (f64::INFINITY, max_abs);
    for k in (1..=CLIP_GRID).rev() {
        if errs[k - 1] < best.0 {
            best = (errs[k - 1], clip(k));
        }
    }
    Ok(best.1)
}

/// `y.round_ties_even()` for `|y| < 2^22`, inline: adding and removing `1.5·2^23` leaves the
/// sum in `[2^23, 2^24)`, where the float spacing is 1, so the addition itself rounds to the
/// nearest integer, ties to even. (`round_ties_even` is a libm call without SSE4.1, and it
/// was most of the time of QAT with MSE-clipped weights.)
#[inline]
fn round_half_even_small(y: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    debug_assert!(y.abs() < 4_194_304.0);
    (y + MAGIC) - MAGIC
}

/// Tensors from this many values up search their MSE clip candidates in parallel.
const MSE_PARALLEL_MIN: usize = 4096;

/// [`mse_symmetric_max`] of each row (an output channel) at its width `bits(row)`, rows in
/// parallel.
pub(crate) fn mse_symmetric_max_rows(
    rows: &[Vec<f32>],
    bits: impl Fn(usize) -> u32 + Sync,
) -> Result<Vec<f32>> {
    rows.par_iter()
        .enumerate()
        .map(|(c, r)| mse_symmetric_max(r, bits(c)))
        .collect()
}

/// Fake-quantizes `x` (quantize then dequantize) in place of a copy. `x` is laid out with
/// `channels` equal blocks when the parameters are per-channel along axis 0.
pub fn fake_quant_values(x: &[f32], p: &QuantParams) -> Vec<f32> {
    let per = if p.scale.len() > 1 {
        x.len() / p.scale.len()
    } else {
        x.len().max(1)
    };
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = if p.scale.len() > 1 { i / per } else { 0 };
            p.dequant(p.code(v, c), c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mse_clip_equals_the_plain_sequential_search() {
        // The plain search: candidates from the widest down, libm rounding before the clamp.
        let reference = |x: &[f32], bits: u32| -> f32 {
            let max_abs = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let qmax = (1u32 << (bits - 1)) as f32 - 1.0;
            let mut best = (f64::INFINITY, max_abs);
            for k in (1..=CLIP_GRID).rev() {
                let m = max_abs * k as f32 / CLIP_GRID as f32;
                let s = (m / qmax).max(MIN_SCALE);
                let err: f64 = x
                    .iter()
                    .map(|&v| {
                        let q = (v / s).round_ties_even().clamp(-qmax, qmax) * s;
                        f64::from(q - v).powi(2)
                    })
                    .sum();
                if err < best.0 {
                    best = (err, m);
                }
            }
            best.1
        };
        // Heavy-tailed values, small (sequential) and large (parallel candidates).
        for n in [300, 20_000] {
            let x: Vec<f32> = (0..n)
                .map(|i| {
                    let u = ((i as f32 * 0.618_034).fract() - 0.5) * 2.0;
                    u * u * u * 0.3
                })
                .collect();
            for bits in [2, 3, 4, 8] {
                let got = mse_symmetric_max(&x, bits).unwrap();
                assert_eq!(
                    got.to_bits(),
                    reference(&x, bits).to_bits(),
                    "n {n} bits {bits}"
                );
            }
        }
    }

    #[test]
    fn inline_rounding_is_round_half_even() {
        // Every tie and its neighbours from -300 to 300, and a spread of odd values.
        let mut ys: Vec<f32> = (-600..=600).map(|k| k as f32 * 0.5).collect();
        ys.extend(
            ys.clone()
                .iter()
                .flat_map(|&y| [y.next_up(), y.next_down()]),
        );
        ys.extend((0..2000).map(|k| (k as f32 * 0.7373).sin() * 130.0));
        ys.extend([4_194_303.5, -4_194_303.5, 2_097_152.5, 0.0, -0.0]);
        for y in ys {
            assert_eq!(
                round_half_even_small(y).to_bits() & 0x7fff_ffff,
                y.round_ties_even().to_bits() & 0x7fff_ffff,
                "{y}"
            );
        }
    }

    #[test]
    fn ranges_are_narrow_signed_and_full_unsigned() {
        assert_eq!(quant_range(8, true).unwrap(), (-127.0, 127.0));
        assert_eq!(quant_range(2, true).unwrap(), (-1.0, 1.0));
        assert_eq!(quant_range(4, false).unwrap(), (0.0, 15.0));
        assert!(quant_range(1, true).is_err());
        assert!(quant_range(9, false).is_err());
    }

    #[test]
    fn symmetric_fake_quant_hand_case() {
        // max|x| = 1.5, 3 bits signed: qmax 3, s = 0.5.
        let p = QuantParams::symmetric(1.5, 3).unwrap();
        assert_eq!(p.scale, vec![0.5]);
        let y = fake_quant_values(&[-1.5, -0.26, 0.25, 0.75, 1.4, 9.0], &p);
        // 0.25/0.5 = 0.5 -> 0 (ties to even); 0.75/0.5 = 1.5 -> 2; 9 clamps to 3.
        assert_eq!(y, vec![-1.5, -0.5, 0.0, 1.0, 1.5, 1.5]);
    }

    #[test]
    fn mse_range_is_the_best_of_the_grid_and_beats_max_abs_at_low_bits() {
        // Gaussian-like weights with one outlier: at 2 bits max-abs rounds nearly everything
        // to zero.
        let mut x: Vec<f32> = (0..2000)
            .map(|i| {
                let u = (i as f32 + 0.5) / 2000.0;
                // A smooth symmetric bell: the inverse of a logistic CDF.
                (u / (1.0 - u)).ln() * 0.1
            })
            .collect();
        x.push(3.0);
        let err = |m: f32, bits: u32| -> f64 {
            let p = QuantParams::symmetric(m, bits).unwrap();
            fake_quant_values(&x, &p)
                .iter()
                .zip(&x)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum()
        };
        let max_abs = 3.0f32;
        for bits in [2, 3, 4, 8] {
            let m = mse_symmetric_max(&x, bits).unwrap();
            let e = err(m, bits);
            // No grid point is better (brute force over the same grid).
            for k in 1..=CLIP_GRID {
                let c = max_abs * k as f32 / CLIP_GRID as f32;
                assert!(
                    e <= err(c, bits) * (1.0 + 1e-9),
                    "bits {bits}: k {k} beats {m}"
                );
            }
            assert!(m <= max_abs);
        }
        let m2 = mse_symmetric_max(&x, 2).unwrap();
        assert!(m2 < 0.5 * max_abs, "{m2}");
        assert!(err(m2, 2) < 0.5 * err(max_abs, 2));
        assert_eq!(mse_symmetric_max(&[0.0, 0.0], 2).unwrap(), 0.0);
    }

    #[test]
    fn asymmetric_keeps_zero_exact() {
        let p = QuantParams::asymmetric(-0.3, 2.7, 4).unwrap();
        let y = fake_quant_values(&[0.0, -0.3, 2.7], &p);
        assert_eq!(y[0], 0.0);
        assert!((y[1] + 0.3).abs() <= p.scale[0] / 2.0 + 1e-6);
        assert!((y[2] - 2.7).abs() <= p.scale[0] / 2.0 + 1e-6);
    }

    #[test]
    fn per_channel_uses_each_channels_scale() {
        let p = QuantParams::symmetric_per_channel(&[1.0, 100.0], 8, 0).unwrap();
        let y = fake_quant_values(&[0.5, 1.0, 50.0, 100.0], &p);
        assert!((y[0] - 0.5).abs() < 1.0 / 127.0);
        assert_eq!(y[1], 1.0);
        assert!((y[2] - 50.0).abs() < 100.0 / 127.0);
        assert!((y[3] - 100.0).abs() < 1e-4);
    }
}
