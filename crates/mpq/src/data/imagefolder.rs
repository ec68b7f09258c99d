//! `imagefolder:DIR`: `DIR/train/<class>/*.png|jpg|jpeg` and `DIR/val/<class>/...`, decoded to
//! RGB, resized (shorter side to size * 256 / 224, bilinear) and centre-cropped, as in the
//! standard ImageNet evaluation transform.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use super::Dataset;
use crate::{Error, Result};

/// Loads `dir/train` and `dir/val` at `size` = (H, W). Returns (train, val, class names).
pub(super) fn load_imagefolder(
    dir: &Path,
    size: (usize, usize),
) -> Result<(Dataset, Dataset, Vec<String>)> {
    if size.0 == 0 || size.1 == 0 {
        return Err(Error::config(
            "image_size",
            format!("must be positive, got {}x{}", size.0, size.1),
        ));
    }
    std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    let train_dir = dir.join("train");
    let val_dir = dir.join("val");
    let classes = class_dirs(&train_dir)?;
    if classes.is_empty() {
        return Err(Error::config(
            "data",
            format!(
                "no class directories in {} (expected train/<class>/*.png|jpg)",
                train_dir.display()
            ),
        ));
    }
    let val_classes = class_dirs(&val_dir)?;
    if val_classes != classes {
        let a: BTreeSet<&String> = classes.iter().collect();
        let b: BTreeSet<&String> = val_classes.iter().collect();
        let only_train: Vec<&str> = a.difference(&b).map(|s| s.as_str()).collect();
        let only_val: Vec<&str> = b.difference(&a).map(|s| s.as_str()).collect();
        return Err(Error::config(
            "data",
            format!(
                "{} and {} must have the same class directories \
                 (only in train: {only_train:?}, only in val: {only_val:?})",
                train_dir.display(),
                val_dir.display()
            ),
        ));
    }
    let train = load_split(&train_dir, &classes, size)?;
    let val = load_split(&val_dir, &classes, size)?;
    Ok((train, val, classes))
}

/// Sorted names of the subdirectories of `dir`.
fn class_dirs(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Sorted image files (png, jpg, jpeg; any case) directly in `dir`.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if path.is_file() && matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg")) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Decodes every image of every class under `dir`, in class then file-name order.
fn load_split(dir: &Path, classes: &[String], size: (usize, usize)) -> Result<Dataset> {
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        for f in image_files(&dir.join(class))? {
            files.push((f, label as u32));
        }
    }
    if files.is_empty() {
        return Err(Error::config(
            "data",
            format!("no images (png, jpg, jpeg) under {}", dir.display()),
        ));
    }
    // Decoded images, then their concatenation; and per worker one image resized to cover
    // the target (size * 256 / 224 per side, more for other aspect ratios).
    let per = crate::limits::elements(&[3, size.0, size.1]);
    let threads = rayon::current_num_threads() as u128;
    let needed = per
        .saturating_mul(2 * files.len() as u128)
        .saturating_add(per.saturating_mul(2).saturating_mul(threads));
    crate::limits::check_bytes_with(needed, || {
        format!(
            "{} images of 3x{}x{} under {}",
            files.len(),
            size.0,
            size.1,
            dir.display()
        )
    })?;
    // Each worker's share of the budget (read here: a scoped budget is the caller's thread's).
    let share = crate::limits::memory_limit()? / (threads as u64).max(1);
    let images: Vec<Vec<u8>> = files
        .par_iter()
        .map(|(path, _)| decode(path, size, share))
        .collect::<Result<_>>()?;
    let labels = files.iter().map(|(_, l)| *l).collect();
    Dataset::new(images.concat(), labels, [3, size.0, size.1], classes.len())
}

/// Decodes one file to RGB, resizes so that it covers `size` * 256 / 224 (the shorter side for
/// a square target) and centre-crops to `size`. Returns CHW pixels.
/// `share` is the memory this worker may use (bytes).
fn decode(path: &Path, (h, w): (usize, usize), share: u64) -> Result<Vec<u8>> {
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    // The decoder's own allocation limit, within the memory budget shared by the workers.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(limits.max_alloc.map_or(share, |m| m.min(share)));
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| Error::corrupt(path, format!("cannot decode image: {e}")))?
        .to_rgb8();
    let (iw, ih) = (img.width() as f64, img.height() as f64);
    if iw == 0.0 || ih == 0.0 {
        return Err(Error::corrupt(path, "image has no pixels"));
    }
    let rh = (h as f64 * 256.0 / 224.0).round();
    let rw = (w as f64 * 256.0 / 224.0).round();
    let scale = (rh / ih).max(rw / iw);
    let nw = ((iw * scale).round() as u32).max(w as u32);
    let nh = ((ih * scale).round() as u32).max(h as u32);
    // An extreme aspect ratio resizes to a huge image: RGB8 plus the f32 intermediate.
    let resize_bytes = u128::from(nw) * u128::from(nh) * 3 * 5;
    if resize_bytes > u128::from(share) {
        return Err(Error::MemoryLimit {
            what: format!(
                "resizing {} ({}x{}) to {nw}x{nh}",
                path.display(),
                img.width(),
                img.height()
            ),
            needed: crate::limits::format_bytes(resize_bytes),
            limit: format!(
                "{} (one worker's share)",
                crate::limits::format_bytes(share.into())
            ),
        });
    }
    let resized = image::imageops::resize(&img, nw, nh, FilterType::Triangle);
    let (x0, y0) = ((nw as usize - w) / 2, (nh as usize - h) / 2);
    let mut out = vec![0u8; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            let p = resized.get_pixel((x0 + x) as u32, (y0 + y) as u32).0;
            for c in 0..3 {
                out[(c * h + y) * w + x] = p[c];
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        crate::data::test_dir("imagefolder", tag)
    }

    fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
            .save(path)
            .unwrap();
    }

    #[test]
    fn loads_two_classes() {
        let root = temp_dir("ok");
        for split in ["train", "val"] {
            write_png(&root.join(split).join("cat/a.png"), 12, 10, [200, 10, 30]);
            write_png(&root.join(split).join("cat/b.PNG"), 9, 9, [201, 11, 31]);
            write_png(&root.join(split).join("dog/a.png"), 10, 20, [5, 100, 250]);
            write_png(&root.join(split).join("dog/b.png"), 8, 8, [6, 101, 251]);
        }
        std::fs::write(root.join("train/dog/notes.txt"), "ignored").unwrap();
        let (train, val, names) = load_imagefolder(&root, (8, 8)).unwrap();
        assert_eq!(names, vec!["cat".to_string(), "dog".to_string()]);
        assert_eq!(train.len(), 4);
        assert_eq!(val.len(), 4);
        assert_eq!(train.shape(), [3, 8, 8]);
        assert_eq!(train.classes(), 2);
        assert_eq!(train.labels(), &[0, 0, 1, 1]);
        // Uniform images stay uniform; CHW layout.
        let img = train.image(2);
        assert!(img[..64].iter().all(|&p| p == 5));
        assert!(img[64..128].iter().all(|&p| p == 100));
        assert!(img[128..].iter().all(|&p| p == 250));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn huge_sizes_and_aspect_ratios_are_refused() {
        let root = temp_dir("huge");
        for split in ["train", "val"] {
            write_png(&root.join(split).join("cat/a.png"), 4000, 1, [1, 2, 3]);
        }
        crate::limits::with_memory_limit(64 << 20, || {
            // --image-size 100000x100000: 30 GB per image.
            let err = load_imagefolder(&root, (100_000, 100_000)).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::MemoryLimit { .. }), "{msg}");
            assert!(msg.contains("1 images of 3x100000x100000"), "{msg}");
            // A 4000x1 image covering 224x224 resized to 1024000x256 (786 MB) first.
            let err = load_imagefolder(&root, (224, 224)).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::MemoryLimit { .. }), "{msg}");
            assert!(msg.contains("to 1024000x256"), "{msg}");
        });
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn errors_name_the_problem() {
        let root = temp_dir("bad");
        std::fs::create_dir_all(root.join("train")).unwrap();
        std::fs::create_dir_all(root.join("val")).unwrap();
        let msg = load_imagefolder(&root, (8, 8)).unwrap_err().to_string();
        assert!(msg.contains("no class directories"), "{msg}");
        std::fs::create_dir_all(root.join("train/cat")).unwrap();
        std::fs::create_dir_all(root.join("val/cat")).unwrap();
        let msg = load_imagefolder(&root, (8, 8)).unwrap_err().to_string();
        assert!(msg.contains("no images"), "{msg}");
        write_png(&root.join("train/cat/a.png"), 4, 4, [1, 2, 3]);
        std::fs::create_dir_all(root.join("val/dog")).unwrap();
        let msg = load_imagefolder(&root, (8, 8)).unwrap_err().to_string();
        assert!(msg.contains("only in val: [\"dog\"]"), "{msg}");
        std::fs::remove_dir_all(root.join("val")).unwrap();
        let err = load_imagefolder(&root, (8, 8)).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        std::fs::write(root.join("train/cat/b.jpg"), b"not a jpeg").unwrap();
        std::fs::create_dir_all(root.join("val/cat")).unwrap();
        write_png(&root.join("val/cat/a.png"), 4, 4, [1, 2, 3]);
        let err = load_imagefolder(&root, (8, 8)).unwrap_err();
        assert!(matches!(err, Error::CorruptFile { .. }), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
