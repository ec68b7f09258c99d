//! The one error type of the `mpq` library.
//!
//! Every fallible library function returns [`Result`]. Variants that describe bad user input
//! (a corrupt file, a wrong shape, an unknown layer, an infeasible budget) answer `true` to
//! [`Error::is_input_error`]; the CLI maps those to exit code 2 and everything else to 1.

use std::path::PathBuf;

/// Errors of the `mpq` library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle::Error),
    /// A file could not be read or written.
    #[error("{}: {err}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The operating-system error.
        err: std::io::Error,
    },
    /// JSON could not be parsed or written.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A file's contents are not what its format requires (bad magic, truncated, wrong size).
    #[error("{}: {reason}", path.display())]
    CorruptFile {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A model architecture name that the zoo does not know.
    #[error("unknown architecture {name:?} (known: {known})")]
    UnknownArch {
        /// The name asked for.
        name: String,
        /// The names that exist, comma separated.
        known: String,
    },
    /// A layer name that the model does not have.
    #[error("unknown layer {name:?}")]
    UnknownLayer {
        /// The name asked for.
        name: String,
    },
    /// A tensor or input whose shape does not fit.
    #[error("shape mismatch for {name}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// The tensor, layer or input concerned.
        name: String,
        /// The shape that was required.
        expected: String,
        /// The shape that was found.
        got: String,
    },
    /// A weight file lacks a tensor the model needs.
    #[error("missing tensor {name:?} in {}", path.display())]
    MissingTensor {
        /// The tensor name.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// A weight file has a tensor the model does not have.
    #[error("unexpected tensor {name:?} in {} (the model has no such parameter)", path.display())]
    UnexpectedTensor {
        /// The tensor name.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// A configuration value or command argument is out of range or inconsistent.
    #[error("invalid {field}: {reason}")]
    InvalidConfig {
        /// The option or field.
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Data (inputs, weights, or a computed quantity) that is not finite.
    #[error("non-finite values: {0}")]
    NonFinite(String),
    /// A budget or constraint that no plan can meet.
    #[error("infeasible {budget}: {}", smallest(min_value))]
    Infeasible {
        /// The constraint that cannot be met.
        budget: String,
        /// The smallest value any plan reaches.
        min_value: String,
    },
    /// Options that do not work together, or a missing option a choice needs (a usage
    /// error; the message names the flags).
    #[error("{0}")]
    Usage(String),
    /// An error with what was being attempted (for example the report of a failed
    /// feasibility pre-flight), the cause underneath.
    #[error("{context}")]
    Context {
        /// What was being attempted, or a report of it.
        context: String,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
    /// An input (a file's shape or count, a data reference, a model configuration) that would
    /// need more memory than the budget of [`crate::limits`]; refused before allocating.
    #[error(
        "{what} needs {needed}, over the memory limit of {limit} {}",
        crate::limits::LIMIT_HINT
    )]
    MemoryLimit {
        /// What would be allocated, e.g. `the model's input shape 3x100000x100000`.
        what: String,
        /// The memory it needs, formatted (`112 GiB`).
        needed: String,
        /// The budget in effect, formatted.
        limit: String,
    },
    /// An ONNX model with operators (or operator settings) the importer does not convert;
    /// every offending node is listed.
    #[error("unsupported ONNX operators ({}): {}", items.len(), items.join(", "))]
    UnsupportedOnnxOps {
        /// `OpType (node NAME)`, with the reason when the type itself is supported.
        items: Vec<String>,
    },
}

/// How an [`Error::Infeasible`] states its smallest achievable value: a number as such, a
/// sentence (what to try instead) as it is.
fn smallest(min_value: &str) -> String {
    if min_value.trim().parse::<f64>().is_ok() {
        format!("the smallest achievable value is {min_value}")
    } else {
        min_value.to_string()
    }
}

/// The result type of the `mpq` library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether this error is caused by the user's input (exit code 2) rather than a failure
    /// of the program or the machine (exit code 1).
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::Candle(_) => false,
            Error::Context { source, .. } => source.is_input_error(),
            Error::Io { err, .. } => matches!(
                err.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::IsADirectory
                    | std::io::ErrorKind::NotADirectory
            ),
            _ => true,
        }
    }

    /// Shorthand for [`Error::InvalidConfig`].
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::CorruptFile`].
    pub fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::CorruptFile {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }
}
