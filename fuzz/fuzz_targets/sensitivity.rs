//! `mpq.sensitivity` JSON (`Versioned::parse` of `mpq::sensitivity::SensitivityTable`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpq::Versioned;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::setup();
    if let Ok(table) = mpq::sensitivity::SensitivityTable::parse(data, "fuzz.json") {
        let _ = table.to_bytes();
    }
});
