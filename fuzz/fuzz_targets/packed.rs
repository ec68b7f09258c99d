//! Packed quantized models (`mpq quantize --export`): the same loader as `safetensors`, seeded
//! with packed files so that mutations reach the bit-code reader (`mpq::export`).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mpq::model::{Model, ModelHint};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::setup();
    let hint = ModelHint::default();
    if let Ok(model) = Model::from_bytes(data, Path::new("fuzz.packed.safetensors"), &hint, &candle::Device::Cpu) {
        let _ = model.graph.layer_infos();
    }
});
