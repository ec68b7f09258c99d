//! HAQ (Wang et al., CVPR 2019): the observation of the agent, docs/algorithms.md §4.3. Each searched layer
//! is described by the reference code's ten features (`_build_state_embedding`), min-max
//! normalised per feature over the layers; the last two features (the previous action and the
//! weight/activation flag) are written as the episode walks the layers.

use serde::{Deserialize, Serialize};

use crate::graph::{LayerInfo, LayerOp};

/// Static features per layer, before the two dynamic ones.
pub const STATIC_FEATURES: usize = 8;
/// Length of an observation.
pub const STATE_DIM: usize = STATIC_FEATURES + 2;

/// Which value the weight/activation flag takes on each step (docs/algorithms.md §4.3, §4.13 item 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagStyle {
    /// 1 on weight steps, 0 on activation steps (what the reference code's comment says it
    /// does, and what the paper describes).
    #[default]
    Clean,
    /// The reference code's in-place writes: the first observation of an episode carries 1,
    /// then every step sees the flag written after the previous step (1 after a weight action,
    /// 0 after an activation action), so weight steps see 0 and activation steps 1; and the
    /// previous-action feature of the first step carries over from the last episode.
    Reference,
}

/// The raw (unnormalised) static features of a layer in the reference order: depthwise flag,
/// input channels (input features for FC), output channels, stride (0 for FC), kernel size
/// (1 for FC), weight count, input feature-map area (the input features for FC, as the
/// reference's `in_w·in_h` gives), and the layer index.
pub fn raw_features(layer: &LayerInfo) -> [f64; STATIC_FEATURES] {
    let is_fc = layer.op == LayerOp::Linear || layer.input_shape.len() < 3;
    let dw = f64::from(u8::from(layer.op == LayerOp::DepthwiseConv));
    let (c_in, stride, kernel, area) = if is_fc {
        (layer.input_elems as f64, 0.0, 1.0, layer.input_elems as f64)
    } else {
        let (h_in, w_in) = (layer.input_shape[1], layer.input_shape[2]);
        let h_out = layer.output_shape.get(1).copied().unwrap_or(h_in).max(1);
        // The stride is not recorded in the layer table; the spatial ratio recovers it for
        // every padding (a valid 5×5 convolution 28 → 24 rounds to 1, a padded stride-2
        // convolution 32 → 16 to 2).
        let stride = (h_in as f64 / h_out as f64).round().max(1.0);
        let kernel = layer.weight_shape.get(2).copied().unwrap_or(1) as f64;
        (
            layer.input_shape[0] as f64,
            stride,
            kernel,
            (h_in * w_in) as f64,
        )
    };
    [
        dw,
        c_in,
        layer.out_channels as f64,
        stride,
        kernel,
        layer.params as f64,
        area,
        layer.index as f64,
    ]
}

/// The static features of `layers`, min-max normalised per feature to `[0, 1]` (a feature
/// with one value over all layers keeps its raw value, as the reference code skips it).
pub fn embedding(layers: &[&LayerInfo]) -> Vec<[f32; STATIC_FEATURES]> {
    let raw: Vec<[f64; STATIC_FEATURES]> = layers.iter().map(|l| raw_features(l)).collect();
    let mut out = vec![[0.0f32; STATIC_FEATURES]; raw.len()];
    for f in 0..STATIC_FEATURES {
        let lo = raw.iter().map(|r| r[f]).fold(f64::INFINITY, f64::min);
        let hi = raw.iter().map(|r| r[f]).fold(f64::NEG_INFINITY, f64::max);
        for (o, r) in out.iter_mut().zip(&raw) {
            o[f] = if hi > lo {
                ((r[f] - lo) / (hi - lo)) as f32
            } else {
                r[f] as f32
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(
        index: usize,
        c_in: usize,
        c_out: usize,
        k: usize,
        h_in: usize,
        h_out: usize,
    ) -> LayerInfo {
        LayerInfo {
            index,
            name: format!("conv{index}"),
            op: LayerOp::Conv,
            weight_shape: vec![c_out, c_in, k, k],
            params: c_out * c_in * k * k,
            bias_params: c_out,
            input_shape: vec![c_in, h_in, h_in],
            output_shape: vec![c_out, h_out, h_out],
            input_elems: c_in * h_in * h_in,
            macs: (c_out * c_in * k * k * h_out * h_out) as u64,
            out_channels: c_out,
        }
    }

    #[test]
    fn features_follow_the_reference_order() {
        let c = conv(1, 16, 32, 3, 32, 16);
        assert_eq!(
            raw_features(&c),
            [0.0, 16.0, 32.0, 2.0, 3.0, 4608.0, 1024.0, 1.0]
        );
        let valid = conv(0, 1, 6, 5, 28, 24);
        assert_eq!(raw_features(&valid)[3], 1.0);
        let fc = LayerInfo::linear(2, "fc", 10, 84);
        assert_eq!(
            raw_features(&fc),
            [0.0, 84.0, 10.0, 0.0, 1.0, 840.0, 84.0, 2.0]
        );
    }

    #[test]
    fn embedding_is_min_max_normalised_per_feature() {
        let (a, b) = (conv(0, 1, 6, 5, 28, 24), conv(1, 6, 16, 5, 12, 8));
        let fc = LayerInfo::linear(2, "fc", 10, 256);
        let e = embedding(&[&a, &b, &fc]);
        for f in 0..STATIC_FEATURES {
            let col: Vec<f32> = e.iter().map(|r| r[f]).collect();
            let varies = col.iter().any(|&v| v != col[0]);
            if varies {
                assert!(
                    col.iter().all(|&v| (0.0..=1.0).contains(&v)),
                    "{f}: {col:?}"
                );
                assert!(col.contains(&0.0) && col.contains(&1.0), "{f}: {col:?}");
            }
        }
        // The depthwise flag is 0 everywhere: kept raw.
        assert!(e.iter().all(|r| r[0] == 0.0));
        assert_eq!(e[0][7], 0.0);
        assert_eq!(e[2][7], 1.0);
        assert_eq!(e[1][7], 0.5);
    }
}
