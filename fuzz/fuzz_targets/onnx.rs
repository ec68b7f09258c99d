//! ONNX import (`mpq::onnx::from_bytes`): protobuf decoding, constant folding, graph building.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::setup();
    if let Ok(model) = mpq::onnx::from_bytes(data, Path::new("fuzz.onnx"), &candle::Device::Cpu) {
        let _ = model.graph.layer_infos();
    }
});
