//! mpq: mixed-precision quantization of neural networks.
//!
//! One engine for HAWQ, HAWQ-V2/V3, CW-HAWQ, HAQ and LIMPQ (`docs/algorithms.md`): a model is
//! an introspectable [`graph::Graph`] that runs forward and backward on candle, with hooks on
//! every quantizable layer's weight and input activation. Data flows
//! model + data → sensitivity → search → [`QuantPlan`] → quantize/fine-tune → export → report.
//!
//! # Entry points
//!
//! - [`pipeline`]: the workflow, one typed request and outcome per stage (what the `mpq`
//!   command line runs): [`pipeline::train()`], [`pipeline::analyze`], [`pipeline::search`],
//!   [`pipeline::quantize()`], [`pipeline::eval`], [`pipeline::hw`], [`pipeline::report`] and
//!   [`pipeline::run_all`]. `examples/pipeline.rs` runs train → analyze → search → quantize →
//!   report in about 40 lines.
//! - The file formats, each one type implementing [`Versioned`] (`load`, `save`):
//!   [`sensitivity::SensitivityTable`], [`search::Policy`], [`search::FrontierFile`],
//!   [`search::haq::HaqHistory`], [`run::QuantizeSummary`], [`run::RunSettings`],
//!   [`run::RunSummary`] (`docs/file-formats.md`).
//! - The building blocks: [`zoo`] and [`onnx`] build models, [`data`] loads data sets,
//!   [`sensitivity`] measures curvature, [`search`] finds plans on plain tables, [`cost`] prices
//!   them, [`quant`] applies them, [`train`] fine-tunes, [`export`] packs, [`report`] renders.
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
pub mod compare;
pub mod cost;
pub mod data;
mod error;
pub mod export;
pub mod graph;
pub mod guard;
pub(crate) mod io;
pub mod limits;
mod loader;
pub mod meta;
pub mod model;
mod named;
pub mod onnx;
pub mod outputs;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod quant;
pub mod report;
pub mod run;
pub mod search;
pub mod sensitivity;
pub mod stats;
pub mod train;
pub mod zoo;

pub use error::{Error, Result};
pub use io::Versioned;
pub use named::Named;
pub use plan::QuantPlan;

/// Sets the number of worker threads of the global pool (call once, before any work), at most
/// the machine's CPUs (more only slow the work down); returns the number used.
pub fn set_threads(n: usize) -> Result<usize> {
    if n == 0 {
        return Err(Error::config("threads", "must be at least 1"));
    }
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    let used = n.min(cpus);
    rayon::ThreadPoolBuilder::new()
        .num_threads(used)
        .build_global()
        .map_err(|e| Error::config("threads", e.to_string()))?;
    Ok(used)
}
