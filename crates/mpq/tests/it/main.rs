//! Integration tests of the `mpq` library: one binary (style guide §8.6).

mod compare;
mod export;
mod files;
mod formats;
mod graph;
mod layering;
mod lr_range;
mod omega;
mod onnx;
mod sensitivity;
mod stages;
mod train;
mod util;
mod zoo;
