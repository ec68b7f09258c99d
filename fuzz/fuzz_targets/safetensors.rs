//! mpq's own safetensors model format, metadata included (`Model::load` on bytes): the JSON
//! `ModelMeta` (architecture, input shape, classes, graph description) and the tensors.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mpq::model::{Model, ModelHint};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::setup();
    let hint = ModelHint::default();
    if let Ok(model) = Model::from_bytes(data, Path::new("fuzz.safetensors"), &hint, &candle::Device::Cpu) {
        let _ = model.graph.layer_infos();
    }
});
