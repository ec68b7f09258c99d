//! MNIST IDX files, gzipped or not (`mpq::data::parse_idx`). The input is
//! `[split: u32 little-endian][images file][labels file]`, `split` being the images' length.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::setup();
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let split = (u32::from_le_bytes(*head) as usize).min(rest.len());
    let (images, labels) = rest.split_at(split);
    let _ = mpq::data::parse_idx(images, Path::new("images"), labels, Path::new("labels"));
});
