//! BISMO-style bit-serial matrix-multiplication overlay (Umuroglu, Rasnayake, Själander,
//! "BISMO: A Scalable Bit-Serial Matrix Multiplication Overlay for Reconfigurable Computing",
//! FPL 2018; HAQ's latency model, docs/algorithms.md §4.8). A layer is a matrix product `M×K · K×N`
//! (`M` output channels per group, `K` reduction length, `N` output pixels times batch); each
//! cycle a `dm × dn` array of `dk`-bit AND-popcount units does one binary tile, and a
//! `w × a`-bit product takes `w·a` binary products, so
//! `cycles = groups·⌈M/dm⌉·⌈N/dn⌉·⌈K/dk⌉·w·a`.

use crate::graph::{LayerInfo, LayerOp};
use crate::plan::BitWidth;

/// `(groups, M, N, K)` of `layer`'s matrix product for one image.
pub fn matrix_dims(layer: &LayerInfo) -> (u64, u64, u64, u64) {
    let out = layer.out_channels.max(1) as u64;
    match layer.op {
        LayerOp::Linear => {
            let k = layer.weight_shape.get(1).copied().unwrap_or(1) as u64;
            (1, out, 1, k)
        }
        _ => {
            // weight [out, in/groups, kh, kw]; input [C, H, W]; output [out, OH, OW].
            let k = product_after_first(&layer.weight_shape);
            let in_per_group = layer.weight_shape.get(1).copied().unwrap_or(1).max(1) as u64;
            let cin = layer.input_shape.first().copied().unwrap_or(1) as u64;
            let groups = (cin / in_per_group).max(1);
            let n = product_after_first(&layer.output_shape);
            (groups, out / groups, n.max(1), k.max(1))
        }
    }
}

/// The product of every dimension but the first (`[out, in/groups, kh, kw]` gives a filter's
/// size, `[out, OH, OW]` the positions per channel).
fn product_after_first(dims: &[usize]) -> u64 {
    dims.iter().skip(1).map(|&d| d as u64).product()
}

/// Cycles of `layer` for `batch` images on a `dm × dn × dk` array at `w_bits × a_bits`.
pub(super) fn compute_cycles(
    layer: &LayerInfo,
    batch: usize,
    (dm, dn, dk): (usize, usize, usize),
    w_bits: BitWidth,
    a_bits: BitWidth,
) -> f64 {
    let (groups, m, n, k) = matrix_dims(layer);
    let tiles = groups
        * m.div_ceil(dm as u64)
        * (n * batch as u64).div_ceil(dn as u64)
        * k.div_ceil(dk as u64);
    tiles as f64 * f64::from(w_bits) * f64::from(a_bits)
}

/// Bit-products one MAC costs in energy: `w·a`.
pub(super) fn mac_bits(w_bits: BitWidth, a_bits: BitWidth) -> f64 {
    f64::from(w_bits) * f64::from(a_bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_dims_and_cycles() {
        let fc = LayerInfo::linear(0, "fc", 10, 512);
        assert_eq!(matrix_dims(&fc), (1, 10, 1, 512));
        // ⌈10/8⌉·⌈1/8⌉·⌈512/256⌉ = 2·1·2 = 4 tiles; ×4×8 bits.
        assert_eq!(compute_cycles(&fc, 1, (8, 8, 256), 4, 8), 128.0);
        assert_eq!(compute_cycles(&fc, 16, (8, 8, 256), 4, 8), 256.0);
    }
}
