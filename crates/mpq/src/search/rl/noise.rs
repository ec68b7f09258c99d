//! HAQ (Wang et al., CVPR 2019) exploration: after the warm-up the agent's action is drawn
//! from a normal distribution around the actor's output, truncated to `[0, 1]` (the reference
//! uses scipy's `truncnorm`), with a standard deviation that decays by a constant factor per
//! episode (docs/algorithms.md §4.7: `σ_e = 0.5 · 0.99^(episode − warmup)`).

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// `σ0 · decay^(episode − warmup)` (σ0 from episode `warmup` on; `σ0` before it).
pub fn exploration_sigma(sigma0: f64, decay: f64, episode: usize, warmup: usize) -> f64 {
    let k = episode.saturating_sub(warmup);
    sigma0 * decay.powi(i32::try_from(k).unwrap_or(i32::MAX))
}

/// A normal distribution `N(mean, sd²)` truncated to `[lo, hi]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TruncNormal {
    /// Mean of the untruncated normal (clamped into `[lo, hi]` before sampling).
    pub mean: f64,
    /// Standard deviation of the untruncated normal; `≤ 0` (or non-finite) returns the mean.
    pub sd: f64,
    /// Lower bound.
    pub lo: f64,
    /// Upper bound (`≥ lo`).
    pub hi: f64,
}

/// Rejection draws before giving up and returning the (clamped) mean. With the mean inside
/// `[lo, hi]` every draw is accepted with probability above 1/3 for any `sd`, so this bound
/// is never reached in practice.
const MAX_TRIES: usize = 1000;

impl TruncNormal {
    /// The exploration distribution of HAQ: around `mean` with `sd`, on `[0, 1]`.
    pub fn unit(mean: f64, sd: f64) -> Self {
        TruncNormal {
            mean,
            sd,
            lo: 0.0,
            hi: 1.0,
        }
    }

    /// One draw by rejection from the untruncated normal, clipped to `[lo, hi]` afterwards
    /// (as the reference does) to absorb rounding.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let mean = if self.mean.is_nan() {
            0.5 * (self.lo + self.hi)
        } else {
            self.mean.clamp(self.lo, self.hi)
        };
        if !(self.sd.is_finite() && self.sd > 0.0) {
            return mean;
        }
        for _ in 0..MAX_TRIES {
            let z: f64 = StandardNormal.sample(rng);
            let x = mean + self.sd * z;
            if (self.lo..=self.hi).contains(&x) {
                return x;
            }
        }
        mean
    }
}

impl Distribution<f64> for TruncNormal {
    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        TruncNormal::sample(self, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn samples_stay_in_range_and_centre_on_the_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let d = TruncNormal::unit(0.5, 0.1);
        let xs: Vec<f64> = (0..20_000).map(|_| d.sample(&mut rng)).collect();
        assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        // At the boundary the samples are one-sided but still in range.
        let d = TruncNormal::unit(1.0, 0.5);
        assert!((0..1000).all(|_| (0.0..=1.0).contains(&d.sample(&mut rng))));
        assert_eq!(TruncNormal::unit(0.3, 0.0).sample(&mut rng), 0.3);
    }

    #[test]
    fn sigma_schedule_decays_after_warmup() {
        assert_eq!(exploration_sigma(0.5, 0.99, 5, 20), 0.5);
        assert_eq!(exploration_sigma(0.5, 0.99, 20, 20), 0.5);
        assert!((exploration_sigma(0.5, 0.99, 120, 20) - 0.5 * 0.99f64.powi(100)).abs() < 1e-15);
    }
}
