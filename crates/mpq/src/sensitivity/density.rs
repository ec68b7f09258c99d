//! Hessian eigenvalue density by stochastic Lanczos quadrature (SLQ: Ghorbani, Krishnan & Xiao
//! 2019; as PyHessian's `density`, Yao et al. 2020): Lanczos with full re-orthogonalisation
//! from a Rademacher start gives a tridiagonal `T`; its eigenvalues are quadrature nodes and the
//! squared first components of its eigenvectors their weights. Also the smoothed density curve
//! (PyHessian's `density_generate`); `crate::report` draws it.

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::hessian::{orthogonalise, rademacher, restrict};
use super::hvp::Hvp;
use super::linalg::{dot, norm, scale, sub_scaled, tridiagonal_eigen};
use crate::Result;

/// Settings of SLQ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DensityConfig {
    /// Lanczos steps per run (capped by the dimension; PyHessian: 100).
    pub steps: usize,
    /// Independent runs (start vectors) averaged (PyHessian: 1).
    pub runs: usize,
}

impl Default for DensityConfig {
    fn default() -> Self {
        DensityConfig {
            steps: 100,
            runs: 1,
        }
    }
}

/// One Lanczos run's Gauss quadrature: `Σ_k weights[k] f(nodes[k]) ≈ vᵀ f(H) v`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quadrature {
    /// Ritz values (eigenvalues of `T`), ascending.
    pub nodes: Vec<f64>,
    /// Weights, summing to 1.
    pub weights: Vec<f64>,
}

/// A spectral density estimate of a Hessian (block) of dimension `dim`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Density {
    /// Dimension of the matrix.
    pub dim: usize,
    /// One quadrature per run.
    pub runs: Vec<Quadrature>,
}

impl Density {
    /// The trace implied by the quadrature, `dim · mean_runs Σ_k w_k θ_k`.
    pub fn trace(&self) -> f64 {
        let per: f64 = self
            .runs
            .iter()
            .map(|q| {
                q.nodes
                    .iter()
                    .zip(&q.weights)
                    .map(|(x, w)| x * w)
                    .sum::<f64>()
            })
            .sum();
        self.dim as f64 * per / self.runs.len().max(1) as f64
    }

    /// The smoothed density on `bins` grid points (PyHessian `density_generate`: Gaussians of
    /// variance `sigma2 · max(1, range)` at the nodes, the grid padded by 0.01 on both sides,
    /// normalised to unit integral). Returns `(grid, density)`.
    pub fn curve(&self, bins: usize, sigma2: f64) -> (Vec<f64>, Vec<f64>) {
        let bins = bins.max(2);
        let nr = self.runs.len().max(1) as f64;
        let mean_of = |f: fn(&[f64]) -> f64| -> f64 {
            self.runs.iter().map(|q| f(&q.nodes)).sum::<f64>() / nr
        };
        let hi = mean_of(|n| n.iter().copied().fold(f64::MIN, f64::max)) + 0.01;
        let lo = mean_of(|n| n.iter().copied().fold(f64::MAX, f64::min)) - 0.01;
        let var = sigma2 * (hi - lo).max(1.0);
        let dx = (hi - lo) / (bins - 1) as f64;
        let grid: Vec<f64> = (0..bins).map(|i| lo + i as f64 * dx).collect();
        let norm_c = 1.0 / (2.0 * std::f64::consts::PI * var).sqrt();
        let mut dens: Vec<f64> = grid
            .iter()
            .map(|&x| {
                self.runs
                    .iter()
                    .map(|q| {
                        q.nodes
                            .iter()
                            .zip(&q.weights)
                            .map(|(t, w)| w * norm_c * (-(t - x) * (t - x) / (2.0 * var)).exp())
                            .sum::<f64>()
                    })
                    .sum::<f64>()
                    / nr
            })
            .collect();
        let total: f64 = dens.iter().sum::<f64>() * dx;
        if total > 0.0 {
            for d in &mut dens {
                *d /= total;
            }
        }
        (grid, dens)
    }
}

/// SLQ density of `H` restricted to `block` (the whole vector when `None`).
pub fn slq(
    hvp: &mut dyn Hvp,
    block: Option<usize>,
    cfg: &DensityConfig,
    rng: &mut ChaCha8Rng,
) -> Result<Density> {
    let sizes = hvp.block_sizes().to_vec();
    let total: usize = sizes.iter().sum();
    let dim = block.map_or(total, |i| sizes[i]);
    let steps = cfg.steps.min(dim).max(1);
    let mut runs = Vec::new();
    for _ in 0..cfg.runs.max(1) {
        let mut v = rademacher(rng, total);
        restrict(&mut v, &sizes, block);
        let nv = norm(&v);
        scale(&mut v, 1.0 / nv);
        let mut basis: Vec<Vec<f32>> = Vec::with_capacity(steps);
        let (mut alpha, mut beta) = (Vec::new(), Vec::new());
        let mut w = vec![0f32; total];
        for i in 0..steps {
            if i > 0 {
                let b = norm(&w);
                // An invariant subspace: T is complete.
                if b <= 1e-10 * alpha.iter().map(|a: &f64| a.abs()).fold(1e-30, f64::max) {
                    break;
                }
                beta.push(b);
                v = w.clone();
                orthogonalise(&mut v, &basis);
                let nv = norm(&v);
                if nv == 0.0 {
                    beta.pop();
                    break;
                }
                scale(&mut v, 1.0 / nv);
            }
            basis.push(v.clone());
            let mut hv = hvp.hvp(&v)?;
            restrict(&mut hv, &sizes, block);
            let a = dot(&hv, &v);
            alpha.push(a);
            sub_scaled(&mut hv, a, &v);
            if i > 0 {
                let prev = &basis[i - 1];
                sub_scaled(&mut hv, beta[i - 1], prev);
            }
            orthogonalise(&mut hv, &basis);
            w = hv;
        }
        let (nodes, first) = tridiagonal_eigen(&alpha, &beta)?;
        runs.push(Quadrature {
            nodes,
            weights: first.iter().map(|c| c * c).collect(),
        });
    }
    Ok(Density { dim, runs })
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    struct Diag(Vec<f64>, Vec<usize>);

    impl Hvp for Diag {
        fn block_sizes(&self) -> &[usize] {
            &self.1
        }
        fn hvp(&mut self, v: &[f32]) -> Result<Vec<f32>> {
            Ok(v.iter()
                .zip(&self.0)
                .map(|(x, d)| (*x as f64 * d) as f32)
                .collect())
        }
        fn count(&self) -> u64 {
            0
        }
    }

    #[test]
    fn full_lanczos_recovers_spectrum_and_trace() {
        let diag: Vec<f64> = (0..12).map(|i| i as f64 * 0.5 - 1.0).collect();
        let mut h = Diag(diag.clone(), vec![12]);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let d = slq(&mut h, None, &DensityConfig::default(), &mut rng).unwrap();
        let q = &d.runs[0];
        assert_eq!(q.nodes.len(), 12);
        for (x, y) in q.nodes.iter().zip(&diag) {
            assert!((x - y).abs() < 1e-4, "{:?}", q.nodes);
        }
        // A Rademacher start gives every eigenvector weight 1/n: the trace is exact.
        let tr: f64 = diag.iter().sum();
        assert!((d.trace() - tr).abs() < 1e-4, "{} vs {tr}", d.trace());
        let (grid, dens) = d.curve(500, 1e-5);
        let integral: f64 = dens.iter().sum::<f64>() * (grid[1] - grid[0]);
        assert!((integral - 1.0).abs() < 1e-9);
    }
}
