//! mpq: mixed-precision quantization of neural networks.
//!
//! One engine for HAWQ, HAWQ-V2, CW-HAWQ, HAQ and LIMPQ: a model is an introspectable
//! [`graph::Graph`] that runs forward and backward on candle, with hooks on every quantizable
//! layer's weight and input activation. Data flows
//! model + data → sensitivity → search → [`QuantPlan`](crate) → quantize/fine-tune → export.
//!
//! ```
//! use mpq::zoo::{self, ZooConfig};
//! let model = zoo::build("lenet5", &ZooConfig::new([1, 28, 28], 10), 0).unwrap();
//! let layers = model.graph.layer_infos().unwrap();
//! assert_eq!(layers.len(), 5);
//! assert_eq!(layers[0].name, "conv1");
//! ```
#![warn(missing_docs)]

pub mod bench;
pub mod cost;
pub mod data;
mod error;
pub mod export;
pub mod graph;
pub(crate) mod io;
mod loader;
pub mod meta;
pub mod model;
pub mod onnx;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod quant;
pub mod report;
pub mod search;
pub mod sensitivity;
pub mod train;
pub mod zoo;

pub use error::{Error, Result};
pub use plan::QuantPlan;

/// Sets the number of worker threads of the global pool (call once, before any work).
pub fn set_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::config("threads", "must be at least 1"));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| Error::config("threads", e.to_string()))
}

/// Writes `value` as pretty JSON to `path` atomically (no half-written file on failure).
pub fn io_write_json<T: serde::Serialize>(path: &std::path::Path, value: &T) -> Result<()> {
    io::write_json(path, value)
}
