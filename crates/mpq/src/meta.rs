//! What a saved model says about itself ([`ModelMeta`], stored as JSON under the safetensors
//! metadata key [`META_KEY`]) and the fallbacks for a file that does not ([`ModelHint`]): the
//! architecture's [`ZooConfig`], and for packed quantized models the [`PackedMeta`] layout.
//!
//! Plain data, low in the layering: `model`, `zoo`, `onnx` and `export` all use these types,
//! and this module uses none of them (loading dispatch, which does, is in `loader`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::QuantPlan;
use crate::data::Normalization;
use crate::graph::GraphDesc;

/// Metadata key holding the JSON [`ModelMeta`].
pub const META_KEY: &str = "mpq";

/// What a saved model says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Zoo architecture name.
    pub arch: String,
    /// Input shape, classes and width the graph was built for.
    pub config: ZooConfig,
    /// Input normalisation the model was trained with (`None`: use the data set's).
    pub normalization: Option<Normalization>,
    /// Free-form training summary (epochs, accuracy, time, settings).
    pub training: Option<serde_json::Value>,
    /// Present in packed quantized models ([`crate::export`]): the plan and the layout of
    /// the packed tensors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<PackedMeta>,
    /// The graph's structure, for models that are not zoo architectures (`arch` `onnx`:
    /// imported models); `None` for zoo models, which `arch` and `config` rebuild.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<GraphDesc>,
}

impl ModelMeta {
    /// Metadata for a fresh zoo model.
    pub fn new(arch: &str, config: ZooConfig) -> Self {
        ModelMeta {
            arch: arch.to_string(),
            config,
            normalization: None,
            training: None,
            quantization: None,
            graph: None,
        }
    }
}

/// What a zoo architecture is built for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZooConfig {
    /// Per-sample input shape `[C, H, W]`.
    pub input_shape: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
    /// Width multiplier (MobileNetV2; 1.0 elsewhere).
    #[serde(default = "one")]
    pub width: f64,
}

fn one() -> f64 {
    1.0
}

impl ZooConfig {
    /// Input shape and class count, width 1.
    pub fn new(input_shape: impl Into<Vec<usize>>, classes: usize) -> Self {
        ZooConfig {
            input_shape: input_shape.into(),
            classes,
            width: 1.0,
        }
    }

    /// The usual input shape and class count of `arch` (MNIST for `mlp`/`lenet5`, CIFAR-10
    /// for the CIFAR ResNets and VGG, ImageNet for `resnet18` and `mobilenetv2`).
    pub fn default_for(arch: &str) -> Self {
        match arch {
            "mlp" | "lenet5" => ZooConfig::new([1, 28, 28], 10),
            "resnet18" | "mobilenetv2" => ZooConfig::new([3, 224, 224], 1000),
            _ => ZooConfig::new([3, 32, 32], 10),
        }
    }
}

/// What a packed file says about its quantized tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackedMeta {
    /// Layout version ([`crate::export::FORMAT`]).
    pub format: u32,
    /// The plan the model was quantized with.
    pub plan: QuantPlan,
    /// Packed weights, by layer name.
    pub weights: BTreeMap<String, PackedWeight>,
    /// Quantized input activations, by layer name.
    pub activations: BTreeMap<String, PackedActivation>,
}

/// One packed weight tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackedWeight {
    /// Shape of the dequantized weight.
    pub shape: Vec<usize>,
    /// Code width (the widest channel's with `channel_bits`).
    pub bits: u32,
    /// Per-channel widths (symmetric codes), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_bits: Option<Vec<u32>>,
    /// Smallest and largest code (of the widest channel).
    pub qmin: f32,
    /// Largest code.
    pub qmax: f32,
    /// Number of scales (1: per tensor).
    pub channels: usize,
    /// Whether a zero-point tensor is stored.
    pub zero_point: bool,
    /// Bytes of the packed codes.
    pub code_bytes: u64,
    /// Entries of the `f32` codebook of a k-means layer (`2^bits`); the codes are then
    /// centroid indices, and there are no scales.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codebook: Option<usize>,
}

/// One quantized input activation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackedActivation {
    /// Code width.
    pub bits: u32,
    /// Smallest code.
    pub qmin: f32,
    /// Largest code.
    pub qmax: f32,
}

/// Fallbacks for building a model whose file does not describe itself (a PyTorch
/// `state_dict`) or a zoo reference (`--arch`, `--input`, `--classes`, `--width`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelHint {
    /// Architecture name.
    pub arch: Option<String>,
    /// Per-sample input shape.
    pub input_shape: Option<Vec<usize>>,
    /// Number of classes.
    pub classes: Option<usize>,
    /// Width multiplier.
    pub width: Option<f64>,
    /// Seed of fresh zoo weights.
    pub seed: u64,
}

impl ModelHint {
    /// The zoo configuration of `arch` with the hint's input shape, classes and width.
    pub(crate) fn config(&self, arch: &str) -> ZooConfig {
        let mut cfg = ZooConfig::default_for(arch);
        if let Some(s) = &self.input_shape {
            cfg.input_shape = s.clone();
        }
        if let Some(k) = self.classes {
            cfg.classes = k;
        }
        if let Some(w) = self.width {
            cfg.width = w;
        }
        cfg
    }
}
