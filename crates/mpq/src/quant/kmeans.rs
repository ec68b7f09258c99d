//! 1-D k-means weight clustering, the model-size quantizer of HAQ (Wang, Liu, Lin, Lin, Han,
//! "HAQ: Hardware-Aware Automated Quantization with Mixed Precision", CVPR 2019; docs/algorithms.md §4.9):
//! `2^b` clusters over a layer's flattened weights, k-means++ seeding (`n_init = 1`), Lloyd
//! iterations up to `max_iter`, each weight replaced by its cluster's centroid.
//!
//! Pure and deterministic: the seeding draws from a [`ChaCha8Rng`] seeded with a `u64`
//! ([`layer_seed`] derives one from a layer name). It exploits 1-D: values are sorted once,
//! clusters are intervals between centroid midpoints, so an assignment step is `O(k log n)`
//! on the sorted values and per-weight codes are `O(n log k)`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// A fitted 1-D k-means: a codebook and each value's cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans1d {
    /// Cluster centres, ascending: `centroids[j]` is the mean of the values with code `j`
    /// ([`cluster_means`]). `k = min(requested, distinct values)` entries.
    pub centroids: Vec<f32>,
    /// Cluster of each value, in input order (`< centroids.len()`).
    pub codes: Vec<u16>,
    /// Lloyd iterations run (assignment plus update), `1..=max_iter`.
    pub iterations: u32,
}

/// A k-means layer's weights as stored: `bits`-bit indices into a codebook of `f32`
/// centroids.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    /// Code width `b` (the plan's `w_bits`); `centroids.len() ≤ 2^b`.
    pub bits: u32,
    /// The codebook (`k` entries; at most `2^b`).
    pub centroids: Vec<f32>,
    /// Index of each weight element's centroid, row-major.
    pub codes: std::sync::Arc<[u16]>,
}

impl Codebook {
    /// The dequantized weights, `centroids[codes[i]]`, row-major.
    pub fn values(&self) -> Vec<f32> {
        self.codes
            .iter()
            .map(|&c| self.centroids[usize::from(c)])
            .collect()
    }
}

/// The largest number of clusters ([`KMeans1d::codes`] are `u16`).
pub const MAX_CLUSTERS: usize = 1 << 16;

/// A stable per-layer seed: the 64-bit FNV-1a hash of `name` (independent of the platform,
/// of `HashMap` order and of the Rust version).
pub fn layer_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `values`' distinct values ascending, with their multiplicities (`-0.0` and `0.0` are one
/// value).
struct Sorted {
    values: Vec<f32>,
    counts: Vec<u64>,
    /// `prefix_sum[i] = Σ_{j<i} counts[j]·values[j]` (in `f64`).
    prefix_sum: Vec<f64>,
    /// `prefix_count[i] = Σ_{j<i} counts[j]`.
    prefix_count: Vec<u64>,
}

/// A key whose unsigned order is the numeric order of finite floats.
fn order_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 1 { !b } else { b | 0x8000_0000 }
}

fn from_key(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & 0x7fff_ffff } else { !k })
}

/// Sorts `u32` keys: three stable counting passes over 11-bit digits (`O(n)`), or the
/// standard sort for short inputs.
fn radix_sort(mut a: Vec<u32>) -> Vec<u32> {
    const BITS: u32 = 11;
    const MASK: u32 = (1 << BITS) - 1;
    if a.len() < 1024 {
        a.sort_unstable();
        return a;
    }
    let mut b = vec![0u32; a.len()];
    for pass in 0..3 {
        let shift = pass * BITS;
        let mut start = vec![0usize; 1 << BITS];
        for &k in &a {
            start[((k >> shift) & MASK) as usize] += 1;
        }
        let mut sum = 0;
        for s in &mut start {
            let c = *s;
            *s = sum;
            sum += c;
        }
        for &k in &a {
            let d = ((k >> shift) & MASK) as usize;
            b[start[d]] = k;
            start[d] += 1;
        }
        std::mem::swap(&mut a, &mut b);
    }
    a
}

impl Sorted {
    fn new(values: &[f32]) -> Result<Sorted> {
        if values.is_empty() {
            return Err(Error::config("kmeans", "no values to cluster"));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite("weights to cluster".into()));
        }
        // `+ 0.0` maps -0.0 to 0.0, so the two zeros are one value.
        let keys = radix_sort(values.iter().map(|&v| order_key(v + 0.0)).collect());
        let mut vals: Vec<f32> = Vec::new();
        let mut counts: Vec<u64> = Vec::new();
        let mut last = None;
        for k in keys {
            if last == Some(k) {
                *counts.last_mut().expect("a value was pushed") += 1;
            } else {
                vals.push(from_key(k));
                counts.push(1);
                last = Some(k);
            }
        }
        let mut prefix_sum = Vec::with_capacity(vals.len() + 1);
        let mut prefix_count = Vec::with_capacity(vals.len() + 1);
        let (mut s, mut c) = (0.0f64, 0u64);
        prefix_sum.push(s);
        prefix_count.push(c);
        for (&v, &m) in vals.iter().zip(&counts) {
            s += f64::from(v) * m as f64;
            c += m;
            prefix_sum.push(s);
            prefix_count.push(c);
        }
        Ok(Sorted {
            values: vals,
            counts,
            prefix_sum,
            prefix_count,
        })
    }

    fn len(&self) -> usize {
        self.values.len()
    }
}

fn check_k(k: usize) -> Result<()> {
    if k == 0 || k > MAX_CLUSTERS {
        return Err(Error::config(
            "kmeans",
            format!("{k} clusters (use 1..={MAX_CLUSTERS})"),
        ));
    }
    Ok(())
}

/// Midpoints between consecutive sorted centroids, exact in `f64`.
fn midpoints(centroids: &[f32]) -> Vec<f64> {
    centroids
        .windows(2)
        .map(|w| (f64::from(w[0]) + f64::from(w[1])) / 2.0)
        .collect()
}

/// The cluster of `x` among sorted centroids with midpoints `mids`: the nearest centroid, the
/// lower one on a tie.
#[inline]
fn code_of(mids: &[f64], x: f32) -> usize {
    let x = f64::from(x);
    mids.partition_point(|&m| m < x)
}

/// k-means++ seeding (Arthur and Vassilvitskii, SODA 2007) of `k` centres among the values'
/// distinct values: the first uniformly over all values, each next one with probability
/// proportional to its squared distance to the nearest centre chosen so far. Returns
/// `min(k, distinct values)` distinct centres, ascending.
pub fn kmeans_pp_init(values: &[f32], k: usize, seed: u64) -> Result<Vec<f32>> {
    check_k(k)?;
    let s = Sorted::new(values)?;
    Ok(init_sorted(&s, k, seed))
}

/// Block length of the sampling sums: about `√d`.
fn block_len(d: usize) -> usize {
    ((d as f64).sqrt() as usize).max(64)
}

fn init_sorted(s: &Sorted, k: usize, seed: u64) -> Vec<f32> {
    let d = s.len();
    let k = k.min(d);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = *s.prefix_count.last().expect("prefix has d + 1 entries");
    // First centre: uniform over the n values (a distinct value with its multiplicity).
    let r = ((rng.random::<f64>() * n as f64) as u64).min(n - 1);
    let first = s.prefix_count.partition_point(|&c| c <= r) - 1;
    let c0 = f64::from(s.values[first]);
    // d2[i]: multiplicity times squared distance to the nearest centre.
    let mut d2: Vec<f64> = s
        .values
        .iter()
        .zip(&s.counts)
        .map(|(&v, &m)| m as f64 * (f64::from(v) - c0).powi(2))
        .collect();
    let b = block_len(d);
    let mut block_sum: Vec<f64> = d2.chunks(b).map(|c| c.iter().sum()).collect();
    // Chosen centres as indices into the distinct values, ascending.
    let mut chosen: Vec<usize> = vec![first];
    while chosen.len() < k {
        let total: f64 = block_sum.iter().sum();
        if total <= 0.0 {
            break;
        }
        let i = sample(&d2, &block_sum, b, rng.random::<f64>() * total);
        let pos = chosen.partition_point(|&c| c < i);
        // Only values between the neighbouring centres can move closer to the new one.
        let lo = if pos == 0 { 0 } else { chosen[pos - 1] + 1 };
        let hi = chosen.get(pos).copied().unwrap_or(d);
        chosen.insert(pos, i);
        let c = f64::from(s.values[i]);
        for ((slot, &v), &m) in d2[lo..hi]
            .iter_mut()
            .zip(&s.values[lo..hi])
            .zip(&s.counts[lo..hi])
        {
            let e = m as f64 * (f64::from(v) - c).powi(2);
            if e < *slot {
                *slot = e;
            }
        }
        d2[i] = 0.0;
        if lo < hi {
            for blk in lo / b..=(hi - 1) / b {
                block_sum[blk] = d2[blk * b..((blk + 1) * b).min(d)].iter().sum();
            }
        }
    }
    chosen.iter().map(|&i| s.values[i]).collect()
}

/// The index `i` with `Σ_{j<i} d2[j] ≤ r < Σ_{j≤i} d2[j]` (so `d2[i] > 0`), found block by
/// block; rounding at the far end falls back to the last positive entry.
fn sample(d2: &[f64], block_sum: &[f64], b: usize, r: f64) -> usize {
    let mut acc = 0.0;
    let mut last_positive_block = None;
    for (blk, &bs) in block_sum.iter().enumerate() {
        if bs <= 0.0 {
            continue;
        }
        last_positive_block = Some(blk);
        if acc + bs > r {
            let mut inner = acc;
            let range = blk * b..((blk + 1) * b).min(d2.len());
            for j in range.clone() {
                inner += d2[j];
                if d2[j] > 0.0 && inner > r {
                    return j;
                }
            }
            return last_positive(d2, range);
        }
        acc += bs;
    }
    let blk = last_positive_block.expect("total of the blocks is positive");
    last_positive(d2, blk * b..((blk + 1) * b).min(d2.len()))
}

fn last_positive(d2: &[f64], range: std::ops::Range<usize>) -> usize {
    range
        .rev()
        .find(|&j| d2[j] > 0.0)
        .expect("a block with a positive sum has a positive entry")
}

/// Per-cluster means of `values` over `codes`, summed in input order in `f64` and rounded to
/// `f32` (`-0.0` becomes `0.0`); a cluster without members keeps `fallback[j]`. This is both
/// the k-means update and HAQ's centroid sharing (docs/algorithms.md §4.9: every member weight is set to
/// the mean of the members' values).
///
/// # Panics
/// If a code is not below `fallback.len()` or the lengths of `values` and `codes` differ
/// (invariants of a fitted [`KMeans1d`]).
pub fn cluster_means(values: &[f32], codes: &[u16], fallback: &[f32]) -> Vec<f32> {
    assert_eq!(values.len(), codes.len(), "one code per value");
    let k = fallback.len();
    let mut sum = vec![0.0f64; k];
    let mut count = vec![0u64; k];
    for (&v, &c) in values.iter().zip(codes) {
        sum[usize::from(c)] += f64::from(v);
        count[usize::from(c)] += 1;
    }
    (0..k)
        .map(|j| {
            if count[j] == 0 {
                fallback[j]
            } else {
                (sum[j] / count[j] as f64) as f32 + 0.0
            }
        })
        .collect()
}

/// Cluster boundaries over the sorted distinct values: cluster `j` is
/// `values[bounds[j]..bounds[j + 1]]`.
fn assign_sorted(s: &Sorted, centroids: &[f32]) -> Vec<usize> {
    let mut bounds = Vec::with_capacity(centroids.len() + 1);
    bounds.push(0);
    for m in midpoints(centroids) {
        bounds.push(s.values.partition_point(|&v| f64::from(v) <= m));
    }
    bounds.push(s.len());
    bounds
}

/// Means of the clusters given by `bounds`, from the prefix sums; empty clusters keep
/// `old[j]`.
fn update_sorted(s: &Sorted, bounds: &[usize], old: &[f32]) -> Vec<f32> {
    old.iter()
        .enumerate()
        .map(|(j, &c)| {
            let (a, b) = (bounds[j], bounds[j + 1]);
            let n = s.prefix_count[b] - s.prefix_count[a];
            if n == 0 {
                c
            } else {
                ((s.prefix_sum[b] - s.prefix_sum[a]) / n as f64) as f32
            }
        })
        .collect()
}

fn sort_f32(v: &mut [f32]) {
    v.sort_unstable_by(f32::total_cmp);
}

/// Lloyd's algorithm on sorted values from `init` centroids: alternate assignment (nearest
/// centroid, the lower on a tie) and update (cluster means, an empty cluster keeping its
/// centroid) up to `max_iter` times, stopping early when the assignment no longer changes.
/// The returned centroids are exactly [`cluster_means`] of the returned codes.
fn lloyd_sorted(s: &Sorted, values: &[f32], init: &[f32], max_iter: u32) -> KMeans1d {
    let mut assign_c = init.to_vec();
    sort_f32(&mut assign_c);
    let mut bounds = assign_sorted(s, &assign_c);
    let mut iterations = 1;
    while iterations < max_iter {
        let mut c = update_sorted(s, &bounds, &assign_c);
        sort_f32(&mut c);
        let next = assign_sorted(s, &c);
        assign_c = c;
        iterations += 1;
        if next == bounds {
            break;
        }
        bounds = next;
    }
    // The last update, on the codes of the last assignment.
    let mids = midpoints(&assign_c);
    let mut codes: Vec<u16> = values.iter().map(|&x| code_of(&mids, x) as u16).collect();
    let mut centroids = cluster_means(values, &codes, &assign_c);
    if !centroids.is_sorted() {
        // Rounding could in principle swap two adjacent means; keep the codebook ascending.
        let mut order: Vec<usize> = (0..centroids.len()).collect();
        order.sort_by(|&a, &b| centroids[a].total_cmp(&centroids[b]));
        let mut rank = vec![0u16; order.len()];
        for (new, &old) in order.iter().enumerate() {
            rank[old] = new as u16;
        }
        for c in &mut codes {
            *c = rank[usize::from(*c)];
        }
        centroids = order.iter().map(|&j| centroids[j]).collect();
    }
    KMeans1d {
        centroids,
        codes,
        iterations,
    }
}

/// Lloyd's algorithm from given centroids (see [`kmeans_1d`]); `init` is sorted first.
/// `max_iter` counts assignment-plus-update rounds (at least 1).
pub fn lloyd_1d(values: &[f32], init: &[f32], max_iter: u32) -> Result<KMeans1d> {
    check_k(init.len())?;
    if init.iter().any(|c| !c.is_finite()) {
        return Err(Error::NonFinite("initial centroids".into()));
    }
    if max_iter == 0 {
        return Err(Error::config("kmeans_iters", "at least one iteration"));
    }
    let s = Sorted::new(values)?;
    Ok(lloyd_sorted(&s, values, init, max_iter))
}

/// 1-D k-means of `values` with `k` clusters (`k = min(k, distinct values)`): k-means++
/// seeding from `seed` ([`kmeans_pp_init`]), then up to `max_iter` Lloyd rounds, stopping
/// early once the assignment is stable. Centroids come back ascending and are the exact
/// means of their members ([`cluster_means`]), so `centroids[codes[i]]` is each value's
/// quantized value. `O(n log n)` once (sorting), then `O(k log n)` per round and
/// `O(n log k)` for the codes.
///
/// Errors: no values, a non-finite value, `k` outside `1..=65536`, `max_iter` 0.
pub fn kmeans_1d(values: &[f32], k: usize, max_iter: u32, seed: u64) -> Result<KMeans1d> {
    check_k(k)?;
    if max_iter == 0 {
        return Err(Error::config("kmeans_iters", "at least one iteration"));
    }
    let s = Sorted::new(values)?;
    let init = init_sorted(&s, k, seed);
    Ok(lloyd_sorted(&s, values, &init, max_iter))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    fn normal(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = Normal::new(0.0f32, 0.1).expect("valid normal");
        (0..n).map(|_| d.sample(&mut rng)).collect()
    }

    /// Lloyd in `O(n·k)`: nearest centroid by squared distance (the lower index on a tie),
    /// means in input order, the same iteration structure.
    fn naive_lloyd(values: &[f32], init: &[f32], max_iter: u32) -> (Vec<f32>, Vec<u16>) {
        let mut c = init.to_vec();
        let assign = |c: &[f32]| -> Vec<u16> {
            values
                .iter()
                .map(|&x| {
                    let mut best = 0;
                    for j in 1..c.len() {
                        let dj = (f64::from(x) - f64::from(c[j])).powi(2);
                        let db = (f64::from(x) - f64::from(c[best])).powi(2);
                        if dj < db {
                            best = j;
                        }
                    }
                    best as u16
                })
                .collect()
        };
        let mut codes = assign(&c);
        for _ in 1..max_iter {
            let next_c = cluster_means(values, &codes, &c);
            let next = assign(&next_c);
            c = next_c;
            if next == codes {
                break;
            }
            codes = next;
        }
        (cluster_means(values, &codes, &c), codes)
    }

    #[test]
    fn fnv1a_seed_is_stable() {
        assert_eq!(layer_seed(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(layer_seed("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(layer_seed("fc1"), layer_seed("fc2"));
    }

    #[test]
    fn order_key_sorts_like_floats() {
        let mut v = vec![
            3.5f32,
            -0.0,
            -1e-30,
            1e-30,
            -7.0,
            0.0,
            2.0,
            f32::MAX,
            f32::MIN,
        ];
        let mut keys: Vec<u32> = v.iter().map(|&x| order_key(x)).collect();
        keys.sort_unstable();
        let back: Vec<f32> = keys.into_iter().map(from_key).collect();
        v.sort_by(f32::total_cmp);
        assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn radix_sort_sorts() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for n in [0, 5, 1023, 1024, 5000] {
            let v: Vec<u32> = (0..n).map(|_| rng.random::<u32>()).collect();
            let mut want = v.clone();
            want.sort_unstable();
            assert_eq!(radix_sort(v), want, "{n}");
        }
    }

    #[test]
    fn matches_naive_lloyd_from_the_same_init() {
        for (n, k, iters, seed) in [
            (50, 4, 50, 1),
            (300, 8, 3, 2),
            (1000, 16, 50, 3),
            (777, 3, 10, 4),
        ] {
            let v = normal(n, seed);
            let init = kmeans_pp_init(&v, k, seed).unwrap();
            assert_eq!(init.len(), k);
            assert!(init.is_sorted());
            let fast = lloyd_1d(&v, &init, iters).unwrap();
            let (c, codes) = naive_lloyd(&v, &init, iters);
            assert_eq!(fast.codes, codes, "n {n} k {k}");
            assert_eq!(fast.centroids, c, "n {n} k {k}");
            assert_eq!(fast, kmeans_1d(&v, k, iters, seed).unwrap());
        }
    }

    #[test]
    fn centroids_are_member_means_and_nearest() {
        let v = normal(5000, 7);
        let r = kmeans_1d(&v, 16, 50, 9).unwrap();
        assert!(r.centroids.is_sorted());
        assert_eq!(r.centroids, cluster_means(&v, &r.codes, &r.centroids));
        // Converged (well before 50 rounds): every value is at its nearest centroid.
        assert!(r.iterations < 50, "{}", r.iterations);
        for (&x, &c) in v.iter().zip(&r.codes) {
            let d = (x - r.centroids[usize::from(c)]).abs();
            let best = r
                .centroids
                .iter()
                .map(|&m| (x - m).abs())
                .fold(f32::INFINITY, f32::min);
            assert!(d <= best + 1e-7, "{x}: {d} vs {best}");
        }
    }

    #[test]
    fn same_seed_same_result_other_seed_other_init() {
        let v = normal(2000, 11);
        let a = kmeans_1d(&v, 8, 3, 42).unwrap();
        assert_eq!(a, kmeans_1d(&v, 8, 3, 42).unwrap());
        assert_ne!(
            kmeans_pp_init(&v, 8, 42).unwrap(),
            kmeans_pp_init(&v, 8, 43).unwrap()
        );
    }

    #[test]
    fn fewer_distinct_values_than_clusters() {
        let v = [0.5f32, -1.0, 0.5, 2.0, -1.0, 0.0, -0.0, 2.0];
        let r = kmeans_1d(&v, 256, 50, 0).unwrap();
        assert_eq!(r.centroids, [-1.0, 0.0, 0.5, 2.0]);
        assert_eq!(r.codes, [2, 0, 2, 3, 0, 1, 1, 3]);
        // Exact reproduction: every value is its own centroid.
        let q: Vec<f32> = r
            .codes
            .iter()
            .map(|&c| r.centroids[usize::from(c)])
            .collect();
        assert_eq!(q, [0.5, -1.0, 0.5, 2.0, -1.0, 0.0, 0.0, 2.0]);
        let one = kmeans_1d(&[3.0; 10], 4, 5, 0).unwrap();
        assert_eq!(one.centroids, [3.0]);
        assert_eq!(one.codes, [0; 10]);
    }

    #[test]
    fn empty_cluster_keeps_its_centroid() {
        // Values 0, 1 go to centroid 0 and 9, 10 to centroid 10; 5 has no member.
        let v = [0.0f32, 1.0, 9.0, 10.0];
        let r = lloyd_1d(&v, &[0.0, 5.0, 10.0], 10).unwrap();
        assert_eq!(r.centroids, [0.5, 5.0, 9.5]);
        assert_eq!(r.codes, [0, 0, 2, 2]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(kmeans_1d(&[], 4, 3, 0).is_err());
        assert!(kmeans_1d(&[1.0, f32::NAN], 4, 3, 0).is_err());
        assert!(kmeans_1d(&[1.0], 0, 3, 0).is_err());
        assert!(kmeans_1d(&[1.0], 4, 0, 0).is_err());
        assert!(lloyd_1d(&[1.0], &[], 3).is_err());
    }

    #[test]
    fn large_layer_is_fast() {
        // ResNet-sized: 600k weights, 256 clusters, 50 rounds.
        let v = normal(600_000, 5);
        let t = std::time::Instant::now();
        let r = kmeans_1d(&v, 256, 50, 1).unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(r.centroids.len(), 256);
        assert!(secs < 2.0, "{secs} s");
    }
}
