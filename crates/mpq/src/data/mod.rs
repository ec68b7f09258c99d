//! Datasets: loading the data references of the CLI (`mnist10k`, `mnist:DIR`, `cifar10:DIR`,
//! `imagefolder:DIR`, `synthetic:CxHxW:K:N`) into u8 [`Dataset`]s, and turning them into
//! normalised, optionally augmented `f32` batches with [`batches`].
//!
//! Everything random (splits, shuffles, augmentation, synthetic data) is driven by a seeded
//! `ChaCha8Rng`, so a run is reproducible from its seed.

mod cifar;
mod dataset;
mod idx;
mod imagefolder;
mod loader;
mod synthetic;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub use dataset::Dataset;
pub use loader::{Batch, LoaderConfig, batches, num_batches, to_batch, to_tensor};

/// Per-channel input normalisation `x = (pixel / 255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Per-channel mean, in units of `pixel / 255`.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, in units of `pixel / 255`.
    pub std: Vec<f32>,
}

impl Normalization {
    /// The usual MNIST constants: mean 0.1307, std 0.3081.
    pub fn mnist() -> Self {
        Self {
            mean: vec![0.1307],
            std: vec![0.3081],
        }
    }

    /// The usual CIFAR-10 constants (RGB).
    pub fn cifar10() -> Self {
        Self {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        }
    }

    /// The usual ImageNet constants (RGB).
    pub fn imagenet() -> Self {
        Self {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// Mean 0 and std 1 on every channel: `x = pixel / 255`.
    pub fn identity(channels: usize) -> Self {
        Self {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Number of channels this normalisation is for.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Checks that this normalisation fits images with `channels` channels and that every
    /// std is finite and positive.
    pub fn check(&self, channels: usize) -> Result<()> {
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(Error::ShapeMismatch {
                name: "normalization".into(),
                expected: format!("{channels} channels"),
                got: format!("{} means and {} stds", self.mean.len(), self.std.len()),
            });
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::config(
                "normalization",
                format!("std must be finite and positive, got {s}"),
            ));
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::config(
                "normalization",
                format!("mean must be finite, got {m}"),
            ));
        }
        Ok(())
    }

    /// The normalised value of every pixel value, channel-major: entry `c * 256 + p` is
    /// `(p / 255 - mean[c]) / std[c]`.
    pub(crate) fn lut(&self) -> Vec<f32> {
        let mut lut = Vec::with_capacity(self.mean.len() * 256);
        for (&m, &s) in self.mean.iter().zip(&self.std) {
            lut.extend((0..256).map(|p| (p as f32 / 255.0 - m) / s));
        }
        lut
    }
}

/// A loaded data reference: a train and a test set with their normalisation.
#[derive(Debug, Clone)]
pub struct DataSplits {
    /// The data reference as given, e.g. `mnist10k` or `cifar10:/data/cifar`.
    pub name: String,
    /// The training set.
    pub train: Dataset,
    /// The test (or validation) set.
    pub test: Dataset,
    /// The normalisation the models for this data expect.
    pub normalization: Normalization,
    /// One name per class, indexed by label.
    pub class_names: Vec<String>,
}

/// Options for [`load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Seed for generated data (`synthetic:`).
    pub seed: u64,
    /// Resize + centre-crop target (H, W) for `imagefolder:`; default 224x224.
    pub image_size: Option<(usize, usize)>,
}

const SCHEMES: &str = "mnist10k, mnist:DIR, cifar10:DIR, imagefolder:DIR or synthetic:CxHxW:K:N";

/// Loads a data reference (see `cli.md`, "Data references"):
///
/// - `mnist10k`: the bundled real MNIST subset (8,000 train / 2,000 test), embedded in the library;
/// - `mnist:DIR`: the four standard IDX files, gzipped or not;
/// - `cifar10:DIR`: the CIFAR-10 binary batches (`DIR` or `DIR/cifar-10-batches-bin`);
/// - `imagefolder:DIR`: `DIR/train/<class>/*.png|jpg|jpeg` and `DIR/val/<class>/...`;
/// - `synthetic:CxHxW:K:N`: N generated samples of K classes, deterministic from `opts.seed`.
pub fn load(spec: &str, opts: &LoadOptions) -> Result<DataSplits> {
    let spec = spec.trim();
    let (scheme, arg) = match spec.split_once(':') {
        Some((s, a)) => (s, Some(a)),
        None => (spec, None),
    };
    let need_dir = |arg: Option<&str>| -> Result<std::path::PathBuf> {
        match arg {
            Some(a) if !a.is_empty() => Ok(a.into()),
            _ => Err(Error::config(
                "data",
                format!("\"{spec}\" needs a directory, e.g. \"{scheme}:path/to/dir\""),
            )),
        }
    };
    let (train, test, normalization, class_names) = match (scheme, arg) {
        ("mnist10k", None) => {
            let (train, test) = idx::load_mnist10k()?;
            (
                train,
                test,
                Normalization::mnist(),
                idx::mnist_class_names(),
            )
        }
        ("mnist", a) => {
            let (train, test) = idx::load_mnist_dir(&need_dir(a)?)?;
            (
                train,
                test,
                Normalization::mnist(),
                idx::mnist_class_names(),
            )
        }
        ("cifar10", a) => {
            let (train, test, names) = cifar::load_cifar10(&need_dir(a)?)?;
            (train, test, Normalization::cifar10(), names)
        }
        ("imagefolder", a) => {
            let size = opts.image_size.unwrap_or((224, 224));
            let (train, test, names) = imagefolder::load_imagefolder(&need_dir(a)?, size)?;
            (train, test, Normalization::imagenet(), names)
        }
        ("synthetic", Some(a)) => {
            let params = synthetic::SyntheticSpec::parse(a)?;
            let (train, test) = synthetic::generate(&params, opts.seed)?;
            let names = (0..params.classes).map(|k| k.to_string()).collect();
            let norm = Normalization {
                mean: vec![0.5; params.shape[0]],
                std: vec![0.25; params.shape[0]],
            };
            (train, test, norm, names)
        }
        ("synthetic", None) => {
            return Err(Error::config(
                "data",
                format!("\"{spec}\" needs a shape, e.g. \"synthetic:3x32x32:10:1000\""),
            ));
        }
        _ => {
            return Err(Error::config(
                "data",
                format!("unknown data reference \"{spec}\" (expected {SCHEMES})"),
            ));
        }
    };
    Ok(DataSplits {
        name: spec.to_string(),
        train,
        test,
        normalization,
        class_names,
    })
}

/// Parses an MNIST-style pair of IDX files, gzipped or not (an images file, magic
/// `0x00000803`, and a labels file, magic `0x00000801`, of the same count), into a 10-class
/// data set; `images_path` and `labels_path` name them in errors. What `mnist:DIR` reads, for
/// bytes from elsewhere; decompression and allocation are held to the memory budget
/// ([`crate::limits`]).
pub fn parse_idx(
    images: &[u8],
    images_path: &std::path::Path,
    labels: &[u8],
    labels_path: &std::path::Path,
) -> Result<Dataset> {
    idx::mnist_pair(images, images_path, labels, labels_path)
}

/// Mixes a seed with stream numbers into a new, well-spread seed (SplitMix64 finaliser), so
/// that e.g. the shuffle of each epoch gets its own independent `ChaCha8Rng`.
pub(crate) fn derive_seed(seed: u64, parts: &[u64]) -> u64 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    parts.iter().fold(mix(seed), |acc, &p| {
        mix(acc.wrapping_add(0x9e37_79b9_7f4a_7c15).wrapping_add(mix(p)))
    })
}

/// Reads a whole file, mapping failure to [`Error::Io`] with the path; a file over the
/// memory budget ([`crate::limits`]) is refused before it is read.
fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    crate::limits::read_file(path)
}

/// Checks that every label is below `classes`, reporting the first offender as corrupt data.
fn check_labels(labels: &[u32], classes: usize, path: &std::path::Path) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= classes) {
        Some(i) => Err(Error::corrupt(
            path,
            format!(
                "label {} of record {i} is out of range ({classes} classes)",
                labels[i]
            ),
        )),
        None => Ok(()),
    }
}

/// A fresh, empty folder for one data-format test (`mpq-data-{format}-{tag}-…` in the
/// system temp folder, unique per process and thread).
#[cfg(test)]
fn test_dir(format: &str, tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mpq-data-{format}-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheme_is_config_error() {
        let err = load("foo:bar", &LoadOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{msg}");
        assert!(msg.contains("unknown data reference \"foo:bar\""), "{msg}");
        assert!(msg.contains("synthetic:CxHxW:K:N"), "{msg}");
        assert!(load("mnist10k:x", &LoadOptions::default()).is_err());
        assert!(load("mnist:", &LoadOptions::default()).is_err());
    }

    #[test]
    fn mnist10k_loads() {
        let d = load("mnist10k", &LoadOptions::default()).unwrap();
        assert_eq!(d.train.len(), 8000);
        assert_eq!(d.test.len(), 2000);
        assert_eq!(d.train.shape(), [1, 28, 28]);
        assert_eq!(d.test.shape(), [1, 28, 28]);
        assert_eq!(d.train.classes(), 10);
        assert!(d.train.labels().iter().all(|&l| l < 10));
        assert!(d.test.labels().iter().all(|&l| l < 10));
        assert_eq!(&d.train.labels()[..4], &[3, 8, 7, 2]);
        assert_eq!(&d.test.labels()[..4], &[8, 0, 2, 0]);
        assert_eq!(d.class_names.len(), 10);
        assert_eq!(d.class_names[7], "7");
        assert_eq!(d.normalization, Normalization::mnist());
        // Real digits: mostly background with some bright strokes.
        let img = d.train.image(0);
        assert!(img.iter().filter(|&&p| p == 0).count() > 400);
        assert!(img.iter().any(|&p| p > 200));
    }

    #[test]
    fn lut_matches_formula() {
        let n = Normalization::mnist();
        let lut = n.lut();
        assert!((lut[0] - (-0.1307 / 0.3081)).abs() < 1e-6);
        assert!((lut[255] - (1.0 - 0.1307) / 0.3081).abs() < 1e-6);
        assert!(Normalization::cifar10().check(3).is_ok());
        assert!(Normalization::cifar10().check(1).is_err());
        let bad = Normalization {
            mean: vec![0.0],
            std: vec![0.0],
        };
        assert!(bad.check(1).is_err());
    }
}
