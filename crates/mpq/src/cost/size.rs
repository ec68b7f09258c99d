//! Model size accounting (docs/algorithms.md §0.4 "Model size", §7.5 "Size"): `Size = Σ_l n_l · b^w_l`
//! bits, with channel-wise widths summed per output channel, plus optional quantizer
//! metadata (scales and zero points, or a k-means codebook) reported separately as overhead.
//! HAQ's own accounting ignores the codebook (docs/algorithms.md §4.9); `Σ n·b` here is that number.
//!
//! Conventions: `n_l` counts weight elements only; biases and BatchNorm parameters are
//! excluded, as in every method's code (docs/algorithms.md §0.4). Every quantizable layer is counted,
//! the first and last included. Activation quantizer scales are not part of the size.

use super::CostModel;
use crate::graph::LayerInfo;
use crate::plan::{FULL_PRECISION, Granularity, LayerPrecision};

/// Bits of one stored scale or zero point (an `f32`).
pub const SCALE_BITS: u64 = 32;

/// Weight elements per output channel (`params / out_channels`; 0 with no channels).
pub fn elements_per_channel(layer: &LayerInfo) -> u64 {
    layer.params.checked_div(layer.out_channels).unwrap_or(0) as u64
}

/// Weight storage of `layer` in bits: `n·b`, or `Σ_c (n / out_channels)·b_c` with
/// channel-wise widths. `None` (layer absent from the plan) is full precision, `n·32`.
pub fn weight_bits(layer: &LayerInfo, precision: Option<&LayerPrecision>) -> u64 {
    let n = layer.params as u64;
    match precision {
        None => n * u64::from(FULL_PRECISION),
        Some(p) => match &p.channel_w_bits {
            Some(ch) if !ch.is_empty() => {
                elements_per_channel(layer) * ch.iter().map(|&b| u64::from(b)).sum::<u64>()
            }
            _ => n * u64::from(p.w_bits),
        },
    }
}

/// Quantizer metadata of `layer`'s weights in bits: one 32-bit scale per output channel
/// (per-channel) or per tensor (per-tensor), doubled for quantizers with a zero point
/// (asymmetric); for k-means, the codebook of `2^b` 32-bit centroids (as exported, padded
/// when a layer has fewer distinct weights). Full-precision weights (and layers absent
/// from the plan) have none.
pub fn overhead_bits(layer: &LayerInfo, precision: Option<&LayerPrecision>) -> u64 {
    let Some(p) = precision else { return 0 };
    if p.weights_full_precision() {
        return 0;
    }
    if p.quantizer.is_codebook() {
        return SCALE_BITS << p.w_bits;
    }
    let scales = match p.granularity {
        Granularity::PerChannel => layer.out_channels as u64,
        Granularity::PerTensor => 1,
    };
    let per_scale = if p.quantizer.has_zero_point() {
        2 * SCALE_BITS
    } else {
        SCALE_BITS
    };
    scales * per_scale
}

/// Weight storage in bits, `n·b_w` (docs/algorithms.md §0.4; no quantizer metadata).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelSize;

impl CostModel for ModelSize {
    fn name(&self) -> &str {
        "size_bits"
    }

    fn layer_cost(&self, layer: &LayerInfo, w_bits: f64, _a_bits: f64) -> f64 {
        layer.params as f64 * w_bits
    }
}
