//! Bit-operation accounting (docs/algorithms.md §0.4 "BitOps / BOPs", §7.5 "BOPs"):
//! `BOPs = Σ_l MAC_l · b^w_l · b^a_l` per sample. An FP32 layer counts as 32×32. With
//! channel-wise weight widths each output channel does `MAC_l / out_channels` MACs, so
//! `BOPs_l = Σ_c MAC_l / C_out · b_c · b^a_l = MAC_l · mean(b_c) · b^a_l` (the §7.5 closed
//! form). Every layer is counted at its planned widths, the first and last included; a
//! method that wants them at 8×8 (LIMPQ) says so in its plan.

use super::CostModel;
use crate::graph::LayerInfo;
use crate::plan::{FULL_PRECISION, LayerPrecision};

/// BOPs per sample of `layer` under `precision` (`None`: full precision, `MAC·32·32`).
pub fn layer_bops(layer: &LayerInfo, precision: Option<&LayerPrecision>) -> f64 {
    let macs = layer.macs as f64;
    match precision {
        None => macs * f64::from(FULL_PRECISION) * f64::from(FULL_PRECISION),
        Some(p) => {
            let a = f64::from(p.a_bits);
            match &p.channel_w_bits {
                Some(ch) if !ch.is_empty() && layer.out_channels > 0 => {
                    let sum: u64 = ch.iter().map(|&b| u64::from(b)).sum();
                    (layer.macs as f64 * sum as f64) / layer.out_channels as f64 * a
                }
                _ => macs * f64::from(p.w_bits) * a,
            }
        }
    }
}

/// Bit operations per sample, `MAC·b_w·b_a` (docs/algorithms.md §0.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BitOps;

impl CostModel for BitOps {
    fn name(&self) -> &str {
        "bops"
    }

    fn layer_cost(&self, layer: &LayerInfo, w_bits: f64, a_bits: f64) -> f64 {
        layer.macs as f64 * w_bits * a_bits
    }
}
