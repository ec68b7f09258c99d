//! Hardware descriptions: a TOML hardware spec (`HardwareSpec::parse`) and a CSV lookup
//! table (`LookupTable::parse`), both fed every input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpq::cost::{HardwareSpec, LookupTable};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::setup();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = HardwareSpec::parse(text, "fuzz.toml") {
        let _ = spec.to_toml();
    }
    if let Ok(table) = LookupTable::parse(text, "fuzz.csv") {
        let _ = table.to_csv();
    }
});
