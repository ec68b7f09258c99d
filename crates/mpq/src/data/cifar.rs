//! CIFAR-10 in its binary format (<https://www.cs.toronto.edu/~kriz/cifar.html>):
//! `data_batch_1.bin` .. `data_batch_5.bin` and `test_batch.bin`, each a sequence of
//! 3,073-byte records (one label byte, then 32x32x3 pixels in CHW order).

use std::path::{Path, PathBuf};

use super::{Dataset, check_labels, read_file};
use crate::{Error, Result};

const SHAPE: [usize; 3] = [3, 32, 32];
const IMAGE_BYTES: usize = 3 * 32 * 32;
const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Loads the five training batches and the test batch from `dir` or
/// `dir/cifar-10-batches-bin`. Returns (train, test, class names).
pub(super) fn load_cifar10(dir: &Path) -> Result<(Dataset, Dataset, Vec<String>)> {
    std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    let dir = resolve_dir(dir);
    let train_files: Vec<PathBuf> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .collect();
    let train = read_batches(&train_files)?;
    let test = read_batches(&[dir.join("test_batch.bin")])?;
    let names = class_names(&dir)?;
    Ok((train, test, names))
}

/// `dir` itself if it holds the batches, else its `cifar-10-batches-bin` subdirectory when
/// that does, else `dir` (so that the error names the file that is missing there).
fn resolve_dir(dir: &Path) -> PathBuf {
    let sub = dir.join("cifar-10-batches-bin");
    if !dir.join("data_batch_1.bin").exists() && sub.join("data_batch_1.bin").exists() {
        sub
    } else {
        dir.to_path_buf()
    }
}

/// Reads and concatenates batch files.
fn read_batches(files: &[PathBuf]) -> Result<Dataset> {
    // The batches are read one at a time into one set: about twice their total size.
    let total: u128 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| u128::from(m.len()))
        .sum();
    crate::limits::check_bytes_with(total.saturating_mul(2), || {
        let dir = files
            .first()
            .and_then(|f| f.parent())
            .unwrap_or(Path::new("."));
        format!("loading the CIFAR-10 batches of {}", dir.display())
    })?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for path in files {
        let bytes = read_file(path)?;
        let (mut px, lb) = parse_batch(&bytes, path)?;
        pixels.append(&mut px);
        labels.extend(lb);
    }
    Dataset::new(pixels, labels, SHAPE, 10)
}

/// Parses one batch file into pixels (CHW per image) and labels.
fn parse_batch(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, Vec<u32>)> {
    let n = bytes.len() / RECORD_BYTES;
    if n == 0 || n * RECORD_BYTES != bytes.len() {
        return Err(Error::corrupt(
            path,
            format!(
                "size {} bytes is not a positive multiple of {RECORD_BYTES} \
                 (1 label byte + {IMAGE_BYTES} pixel bytes per record)",
                bytes.len()
            ),
        ));
    }
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for rec in bytes.chunks_exact(RECORD_BYTES) {
        labels.push(u32::from(rec[0]));
        pixels.extend_from_slice(&rec[1..]);
    }
    check_labels(&labels, 10, path)?;
    Ok((pixels, labels))
}

/// Class names from `batches.meta.txt` when present (one per line), else the standard ten.
fn class_names(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join("batches.meta.txt");
    if !path.is_file() {
        return Ok(CLASS_NAMES.iter().map(|s| s.to_string()).collect());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != 10 {
        return Err(Error::corrupt(
            &path,
            format!("expected 10 class names, found {}", names.len()),
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: u8, fill: u8) -> Vec<u8> {
        let mut r = vec![label];
        r.extend((0..IMAGE_BYTES).map(|i| fill.wrapping_add((i / 1024) as u8)));
        r
    }

    fn temp_dir(tag: &str) -> PathBuf {
        crate::data::test_dir("cifar", tag)
    }

    fn write_set(dir: &Path) {
        for i in 1..=5u8 {
            let mut b = record(i, 10 * i);
            b.extend(record(9, 10 * i + 1));
            std::fs::write(dir.join(format!("data_batch_{i}.bin")), b).unwrap();
        }
        let mut t = record(0, 200);
        t.extend(record(4, 201));
        std::fs::write(dir.join("test_batch.bin"), t).unwrap();
    }

    #[test]
    fn batches_over_the_memory_limit_are_refused_before_reading() {
        let dir = temp_dir("limit");
        write_set(&dir);
        let err = crate::limits::with_memory_limit(16 << 10, || load_cifar10(&dir)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::MemoryLimit { .. }), "{msg}");
        assert!(msg.contains("CIFAR-10 batches"), "{msg}");
        assert!(crate::limits::with_memory_limit(1 << 20, || load_cifar10(&dir)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_small_batch_set() {
        let root = temp_dir("ok");
        let dir = root.join("cifar-10-batches-bin");
        std::fs::create_dir_all(&dir).unwrap();
        write_set(&dir);
        let (train, test, names) = load_cifar10(&root).unwrap();
        assert_eq!(train.len(), 10);
        assert_eq!(test.len(), 2);
        assert_eq!(train.shape(), [3, 32, 32]);
        assert_eq!(&train.labels()[..4], &[1, 9, 2, 9]);
        assert_eq!(test.labels(), &[0, 4]);
        // CHW: channel c of record "fill" has value fill + c.
        let img = test.image(1);
        assert_eq!(
            (img[0], img[1024], img[2048], img[3071]),
            (201, 202, 203, 203)
        );
        assert_eq!(names[0], "airplane");
        assert_eq!(names[9], "truck");

        std::fs::write(
            dir.join("batches.meta.txt"),
            (0..10).map(|i| format!("c{i}\n")).collect::<String>() + "\n",
        )
        .unwrap();
        let (_, _, names) = load_cifar10(&dir).unwrap();
        assert_eq!(names[3], "c3");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn rejects_wrong_size_and_missing_file() {
        let dir = temp_dir("bad");
        write_set(&dir);
        let mut t = record(0, 1);
        t.push(7);
        std::fs::write(dir.join("test_batch.bin"), t).unwrap();
        match load_cifar10(&dir) {
            Err(Error::CorruptFile { path, reason }) => {
                assert!(path.ends_with("test_batch.bin"));
                assert!(
                    reason.contains("not a positive multiple of 3073"),
                    "{reason}"
                );
            }
            other => panic!("expected corrupt error, got {other:?}"),
        }
        std::fs::write(dir.join("test_batch.bin"), record(10, 1)).unwrap();
        assert!(matches!(load_cifar10(&dir), Err(Error::CorruptFile { .. })));
        std::fs::remove_file(dir.join("data_batch_3.bin")).unwrap();
        match load_cifar10(&dir) {
            Err(Error::Io { path, err: source }) => {
                assert!(path.ends_with("data_batch_3.bin"));
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected io error, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
