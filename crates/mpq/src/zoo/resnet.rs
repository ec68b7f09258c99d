//! ResNets (He et al., CVPR 2016): the CIFAR family (`resnet8/20/32/56`: 16/32/64 channels,
//! 3 stages of BasicBlocks, 1x1 conv + BN downsample shortcuts) and torchvision's `resnet18`.
//! Names follow torchvision: `conv1`, `bn1`, `layerN.i.conv1/bn1/conv2/bn2/downsample.0/1`, `fc`.

use candle::Device;

use super::ZooConfig;
use crate::Result;
use crate::graph::{Conv2dSpec, ConvInit, Graph, GraphBuilder, NodeId, PoolSpec};

/// A BasicBlock: 3x3 conv-BN-ReLU, 3x3 conv-BN, plus the (projected) shortcut, ReLU.
fn basic_block(
    b: &mut GraphBuilder,
    name: &str,
    x: NodeId,
    cin: usize,
    cout: usize,
    stride: usize,
) -> Result<NodeId> {
    let y = b.conv2d(
        &format!("{name}.conv1"),
        x,
        Conv2dSpec::new(cin, cout, 3, stride, 1, false),
    )?;
    let y = b.batch_norm(&format!("{name}.bn1"), y)?;
    let y = b.relu(y)?;
    let y = b.conv2d(
        &format!("{name}.conv2"),
        y,
        Conv2dSpec::new(cout, cout, 3, 1, 1, false),
    )?;
    let y = b.batch_norm(&format!("{name}.bn2"), y)?;
    let shortcut = if stride != 1 || cin != cout {
        let s = b.conv2d(
            &format!("{name}.downsample.0"),
            x,
            Conv2dSpec::new(cin, cout, 1, stride, 0, false),
        )?;
        b.batch_norm(&format!("{name}.downsample.1"), s)?
    } else {
        x
    };
    let y = b.add(y, shortcut)?;
    b.relu(y)
}

/// CIFAR ResNet with `n` blocks per stage (depth 6n+2).
pub(super) fn cifar_resnet(n: usize, cfg: &ZooConfig, seed: u64, device: &Device) -> Result<Graph> {
    let c = cfg.input_shape[0];
    let (mut b, x) = stem(cfg, seed, device, Conv2dSpec::new(c, 16, 3, 1, 1, false))?;
    let x = stages(&mut b, x, 16, &[16, 32, 64], n)?;
    classifier(b, x, cfg.classes)
}

/// torchvision `resnet18`: 7x7/2 stem, 3x3/2 max-pool, four stages of two BasicBlocks.
pub(super) fn resnet18(cfg: &ZooConfig, seed: u64, device: &Device) -> Result<Graph> {
    let c = cfg.input_shape[0];
    let (mut b, x) = stem(cfg, seed, device, Conv2dSpec::new(c, 64, 7, 2, 3, false))?;
    let x = b.max_pool(x, PoolSpec::new(3, 2, 1))?;
    let x = stages(&mut b, x, 64, &[64, 128, 256, 512], 2)?;
    classifier(b, x, cfg.classes)
}

/// A builder with Kaiming fan-out conv init and the stem `conv1` (`spec`), `bn1`, ReLU.
fn stem(
    cfg: &ZooConfig,
    seed: u64,
    device: &Device,
    spec: Conv2dSpec,
) -> Result<(GraphBuilder, NodeId)> {
    let mut b = GraphBuilder::new(&cfg.input_shape, device, seed);
    b.conv_init(ConvInit::KaimingNormalFanOut);
    let x = b.conv2d("conv1", b.input(), spec)?;
    let x = b.batch_norm("bn1", x)?;
    let x = b.relu(x)?;
    Ok((b, x))
}

/// Stages `layer1..` of `blocks` BasicBlocks each; every stage after the first halves the
/// resolution in its first block.
fn stages(
    b: &mut GraphBuilder,
    mut x: NodeId,
    mut cin: usize,
    widths: &[usize],
    blocks: usize,
) -> Result<NodeId> {
    for (stage, &cout) in widths.iter().enumerate() {
        for i in 0..blocks {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            x = basic_block(b, &format!("layer{}.{i}", stage + 1), x, cin, cout, stride)?;
            cin = cout;
        }
    }
    Ok(x)
}

/// Global average pooling, flatten, `fc`.
fn classifier(mut b: GraphBuilder, x: NodeId, classes: usize) -> Result<Graph> {
    let x = b.global_avg_pool(x)?;
    let x = b.flatten(x)?;
    let x = b.linear("fc", x, classes, true)?;
    b.finish(x)
}
