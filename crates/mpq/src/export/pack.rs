//! Bit packing of integer codes at exactly their width: a little-endian bit stream (the
//! first code in the lowest bits of the first byte), with no padding between codes or
//! between channels, so a tensor of `n` codes of `b` bits takes `⌈n·b/8⌉` bytes and a
//! tensor with per-channel widths `⌈Σ_c n_c·b_c/8⌉` bytes.

use crate::{Error, Result};

/// Appends codes to a bit stream.
#[derive(Debug, Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    acc: u64,
    filled: u32,
}

impl BitWriter {
    /// An empty stream.
    pub fn new() -> Self {
        BitWriter::default()
    }

    /// Appends the low `bits` bits of `code` (`bits` in `1..=32`; higher bits must be 0).
    pub fn push(&mut self, code: u32, bits: u32) {
        debug_assert!((1..=32).contains(&bits));
        debug_assert!(
            bits == 32 || code >> bits == 0,
            "code {code} wider than {bits}"
        );
        self.acc |= u64::from(code) << self.filled;
        self.filled += bits;
        while self.filled >= 8 {
            self.bytes.push(self.acc as u8);
            self.acc >>= 8;
            self.filled -= 8;
        }
    }

    /// The packed bytes (the last byte zero-padded).
    pub fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            self.bytes.push(self.acc as u8);
        }
        self.bytes
    }
}

/// Reads codes back from a bit stream.
#[derive(Debug)]
pub struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    acc: u64,
    filled: u32,
}

impl<'a> BitReader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        BitReader {
            bytes,
            pos: 0,
            acc: 0,
            filled: 0,
        }
    }

    /// The next `bits`-bit code; an error past the end of the stream.
    pub fn next(&mut self, bits: u32) -> Result<u32> {
        if bits > 32 {
            return Err(Error::config("codes", format!("{bits} bits per code")));
        }
        while self.filled < bits {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(Error::config("codes", "packed code stream is too short"));
            };
            self.acc |= u64::from(b) << self.filled;
            self.pos += 1;
            self.filled += 8;
        }
        let mask = if bits == 32 {
            u64::from(u32::MAX)
        } else {
            (1u64 << bits) - 1
        };
        let v = (self.acc & mask) as u32;
        self.acc >>= bits;
        self.filled -= bits;
        Ok(v)
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> usize {
        self.pos
    }
}

/// Bytes needed for `bits` bits.
pub fn packed_len(bits: u64) -> u64 {
    bits.div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_packed_bytes() {
        // 3-bit codes 5 (101), 1 (001), 7 (111), 2 (010) fill bits 0-2, 3-5, 6-8, 9-11:
        // byte 0 = 1|1|001|101 (bits 7..0), byte 1 = 0|1|0|1 in bits 3..0.
        let mut w = BitWriter::new();
        for c in [5, 1, 7, 2] {
            w.push(c, 3);
        }
        let bytes = w.finish();
        assert_eq!(bytes, vec![0b1100_1101, 0b0000_0101]);
        let mut r = BitReader::new(&bytes);
        assert_eq!(
            (0..4).map(|_| r.next(3).unwrap()).collect::<Vec<_>>(),
            [5, 1, 7, 2]
        );
        assert!(r.next(8).is_err());
    }

    #[test]
    fn mixed_widths_round_trip_and_exact_length() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let items: Vec<(u32, u32)> = (0..5000)
            .map(|_| {
                let b = 2 + (next() % 7) as u32;
                ((next() as u32) & ((1 << b) - 1), b)
            })
            .collect();
        let mut w = BitWriter::new();
        for &(c, b) in &items {
            w.push(c, b);
        }
        let bytes = w.finish();
        let total: u64 = items.iter().map(|&(_, b)| u64::from(b)).sum();
        assert_eq!(bytes.len() as u64, packed_len(total));
        let mut r = BitReader::new(&bytes);
        for &(c, b) in &items {
            assert_eq!(r.next(b).unwrap(), c);
        }
        assert_eq!(r.bytes_read(), bytes.len());
    }
}
