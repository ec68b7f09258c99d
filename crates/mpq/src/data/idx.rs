//! MNIST in the IDX format (<http://yann.lecun.com/exdb/mnist/>): parsing of the image
//! (magic 0x00000803) and label (magic 0x00000801) files, gzipped or not, the `mnist:DIR`
//! loader and the bundled `mnist10k` subset embedded in the library.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Dataset, check_labels, read_file};
use crate::{Error, Result};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// The gzipped IDX file `NAME` of the bundled subset (`data/mnist10k/NAME` in the repository).
macro_rules! mnist10k {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/mnist10k/",
            $name
        ))
    };
}

static MNIST10K_TRAIN_IMAGES: &[u8] = mnist10k!("train-images-idx3-ubyte.gz");
static MNIST10K_TRAIN_LABELS: &[u8] = mnist10k!("train-labels-idx1-ubyte.gz");
static MNIST10K_TEST_IMAGES: &[u8] = mnist10k!("test-images-idx3-ubyte.gz");
static MNIST10K_TEST_LABELS: &[u8] = mnist10k!("test-labels-idx1-ubyte.gz");

/// Class names of MNIST: the digits "0" to "9".
pub(super) fn mnist_class_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

/// The bundled MNIST subset: 8,000 train and 2,000 test images.
pub(super) fn load_mnist10k() -> Result<(Dataset, Dataset)> {
    let dir = Path::new("<bundled mnist10k>");
    // `split` names the files in errors, as in a `mnist:DIR` folder.
    let split = |split: &str, images: &[u8], labels: &[u8]| {
        let images_path = dir.join(format!("{split}-images-idx3-ubyte.gz"));
        let labels_path = dir.join(format!("{split}-labels-idx1-ubyte.gz"));
        mnist_pair(images, &images_path, labels, &labels_path)
    };
    let train = split("train", MNIST10K_TRAIN_IMAGES, MNIST10K_TRAIN_LABELS)?;
    let test = split("test", MNIST10K_TEST_IMAGES, MNIST10K_TEST_LABELS)?;
    Ok((train, test))
}

/// Loads `DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` (also the `test-` prefix and
/// the `train-images.idx3-ubyte` spelling).
pub(super) fn load_mnist_dir(dir: &Path) -> Result<(Dataset, Dataset)> {
    std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    let load = |prefixes: &[&str]| -> Result<Dataset> {
        let img_path = find_idx(dir, prefixes, "images", "idx3")?;
        let lbl_path = find_idx(dir, prefixes, "labels", "idx1")?;
        mnist_pair(
            &read_file(&img_path)?,
            &img_path,
            &read_file(&lbl_path)?,
            &lbl_path,
        )
    };
    Ok((load(&["train"])?, load(&["t10k", "test"])?))
}

/// Finds the first existing `{prefix}-{what}-{idx}-ubyte[.gz]` or `{prefix}-{what}.{idx}-ubyte[.gz]`.
fn find_idx(dir: &Path, prefixes: &[&str], what: &str, idx: &str) -> Result<PathBuf> {
    for prefix in prefixes {
        for sep in ['-', '.'] {
            for ext in ["", ".gz"] {
                let p = dir.join(format!("{prefix}-{what}{sep}{idx}-ubyte{ext}"));
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
    }
    let wanted = dir.join(format!("{}-{what}-{idx}-ubyte", prefixes[0]));
    Err(Error::io(
        wanted,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "file not found (also tried .gz, the {}-{what}.{idx}-ubyte spelling{})",
                prefixes[0],
                if prefixes.len() > 1 {
                    format!(" and the prefix {}", prefixes[1..].join(", "))
                } else {
                    String::new()
                }
            ),
        ),
    ))
}

/// Parses one images file and one labels file into a 10-class dataset.
pub(super) fn mnist_pair(
    images: &[u8],
    img_path: &Path,
    labels: &[u8],
    lbl_path: &Path,
) -> Result<Dataset> {
    let (pixels, [n, h, w]) = parse_idx_images(&maybe_gunzip(images, img_path)?, img_path)?;
    let labels = parse_idx_labels(&maybe_gunzip(labels, lbl_path)?, lbl_path)?;
    if labels.len() != n {
        return Err(Error::corrupt(
            lbl_path,
            format!(
                "count mismatch: {} labels but {n} images in {}",
                labels.len(),
                img_path.display()
            ),
        ));
    }
    check_labels(&labels, 10, lbl_path)?;
    Dataset::new(pixels, labels, [1, h, w], 10)
}

/// Decompresses `bytes` if they start with the gzip magic, else returns them as they are.
pub(super) fn maybe_gunzip(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        // Stop one byte past the memory budget: a gzip bomb is refused, not decompressed.
        let limit = crate::limits::memory_limit()?;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(limit.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| Error::corrupt(path, format!("bad gzip data: {e}")))?;
        if out.len() as u64 > limit {
            return Err(Error::MemoryLimit {
                what: format!("decompressing {}", path.display()),
                needed: format!("more than {}", crate::limits::format_bytes(limit.into())),
                limit: crate::limits::format_bytes(limit.into()),
            });
        }
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

/// Parses an IDX header with `ndims` dimensions and checks the magic and the payload size.
/// Returns the dimensions and the payload.
fn parse_idx<'b>(
    bytes: &'b [u8],
    path: &Path,
    magic: u32,
    what: &str,
) -> Result<(Vec<usize>, &'b [u8])> {
    let ndims = (magic & 0xff) as usize;
    let header = 4 + 4 * ndims;
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if bytes.len() < 4 {
        return Err(Error::corrupt(
            path,
            format!(
                "truncated: {} bytes, too short for an IDX header",
                bytes.len()
            ),
        ));
    }
    let found = word(0);
    if found != magic {
        return Err(Error::corrupt(
            path,
            format!("bad IDX magic 0x{found:08x} (expected 0x{magic:08x} for {what})"),
        ));
    }
    if bytes.len() < header {
        return Err(Error::corrupt(
            path,
            format!(
                "truncated: {} bytes, the IDX header needs {header}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims).map(|d| word(4 + 4 * d) as usize).collect();
    let dims_str = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x");
    let expected = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let payload = &bytes[header..];
    match expected {
        Some(e) if e == payload.len() => Ok((dims, payload)),
        Some(e) => Err(Error::corrupt(
            path,
            format!(
                "{}: header says {dims_str} = {e} bytes, file has {}",
                if payload.len() < e {
                    "truncated"
                } else {
                    "trailing data"
                },
                payload.len()
            ),
        )),
        None => Err(Error::corrupt(
            path,
            format!("header dimensions {dims_str} overflow"),
        )),
    }
}

/// Parses an IDX images file (u8, 3 dims). Returns the pixels and [N, H, W].
pub(super) fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, [usize; 3])> {
    let (dims, payload) = parse_idx(bytes, path, IMAGES_MAGIC, "images")?;
    if dims[1] == 0 || dims[2] == 0 {
        return Err(Error::corrupt(
            path,
            format!("image size {}x{} has a zero dimension", dims[1], dims[2]),
        ));
    }
    Ok((payload.to_vec(), [dims[0], dims[1], dims[2]]))
}

/// Parses an IDX labels file (u8, 1 dim).
pub(super) fn parse_idx_labels(bytes: &[u8], path: &Path) -> Result<Vec<u32>> {
    let (_, payload) = parse_idx(bytes, path, LABELS_MAGIC, "labels")?;
    crate::limits::check_alloc(
        &format!("the labels of {}", path.display()),
        payload.len() as u128,
        4,
    )?;
    Ok(payload.iter().map(|&l| u32::from(l)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn images_file(n: u32, h: u32, w: u32, payload: usize) -> Vec<u8> {
        let mut v = IMAGES_MAGIC.to_be_bytes().to_vec();
        for d in [n, h, w] {
            v.extend(d.to_be_bytes());
        }
        v.extend((0..payload).map(|i| (i * 7 % 256) as u8));
        v
    }

    fn labels_file(labels: &[u8]) -> Vec<u8> {
        let mut v = LABELS_MAGIC.to_be_bytes().to_vec();
        v.extend((labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        crate::data::test_dir("idx", tag)
    }

    fn corrupt_reason(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(Error::CorruptFile { reason, .. }) => reason,
            other => panic!("expected a corrupt-file error, got {other:?}"),
        }
    }

    #[test]
    fn parses_plain_and_gzipped() {
        let p = Path::new("x");
        let raw = images_file(2, 3, 4, 24);
        let (px, dims) = parse_idx_images(&raw, p).unwrap();
        assert_eq!(dims, [2, 3, 4]);
        assert_eq!(px.len(), 24);
        assert_eq!(px[1], 7);
        let (px2, dims2) = parse_idx_images(&maybe_gunzip(&gzip(&raw), p).unwrap(), p).unwrap();
        assert_eq!((px2, dims2), (px, dims));
        let l = parse_idx_labels(&maybe_gunzip(&gzip(&labels_file(&[3, 9])), p).unwrap(), p);
        assert_eq!(l.unwrap(), vec![3, 9]);
    }

    #[test]
    fn rejects_bad_magic() {
        let p = Path::new("x");
        let reason = corrupt_reason(parse_idx_images(&labels_file(&[1, 2]), p));
        assert!(reason.contains("bad IDX magic 0x00000801"), "{reason}");
        assert!(
            reason.contains("expected 0x00000803 for images"),
            "{reason}"
        );
        let reason = corrupt_reason(parse_idx_labels(&images_file(1, 1, 1, 1), p));
        assert!(reason.contains("bad IDX magic 0x00000803"), "{reason}");
        let reason = corrupt_reason(parse_idx_labels(&[0, 0], p));
        assert!(reason.contains("truncated"), "{reason}");
    }

    #[test]
    fn rejects_truncated_and_trailing() {
        let p = Path::new("x");
        let reason = corrupt_reason(parse_idx_images(&images_file(8000, 28, 28, 123), p));
        assert_eq!(
            reason,
            "truncated: header says 8000x28x28 = 6272000 bytes, file has 123"
        );
        let reason = corrupt_reason(parse_idx_images(&images_file(1, 2, 2, 5), p));
        assert!(reason.contains("trailing data"), "{reason}");
        let reason = corrupt_reason(parse_idx_images(&images_file(1, 2, 2, 4)[..10], p));
        assert!(reason.contains("truncated"), "{reason}");
        let bad_gz = &gzip(&images_file(1, 2, 2, 4))[..12];
        let reason = corrupt_reason(maybe_gunzip(bad_gz, p));
        assert!(reason.contains("gzip"), "{reason}");
    }

    #[test]
    fn gzip_bombs_stop_at_the_memory_limit() {
        // 64 MiB of zeros compress to ~64 KiB; decompressing used to have no bound at all.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let p = Path::new("bomb.gz");
        let err = crate::limits::with_memory_limit(1 << 20, || maybe_gunzip(&bomb, p)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::MemoryLimit { .. }), "{msg}");
        assert!(
            msg.starts_with("decompressing bomb.gz needs more than 1.0 MiB"),
            "{msg}"
        );
        // Within the limit it decompresses.
        let small = gzip(&labels_file(&[1, 2, 3]));
        let out = crate::limits::with_memory_limit(1 << 20, || maybe_gunzip(&small, p)).unwrap();
        assert_eq!(out, labels_file(&[1, 2, 3]));
    }

    #[test]
    fn public_parse_reads_a_pair() {
        let images = gzip(&images_file(2, 3, 4, 24));
        let labels = labels_file(&[7, 1]);
        let d = crate::data::parse_idx(&images, Path::new("i"), &labels, Path::new("l")).unwrap();
        assert_eq!(
            (d.len(), d.shape(), d.labels()),
            (2, [1, 3, 4], &[7u32, 1][..])
        );
        assert!(crate::data::parse_idx(&labels, Path::new("i"), &images, Path::new("l")).is_err());
    }

    #[test]
    fn mnist_dir_loads_both_spellings_and_checks_counts() {
        let dir = temp_dir("ok");
        std::fs::write(
            dir.join("train-images-idx3-ubyte.gz"),
            gzip(&images_file(3, 2, 2, 12)),
        )
        .unwrap();
        std::fs::write(dir.join("train-labels.idx1-ubyte"), labels_file(&[1, 2, 3])).unwrap();
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), images_file(2, 2, 2, 8)).unwrap();
        std::fs::write(
            dir.join("t10k-labels-idx1-ubyte.gz"),
            gzip(&labels_file(&[0, 9])),
        )
        .unwrap();
        let (train, test) = load_mnist_dir(&dir).unwrap();
        assert_eq!((train.len(), test.len()), (3, 2));
        assert_eq!(train.shape(), [1, 2, 2]);
        assert_eq!(test.labels(), &[0, 9]);

        // Count mismatch.
        std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), labels_file(&[0])).unwrap();
        let reason = corrupt_reason(load_mnist_dir(&dir));
        assert!(
            reason.contains("count mismatch: 1 labels but 2 images"),
            "{reason}"
        );

        // Label out of range.
        std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), labels_file(&[0, 10])).unwrap();
        let reason = corrupt_reason(load_mnist_dir(&dir));
        assert!(reason.contains("out of range"), "{reason}");

        // Missing file.
        std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
        match load_mnist_dir(&dir) {
            Err(Error::Io { path, err: source }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
                assert!(path.ends_with("t10k-labels-idx1-ubyte"), "{path:?}");
            }
            other => panic!("expected a not-found error, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(load_mnist_dir(&dir), Err(Error::Io { .. })));
    }
}
