//! LIMPQ's indicator quantizers (Tang et al. ECCV 2022, docs/algorithms.md §5.2): LSQ (Esser et al. 2020)
//! holding one learnable step per candidate bit-width for the weight and the input activation
//! of every searched layer. A forward pass quantizes each searched layer at the bits the
//! current configuration gives it, with that width's step clamped to `[1e-5, 1]`.
//!
//! Initialisation: weights `s_b = max(|μ − 3σ|, |μ + 3σ|) / 2^{b−1}`; activations, on the first
//! training forward at that width, `s_b = 2·mean|x| / √Qp`.

use std::collections::BTreeMap;

use candle::{DType, Tensor, Var};

use crate::graph::Hooks;
use crate::plan::BitWidth;
use crate::{Error, Result};

/// The clamp LIMPQ applies to a step in the forward pass.
pub const STEP_RANGE: (f32, f32) = (1e-5, 1.0);

/// One searched layer's steps, one per candidate, in candidate order.
#[derive(Debug, Clone)]
struct LayerSteps {
    weight: Var,
    act: Var,
    /// Whether the activation step of each candidate has been initialised.
    act_ready: Vec<bool>,
    /// Whether the input takes negative values (signed codes); fixed at the first forward.
    act_signed: Option<bool>,
}

/// Layer hooks of the joint indicator training: the searched layers' multi-step LSQ
/// quantizers and the bits each uses in the current pass.
#[derive(Debug, Clone)]
pub struct IndicatorHooks {
    bits: Vec<BitWidth>,
    layers: BTreeMap<String, LayerSteps>,
    order: Vec<String>,
    current: BTreeMap<String, usize>,
    weight_calls: BTreeMap<String, u64>,
}

fn bounds(bits: BitWidth, signed: bool) -> (f32, f32) {
    mpq_kernels::lsq_bounds(bits, signed)
}

impl IndicatorHooks {
    /// Quantizers for the layers `searched` (name and weight tensor), candidates `bits`
    /// (each 2..8), weight steps initialised from the weights.
    pub fn new(searched: &[(String, Tensor)], bits: &[BitWidth]) -> Result<Self> {
        if bits.is_empty() || bits.iter().any(|b| !(2..=8).contains(b)) {
            return Err(Error::config("bits", "LIMPQ candidates must be in 2..8"));
        }
        let mut layers = BTreeMap::new();
        let mut order = Vec::new();
        for (name, w) in searched {
            let v: Vec<f32> = w.detach().flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
            let n = v.len().max(1) as f64;
            let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
            let var = v
                .iter()
                .map(|&x| (f64::from(x) - mean).powi(2))
                .sum::<f64>()
                / (n - 1.0).max(1.0);
            let sd = var.sqrt();
            let range = (mean - 3.0 * sd).abs().max((mean + 3.0 * sd).abs());
            let ws: Vec<f32> = bits
                .iter()
                .map(|&b| (range / f64::from(1u32 << (b - 1))) as f32)
                .collect();
            let k = bits.len();
            let device = w.device();
            layers.insert(
                name.clone(),
                LayerSteps {
                    weight: Var::from_tensor(&Tensor::from_vec(ws, k, device)?)?,
                    act: Var::from_tensor(&Tensor::ones(k, DType::F32, device)?)?,
                    act_ready: vec![false; k],
                    act_signed: None,
                },
            );
            order.push(name.clone());
        }
        Ok(IndicatorHooks {
            bits: bits.to_vec(),
            layers,
            order,
            current: BTreeMap::new(),
            weight_calls: BTreeMap::new(),
        })
    }

    /// The candidates, in training order.
    pub fn bits(&self) -> &[BitWidth] {
        &self.bits
    }

    /// The searched layers, in model order.
    pub fn layers(&self) -> &[String] {
        &self.order
    }

    /// Every searched layer at candidate index `k` (weights and activations).
    pub fn set_uniform(&mut self, k: usize) {
        self.current = self.order.iter().map(|n| (n.clone(), k)).collect();
    }

    /// Each searched layer at its own candidate index (`ks` in model order).
    pub fn set_mixed(&mut self, ks: &[usize]) {
        self.current = self
            .order
            .iter()
            .zip(ks)
            .map(|(n, &k)| (n.clone(), k))
            .collect();
    }

    /// The candidate index of `layer` in the current pass.
    pub fn current(&self, layer: &str) -> Option<usize> {
        self.current.get(layer).copied()
    }

    /// How many times each searched layer's weight has been quantized (one per forward pass:
    /// an instrument for tests and progress).
    pub fn weight_calls(&self, layer: &str) -> u64 {
        self.weight_calls.get(layer).copied().unwrap_or(0)
    }

    /// The weight and activation step variables of `layer`.
    pub fn steps(&self, layer: &str) -> Option<(&Var, &Var)> {
        self.layers.get(layer).map(|l| (&l.weight, &l.act))
    }

    /// The learned steps `(weights, activations)` of `layer` per candidate, as the forward
    /// pass uses them (clamped to [`STEP_RANGE`]; activation steps never initialised are
    /// reported as 0).
    pub fn values(&self, layer: &str) -> Result<(Vec<f64>, Vec<f64>)> {
        let l = self
            .layers
            .get(layer)
            .ok_or_else(|| Error::UnknownLayer { name: layer.into() })?;
        let (lo, hi) = STEP_RANGE;
        let w: Vec<f32> = l.weight.as_tensor().clamp(lo, hi)?.to_vec1()?;
        let a: Vec<f32> = l.act.as_tensor().clamp(lo, hi)?.to_vec1()?;
        let a = a
            .iter()
            .zip(&l.act_ready)
            .map(|(&v, &ready)| if ready { f64::from(v) } else { 0.0 })
            .collect();
        Ok((w.iter().map(|&v| f64::from(v)).collect(), a))
    }

    /// `s[k]` clamped to [`STEP_RANGE`], differentiable in the variable.
    fn step(var: &Var, k: usize) -> Result<Tensor> {
        Ok(var
            .as_tensor()
            .narrow(0, k, 1)?
            .clamp(STEP_RANGE.0, STEP_RANGE.1)?)
    }
}

impl Hooks for IndicatorHooks {
    fn weight(&mut self, layer: &str, w: &Tensor) -> Result<Tensor> {
        let (Some(&k), Some(l)) = (self.current.get(layer), self.layers.get(layer)) else {
            return Ok(w.clone());
        };
        *self.weight_calls.entry(layer.to_string()).or_default() += 1;
        let (qn, qp) = bounds(self.bits[k], true);
        let g = mpq_kernels::lsq_grad_scale(w.elem_count(), qp);
        let s = Self::step(&l.weight, k)?;
        Ok(mpq_kernels::lsq(w, &s, qn, qp, g)?)
    }

    fn activation(&mut self, layer: &str, x: &Tensor) -> Result<Tensor> {
        let (Some(&k), Some(l)) = (self.current.get(layer), self.layers.get_mut(layer)) else {
            return Ok(x.clone());
        };
        let signed = match l.act_signed {
            Some(s) => s,
            None => {
                let s = x
                    .detach()
                    .min_all()?
                    .to_dtype(DType::F32)?
                    .to_scalar::<f32>()?
                    < 0.0;
                l.act_signed = Some(s);
                s
            }
        };
        let (qn, qp) = bounds(self.bits[k], signed);
        if !l.act_ready[k] {
            let v: Vec<f32> = x.detach().flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
            let s0 = mpq_kernels::lsq_init_step(&v, qp).clamp(STEP_RANGE.0, STEP_RANGE.1);
            let mut all: Vec<f32> = l.act.as_tensor().to_vec1()?;
            all[k] = s0;
            l.act
                .set(&Tensor::from_vec(all, self.bits.len(), x.device())?)?;
            l.act_ready[k] = true;
        }
        let g = mpq_kernels::lsq_grad_scale(x.elem_count(), qp);
        let s = Self::step(&l.act, k)?;
        Ok(mpq_kernels::lsq(x, &s, qn, qp, g)?)
    }

    fn hooks_activation(&self, layer: &str) -> bool {
        self.current.contains_key(layer)
    }

    fn trainable(&self) -> Vec<Var> {
        self.order
            .iter()
            .flat_map(|n| {
                let l = &self.layers[n];
                [l.weight.clone(), l.act.clone()]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    #[test]
    fn weight_steps_start_at_three_sigma_over_half_range() {
        let w = Tensor::new(&[0.1f32, -0.1, 0.1, -0.1], &Device::Cpu).unwrap();
        let h = IndicatorHooks::new(&[("l".into(), w)], &[4, 2]).unwrap();
        let (ws, a) = h.values("l").unwrap();
        // μ = 0, σ (unbiased) = 0.1·√(4/3): 3σ / 2^{b−1}.
        let r = 0.3 * (4.0f64 / 3.0).sqrt();
        assert!((ws[0] - r / 8.0).abs() < 1e-6, "{ws:?}");
        assert!((ws[1] - r / 2.0).abs() < 1e-6);
        assert_eq!(a, vec![0.0, 0.0]);
    }

    #[test]
    fn activation_step_is_initialised_lazily_per_width_and_clamped() {
        let w = Tensor::new(&[0.5f32, -0.25], &Device::Cpu).unwrap();
        let mut h = IndicatorHooks::new(&[("l".into(), w)], &[3, 2]).unwrap();
        let x = Tensor::new(&[0.0f32, 0.2, 0.4, 0.6], &Device::Cpu).unwrap();
        h.set_uniform(1);
        h.activation("l", &x).unwrap();
        let (_, a) = h.values("l").unwrap();
        assert_eq!(a[0], 0.0, "3-bit step untouched by a 2-bit pass");
        assert!((a[1] - 2.0 * 0.3 / 3f64.sqrt()).abs() < 1e-6, "{a:?}");
        // A large input: the initial step is clamped to 1.
        h.set_uniform(0);
        h.activation("l", &(x * 100.0).unwrap()).unwrap();
        assert_eq!(h.values("l").unwrap().1[0], 1.0);
    }
}
