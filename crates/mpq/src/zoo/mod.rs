//! The model zoo: each architecture builds an introspectable [`Graph`] whose parameter names
//! match the PyTorch / torchvision `state_dict` keys, so a PyTorch checkpoint saved as
//! safetensors loads directly.

mod lenet;
mod mobilenet;
mod resnet;
mod vgg;

use candle::Device;

use crate::graph::{Graph, LayerInfo};
use crate::meta::ModelMeta;
use crate::model::Model;
use crate::{Error, Result};

pub use crate::meta::ZooConfig;

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
    check_input(&cfg.input_shape)?;
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

use crate::limits::check_input;

/// Builds `arch` as a [`Model`] on the CPU, with fresh (seeded) weights and no normalisation.
pub fn build(arch: &str, cfg: &ZooConfig, seed: u64) -> Result<Model> {
    build_on(arch, cfg, seed, &Device::Cpu)
}

/// The quantizable layers of `arch` (shapes and costs; they do not depend on the weights).
pub fn layer_infos(arch: &str, cfg: &ZooConfig) -> Result<Vec<LayerInfo>> {
    build(arch, cfg, 0)?.graph.layer_infos()
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
