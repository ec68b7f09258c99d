//! Per-layer Hessian spectra from Hessian-vector products: the top eigenvalue by power
//! iteration (HAWQ: Dong et al. 2019; PyHessian: Yao et al. 2020, `eigenvalues`), the trace by
//! Hutchinson's estimator (Hutchinson 1989; HAWQ-V2: Dong et al. 2020; PyHessian `trace`) with
//! Rademacher probes shared by all layers, and the `exact` estimator (basis vectors) for small
//! layers. Every estimate depends only on the [`Hvp`] trait.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::channel::weight_samples;
use super::hvp::Hvp;
use super::linalg::{dot, norm, scale, sub_scaled, sym_eigenvalues};
use crate::progress::Progress;
use crate::{Error, Result};

/// Settings of Hutchinson's trace estimator (PyHessian's defaults plus a minimum probe count).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TraceConfig {
    /// Most probes.
    pub max_iter: usize,
    /// A layer has converged once its running mean changes by less than `tol` relative
    /// (`|m_k − m_{k−1}| / (|m_{k−1}| + 1e-6)`, PyHessian's rule with the 2021 `abs`).
    pub tol: f64,
    /// Fewest probes before the rule may stop a layer (PyHessian can stop after 2; at least 2,
    /// at most `max_iter`).
    pub min_probes: usize,
    /// Exactly this many probes, no stopping rule.
    pub probes: Option<usize>,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            max_iter: 100,
            tol: 1e-3,
            min_probes: 10,
            probes: None,
        }
    }
}

/// Settings of power iteration (PyHessian's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerConfig {
    /// Most iterations.
    pub max_iter: usize,
    /// Stop when the Rayleigh quotient changes by less than `tol` relative.
    pub tol: f64,
}

impl Default for PowerConfig {
    fn default() -> Self {
        PowerConfig {
            max_iter: 100,
            tol: 1e-3,
        }
    }
}

/// A trace estimate of one block and of its channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEstimate {
    /// Estimated trace (the mean of the probe samples; exact for the `exact` estimator).
    pub trace: f64,
    /// Standard error of `trace` (sample standard deviation / √probes; 0 when exact; `None`
    /// with a single probe).
    pub stderr: Option<f64>,
    /// Probes (or basis vectors) used.
    pub probes: usize,
    /// The probe count at which the stopping rule first held, if it did.
    pub converged_at: Option<usize>,
    /// Per-channel traces from the same probes; they sum to `trace`.
    pub channels: Vec<f64>,
    /// Standard error of each channel trace (0 when exact; `None` with a single probe).
    #[serde(default)]
    pub channel_stderr: Option<Vec<f64>>,
}

/// A top-eigenvalue estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EigenEstimate {
    /// The eigenvalue of largest magnitude (with its sign).
    pub value: f64,
    /// Iterations (HVPs) spent.
    pub iterations: usize,
    /// Whether the tolerance was met before `max_iter`.
    pub converged: bool,
}

/// Running mean and variance (Welford), in f64.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stats {
    n: usize,
    mean: f64,
    m2: f64,
}

impl Stats {
    pub(crate) fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    pub(crate) fn stderr(&self) -> Option<f64> {
        (self.n >= 2).then(|| (self.m2 / (self.n - 1) as f64 / self.n as f64).sqrt())
    }
}

/// Rademacher (±1) entries from `rng`, 64 per draw.
pub(crate) fn rademacher(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let bits: u64 = rng.random();
        let take = (n - out.len()).min(64);
        out.extend((0..take).map(|k| if (bits >> k) & 1 == 1 { 1.0 } else { -1.0 }));
    }
    out
}

/// Hutchinson's loop shared by weight and activation traces. `probe(k, active)` returns, for
/// probe `k`, each block's per-channel samples `Σ_{j∈c} z_j (Hz)_j` (a block's sample is their
/// sum); `active` marks the blocks that have not met the rule yet. Stops when every block has
/// met the rule (after `min_probes`) or at `max_iter`. With `drop_converged` a block that has
/// met the rule stops there, as in PyHessian's per-layer loop, and its samples in later
/// probes are neither needed nor read (the caller can skip computing them); without it, a
/// converged block keeps using later probes (for products that cost the same either way).
pub(crate) fn hutchinson(
    channels: &[usize],
    cfg: &TraceConfig,
    label: &str,
    progress: &mut dyn Progress,
    drop_converged: bool,
    mut probe: impl FnMut(usize, &[bool]) -> Result<Vec<Vec<f64>>>,
) -> Result<Vec<TraceEstimate>> {
    let (max, min) = match cfg.probes {
        Some(p) => (p, p),
        None => (cfg.max_iter, cfg.min_probes.clamp(2, cfg.max_iter.max(2))),
    };
    let nb = channels.len();
    let mut blocks = vec![Stats::default(); nb];
    let mut chans: Vec<Vec<Stats>> = channels
        .iter()
        .map(|&c| vec![Stats::default(); c])
        .collect();
    let mut converged: Vec<Option<usize>> = vec![None; nb];
    progress.start(label, max as u64);
    let mut k = 0;
    while k < max {
        let active: Vec<bool> = converged.iter().map(Option::is_none).collect();
        let samples = probe(k, &active)?;
        k += 1;
        for i in 0..nb {
            if drop_converged && !active[i] {
                continue;
            }
            let prev = blocks[i].mean;
            blocks[i].push(samples[i].iter().sum());
            for (s, &x) in chans[i].iter_mut().zip(&samples[i]) {
                s.push(x);
            }
            let change = (blocks[i].mean - prev).abs() / (prev.abs() + 1e-6);
            if cfg.probes.is_none() && converged[i].is_none() && k >= min && change < cfg.tol {
                converged[i] = Some(k);
            }
        }
        let done = converged.iter().filter(|c| c.is_some()).count();
        progress.inc(1);
        progress.message(&format!("{done}/{nb} converged"));
        if cfg.probes.is_none() && done == nb {
            break;
        }
    }
    progress.finish();
    Ok((0..nb)
        .map(|i| TraceEstimate {
            trace: chans[i].iter().map(|s| s.mean).sum(),
            stderr: blocks[i].stderr(),
            probes: blocks[i].n,
            converged_at: converged[i],
            channels: chans[i].iter().map(|s| s.mean).collect(),
            channel_stderr: chans[i].iter().map(Stats::stderr).collect(),
        })
        .collect())
}

/// Per-layer weight traces by Hutchinson with probes shared by all blocks: one HVP per probe
/// updates every block (unbiased per block: the cross terms `E[z_iᵀ H_ij z_j]` vanish). A
/// block that has met the stopping rule drops out: later probes are zero there, which skips
/// its weight gradient and removes its cross terms from the other blocks' samples.
pub fn hutchinson_traces(
    hvp: &mut dyn Hvp,
    channels: &[usize],
    cfg: &TraceConfig,
    rng: &mut ChaCha8Rng,
    progress: &mut dyn Progress,
) -> Result<Vec<TraceEstimate>> {
    let sizes = hvp.block_sizes().to_vec();
    let dim: usize = sizes.iter().sum();
    hutchinson(channels, cfg, "trace", progress, true, |_, active| {
        let mut z = rademacher(rng, dim);
        let mut off = 0;
        for (&n, &a) in sizes.iter().zip(active) {
            if !a {
                z[off..off + n].fill(0.0);
            }
            off += n;
        }
        let hz = hvp.hvp_blocks(&z, active)?;
        Ok(weight_samples(&sizes, channels, &z, &hz))
    })
}

/// Offset of block `i` in a flat vector.
pub(crate) fn offset(sizes: &[usize], i: usize) -> usize {
    sizes[..i].iter().sum()
}

/// The exact diagonal block `H_ii` (row-major, symmetrised), from `n_i` products with basis
/// vectors.
pub fn exact_block(
    hvp: &mut dyn Hvp,
    i: usize,
    progress: &mut dyn Progress,
    label: &str,
) -> Result<Vec<f64>> {
    let sizes = hvp.block_sizes().to_vec();
    let (n, off, dim) = (sizes[i], offset(&sizes, i), sizes.iter().sum::<usize>());
    let mut h = vec![0.0f64; n * n];
    progress.start(label, n as u64);
    let mut v = vec![0.0f32; dim];
    for j in 0..n {
        v[off + j] = 1.0;
        let col = hvp.hvp(&v)?;
        v[off + j] = 0.0;
        for r in 0..n {
            h[r * n + j] = col[off + r] as f64;
        }
        progress.inc(1);
    }
    progress.finish();
    for r in 0..n {
        for c in r + 1..n {
            let s = 0.5 * (h[r * n + c] + h[c * n + r]);
            h[r * n + c] = s;
            h[c * n + r] = s;
        }
    }
    Ok(h)
}

/// Trace, channel traces and top eigenvalue of a dense symmetric block with `channels` equal
/// row chunks.
pub fn exact_estimates(h: &[f64], n: usize, channels: usize) -> Result<(TraceEstimate, f64)> {
    let per = n / channels.max(1);
    let chans: Vec<f64> = (0..channels)
        .map(|c| (c * per..(c + 1) * per).map(|j| h[j * n + j]).sum())
        .collect();
    let ev = sym_eigenvalues(h, n)?;
    let top = ev
        .iter()
        .copied()
        .fold(0.0f64, |a, x| if x.abs() > a.abs() { x } else { a });
    Ok((
        TraceEstimate {
            trace: chans.iter().sum(),
            stderr: Some(0.0),
            probes: n,
            converged_at: None,
            channel_stderr: Some(vec![0.0; chans.len()]),
            channels: chans,
        },
        top,
    ))
}

/// Removes from `v` its components along the orthonormal `basis`, twice (classical
/// Gram–Schmidt with re-orthogonalisation).
pub(crate) fn orthogonalise(v: &mut [f32], basis: &[Vec<f32>]) {
    for _ in 0..2 {
        for u in basis {
            let c = dot(v, u);
            sub_scaled(v, c, u);
        }
    }
}

/// Zeroes every element of `v` outside block `block` (if given).
pub(crate) fn restrict(v: &mut [f32], sizes: &[usize], block: Option<usize>) {
    if let Some(i) = block {
        let (off, n) = (offset(sizes, i), sizes[i]);
        v[..off].fill(0.0);
        v[off + n..].fill(0.0);
    }
}

/// The eigenvalue of largest magnitude of `H` restricted to `block` (the whole vector when
/// `None`), orthogonal to the unit vectors in `deflate`, by power iteration from a seeded
/// Gaussian start; returns the estimate and the final unit vector.
pub fn power_iteration(
    hvp: &mut dyn Hvp,
    block: Option<usize>,
    deflate: &[Vec<f32>],
    cfg: &PowerConfig,
    rng: &mut ChaCha8Rng,
) -> Result<(EigenEstimate, Vec<f32>)> {
    let sizes = hvp.block_sizes().to_vec();
    let dim: usize = sizes.iter().sum();
    let mut v: Vec<f32> = (0..dim)
        .map(|_| StandardNormal.sample(rng))
        .map(|x: f64| x as f32)
        .collect();
    restrict(&mut v, &sizes, block);
    orthogonalise(&mut v, deflate);
    let n0 = norm(&v);
    if n0 == 0.0 {
        return Err(Error::config("eigen", "empty block"));
    }
    scale(&mut v, 1.0 / n0);
    let mut prev: Option<f64> = None;
    let mut est = EigenEstimate {
        value: 0.0,
        iterations: 0,
        converged: false,
    };
    for it in 1..=cfg.max_iter {
        let mut hv = hvp.hvp(&v)?;
        restrict(&mut hv, &sizes, block);
        let lambda = dot(&v, &hv);
        est = EigenEstimate {
            value: lambda,
            iterations: it,
            converged: false,
        };
        orthogonalise(&mut hv, deflate);
        let nh = norm(&hv);
        if nh == 0.0 {
            est.converged = true;
            break;
        }
        scale(&mut hv, 1.0 / nh);
        v = hv;
        if let Some(p) = prev
            && (lambda - p).abs() / (p.abs() + 1e-6) < cfg.tol
        {
            est.converged = true;
            break;
        }
        prev = Some(lambda);
    }
    Ok((est, v))
}

/// The `k` eigenvalues of largest magnitude of the whole (analysed) Hessian, by power
/// iteration with Gram–Schmidt deflation (PyHessian `eigenvalues(top_n=k)`).
pub fn top_eigenvalues(
    hvp: &mut dyn Hvp,
    k: usize,
    cfg: &PowerConfig,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<EigenEstimate>> {
    let mut found = Vec::new();
    let mut vecs: Vec<Vec<f32>> = Vec::new();
    for _ in 0..k {
        let (e, v) = power_iteration(hvp, None, &vecs, cfg, rng)?;
        found.push(e);
        vecs.push(v);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::progress::NoProgress;

    /// A dense symmetric matrix as an [`Hvp`] with two blocks.
    struct Dense {
        a: Vec<f64>,
        sizes: Vec<usize>,
        count: u64,
    }

    impl Hvp for Dense {
        fn block_sizes(&self) -> &[usize] {
            &self.sizes
        }
        fn hvp(&mut self, v: &[f32]) -> Result<Vec<f32>> {
            let n = v.len();
            self.count += 1;
            Ok((0..n)
                .map(|r| (0..n).map(|c| self.a[r * n + c] * v[c] as f64).sum::<f64>() as f32)
                .collect())
        }
        fn count(&self) -> u64 {
            self.count
        }
    }

    fn dense() -> Dense {
        // Block 0 (3x3) diag(5, 1, 0.5) plus coupling to block 1 (2x2) diag(-2, 0.25).
        let n = 5;
        let mut a = vec![0.0; n * n];
        for (i, d) in [5.0, 1.0, 0.5, -2.0, 0.25].into_iter().enumerate() {
            a[i * n + i] = d;
        }
        for (r, c, x) in [(0, 3, 0.3), (1, 4, -0.2), (2, 3, 0.1)] {
            a[r * n + c] = x;
            a[c * n + r] = x;
        }
        Dense {
            a,
            sizes: vec![3, 2],
            count: 0,
        }
    }

    #[test]
    fn power_iteration_finds_block_top_eigenvalues() {
        let mut h = dense();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let cfg = PowerConfig {
            max_iter: 500,
            tol: 1e-10,
        };
        let (e0, _) = power_iteration(&mut h, Some(0), &[], &cfg, &mut rng).unwrap();
        let (e1, _) = power_iteration(&mut h, Some(1), &[], &cfg, &mut rng).unwrap();
        assert!((e0.value - 5.0).abs() < 1e-5, "{e0:?}");
        assert!((e1.value + 2.0).abs() < 1e-5, "{e1:?}");
    }

    #[test]
    fn exact_and_hutchinson_traces_agree() {
        let mut h = dense();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let cfg = TraceConfig {
            probes: Some(400),
            ..Default::default()
        };
        let est = hutchinson_traces(&mut h, &[3, 2], &cfg, &mut rng, &mut NoProgress).unwrap();
        let want = [6.5, -1.75];
        for (e, w) in est.iter().zip(want) {
            let se = e.stderr.unwrap();
            assert!((e.trace - w).abs() <= 3.0 * se + 1e-9, "{e:?} vs {w}");
            let chan: f64 = e.channels.iter().sum();
            assert!((chan - e.trace).abs() < 1e-12);
        }
        let b = exact_block(&mut h, 0, &mut NoProgress, "exact").unwrap();
        let (t, top) = exact_estimates(&b, 3, 3).unwrap();
        assert!((t.trace - 6.5).abs() < 1e-6 && (top - 5.0).abs() < 1e-6);
        assert_eq!(t.channels.len(), 3);
    }
}
