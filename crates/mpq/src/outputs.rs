//! Where outputs go (docs/file-formats.md, "How files are written"): an output never lands on
//! an input (the same path, or the same file through a link), and a folder of outputs is
//! replaced as one, so a run killed at any moment leaves the previous complete folder or the
//! new complete one, never a new model beside an old plan.
//!
//! A single file is written through a temporary file and a rename ([`crate::io`]); a folder
//! through a [`StagedFolder`]: the files go to a hidden sibling folder, the entries of the old
//! folder that the new set does not replace are linked into it, and the two folders trade
//! places in one `renameat2(RENAME_EXCHANGE)` on Linux. Where that is not available (another
//! system, a file system without it, a folder that holds the working directory), the files
//! are renamed into the folder one by one, each atomic on its own.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Refuses to run when an output would replace an input: every `(what, path)` of `inputs`
/// against every output path, by identity of the file (links included). Outputs that do
/// not exist yet cannot be inputs.
pub fn refuse_overwrite(inputs: &[(&str, &Path)], outputs: &[&Path]) -> Result<()> {
    for out in outputs {
        for (what, input) in inputs {
            if same_file(out, input) {
                return Err(Error::Usage(format!(
                    "the output {} is the {what} {}: mpq never writes over its inputs; choose \
                     another output path",
                    out.display(),
                    input.display()
                )));
            }
        }
    }
    Ok(())
}

/// Whether `a` and `b` name one existing file or folder (after links).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        ma.dev() == mb.dev() && ma.ino() == mb.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (ma, mb);
        matches!(
            (a.canonicalize(), b.canonicalize()),
            (Ok(x), Ok(y)) if x == y
        )
    }
}

/// A folder of outputs being written: files go to [`StagedFolder::path`]; [`StagedFolder::commit`]
/// puts them in place as one. Dropped without a commit (an error part way), the staging
/// folder is removed and the target is untouched.
#[derive(Debug)]
pub struct StagedFolder {
    target: PathBuf,
    staging: PathBuf,
    done: bool,
}

impl StagedFolder {
    /// Starts replacing the folder `target` (created if missing; an existing file there is
    /// an error). Staging folders left by killed runs of this folder are removed.
    pub fn begin(target: &Path) -> Result<StagedFolder> {
        if target.exists() && !target.is_dir() {
            return Err(Error::Usage(format!(
                "{} exists and is not a folder",
                target.display()
            )));
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let prefix = format!(".{name}.staging-");
        remove_stale(&parent, &prefix);
        let staging = parent.join(format!("{prefix}{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        }
        std::fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
        Ok(StagedFolder {
            target: target.to_path_buf(),
            staging,
            done: false,
        })
    }

    /// The folder to write into.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The folder the files end up in.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Puts the staged files in place: the old folder's other entries are linked in, then the
    /// folders trade places atomically and the old one is removed.
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        if !self.target.exists() {
            return std::fs::rename(&self.staging, &self.target)
                .map_err(|e| Error::io(&self.target, e))
                .inspect_err(|_| {
                    let _ = std::fs::remove_dir_all(&self.staging);
                });
        }
        let result = self.swap();
        let _ = std::fs::remove_dir_all(&self.staging);
        result
    }

    fn swap(&self) -> Result<()> {
        link_missing(&self.target, &self.staging)?;
        if holds_working_dir(&self.target) || !exchange(&self.staging, &self.target) {
            return move_each(&self.staging, &self.target);
        }
        Ok(())
    }
}

impl Drop for StagedFolder {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// Removes `parent/PREFIX<pid>` folders whose process is gone (Linux: no `/proc/<pid>`).
fn remove_stale(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(prefix) else {
            continue;
        };
        let alive = cfg!(not(target_os = "linux")) || Path::new("/proc").join(pid).exists();
        if !alive && pid.parse::<u32>().is_ok() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Links (hard links; copies where the file system refuses) every entry of `from` that `to`
/// lacks, recursively.
fn link_missing(from: &Path, to: &Path) -> Result<()> {
    let entries = std::fs::read_dir(from).map_err(|e| Error::io(from, e))?;
    for e in entries {
        let e = e.map_err(|err| Error::io(from, err))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let kind = e.file_type().map_err(|err| Error::io(&src, err))?;
        if kind.is_dir() {
            if !dst.exists() {
                std::fs::create_dir(&dst).map_err(|err| Error::io(&dst, err))?;
            }
            if dst.is_dir() {
                link_missing(&src, &dst)?;
            }
        } else if std::fs::symlink_metadata(&dst).is_err() {
            if kind.is_symlink() {
                #[cfg(unix)]
                {
                    let link = std::fs::read_link(&src).map_err(|err| Error::io(&src, err))?;
                    std::os::unix::fs::symlink(link, &dst).map_err(|err| Error::io(&dst, err))?;
                }
            } else if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst).map_err(|err| Error::io(&dst, err))?;
            }
        }
    }
    Ok(())
}

/// Whether the process's working directory is `dir` or inside it (swapping it would leave
/// the user's shell in a removed folder).
fn holds_working_dir(dir: &Path) -> bool {
    match (std::env::current_dir(), dir.canonicalize()) {
        (Ok(cwd), Ok(dir)) => cwd.starts_with(dir),
        _ => true,
    }
}

/// Swaps two folders in one step; false where the system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> bool {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> bool {
    false
}

/// The fallback: every staged entry renamed into `to` (each rename atomic on its own).
fn move_each(from: &Path, to: &Path) -> Result<()> {
    let entries = std::fs::read_dir(from).map_err(|e| Error::io(from, e))?;
    for e in entries {
        let e = e.map_err(|err| Error::io(from, err))?;
        let dst = to.join(e.file_name());
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && dst.is_dir() {
            move_each(&e.path(), &dst)?;
        } else {
            std::fs::rename(e.path(), &dst).map_err(|err| Error::io(&dst, err))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mpq-outputs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn an_output_on_an_input_is_refused_through_links_too() {
        let d = tmp("refuse");
        let model = d.join("m.safetensors");
        std::fs::write(&model, b"weights").unwrap();
        let link = d.join("link.safetensors");
        std::fs::hard_link(&model, &link).unwrap();
        let other = d.join("other.json");
        let inputs = [("model", model.as_path())];
        for out in [&model, &link, &d.join(".").join("m.safetensors")] {
            let e = refuse_overwrite(&inputs, &[out]).unwrap_err();
            assert!(e.is_input_error());
            assert!(
                e.to_string().contains("never writes over its inputs"),
                "{e}"
            );
        }
        refuse_overwrite(&inputs, &[&other]).unwrap();
        std::fs::write(&other, b"{}").unwrap();
        refuse_overwrite(&inputs, &[&other]).unwrap();
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_staged_folder_replaces_the_old_set_and_keeps_other_files() {
        let d = tmp("stage");
        let out = d.join("q");
        // A first set, into a folder that does not exist yet.
        let s = StagedFolder::begin(&out).unwrap();
        std::fs::write(s.path().join("model.bin"), b"old model").unwrap();
        std::fs::write(s.path().join("plan.json"), b"old plan").unwrap();
        assert!(!out.exists(), "nothing visible before the commit");
        s.commit().unwrap();
        std::fs::write(out.join("notes.txt"), b"the user's").unwrap();
        std::fs::create_dir(out.join("sub")).unwrap();
        std::fs::write(out.join("sub/x"), b"x").unwrap();
        // A second set: staged files are invisible until the commit, then all at once.
        let s = StagedFolder::begin(&out).unwrap();
        std::fs::write(s.path().join("model.bin"), b"new model").unwrap();
        assert_eq!(std::fs::read(out.join("model.bin")).unwrap(), b"old model");
        std::fs::write(s.path().join("plan.json"), b"new plan").unwrap();
        s.commit().unwrap();
        assert_eq!(std::fs::read(out.join("model.bin")).unwrap(), b"new model");
        assert_eq!(std::fs::read(out.join("plan.json")).unwrap(), b"new plan");
        assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"the user's");
        assert_eq!(std::fs::read(out.join("sub/x")).unwrap(), b"x");
        // Dropped without a commit: the target stays, the staging folder goes.
        let s = StagedFolder::begin(&out).unwrap();
        std::fs::write(s.path().join("model.bin"), b"half").unwrap();
        let staging = s.path().to_path_buf();
        drop(s);
        assert!(!staging.exists());
        assert_eq!(std::fs::read(out.join("model.bin")).unwrap(), b"new model");
        // A staging folder of a killed run (a pid that is not running) is cleaned up.
        let stale = d.join(".q.staging-4194999");
        std::fs::create_dir(&stale).unwrap();
        StagedFolder::begin(&out).unwrap().commit().unwrap();
        assert!(!stale.exists());
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "{left:?}");
        // A file in the way is refused.
        std::fs::write(d.join("f"), b"file").unwrap();
        assert!(StagedFolder::begin(&d.join("f")).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
