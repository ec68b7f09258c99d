//! The statistics behind mpq's claims (the evidence standard of docs/README: every
//! comparison states its uncertainty): rank correlation with ties (Spearman's ρ over average
//! ranks, with the Fisher-z interval of Fieller, Hartley and Pearson), the mean and sample
//! standard deviation over seeds, the normal-approximation interval of an accuracy on a test
//! set, and seeded percentile-bootstrap intervals of any statistic.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `z` of a two-sided 95% normal interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Average ranks (1-based); ties share the mean of their positions.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Pearson's correlation; NaN when either side is constant or the lengths differ.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    if x.len() != y.len() || x.is_empty() {
        return f64::NAN;
    }
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx * syy).sqrt()
}

/// Spearman's ρ: Pearson's correlation of the average ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

/// Fisher-z 95% interval of Spearman's ρ over `n` pairs, with the variance `1.06 / (n − 3)`
/// (Fieller, Hartley and Pearson 1957); `None` for `n ≤ 3`.
pub fn spearman_interval(rho: f64, n: usize) -> Option<(f64, f64)> {
    if n <= 3 || !rho.is_finite() {
        return None;
    }
    let z = rho.clamp(-0.999_999, 0.999_999).atanh();
    let se = (1.06 / (n as f64 - 3.0)).sqrt();
    Some(((z - Z95 * se).tanh(), (z + Z95 * se).tanh()))
}

/// Mean and sample standard deviation (0 for a single value; NaN mean for none).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// The standard error `√(p(1 − p)/n)` of an accuracy `p` measured on `n` samples.
pub fn accuracy_stderr(p: f64, n: usize) -> f64 {
    (p * (1.0 - p) / n.max(1) as f64).sqrt()
}

/// The normal-approximation 95% interval of an accuracy `p` on `n` samples, clamped to [0, 1].
pub fn accuracy_interval(p: f64, n: usize) -> (f64, f64) {
    let h = Z95 * accuracy_stderr(p, n);
    ((p - h).max(0.0), (p + h).min(1.0))
}

/// The seeded percentile-bootstrap 95% interval of `statistic` over `n` items: `resamples`
/// times, draw `n` item indices with replacement and evaluate the statistic on them; the
/// 2.5th and 97.5th percentiles of its finite values. `None` when none is finite.
pub fn bootstrap_interval(
    n: usize,
    resamples: usize,
    seed: u64,
    statistic: impl Fn(&[usize]) -> f64,
) -> Option<(f64, f64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values: Vec<f64> = (0..resamples)
        .filter_map(|_| {
            let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n.max(1))).collect();
            Some(statistic(&idx)).filter(|v| v.is_finite())
        })
        .collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at =
        |q: f64| values[((q * (values.len() - 1) as f64).round() as usize).min(values.len() - 1)];
    Some((at(0.025), at(0.975)))
}

/// The percentile-bootstrap 95% interval of the accuracy of per-sample outcomes `correct`.
pub fn accuracy_bootstrap(correct: &[bool], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    bootstrap_interval(correct.len(), resamples, seed, |idx| {
        idx.iter().filter(|&&i| correct[i]).count() as f64 / idx.len().max(1) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_handles_ties_with_average_ranks() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Monotone but not linear: ρ = 1 where Pearson's r is not.
        let (x, y) = ([1.0, 2.0, 3.0, 4.0], [1.0, 8.0, 27.0, 64.0]);
        assert!((spearman(&x, &y) - 1.0).abs() < 1e-12 && pearson(&x, &y) < 0.99);
        // By hand: ranks (1, 2, 3, 4) against (2, 1, 4, 3): ρ = 1 − 6·4/(4·15) = 0.6.
        assert!((spearman(&x, &[5.0, 1.0, 9.0, 7.0]) - 0.6).abs() < 1e-12);
        assert!(spearman(&x, &[2.0; 4]).is_nan());
    }

    #[test]
    fn the_bootstrap_interval_of_a_binomial_matches_the_analytic_one() {
        // 2,000 test samples at 90% accuracy: the analytic interval is 0.9 ± 1.96·√(0.09/2000)
        // = ±0.01315. The bootstrap's ends agree to well under a tenth of the half-width
        // expected from its own sampling error at 4,000 resamples.
        let n = 2000;
        let correct: Vec<bool> = (0..n).map(|i| i % 10 != 0).collect();
        let (lo, hi) = accuracy_interval(0.9, n);
        let (blo, bhi) = accuracy_bootstrap(&correct, 4000, 7).unwrap();
        let half = (hi - lo) / 2.0;
        assert!((half - 0.013_148).abs() < 1e-5, "{half}");
        assert!((blo - lo).abs() < 0.1 * half, "{blo} vs {lo}");
        assert!((bhi - hi).abs() < 0.1 * half, "{bhi} vs {hi}");
        // Seeded: the same interval twice.
        assert_eq!(accuracy_bootstrap(&correct, 4000, 7), Some((blo, bhi)));
        // A lopsided statistic: the interval of the mean of 0, 0, …, 0, 1 (one in 50) is
        // [0, 0.06] by the binomial's quantiles; the bootstrap's upper end lands there.
        let rare: Vec<bool> = (0..50).map(|i| i == 0).collect();
        let (a, b) = accuracy_bootstrap(&rare, 4000, 3).unwrap();
        assert_eq!(a, 0.0);
        assert!((0.04..=0.08).contains(&b), "{b}");
    }

    #[test]
    fn fisher_interval_contains_rho_and_narrows_with_n() {
        let (a, b) = spearman_interval(0.8, 30).unwrap();
        assert!(a < 0.8 && 0.8 < b);
        let (c, d) = spearman_interval(0.8, 300).unwrap();
        assert!(d - c < b - a);
        assert_eq!(spearman_interval(0.5, 3), None);
        assert_eq!(mean_sd(&[1.0, 2.0, 3.0]), (2.0, 1.0));
    }
}
