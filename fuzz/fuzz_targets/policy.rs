//! `mpq.policy` JSON (`Versioned::parse` of `mpq::search::Policy`), older versions included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpq::Versioned;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::setup();
    if let Ok(policy) = mpq::search::Policy::parse(data, "fuzz.json") {
        let _ = policy.to_bytes();
    }
});
