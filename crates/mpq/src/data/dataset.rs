//! [`Dataset`]: images kept as u8 pixels (CHW per image) with u32 labels, plus subsetting and
//! a seeded hold-out split.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// Images stored as u8 pixels, CHW per image, plus u32 labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    pixels: Vec<u8>,
    labels: Vec<u32>,
    shape: [usize; 3],
    classes: usize,
}

impl Dataset {
    /// Builds a dataset from `labels.len()` images of `shape` = [C, H, W] stored back to back
    /// in `pixels`.
    ///
    /// Fails if a dimension or `classes` is zero, if `pixels` does not hold exactly
    /// `labels.len() * C * H * W` bytes, or if a label is not below `classes`.
    pub fn new(
        pixels: Vec<u8>,
        labels: Vec<u32>,
        shape: [usize; 3],
        classes: usize,
    ) -> Result<Self> {
        if shape.contains(&0) {
            return Err(Error::config(
                "data",
                format!("image shape {shape:?} has a zero dimension"),
            ));
        }
        if classes == 0 {
            return Err(Error::config("data", "a dataset needs at least one class"));
        }
        let per_image = shape[0]
            .checked_mul(shape[1])
            .and_then(|p| p.checked_mul(shape[2]));
        let expected = per_image.and_then(|p| labels.len().checked_mul(p));
        if expected != Some(pixels.len()) {
            return Err(Error::ShapeMismatch {
                name: "dataset pixels".into(),
                expected: format!(
                    "{} images x {}x{}x{} = {} bytes",
                    labels.len(),
                    shape[0],
                    shape[1],
                    shape[2],
                    expected.map_or_else(|| "overflow".to_string(), |e| e.to_string())
                ),
                got: format!("{} bytes", pixels.len()),
            });
        }
        if let Some(i) = labels.iter().position(|&l| l as usize >= classes) {
            return Err(Error::config(
                "data",
                format!(
                    "label {} of sample {i} is not below the class count {classes}",
                    labels[i]
                ),
            ));
        }
        Ok(Self {
            pixels,
            labels,
            shape,
            classes,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Shape of one image, [C, H, W].
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Number of classes; every label is below it.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// All labels, in order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Bytes per image, C * H * W.
    pub fn image_len(&self) -> usize {
        self.shape[0] * self.shape[1] * self.shape[2]
    }

    /// Pixels of image `i`, CHW.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// All pixels, image after image.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// A copy of the images at `indices`, in the given order (repeats allowed).
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        Dataset {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            shape: self.shape,
            classes: self.classes,
        }
    }

    /// The first `n` images (all of them if there are fewer), in file order.
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            pixels: self.pixels[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            shape: self.shape,
            classes: self.classes,
        }
    }

    /// Deterministic split: the indices are shuffled with `seed`, the first `n_holdout`
    /// (at most `len`) form the second set and the rest the first. Both sets keep file order.
    pub fn split_holdout(&self, n_holdout: usize, seed: u64) -> (Dataset, Dataset) {
        let n_holdout = n_holdout.min(self.len());
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let (held, kept) = order.split_at_mut(n_holdout);
        held.sort_unstable();
        kept.sort_unstable();
        (self.subset(kept), self.subset(held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_shapes_are_errors() {
        // shape[0] * shape[1] * shape[2] overflowed (a panic in debug builds).
        let err = Dataset::new(vec![], vec![], [usize::MAX, 2, 2], 1).unwrap_err();
        assert!(err.to_string().contains("overflow"), "{err}");
    }

    fn toy(n: usize) -> Dataset {
        let pixels = (0..n * 4).map(|i| (i % 251) as u8).collect();
        let labels = (0..n as u32).map(|i| i % 3).collect();
        Dataset::new(pixels, labels, [1, 2, 2], 3).unwrap()
    }

    #[test]
    fn new_validates() {
        assert!(Dataset::new(vec![0; 7], vec![0, 1], [1, 2, 2], 2).is_err());
        assert!(Dataset::new(vec![0; 8], vec![0, 2], [1, 2, 2], 2).is_err());
        assert!(Dataset::new(vec![0; 8], vec![0, 1], [0, 2, 2], 2).is_err());
        assert!(Dataset::new(vec![], vec![], [1, 2, 2], 0).is_err());
        let d = Dataset::new(vec![], vec![], [1, 2, 2], 2).unwrap();
        assert!(d.is_empty());
    }

    #[test]
    fn subset_and_take() {
        let d = toy(5);
        assert_eq!(d.image(2), &[8, 9, 10, 11]);
        let s = d.subset(&[3, 1]);
        assert_eq!(s.len(), 2);
        assert_eq!(s.image(0), d.image(3));
        assert_eq!(s.image(1), d.image(1));
        assert_eq!(s.labels(), &[0, 1]);
        let t = d.take(2);
        assert_eq!(t.labels(), &d.labels()[..2]);
        assert_eq!(t.pixels(), &d.pixels()[..8]);
        assert_eq!(d.take(99).len(), 5);
    }

    #[test]
    fn split_holdout_is_deterministic_partition() {
        let d = toy(50);
        let (a, b) = d.split_holdout(10, 7);
        let (a2, b2) = d.split_holdout(10, 7);
        assert_eq!(a.len(), 40);
        assert_eq!(b.len(), 10);
        assert_eq!(a.pixels(), a2.pixels());
        assert_eq!(b.pixels(), b2.pixels());
        let (_, b3) = d.split_holdout(10, 8);
        assert_ne!(b.pixels(), b3.pixels());
        // Together the two sets hold every image exactly once (images are distinct by their
        // first pixel here).
        let mut firsts: Vec<u8> = (0..a.len())
            .map(|i| a.image(i)[0])
            .chain((0..b.len()).map(|i| b.image(i)[0]))
            .collect();
        firsts.sort_unstable();
        let mut all: Vec<u8> = (0..d.len()).map(|i| d.image(i)[0]).collect();
        all.sort_unstable();
        assert_eq!(firsts, all);
        assert_eq!(d.split_holdout(99, 1).1.len(), 50);
    }
}
