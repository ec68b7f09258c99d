//! LSQ quantizers for QAT (Esser et al., "Learned Step Size Quantization", ICLR 2020; spec
//! §5.2, §7.2.3): a learned step `s` per tensor (or per output channel for weights), the
//! forward `round(clamp(x/s, −Qn, Qp))·s` and the paper's gradients from
//! [`mpq_kernels::lsq()`], with the gradient scale `g = 1/√(numel(x)·Qp)` (`numel` includes
//! the batch for activations) and the initialisation `s = 2·mean|x|/√Qp`.
//!
//! A trained LSQ quantizer is exported as uniform parameters ([`QuantParams::lsq`]): same
//! codes, same dequantized values, bit for bit.

use candle::{Tensor, Var};

use super::params::QuantParams;
use crate::{Error, Result};

/// Smallest step used in the forward pass, so a step driven to zero or below by an
/// optimizer cannot divide by zero (the paper's code clamps to `[1e-5, 1]` in LIMPQ).
pub const MIN_STEP: f32 = 1e-8;

/// One learned-step quantizer.
#[derive(Debug, Clone)]
pub struct LsqQuantizer {
    step: Var,
    bits: u32,
    signed: bool,
}

impl LsqQuantizer {
    fn bounds(bits: u32, signed: bool) -> Result<(f32, f32)> {
        if !(2..=8).contains(&bits) {
            return Err(Error::config("bits", format!("{bits} is outside 2..8")));
        }
        Ok(mpq_kernels::lsq_bounds(bits, signed))
    }

    /// A signed weight quantizer initialised from `w` (`[out, ...]`): one step per tensor,
    /// or one per output channel with `per_channel`, each `2·mean|w|/√Qp`.
    pub fn for_weight(w: &Tensor, bits: u32, per_channel: bool) -> Result<Self> {
        let (_, qp) = Self::bounds(bits, true)?;
        let out = w.dim(0)?;
        let rows: Vec<Vec<f32>> = if per_channel {
            w.detach()
                .reshape((out, w.elem_count() / out.max(1)))?
                .to_vec2()?
        } else {
            vec![w.detach().flatten_all()?.to_vec1()?]
        };
        let steps: Vec<f32> = rows
            .iter()
            .map(|r| mpq_kernels::lsq_init_step(r, qp).max(MIN_STEP))
            .collect();
        let n = steps.len();
        Ok(LsqQuantizer {
            step: Var::from_tensor(&Tensor::from_vec(steps, n, w.device())?)?,
            bits,
            signed: true,
        })
    }

    /// An activation quantizer (per tensor) initialised from the mean absolute value seen
    /// in calibration: `s = 2·mean|x|/√Qp`.
    pub fn for_activation(
        mean_abs: f64,
        bits: u32,
        signed: bool,
        device: &candle::Device,
    ) -> Result<Self> {
        let (_, qp) = Self::bounds(bits, signed)?;
        let s = ((2.0 * mean_abs / f64::from(qp).sqrt()) as f32).max(MIN_STEP);
        Ok(LsqQuantizer {
            step: Var::from_tensor(&Tensor::from_vec(vec![s], 1, device)?)?,
            bits,
            signed,
        })
    }

    /// The learned step(s), a trainable variable.
    pub fn var(&self) -> &Var {
        &self.step
    }

    /// Bits of the code.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Fake-quantizes `x` with the current step (differentiable in `x` and the step).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (qn, qp) = Self::bounds(self.bits, self.signed)?;
        let g = mpq_kernels::lsq_grad_scale(x.elem_count(), qp);
        let s = self.step.as_tensor().maximum(MIN_STEP)?;
        Ok(mpq_kernels::lsq(x, &s, qn, qp, g)?)
    }

    /// The current step as uniform quantization parameters (same values as [`Self::apply`]).
    pub fn params(&self) -> Result<QuantParams> {
        let s: Vec<f32> = self
            .step
            .as_tensor()
            .maximum(MIN_STEP)?
            .flatten_all()?
            .to_vec1()?;
        if s.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite("LSQ step size".into()));
        }
        QuantParams::lsq(&s, self.bits, self.signed, Some(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{fake_quant_tensor, fake_quant_values};
    use candle::Device;

    fn ramp(n: usize) -> Tensor {
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        Tensor::from_vec(v, (4, n / 4), &Device::Cpu).unwrap()
    }

    #[test]
    fn lsq_equals_its_uniform_export_bit_for_bit() {
        let w = ramp(64);
        for (bits, per_channel) in [(2, false), (3, true), (4, false), (8, true)] {
            let q = LsqQuantizer::for_weight(&w, bits, per_channel).unwrap();
            // Move the step off its initial value so clipping happens.
            let s = (q.var().as_tensor() * 1.7).unwrap();
            q.var().set(&s).unwrap();
            let a: Vec<f32> = q
                .apply(&w)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let p = q.params().unwrap();
            let b: Vec<f32> = fake_quant_tensor(&w, &p)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let c = fake_quant_values(&w.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &p);
            let bits_of = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits_of(&a),
                bits_of(&b),
                "{bits} bits per_channel {per_channel}"
            );
            assert_eq!(bits_of(&a), bits_of(&c));
        }
    }

    #[test]
    fn init_is_two_mean_abs_over_sqrt_qp() {
        let w = Tensor::new(&[[1.0f32, -3.0], [0.5, 0.5]], &Device::Cpu).unwrap();
        let q = LsqQuantizer::for_weight(&w, 4, true).unwrap();
        let s: Vec<f32> = q.var().as_tensor().to_vec1().unwrap();
        // Qp = 7: channel 0 mean|w| = 2, channel 1 0.5.
        assert!((s[0] - 4.0 / 7f32.sqrt()).abs() < 1e-6);
        assert!((s[1] - 1.0 / 7f32.sqrt()).abs() < 1e-6);
        let a = LsqQuantizer::for_activation(0.25, 2, false, &Device::Cpu).unwrap();
        let s: Vec<f32> = a.var().as_tensor().to_vec1().unwrap();
        assert!((s[0] - 0.5 / 3f32.sqrt()).abs() < 1e-7);
    }

    #[test]
    fn step_gets_a_gradient() {
        let w = ramp(32);
        let q = LsqQuantizer::for_weight(&w, 3, false).unwrap();
        let loss = q.apply(&w).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(q.var().as_tensor()).expect("step gradient");
        assert!(g.to_vec1::<f32>().unwrap()[0] != 0.0);
    }
}
