//! `synthetic:CxHxW:K:N`: a learnable generated dataset for tests and benchmarks. Each class
//! has a smooth random prototype (a coarse 4x4 grid per channel, bilinearly upsampled); each
//! sample is its class prototype plus a random brightness shift and per-pixel Gaussian noise.
//! Everything derives from the seed.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use super::{Dataset, derive_seed};
use crate::{Error, Result};

/// Coarse prototype grid size (per side, at most the image size).
const GRID: usize = 4;
/// Std of the per-sample brightness shift, in pixel units.
const SHIFT_STD: f32 = 12.0;
/// Most prototype values (K * C * H * W) rendered once up front rather than per sample.
const CACHE_MAX: usize = 1 << 24;
/// Std of the per-pixel noise, in pixel units.
const NOISE_STD: f32 = 32.0;

/// A parsed `CxHxW:K:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SyntheticSpec {
    /// Image shape [C, H, W].
    pub(super) shape: [usize; 3],
    /// Number of classes K.
    pub(super) classes: usize,
    /// Number of training samples N.
    pub(super) samples: usize,
}

impl SyntheticSpec {
    /// Parses the part after `synthetic:`.
    pub(super) fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::config(
                "data",
                format!(
                    "bad synthetic reference \"synthetic:{s}\": {why} \
                     (expected synthetic:CxHxW:K:N, e.g. synthetic:3x32x32:10:1000)"
                ),
            )
        };
        let parts: Vec<&str> = s.split(':').collect();
        let [shape, k, n] = parts[..] else {
            return Err(bad("expected three ':'-separated fields"));
        };
        let num = |t: &str, what: &str| -> Result<usize> {
            match t.trim().parse::<usize>() {
                Ok(0) => Err(bad(&format!("{what} must be positive"))),
                Ok(v) => Ok(v),
                Err(_) => Err(bad(&format!("{what} \"{t}\" is not a number"))),
            }
        };
        let dims: Vec<&str> = shape.split(['x', 'X']).collect();
        let [c, h, w] = dims[..] else {
            return Err(bad(&format!("shape \"{shape}\" is not CxHxW")));
        };
        let shape = [num(c, "C")?, num(h, "H")?, num(w, "W")?];
        let classes = num(k, "K")?;
        let samples = num(n, "N")?;
        if classes > u32::MAX as usize {
            return Err(bad("K is too large"));
        }
        let total = shape
            .iter()
            .chain([&samples])
            .try_fold(1usize, |a, &d| a.checked_mul(d));
        if total.is_none_or(|t| t > isize::MAX as usize / 2) {
            return Err(bad("the dataset would not fit in memory"));
        }
        let spec = Self {
            shape,
            classes,
            samples,
        };
        crate::limits::check_bytes_with(spec.memory_bytes(), || {
            format!(
                "the data set synthetic:{} ({} + {} images of {}, {classes} classes)",
                s.trim(),
                samples,
                spec.test_samples(),
                crate::limits::shape_string(&shape)
            )
        })?;
        Ok(spec)
    }

    /// Bytes the generated data sets take: the pixels and labels of the train and test
    /// samples, the class prototypes (and their rendered cache) and the class names.
    fn memory_bytes(&self) -> u128 {
        let per = crate::limits::elements(&self.shape);
        let k = self.classes as u128;
        let n = self.samples as u128 + self.test_samples() as u128;
        let [c, h, w] = self.shape.map(|d| d as u128);
        let grid = k * c * (GRID as u128).min(h) * (GRID as u128).min(w) * 4;
        let cache = if k.saturating_mul(per) <= CACHE_MAX as u128 {
            k * per * 4
        } else {
            // One rendered prototype per worker thread.
            per * 4 * rayon::current_num_threads() as u128
        };
        // A class name is a `String` of a few digits: 24 bytes plus the heap block.
        let names = k * 40;
        n.saturating_mul(per.saturating_add(4))
            .saturating_add(grid)
            .saturating_add(cache)
            .saturating_add(names)
    }

    /// Number of test samples: max(N / 5, K).
    pub(super) fn test_samples(&self) -> usize {
        (self.samples / 5).max(self.classes)
    }
}

/// Generates (train, test) for `spec`: N training and max(N / 5, K) test samples, with the
/// labels cycling through the classes.
pub(super) fn generate(spec: &SyntheticSpec, seed: u64) -> Result<(Dataset, Dataset)> {
    let protos = Prototypes::new(spec, derive_seed(seed, &[0]));
    let cache = spec.classes.saturating_mul(spec.shape.iter().product()) <= CACHE_MAX;
    let train = sample_set(spec, &protos, spec.samples, derive_seed(seed, &[1]), cache)?;
    let test = sample_set(
        spec,
        &protos,
        spec.test_samples(),
        derive_seed(seed, &[2]),
        cache,
    )?;
    Ok((train, test))
}

/// The coarse per-class grids: `K * C * gh * gw` values in pixel units.
struct Prototypes {
    grid: Vec<f32>,
    gh: usize,
    gw: usize,
}

impl Prototypes {
    fn new(spec: &SyntheticSpec, seed: u64) -> Self {
        let [c, h, w] = spec.shape;
        let (gh, gw) = (GRID.min(h), GRID.min(w));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let grid = (0..spec.classes * c * gh * gw)
            .map(|_| rng.random_range(32.0f32..224.0))
            .collect();
        Self { grid, gh, gw }
    }

    /// Writes the bilinearly upsampled prototype of `class` into `out` (C*H*W, pixel units).
    fn render(&self, class: usize, [c, h, w]: [usize; 3], out: &mut [f32]) {
        let (gh, gw) = (self.gh, self.gw);
        // Source coordinate of output index i along an axis of n pixels over g cells.
        let coord = |i: usize, n: usize, g: usize| -> (usize, usize, f32) {
            if g == 1 || n == 1 {
                return (0, 0, 0.0);
            }
            let s = i as f32 * (g - 1) as f32 / (n - 1) as f32;
            let i0 = (s.floor() as usize).min(g - 2);
            (i0, i0 + 1, s - i0 as f32)
        };
        for ch in 0..c {
            let g = &self.grid[(class * c + ch) * gh * gw..][..gh * gw];
            for y in 0..h {
                let (y0, y1, fy) = coord(y, h, gh);
                for x in 0..w {
                    let (x0, x1, fx) = coord(x, w, gw);
                    let top = g[y0 * gw + x0] * (1.0 - fx) + g[y0 * gw + x1] * fx;
                    let bot = g[y1 * gw + x0] * (1.0 - fx) + g[y1 * gw + x1] * fx;
                    out[(ch * h + y) * w + x] = top * (1.0 - fy) + bot * fy;
                }
            }
        }
    }
}

/// Approximately Gaussian noise with std [`NOISE_STD`] from 64 random bits: the sum of four
/// 16-bit uniforms (Irwin-Hall), centred and scaled. One rng call per pixel keeps generation fast.
fn noise(bits: u64) -> f32 {
    let sum: u32 = (0..4).map(|k| ((bits >> (16 * k)) & 0xffff) as u32).sum();
    // Each uniform has variance 65536^2 / 12, so the sum has std 65536 / sqrt(3).
    (sum as f32 - 2.0 * 65535.0) * (3f32.sqrt() / 65536.0) * NOISE_STD
}

/// `n` samples; sample i uses its own rng seeded from (`seed`, i), so the result does not
/// depend on the thread count.
fn sample_set(
    spec: &SyntheticSpec,
    protos: &Prototypes,
    n: usize,
    seed: u64,
    cache: bool,
) -> Result<Dataset> {
    let per = spec.shape.iter().product::<usize>();
    let k = spec.classes;
    let labels: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
    let shift = Normal::new(0.0f32, SHIFT_STD).expect("constant std should be valid");
    // Render every prototype once when they fit in a modest buffer, else per sample.
    let cached: Option<Vec<f32>> = cache.then(|| {
        let mut all = vec![0f32; k * per];
        for (class, out) in all.chunks_mut(per).enumerate() {
            protos.render(class, spec.shape, out);
        }
        all
    });
    let mut pixels = vec![0u8; n * per];
    pixels.par_chunks_mut(per).enumerate().for_each_init(
        || vec![0f32; if cached.is_some() { 0 } else { per }],
        |scratch, (i, out)| {
            let proto = match &cached {
                Some(all) => &all[(i % k) * per..][..per],
                None => {
                    protos.render(i % k, spec.shape, scratch);
                    &scratch[..]
                }
            };
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, &[i as u64]));
            let s = shift.sample(&mut rng);
            for (o, &p) in out.iter_mut().zip(proto) {
                *o = (p + s + noise(rng.next_u64())).round().clamp(0.0, 255.0) as u8;
            }
        },
    );
    Dataset::new(pixels, labels, spec.shape, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let s = SyntheticSpec::parse("3x8x6:4:20").unwrap();
        assert_eq!(s.shape, [3, 8, 6]);
        assert_eq!((s.classes, s.samples, s.test_samples()), (4, 20, 4));
        for bad in [
            "3x8:4:20",
            "3x8x6:4",
            "3x8x6:0:20",
            "3x0x6:4:20",
            "3x8x6:4:abc",
            "3x8x6:4:20:1",
            "",
        ] {
            let err = SyntheticSpec::parse(bad).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{msg}");
            assert!(msg.contains("e.g. synthetic:3x32x32:10:1000"), "{msg}");
        }
    }

    #[test]
    fn huge_specs_are_refused_before_generating() {
        // Without the budget these grew to tens of GB and aborted the process.
        crate::limits::with_memory_limit(1 << 30, || {
            for spec in [
                "1x28x28:10:99999999999",
                "1x100000x100000:10:2",
                "1x1x1:4000000000:1",
            ] {
                let err = SyntheticSpec::parse(spec).unwrap_err();
                let msg = err.to_string();
                assert!(matches!(err, Error::MemoryLimit { .. }), "{spec}: {msg}");
                assert!(err.is_input_error());
                assert!(msg.contains(&format!("synthetic:{spec}")), "{msg}");
                assert!(msg.contains("over the memory limit of 1.0 GiB"), "{msg}");
            }
            // A spec that fits still parses.
            assert!(SyntheticSpec::parse("1x28x28:10:1000").is_ok());
        });
    }

    #[test]
    fn deterministic_from_seed() {
        let s = SyntheticSpec::parse("3x8x8:5:40").unwrap();
        let (a, at) = generate(&s, 1).unwrap();
        let (b, bt) = generate(&s, 1).unwrap();
        let (c, _) = generate(&s, 2).unwrap();
        assert_eq!(a.pixels(), b.pixels());
        assert_eq!(at.pixels(), bt.pixels());
        assert_ne!(a.pixels(), c.pixels());
        assert_ne!(a.take(8).pixels(), at.take(8).pixels());
        assert_eq!((a.len(), at.len()), (40, 8));
        assert_eq!(a.shape(), [3, 8, 8]);
        assert_eq!(&a.labels()[..6], &[0, 1, 2, 3, 4, 0]);
    }

    #[test]
    fn cached_and_per_sample_prototypes_agree() {
        let s = SyntheticSpec::parse("2x7x5:3:12").unwrap();
        let protos = Prototypes::new(&s, 9);
        let a = sample_set(&s, &protos, 12, 4, true).unwrap();
        let b = sample_set(&s, &protos, 12, 4, false).unwrap();
        assert_eq!(a.pixels(), b.pixels());
    }

    #[test]
    fn noise_has_the_intended_spread() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let v: Vec<f32> = (0..100_000).map(|_| noise(rng.next_u64())).collect();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.5, "{mean}");
        assert!((var.sqrt() - NOISE_STD).abs() < 0.5, "{}", var.sqrt());
    }

    #[test]
    fn classes_are_separable_by_nearest_mean() {
        // Learnable: the nearest class mean (from train) classifies most test samples.
        let s = SyntheticSpec::parse("1x8x8:4:200").unwrap();
        let (train, test) = generate(&s, 3).unwrap();
        let per = 64;
        let mut means = vec![0f32; 4 * per];
        for i in 0..train.len() {
            let l = train.labels()[i] as usize;
            for (m, &p) in means[l * per..][..per].iter_mut().zip(train.image(i)) {
                *m += p as f32 / 50.0;
            }
        }
        let correct = (0..test.len())
            .filter(|&i| {
                let d = |k: usize| -> f32 {
                    let m = &means[k * per..][..per];
                    m.iter()
                        .zip(test.image(i))
                        .map(|(a, &b)| (a - b as f32).powi(2))
                        .sum()
                };
                let best = (0..4).min_by(|&a, &b| d(a).total_cmp(&d(b)));
                best == Some(test.labels()[i] as usize)
            })
            .count();
        assert!(correct * 10 >= test.len() * 9, "{correct}/{}", test.len());
    }
}
