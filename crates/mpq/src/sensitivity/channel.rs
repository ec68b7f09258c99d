//! Channel-wise Hessian traces (CW-HAWQ, arXiv 2008.08284; diagonal Hutchinson, Hutchinson
//! 1989): per output channel of a layer's weight and per channel of its input activation,
//! from the same probes as the layer traces, so a layer's channel traces sum to its trace.

use candle::{DType, Tensor};

use super::linalg::dot;
use crate::Result;
use crate::graph::LayerInfo;

/// Output channels of a layer's weight (`weight_shape[0]`), each a contiguous chunk of
/// `params / channels` weights in row-major order.
pub(crate) fn weight_channels(info: &LayerInfo) -> usize {
    info.weight_shape.first().copied().unwrap_or(1).max(1)
}

/// Channels and elements per channel of a layer's per-sample input activation: `[C, H, W]`
/// gives `(C, H·W)`; a flat `[F]` input gives `(F, 1)` (every feature is a channel).
pub(crate) fn activation_channels(info: &LayerInfo) -> (usize, usize) {
    let c = info.input_shape.first().copied().unwrap_or(1).max(1);
    (c, info.input_elems / c)
}

/// Per-block samples `Σ_{j∈c} z_j (Hz)_j` of one weight probe, block `i` cut into
/// `channels[i]` equal chunks.
pub(crate) fn weight_samples(
    sizes: &[usize],
    channels: &[usize],
    z: &[f32],
    hz: &[f32],
) -> Vec<Vec<f64>> {
    let mut off = 0;
    let mut out = Vec::with_capacity(sizes.len());
    for (&n, &c) in sizes.iter().zip(channels) {
        let per = n / c.max(1);
        out.push(
            (0..c)
                .map(|ch| {
                    let r = off + ch * per..off + (ch + 1) * per;
                    dot(&z[r.clone()], &hz[r])
                })
                .collect(),
        );
        off += n;
    }
    out
}

/// `Σ_{n,h,w} prod[n, c, h, w]` per channel `c` (in f64), for a batch tensor whose
/// per-sample layout is `(channels, per)`.
pub(crate) fn activation_samples(prod: &Tensor, channels: usize, per: usize) -> Result<Vec<f64>> {
    let n = prod.dim(0)?;
    Ok(prod
        .to_dtype(DType::F64)?
        .reshape((n, channels, per))?
        .sum(2)?
        .sum(0)?
        .to_vec1::<f64>()?)
}

#[cfg(test)]
mod tests {
    use candle::Device;

    use super::*;

    #[test]
    fn weight_samples_cut_blocks_into_channels() {
        let z = [1.0, -1.0, 1.0, 1.0, 1.0, -1.0];
        let hz = [2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        // Block 0: 4 elements in 2 channels; block 1: 2 elements in 1 channel.
        let s = weight_samples(&[4, 2], &[2, 1], &z, &hz);
        assert_eq!(s, vec![vec![-1.0, 9.0], vec![-1.0]]);
    }

    #[test]
    fn activation_samples_sum_all_but_channels() {
        // [2 samples, 2 channels, 3 elements].
        let t = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 2, 3))
            .unwrap();
        let s = activation_samples(&t, 2, 3).unwrap();
        assert_eq!(
            s,
            vec![
                0.0 + 1.0 + 2.0 + 6.0 + 7.0 + 8.0,
                3.0 + 4.0 + 5.0 + 9.0 + 10.0 + 11.0
            ]
        );
    }
}
