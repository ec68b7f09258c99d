//! BitFusion-style spatially fused accelerator (Sharma et al., "Bit Fusion: Bit-Level
//! Dynamically Composable Architecture for Accelerating Deep Neural Networks", ISCA 2018; the
//! HAQ energy model, docs/algorithms.md §4.8). Operands are padded to 2, 4 or 8 bits (16 and 32 by temporal
//! fusion); a `w × a` MAC occupies `(pad(w)/2)·(pad(a)/2)` 2-bit BitBricks, so a Fusion Unit
//! of 16 bricks does 1 MAC per cycle at 8/8, 4 at 4/4 and 16 at 2/2.

use crate::graph::LayerInfo;
use crate::plan::BitWidth;

/// The operand width BitFusion computes `bits` at: the smallest of 2, 4, 8, 16, 32 that holds it.
pub fn padded_bits(bits: BitWidth) -> BitWidth {
    [2, 4, 8, 16].into_iter().find(|&p| bits <= p).unwrap_or(32)
}

/// 2-bit BitBricks one `w_bits × a_bits` multiply-accumulate occupies.
pub fn bricks_per_mac(w_bits: BitWidth, a_bits: BitWidth) -> u64 {
    u64::from(padded_bits(w_bits) / 2) * u64::from(padded_bits(a_bits) / 2)
}

/// Cycles of `layer` for `batch` images on `units` Fusion Units of `bricks_per_unit` bricks:
/// `batch·MAC·bricks_per_mac / (units·bricks_per_unit)` (full utilisation).
pub(super) fn compute_cycles(
    layer: &LayerInfo,
    batch: usize,
    units: usize,
    bricks_per_unit: usize,
    w_bits: BitWidth,
    a_bits: BitWidth,
) -> f64 {
    batch as f64 * layer.macs as f64 * bricks_per_mac(w_bits, a_bits) as f64
        / (units as f64 * bricks_per_unit as f64)
}

/// Bit-products one MAC costs in energy: the padded widths, `pad(w)·pad(a)`.
pub(super) fn mac_bits(w_bits: BitWidth, a_bits: BitWidth) -> f64 {
    f64::from(padded_bits(w_bits)) * f64::from(padded_bits(a_bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_and_bricks() {
        let pads: Vec<u32> = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 32]
            .into_iter()
            .map(padded_bits)
            .collect();
        assert_eq!(pads, [2, 2, 4, 4, 8, 8, 8, 8, 16, 16, 32]);
        assert_eq!(bricks_per_mac(8, 8), 16);
        assert_eq!(bricks_per_mac(4, 4), 4);
        assert_eq!(bricks_per_mac(2, 2), 1);
        assert_eq!(bricks_per_mac(2, 8), 4);
        assert_eq!(bricks_per_mac(3, 5), 8);
        assert_eq!(bricks_per_mac(32, 32), 256);
    }
}
