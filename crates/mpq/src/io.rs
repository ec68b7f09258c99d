//! File helpers: atomic writes (a failed command never leaves a half-written file) and the
//! versioned JSON envelope every mpq file format shares (`docs/file-formats.md`).
//!
//! Each format is one type implementing [`Versioned`]: written with `"format"` and
//! `"version"` as its first two fields, read by the same type. A file without those fields
//! was written by an older mpq (version 0) and loads where its meaning is unambiguous; a file
//! of another format, or of a newer version than this program reads, is an input error.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_files_atomic(&[(path.to_path_buf(), bytes.to_vec())])
}

/// Writes every `(path, bytes)` to a temporary file next to it, then renames them all into
/// place in order, so a failure leaves no half-written output (and none at all when the first
/// rename fails: put the file most likely to fail, the user's output, first).
pub(crate) fn write_files_atomic(files: &[(std::path::PathBuf, Vec<u8>)]) -> Result<()> {
    // A folder where a file should go fails every rename into it: refuse before writing
    // anything, so no earlier file of the set lands without the rest.
    if let Some((path, _)) = files.iter().find(|(p, _)| p.is_dir()) {
        return Err(Error::io(
            path,
            std::io::Error::from(std::io::ErrorKind::IsADirectory),
        ));
    }
    let mut temps: Vec<std::path::PathBuf> = Vec::with_capacity(files.len());
    let cleanup = |temps: &[std::path::PathBuf]| {
        for t in temps {
            let _ = std::fs::remove_file(t);
        }
    };
    for (path, bytes) in files {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            cleanup(&temps);
            return Err(Error::io(dir, e));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        temps.push(tmp.clone());
        if let Err(e) = std::fs::write(&tmp, bytes) {
            cleanup(&temps);
            return Err(Error::io(&tmp, e));
        }
    }
    for (i, ((path, _), tmp)) in files.iter().zip(&temps).enumerate() {
        std::fs::rename(tmp, path)
            .map_err(|e| Error::io(path, e))
            .inspect_err(|_| cleanup(&temps[i..]))?;
    }
    Ok(())
}

/// Pretty JSON of `value`, with a final newline.
pub(crate) fn json_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Reads a whole file, with the path in the error; a file over the memory budget
/// ([`crate::limits`]) is refused before it is read.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    crate::limits::read_file(path)
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

/// A JSON file format of mpq: its name, its current version, and how older versions map onto
/// it.
pub trait Versioned: Serialize + DeserializeOwned {
    /// The `"format"` field, e.g. `mpq.policy`.
    const FORMAT: &'static str;
    /// The version this program writes (and the newest it reads).
    const VERSION: u32;
    /// What the file holds, for error messages (`a policy`).
    const WHAT: &'static str;

    /// Rewrites the JSON object of a file written as `version` (older than
    /// [`Versioned::VERSION`]; 0 for files without a version) into the current layout.
    /// The default accepts it unchanged: fields added since have defaults.
    fn upgrade(
        object: &mut serde_json::Map<String, serde_json::Value>,
        version: u32,
    ) -> Result<()> {
        let _ = (object, version);
        Ok(())
    }

    /// Checks a parsed file's contents (ranges, duplicates); `source` names it in errors.
    fn check(&self, source: &str) -> Result<()> {
        let _ = source;
        Ok(())
    }

    /// The file's bytes: pretty JSON with `format` and `version` first.
    fn to_bytes(&self) -> Result<Vec<u8>> {
        json_bytes(&Envelope {
            format: Self::FORMAT,
            version: Self::VERSION,
            body: self,
        })
    }

    /// Writes the file atomically.
    fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_bytes()?)
    }

    /// Parses the file's text; `source` names it in errors.
    fn parse(bytes: &[u8], source: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(source, format!("not {} JSON file: {e}", Self::WHAT)))?;
        Self::from_value(value, source)
    }

    /// Reads the file at `path`.
    fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::parse(&read(path)?, &path.display().to_string())
    }

    /// Checks the envelope of a parsed file and converts it.
    fn from_value(value: serde_json::Value, source: &str) -> Result<Self> {
        let serde_json::Value::Object(mut object) = value else {
            return Err(Error::corrupt(
                source,
                format!("not {}: expected a JSON object", Self::WHAT),
            ));
        };
        match object.remove("format") {
            None => {}
            Some(serde_json::Value::String(f)) if f == Self::FORMAT => {}
            Some(other) => {
                let found = other
                    .as_str()
                    .map_or_else(|| other.to_string(), String::from);
                return Err(Error::corrupt(
                    source,
                    format!(
                        "is a {found} file, not {} ({} format)",
                        Self::WHAT,
                        Self::FORMAT
                    ),
                ));
            }
        }
        let version = match object.remove("version") {
            None => 0,
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| {
                    Error::corrupt(source, format!("version must be a whole number, got {v}"))
                })?,
        };
        if version > Self::VERSION {
            return Err(Error::corrupt(
                source,
                format!(
                    "{} version {version} was written by a newer mpq (this one reads versions \
                     up to {}); upgrade mpq",
                    Self::FORMAT,
                    Self::VERSION
                ),
            ));
        }
        if version < Self::VERSION {
            Self::upgrade(&mut object, version)?;
        }
        let parsed: Self = serde_json::from_value(serde_json::Value::Object(object))
            .map_err(|e| Error::corrupt(source, format!("not {}: {e}", Self::WHAT)))?;
        parsed.check(source)?;
        Ok(parsed)
    }
}

/// `format` and `version` before the fields of the body.
#[derive(Serialize)]
struct Envelope<'a, T: ?Sized> {
    format: &'static str,
    version: u32,
    #[serde(flatten)]
    body: &'a T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Thing {
        b: f64,
        a: Vec<u32>,
        #[serde(default)]
        added: Option<String>,
    }

    impl Versioned for Thing {
        const FORMAT: &'static str = "mpq.thing";
        const VERSION: u32 = 2;
        const WHAT: &'static str = "a thing";
    }

    #[test]
    fn envelope_comes_first_and_round_trips() {
        let t = Thing {
            b: 0.1,
            a: vec![3, 1],
            added: None,
        };
        let text = String::from_utf8(t.to_bytes().unwrap()).unwrap();
        assert!(
            text.starts_with("{\n  \"format\": \"mpq.thing\",\n  \"version\": 2,\n  \"b\": 0.1"),
            "{text}"
        );
        assert_eq!(Thing::parse(text.as_bytes(), "t.json").unwrap(), t);
    }

    #[test]
    fn files_without_a_version_load_and_others_are_refused() {
        let old = Thing::parse(br#"{"b": 1.5, "a": []}"#, "old.json").unwrap();
        assert_eq!(old.b, 1.5);
        for (text, want) in [
            (
                r#"{"format": "mpq.thing", "version": 3, "b": 1, "a": []}"#,
                "newer mpq",
            ),
            (r#"{"format": "mpq.other", "b": 1, "a": []}"#, "mpq.other"),
            (r#"{"version": -1, "b": 1, "a": []}"#, "whole number"),
            ("[1, 2]", "JSON object"),
            ("{", "not a thing JSON"),
            (r#"{"b": "x", "a": []}"#, "not a thing"),
        ] {
            let err = Thing::parse(text.as_bytes(), "f.json").unwrap_err();
            let msg = err.to_string();
            assert!(err.is_input_error(), "{msg}");
            assert!(
                msg.contains(want) && msg.contains("f.json"),
                "{text}: {msg}"
            );
        }
    }
}
