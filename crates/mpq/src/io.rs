//! Small file helpers: atomic writes, so a failed command never leaves a half-written file.

use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a whole file, with the path in the error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads the UTF-8 text file at `path` and parses it with `parse(text, source)`, `source`
/// being the path as it names the file in errors; `what` names the kind of file in the
/// error for other bytes (`a lookup table` gives "a lookup table must be UTF-8 text").
pub(crate) fn parse_file<T>(
    path: &Path,
    what: &str,
    parse: impl FnOnce(&str, &str) -> Result<T>,
) -> Result<T> {
    let text = String::from_utf8(read(path)?)
        .map_err(|_| Error::corrupt(path, format!("{what} must be UTF-8 text")))?;
    parse(&text, &path.display().to_string())
}
