//! Optimizers with PyTorch's update rules: SGD (momentum, dampening 0, Nesterov, coupled
//! weight decay) and AdamW (decoupled weight decay, Loshchilov & Hutter 2019).

use candle::backprop::GradStore;
use candle::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::Result;

/// Which optimizer to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Stochastic gradient descent with momentum.
    Sgd,
    /// Adam with decoupled weight decay.
    AdamW,
}

/// An optimizer over a fixed list of variables.
pub trait Optimizer {
    /// Applies one update with learning rate `lr` from the gradients in `grads`
    /// (variables without a gradient are left alone).
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()>;
}

/// SGD as `torch.optim.SGD`: `d = g + wd·p; b = μ·b + d; d = nesterov ? d + μ·b : b; p -= lr·d`.
pub struct Sgd {
    vars: Vec<Var>,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// SGD over `vars`.
    pub fn new(vars: Vec<Var>, momentum: f64, nesterov: bool, weight_decay: f64) -> Self {
        let buffers = vec![None; vars.len()];
        Sgd {
            vars,
            momentum,
            nesterov,
            weight_decay,
            buffers,
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for (var, buf) in self.vars.iter().zip(self.buffers.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let mut d = if self.weight_decay != 0.0 {
                (g + (var.as_tensor() * self.weight_decay)?)?
            } else {
                g.clone()
            };
            if self.momentum != 0.0 {
                let b = match buf.take() {
                    Some(b) => ((b * self.momentum)? + &d)?,
                    None => d.clone(),
                };
                d = if self.nesterov {
                    (d + (&b * self.momentum)?)?
                } else {
                    b.clone()
                };
                *buf = Some(b);
            }
            var.set(&(var.as_tensor() - (d * lr)?)?)?;
        }
        Ok(())
    }
}

/// AdamW as `torch.optim.AdamW` (β = (0.9, 0.999), ε = 1e-8).
pub struct AdamW {
    vars: Vec<Var>,
    weight_decay: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    t: i32,
    m: Vec<Option<Tensor>>,
    v: Vec<Option<Tensor>>,
}

impl AdamW {
    /// AdamW over `vars`.
    pub fn new(vars: Vec<Var>, weight_decay: f64) -> Self {
        let n = vars.len();
        AdamW {
            vars,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            t: 0,
            m: vec![None; n],
            v: vec![None; n],
        }
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let m = match self.m[i].take() {
                Some(m) => ((m * b1)? + (g * (1.0 - b1))?)?,
                None => (g * (1.0 - b1))?,
            };
            let v = match self.v[i].take() {
                Some(v) => ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
                None => (g.sqr()? * (1.0 - b2))?,
            };
            let p = (var.as_tensor() * (1.0 - lr * self.weight_decay))?;
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + self.eps)?)?;
            var.set(&(p - (update * lr)?)?)?;
            self.m[i] = Some(m);
            self.v[i] = Some(v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    fn grads_for(var: &Var, coeff: f64) -> GradStore {
        // loss = coeff * sum(p) has gradient `coeff` everywhere.
        let loss = (var.as_tensor().sum_all().unwrap() * coeff).unwrap();
        loss.backward().unwrap()
    }

    #[test]
    fn sgd_matches_hand_computed_momentum_steps() {
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut opt = Sgd::new(vec![var.clone()], 0.9, false, 0.1);
        // step 1: d = 1 + 0.1 p; b = d; p -= 0.5 d
        opt.step(&grads_for(&var, 1.0), 0.5).unwrap();
        let p: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        assert!((p[0] - (1.0 - 0.5 * 1.1)).abs() < 1e-6);
        assert!((p[1] - (-2.0 - 0.5 * 0.8)).abs() < 1e-6);
        // step 2: d = 1 + 0.1 p; b = 0.9 b + d
        let p1 = p.clone();
        opt.step(&grads_for(&var, 1.0), 0.5).unwrap();
        let p2: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        let b0 = 0.9 * 1.1 + (1.0 + 0.1 * p1[0]);
        assert!((p2[0] - (p1[0] - 0.5 * b0)).abs() < 1e-6);
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        let var = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![var.clone()], 0.0);
        opt.step(&grads_for(&var, 3.0), 0.01).unwrap();
        let p: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        // m̂ = g, v̂ = g², update = g/|g| = 1.
        assert!((p[0] - 0.99).abs() < 1e-6);
    }
}
