//! Shared by every target: the memory budget the library must keep to (libFuzzer's own
//! limits, `-rss_limit_mb=1024 -malloc_limit_mb=1024`, catch anything that escapes it).

/// The budget set before each input: 256 MiB.
pub const MEMORY_LIMIT: u64 = 256 << 20;

/// Sets the library's memory budget (cheap; done per input so no target can forget it).
pub fn setup() {
    mpq::limits::set_memory_limit(MEMORY_LIMIT);
}
