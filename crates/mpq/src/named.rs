//! Options with a fixed set of named values (metrics, methods, quantizers, …): one table per
//! type of each value's name and a one-line description, shared by every front end (the
//! command line's flags and help), the docs and error messages.

/// A type whose values have names.
pub trait Named: Copy + PartialEq + 'static {
    /// Every value with its name and a one-line description.
    const VALUES: &'static [(Self, &'static str, &'static str)];

    /// The value's name.
    fn name(self) -> &'static str {
        Self::VALUES
            .iter()
            .find(|v| v.0 == self)
            .map_or("?", |v| v.1)
    }

    /// The value called `name`.
    fn from_name(name: &str) -> Option<Self> {
        Self::VALUES.iter().find(|v| v.1 == name).map(|v| v.0)
    }
}
