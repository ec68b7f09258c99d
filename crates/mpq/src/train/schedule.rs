//! Learning-rate schedules, evaluated per optimisation step.

use serde::{Deserialize, Serialize};

/// How the learning rate evolves over training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Cosine annealing from the base rate to 0 over all steps (per step).
    Cosine,
    /// Multiply by `gamma` every `every_epochs` epochs.
    Step {
        /// Epochs between decays.
        every_epochs: usize,
        /// Decay factor.
        gamma: f64,
    },
}

impl Schedule {
    /// The rate at `step` (0-based) of `total` steps, `steps_per_epoch` steps an epoch.
    pub fn lr(&self, base: f64, step: usize, total: usize, steps_per_epoch: usize) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Cosine => {
                let t = step as f64 / total.max(1) as f64;
                base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
            Schedule::Step {
                every_epochs,
                gamma,
            } => {
                let epoch = step / steps_per_epoch.max(1);
                base * gamma.powi((epoch / every_epochs.max(1)) as i32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_goes_from_base_to_zero() {
        let s = Schedule::Cosine;
        assert_eq!(s.lr(0.1, 0, 100, 10), 0.1);
        assert!((s.lr(0.1, 50, 100, 10) - 0.05).abs() < 1e-12);
        assert!(s.lr(0.1, 100, 100, 10).abs() < 1e-12);
    }

    #[test]
    fn step_decays_every_k_epochs() {
        let s = Schedule::Step {
            every_epochs: 2,
            gamma: 0.1,
        };
        assert_eq!(s.lr(1.0, 19, 100, 10), 1.0);
        assert!((s.lr(1.0, 20, 100, 10) - 0.1).abs() < 1e-12);
        assert!((s.lr(1.0, 45, 100, 10) - 0.01).abs() < 1e-12);
    }
}
