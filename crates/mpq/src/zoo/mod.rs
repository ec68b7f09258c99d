//! The model zoo: each architecture builds an introspectable [`Graph`] whose parameter names
//! match the PyTorch / torchvision `state_dict` keys, so a PyTorch checkpoint saved as
//! safetensors loads directly.

mod lenet;
mod mobilenet;
mod resnet;
mod vgg;

use candle::Device;
use serde::{Deserialize, Serialize};

use crate::graph::Graph;
use crate::model::{Model, ModelMeta};
use crate::{Error, Result};

/// Every architecture name the zoo knows.
pub const ARCHS: &[&str] = &[
    "mlp",
    "lenet5",
    "resnet8",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet18",
    "mobilenetv2",
    "vgg11-small",
];

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

fn check_arch(arch: &str) -> Result<()> {
    if ARCHS.contains(&arch) {
        Ok(())
    } else {
        Err(Error::UnknownArch {
            name: arch.to_string(),
            known: ARCHS.join(", "),
        })
    }
}

/// Builds the graph of `arch` with weights drawn from `seed`, on `device`.
pub fn build_graph(arch: &str, cfg: &ZooConfig, seed: u64, device: &Device) -> Result<Graph> {
    check_arch(arch)?;
    if cfg.classes == 0 {
        return Err(Error::config("classes", "must be at least 1"));
    }
    if cfg.input_shape.len() != 3 || cfg.input_shape.contains(&0) {
        return Err(Error::config(
            "input",
            format!(
                "expected a CxHxW shape with positive sizes, got {:?}",
                cfg.input_shape
            ),
        ));
    }
    if !(cfg.width > 0.0 && cfg.width.is_finite()) {
        return Err(Error::config("width", "must be positive"));
    }
    match arch {
        "mlp" => lenet::mlp(cfg, seed, device),
        "lenet5" => lenet::lenet5(cfg, seed, device),
        "resnet8" => resnet::cifar_resnet(1, cfg, seed, device),
        "resnet20" => resnet::cifar_resnet(3, cfg, seed, device),
        "resnet32" => resnet::cifar_resnet(5, cfg, seed, device),
        "resnet56" => resnet::cifar_resnet(9, cfg, seed, device),
        "resnet18" => resnet::resnet18(cfg, seed, device),
        "mobilenetv2" => mobilenet::mobilenetv2(cfg, seed, device),
        "vgg11-small" => vgg::vgg11_small(cfg, seed, device),
        _ => unreachable!("check_arch accepted only known names"),
    }
}

/// Builds `arch` as a [`Model`] on the CPU, with fresh (seeded) weights and no normalisation.
pub fn build(arch: &str, cfg: &ZooConfig, seed: u64) -> Result<Model> {
    build_on(arch, cfg, seed, &Device::Cpu)
}

/// Builds `arch` as a [`Model`] on `device`.
pub fn build_on(arch: &str, cfg: &ZooConfig, seed: u64, device: &Device) -> Result<Model> {
    let graph = build_graph(arch, cfg, seed, device)?;
    Ok(Model {
        graph,
        meta: ModelMeta::new(arch, cfg.clone()),
        quantized: None,
    })
}
