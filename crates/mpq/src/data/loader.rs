//! Batching: turns a u8 [`Dataset`] into normalised `f32` tensors, one epoch at a time, with
//! a seeded shuffle and the standard CIFAR augmentation (random crop with 4-pixel zero padding
//! and random horizontal flip), as in torchvision's recipe for ResNet on CIFAR-10.

use candle::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Dataset, Normalization, derive_seed};
use crate::{Error, Result};

/// Zero padding of the random crop, in pixels on each side.
const PAD: usize = 4;
/// Batches with more values than this are filled in parallel.
const PARALLEL_MIN: usize = 1 << 16;
/// Stream numbers for [`derive_seed`].
const STREAM_SHUFFLE: u64 = 1;
const STREAM_AUGMENT: u64 = 2;

/// How [`batches`] cuts an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Samples per batch (the last batch may be smaller unless `drop_last`).
    pub batch_size: usize,
    /// Visit the samples in a seeded random order (different each epoch).
    pub shuffle: bool,
    /// Apply random crop (4-pixel zero padding) and horizontal flip; 3-channel images only.
    pub augment: bool,
    /// Skip the last batch when it would be smaller than `batch_size`.
    pub drop_last: bool,
    /// Seed of the shuffle and the augmentation.
    pub seed: u64,
}

impl Default for LoaderConfig {
    /// Batch size 64, no shuffle, no augmentation, keep the last batch, seed 0.
    fn default() -> Self {
        Self {
            batch_size: 64,
            shuffle: false,
            augment: false,
            drop_last: false,
            seed: 0,
        }
    }
}

/// One batch of samples.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Normalised images, f32 `[B, C, H, W]`.
    pub x: Tensor,
    /// Labels, u32 `[B]`.
    pub y: Tensor,
}

/// Number of batches [`batches`] yields for `len` samples (0 when `batch_size` is 0).
pub fn num_batches(len: usize, cfg: &LoaderConfig) -> usize {
    match cfg.batch_size {
        0 => 0,
        b if cfg.drop_last => len / b,
        b => len.div_ceil(b),
    }
}

/// The batches of `ds` for one epoch. The order and the augmentation of epoch `epoch` derive
/// from (`cfg.seed`, `epoch`) only, so results are reproducible and independent of how many
/// batches were consumed before.
///
/// Yields a single error (and nothing else) when `norm` does not fit the images or the batch
/// size is 0.
///
/// # Shapes
/// - `x`: f32 `[B, C, H, W]`, `(pixel / 255 - mean[c]) / std[c]`
/// - `y`: u32 `[B]`
pub fn batches<'a>(
    ds: &'a Dataset,
    norm: &'a Normalization,
    cfg: &'a LoaderConfig,
    epoch: usize,
    device: &'a Device,
) -> impl Iterator<Item = Result<Batch>> + 'a {
    let check = if cfg.batch_size == 0 {
        Err(Error::config("batch_size", "must be positive"))
    } else {
        norm.check(ds.shape()[0])
    };
    let (lut, pending_error) = match check {
        Ok(()) => (norm.lut(), None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let mut order: Vec<usize> = (0..ds.len()).collect();
    if cfg.shuffle {
        let seed = derive_seed(cfg.seed, &[STREAM_SHUFFLE, epoch as u64]);
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    }
    BatchIter {
        ds,
        cfg,
        device,
        epoch,
        order,
        lut,
        pending_error,
        next: 0,
        total: num_batches(ds.len(), cfg),
    }
}

/// The normalised images at `indices` as one f32 `[B, C, H, W]` tensor (no augmentation).
pub fn to_tensor(
    ds: &Dataset,
    indices: &[usize],
    norm: &Normalization,
    device: &Device,
) -> Result<Tensor> {
    norm.check(ds.shape()[0])?;
    make_x(ds, indices, &norm.lut(), None, device)
}

/// The images (as in [`to_tensor`]) and labels at `indices`.
pub fn to_batch(
    ds: &Dataset,
    indices: &[usize],
    norm: &Normalization,
    device: &Device,
) -> Result<Batch> {
    Ok(Batch {
        x: to_tensor(ds, indices, norm, device)?,
        y: make_y(ds, indices, device)?,
    })
}

struct BatchIter<'a> {
    ds: &'a Dataset,
    cfg: &'a LoaderConfig,
    device: &'a Device,
    epoch: usize,
    order: Vec<usize>,
    lut: Vec<f32>,
    pending_error: Option<Error>,
    next: usize,
    total: usize,
}

impl Iterator for BatchIter<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending_error.take() {
            self.next = self.total;
            return Some(Err(e));
        }
        if self.next >= self.total {
            return None;
        }
        let b = self.cfg.batch_size;
        let start = self.next * b;
        let idx = &self.order[start..(start + b).min(self.order.len())];
        let aug = if self.cfg.augment && self.ds.shape()[0] == 3 {
            let seed = derive_seed(
                self.cfg.seed,
                &[STREAM_AUGMENT, self.epoch as u64, self.next as u64],
            );
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            Some(
                idx.iter()
                    .map(|_| Aug::random(&mut rng))
                    .collect::<Vec<_>>(),
            )
        } else {
            None
        };
        self.next += 1;
        let batch = make_x(self.ds, idx, &self.lut, aug.as_deref(), self.device).and_then(|x| {
            Ok(Batch {
                x,
                y: make_y(self.ds, idx, self.device)?,
            })
        });
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.total - self.next + usize::from(self.pending_error.is_some());
        (n, Some(n))
    }
}

/// Augmentation of one sample: crop offset `(dy, dx)` in `0..=2 * PAD` within the padded
/// image, then an optional horizontal flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Aug {
    dy: usize,
    dx: usize,
    flip: bool,
}

impl Aug {
    fn random(rng: &mut ChaCha8Rng) -> Self {
        Self {
            dy: rng.random_range(0..=2 * PAD),
            dx: rng.random_range(0..=2 * PAD),
            flip: rng.random_bool(0.5),
        }
    }
}

/// Builds the image tensor in a single pass over the pixels (table lookup per pixel).
fn make_x(
    ds: &Dataset,
    indices: &[usize],
    lut: &[f32],
    aug: Option<&[Aug]>,
    device: &Device,
) -> Result<Tensor> {
    let [c, h, w] = ds.shape();
    let per = c * h * w;
    let mut x = vec![0f32; indices.len() * per];
    let fill = |(k, out): (usize, &mut [f32])| {
        let src = ds.image(indices[k]);
        match aug {
            Some(a) => fill_augmented(src, [c, h, w], a[k], lut, out),
            None => fill_plain(src, [c, h, w], lut, out),
        }
    };
    if x.len() >= PARALLEL_MIN {
        x.par_chunks_mut(per).enumerate().for_each(fill);
    } else {
        x.chunks_mut(per).enumerate().for_each(fill);
    }
    Ok(Tensor::from_vec(x, (indices.len(), c, h, w), device)?)
}

fn make_y(ds: &Dataset, indices: &[usize], device: &Device) -> Result<Tensor> {
    let y: Vec<u32> = indices.iter().map(|&i| ds.labels()[i]).collect();
    Ok(Tensor::from_vec(y, indices.len(), device)?)
}

/// `out[c, y, x] = lut[c * 256 + src[c, y, x]]`.
fn fill_plain(src: &[u8], [c, h, w]: [usize; 3], lut: &[f32], out: &mut [f32]) {
    let plane = h * w;
    for ch in 0..c {
        let table = &lut[ch * 256..][..256];
        let s = &src[ch * plane..][..plane];
        for (o, &p) in out[ch * plane..][..plane].iter_mut().zip(s) {
            *o = table[p as usize];
        }
    }
}

/// Crop of the zero-padded image at `(dy, dx)`, then optional flip:
/// `out[c, y, x] = padded[c, y + dy, x' + dx]` with `x' = W - 1 - x` when flipping.
/// Pixels from the padding are 0 before normalisation.
fn fill_augmented(src: &[u8], [c, h, w]: [usize; 3], a: Aug, lut: &[f32], out: &mut [f32]) {
    let plane = h * w;
    for ch in 0..c {
        let table = &lut[ch * 256..][..256];
        let s = &src[ch * plane..][..plane];
        let o = &mut out[ch * plane..][..plane];
        for y in 0..h {
            let row = &mut o[y * w..][..w];
            let sy = (y + a.dy).wrapping_sub(PAD);
            if sy >= h {
                row.fill(table[0]);
                continue;
            }
            let srow = &s[sy * w..][..w];
            for (x, v) in row.iter_mut().enumerate() {
                let xf = if a.flip { w - 1 - x } else { x };
                let sx = (xf + a.dx).wrapping_sub(PAD);
                *v = if sx < w {
                    table[srow[sx] as usize]
                } else {
                    table[0]
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize, shape: [usize; 3]) -> Dataset {
        let per: usize = shape.iter().product();
        let pixels = (0..n * per).map(|i| (i % 256) as u8).collect();
        let labels = (0..n as u32).collect();
        Dataset::new(pixels, labels, shape, n).unwrap()
    }

    fn epoch_labels(ds: &Dataset, cfg: &LoaderConfig, epoch: usize) -> Vec<u32> {
        let dev = Device::Cpu;
        let norm = Normalization::identity(ds.shape()[0]);
        batches(ds, &norm, cfg, epoch, &dev)
            .flat_map(|b| b.unwrap().y.to_vec1::<u32>().unwrap())
            .collect()
    }

    /// An identity table: the "normalised" value is the pixel value.
    fn id_lut(c: usize) -> Vec<f32> {
        (0..c).flat_map(|_| (0..256).map(|p| p as f32)).collect()
    }

    #[test]
    fn shuffle_is_reproducible_and_complete() {
        let ds = toy(53, [1, 2, 2]);
        let cfg = LoaderConfig {
            batch_size: 8,
            shuffle: true,
            seed: 5,
            ..Default::default()
        };
        let a = epoch_labels(&ds, &cfg, 0);
        assert_eq!(a, epoch_labels(&ds, &cfg, 0));
        assert_ne!(a, epoch_labels(&ds, &cfg, 1));
        let other_seed = LoaderConfig {
            seed: 6,
            ..cfg.clone()
        };
        assert_ne!(a, epoch_labels(&ds, &other_seed, 0));
        assert_ne!(a, (0..53).collect::<Vec<u32>>());
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..53).collect::<Vec<u32>>());
        assert_eq!(num_batches(53, &cfg), 7);
        assert_eq!(
            batches(&ds, &Normalization::identity(1), &cfg, 0, &Device::Cpu).count(),
            7
        );

        let plain = LoaderConfig {
            shuffle: false,
            ..cfg.clone()
        };
        assert_eq!(epoch_labels(&ds, &plain, 3), (0..53).collect::<Vec<u32>>());

        let drop = LoaderConfig {
            drop_last: true,
            ..cfg
        };
        assert_eq!(num_batches(53, &drop), 6);
        assert_eq!(epoch_labels(&ds, &drop, 0).len(), 48);
    }

    #[test]
    fn normalises_hand_case() {
        let ds = Dataset::new(vec![0, 255, 51, 102], vec![0, 1], [1, 1, 2], 2).unwrap();
        let norm = Normalization::mnist();
        let b = to_batch(&ds, &[1, 0], &norm, &Device::Cpu).unwrap();
        assert_eq!(b.x.dims(), &[2, 1, 1, 2]);
        assert_eq!(b.y.to_vec1::<u32>().unwrap(), vec![1, 0]);
        let x = b.x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let f = |p: f32| (p / 255.0 - 0.1307) / 0.3081;
        let want = [f(51.0), f(102.0), f(0.0), f(255.0)];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{x:?} vs {want:?}");
        }
        assert!((want[3] - 2.821_487).abs() < 1e-5);

        // Per-channel constants on a 3-channel image.
        let ds = Dataset::new(vec![255, 0, 51], vec![0], [3, 1, 1], 1).unwrap();
        let n = Normalization {
            mean: vec![0.5, 0.0, 0.2],
            std: vec![0.5, 2.0, 0.1],
        };
        let x = to_tensor(&ds, &[0], &n, &Device::Cpu).unwrap();
        let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            (x[0] - 1.0).abs() < 1e-6 && x[1].abs() < 1e-6 && x[2].abs() < 1e-5,
            "{x:?}"
        );
    }

    #[test]
    fn mismatched_normalization_errors_once() {
        let ds = toy(4, [3, 2, 2]);
        let cfg = LoaderConfig::default();
        let out: Vec<_> = batches(&ds, &Normalization::mnist(), &cfg, 0, &Device::Cpu).collect();
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], Err(Error::ShapeMismatch { .. })));
        let zero = LoaderConfig {
            batch_size: 0,
            ..cfg
        };
        let out: Vec<_> = batches(&ds, &Normalization::cifar10(), &zero, 0, &Device::Cpu).collect();
        assert_eq!(out.len(), 1);
        assert!(out[0].is_err());
    }

    #[test]
    fn flip_and_crop_move_pixels_right() {
        let (c, h, w) = (3, 5, 6);
        let src: Vec<u8> = (1..=(c * h * w) as u8).collect(); // all distinct and non-zero
        let lut = id_lut(c);
        let mut out = vec![0f32; src.len()];
        let run = |a: Aug, out: &mut Vec<f32>| {
            fill_augmented(&src, [c, h, w], a, &lut, out);
            out.iter().map(|&v| v as u8).collect::<Vec<u8>>()
        };
        // Centre crop, no flip: identity.
        assert_eq!(
            run(
                Aug {
                    dy: PAD,
                    dx: PAD,
                    flip: false
                },
                &mut out
            ),
            src
        );
        // Flip only: each row reversed; same multiset.
        let f = run(
            Aug {
                dy: PAD,
                dx: PAD,
                flip: true,
            },
            &mut out,
        );
        assert_eq!(f[0], src[w - 1]);
        assert_eq!(f[w - 1], src[0]);
        let (mut a, mut b) = (f.clone(), src.clone());
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
        // Shift by (dy, dx) = (+1, -2): one row and two columns of padding per channel.
        let s = run(
            Aug {
                dy: PAD + 1,
                dx: PAD - 2,
                flip: false,
            },
            &mut out,
        );
        let zeros = s.iter().filter(|&&p| p == 0).count();
        assert_eq!(zeros, c * (w + 2 * (h - 1)));
        assert_eq!(s[2], src[w]); // out[0,0,2] = src[0,1,0]
        let kept = s.iter().filter(|&&p| p != 0).count();
        assert_eq!(kept, c * (h - 1) * (w - 2));
        // Full padding crop: everything from the padding.
        let z = run(
            Aug {
                dy: 0,
                dx: 2 * PAD,
                flip: true,
            },
            &mut out,
        );
        // Rows 0..PAD come from the padding; in the other rows, PAD columns do.
        assert_eq!(
            z.iter().filter(|&&p| p == 0).count(),
            c * (PAD * w + (h - PAD) * PAD)
        );
    }

    #[test]
    fn augmentation_is_seeded_and_skips_grey_images() {
        let dev = Device::Cpu;
        let ds = toy(20, [3, 8, 8]);
        let norm = Normalization::identity(3);
        let cfg = LoaderConfig {
            batch_size: 20,
            augment: true,
            seed: 1,
            ..Default::default()
        };
        let get = |cfg: &LoaderConfig, epoch: usize| {
            let b = batches(&ds, &norm, cfg, epoch, &dev)
                .next()
                .unwrap()
                .unwrap();
            b.x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let plain = to_tensor(&ds, &(0..20).collect::<Vec<_>>(), &norm, &dev).unwrap();
        let plain = plain.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(get(&cfg, 0), get(&cfg, 0));
        assert_ne!(get(&cfg, 0), get(&cfg, 1));
        assert_ne!(get(&cfg, 0), plain);
        let grey = toy(4, [1, 8, 8]);
        let gnorm = Normalization::identity(1);
        let b = batches(&grey, &gnorm, &cfg, 0, &dev)
            .next()
            .unwrap()
            .unwrap();
        let want = to_tensor(&grey, &[0, 1, 2, 3], &gnorm, &dev).unwrap();
        let diff = (b.x - want).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }
}
