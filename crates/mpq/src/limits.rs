//! Resource limits: a process-wide memory budget that every loader checks *before* it
//! allocates, so a corrupt or hostile file (a shape of 10^12 elements, a gzip bomb, a class
//! count of a billion) is refused with one clear [`Error::MemoryLimit`] (an input error, exit
//! code 2) instead of aborting the process with "memory allocation failed".
//!
//! The budget is, in order of precedence:
//!
//! 1. the value of [`with_memory_limit`] on the current thread (scoped; for tests and embedders),
//! 2. the value set by [`set_memory_limit`] (the CLI's `--memory-limit`),
//! 3. the environment variable `MPQ_MEMORY_LIMIT` (bytes, or with a suffix `K`, `M`, `G`, `T`
//!    in powers of 1024, e.g. `512M`, `4G`; read once),
//! 4. half of the machine's memory (`MemTotal` of `/proc/meminfo`; 8 GiB when that cannot be
//!    read).
//!
//! A check is about one allocation (or one group of allocations that live together): it
//! does not track what is already allocated.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// The environment variable that sets the budget (see the module documentation).
pub const ENV_VAR: &str = "MPQ_MEMORY_LIMIT";

/// The budget when the machine's memory cannot be read: 8 GiB.
const FALLBACK_LIMIT: u64 = 8 << 30;

/// The value of [`set_memory_limit`]; 0 when unset.
static LIMIT: AtomicU64 = AtomicU64::new(0);

/// `MPQ_MEMORY_LIMIT`, parsed once (`Err` holds the message for an invalid value).
static FROM_ENV: OnceLock<std::result::Result<Option<u64>, String>> = OnceLock::new();

/// Half of the machine's memory, read once.
static MACHINE_DEFAULT: OnceLock<u64> = OnceLock::new();

thread_local! {
    /// The scoped budget of [`with_memory_limit`] on this thread; 0 when none.
    static SCOPED: Cell<u64> = const { Cell::new(0) };
}

/// Sets the process-wide memory budget in bytes (what `--memory-limit` sets); 0 goes back to
/// the default (`MPQ_MEMORY_LIMIT`, else half of the machine's memory).
pub fn set_memory_limit(bytes: u64) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// Runs `f` with a memory budget of `bytes` on the current thread only (checks made on other
/// threads, such as a thread pool's workers, keep the process-wide budget). Restores the
/// previous scoped budget afterwards, even if `f` panics.
pub fn with_memory_limit<T>(bytes: u64, f: impl FnOnce() -> T) -> T {
    struct Restore(u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPED.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SCOPED.with(|s| s.replace(bytes)));
    f()
}

/// The memory budget in bytes in effect on this thread; an invalid `MPQ_MEMORY_LIMIT` is an
/// [`Error::InvalidConfig`].
pub fn memory_limit() -> Result<u64> {
    let scoped = SCOPED.with(Cell::get);
    if scoped > 0 {
        return Ok(scoped);
    }
    let set = LIMIT.load(Ordering::Relaxed);
    if set > 0 {
        return Ok(set);
    }
    let env = FROM_ENV.get_or_init(|| match std::env::var(ENV_VAR) {
        Ok(v) => parse_size(&v).map(Some).map_err(|e| match e {
            Error::InvalidConfig { reason, .. } => reason,
            e => e.to_string(),
        }),
        Err(_) => Ok(None),
    });
    match env {
        Ok(Some(bytes)) => Ok(*bytes),
        Ok(None) => Ok(*MACHINE_DEFAULT.get_or_init(machine_default)),
        Err(msg) => Err(Error::config(ENV_VAR, msg.clone())),
    }
}

/// Half of `MemTotal` in `/proc/meminfo`, else [`FALLBACK_LIMIT`].
fn machine_default() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text))
        .map_or(FALLBACK_LIMIT, |total| total / 2)
}

/// The `MemTotal:` line of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    let unit = match words.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(unit).filter(|&b| b > 0)
}

/// Parses a size: a whole number of bytes, or one with a suffix `K`, `M`, `G` or `T` (powers of
/// 1024; `KB`, `KiB` and lower case are accepted too), e.g. `1073741824`, `512M`, `4G`.
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = |why: &str| {
        Error::config(
            "memory limit",
            format!("{text:?} {why} (expected bytes or a size such as 512M, 4G)"),
        )
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let value: u64 = digits.parse().map_err(|_| bad("is not a size"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad("has an unknown unit")),
    };
    let bytes = value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| bad("is too large"))?;
    if bytes == 0 {
        return Err(bad("must be positive"));
    }
    Ok(bytes)
}

/// A byte count for messages: `512 B`, `1.5 KiB`, `11.7 GiB`, and so on up to EiB.
pub fn format_bytes(bytes: u128) -> String {
    if bytes == u128::MAX {
        return "more than 2^128 bytes".into();
    }
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v >= 100.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The number of elements of a tensor of `dims` (1 for a scalar); `u128::MAX` when even that
/// overflows.
pub fn elements(dims: &[usize]) -> u128 {
    dims.iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128))
        .unwrap_or(u128::MAX)
}

/// `dims` as `3x224x224` for messages.
pub fn shape_string(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(usize::to_string).collect();
    parts.join("x")
}

/// Checks that `elements` values of `bytes_per_element` bytes each fit in the memory budget;
/// `what` names them in the error ("the model's input shape 3x224x224").
pub fn check_alloc(what: &str, elements: u128, bytes_per_element: u64) -> Result<()> {
    let bytes = elements.saturating_mul(u128::from(bytes_per_element));
    check_bytes(what, bytes)
}

/// Checks a tensor of `dims` with `bytes_per_element` bytes per value (see [`check_alloc`]).
pub fn check_shape(what: &str, dims: &[usize], bytes_per_element: u64) -> Result<()> {
    check_alloc(what, elements(dims), bytes_per_element)
}

/// Checks that `bytes` bytes fit in the memory budget (see [`check_alloc`]).
pub fn check_bytes(what: &str, bytes: u128) -> Result<()> {
    check_bytes_with(bytes, || what.to_string())
}

/// [`check_shape`] with the name built only when the check fails (for checks on a hot path).
pub fn check_shape_with(
    dims: &[usize],
    bytes_per_element: u64,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let bytes = elements(dims).saturating_mul(u128::from(bytes_per_element));
    check_bytes_with(bytes, what)
}

/// [`check_bytes`] with the name built only when the check fails.
pub fn check_bytes_with(bytes: u128, what: impl FnOnce() -> String) -> Result<()> {
    let limit = memory_limit()?;
    if bytes > u128::from(limit) {
        return Err(Error::MemoryLimit {
            what: what(),
            needed: format_bytes(bytes),
            limit: format_bytes(u128::from(limit)),
        });
    }
    Ok(())
}

/// Reads a whole file after checking that its size fits the memory budget (a file larger
/// than the budget is refused before it is read).
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    check_bytes_with(u128::from(len), || format!("reading {}", path.display()))?;
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Whether an error message (for example one carried as text through the ONNX folding) is
/// that of an [`Error::MemoryLimit`].
pub(crate) fn is_limit_message(msg: &str) -> bool {
    msg.contains(LIMIT_HINT)
}

/// The end of every [`Error::MemoryLimit`] message.
pub(crate) const LIMIT_HINT: &str = "(set --memory-limit or MPQ_MEMORY_LIMIT)";

/// Checks that one sample of `input_shape` (f32) fits the memory budget, so a model
/// configured for an impossible input is refused before anything is built or allocated.
pub(crate) fn check_input(input_shape: &[usize]) -> Result<()> {
    check_shape(
        &format!(
            "the model's input shape {} (a batch of 1)",
            shape_string(input_shape)
        ),
        input_shape,
        4,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size(" 2GiB ").unwrap(), 2 << 30);
        assert_eq!(parse_size("3 GB").unwrap(), 3 << 30);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        for bad in [
            "",
            "G",
            "0",
            "-1",
            "1.5G",
            "4Q",
            "99999999999999999999",
            "16777216T",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.is_input_error(), "{bad}: {err}");
        }
    }

    #[test]
    fn meminfo_is_read_in_kilobytes() {
        let text = "MemTotal:       24505052 kB\nMemFree:        1 kB\n";
        assert_eq!(mem_total(text), Some(24_505_052 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total("MemTotal: x kB\n"), None);
        assert!(machine_default() > 0);
    }

    #[test]
    fn bytes_format_in_binary_units() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(120_000_000_000), "112 GiB");
        assert_eq!(format_bytes(12_560_000_000), "11.7 GiB");
        assert_eq!(format_bytes(u128::MAX), "more than 2^128 bytes");
    }

    #[test]
    fn checks_refuse_over_the_scoped_limit_with_one_line() {
        with_memory_limit(1 << 20, || {
            assert_eq!(memory_limit().unwrap(), 1 << 20);
            assert!(check_alloc("a small tensor", 1000, 4).is_ok());
            assert!(check_bytes("exactly the limit", 1 << 20).is_ok());
            let err = check_shape(
                "the model's input shape 3x100000x100000",
                &[3, 100_000, 100_000],
                4,
            )
            .unwrap_err();
            assert!(err.is_input_error());
            assert!(matches!(err, Error::MemoryLimit { .. }));
            let msg = err.to_string();
            assert_eq!(
                msg,
                "the model's input shape 3x100000x100000 needs 112 GiB, over the memory limit \
                 of 1.0 MiB (set --memory-limit or MPQ_MEMORY_LIMIT)"
            );
            assert!(is_limit_message(&msg));
            // Products that overflow even u128 are refused, not wrapped.
            let err = check_shape("a huge tensor", &[usize::MAX; 3], 8).unwrap_err();
            assert!(err.to_string().contains("more than 2^128 bytes"), "{err}");
            assert!(check_alloc("many", u128::MAX / 2, 4).is_err());
        });
    }

    #[test]
    fn scoped_limits_nest_and_restore() {
        with_memory_limit(100, || {
            with_memory_limit(10, || assert_eq!(memory_limit().unwrap(), 10));
            assert_eq!(memory_limit().unwrap(), 100);
        });
        assert_ne!(memory_limit().unwrap(), 100);
        assert_eq!(elements(&[]), 1);
        assert_eq!(elements(&[2, 3, 4]), 24);
        assert_eq!(shape_string(&[3, 32, 32]), "3x32x32");
    }
}
