//! MobileNetV2 (Sandler et al., CVPR 2018) in torchvision's layout and naming:
//! `features.0.0/1` stem, inverted residual blocks `features.i.conv.*`, `features.18.0/1`,
//! `classifier.1`. The width multiplier rounds channels with torchvision's `_make_divisible`.

use candle::Device;

use super::ZooConfig;
use crate::Result;
use crate::graph::{Conv2dSpec, ConvInit, Graph, GraphBuilder, NodeId};

fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    // Saturating: a huge width gives a huge channel count, which the memory budget refuses
    // when the layer is built.
    let mut new_v = (((v + d / 2.0) / d).floor() as usize).saturating_mul(divisor);
    new_v = new_v.max(divisor);
    if (new_v as f64) < 0.9 * v {
        new_v = new_v.saturating_add(divisor);
    }
    new_v
}

/// Conv-BN-ReLU6 named `prefix.0` (conv) and `prefix.1` (BN).
fn conv_bn_relu6(
    b: &mut GraphBuilder,
    prefix: &str,
    x: NodeId,
    spec: Conv2dSpec,
) -> Result<NodeId> {
    let y = b.conv2d(&format!("{prefix}.0"), x, spec)?;
    let y = b.batch_norm(&format!("{prefix}.1"), y)?;
    b.relu6(y)
}

fn inverted_residual(
    b: &mut GraphBuilder,
    name: &str,
    x: NodeId,
    inp: usize,
    oup: usize,
    stride: usize,
    t: usize,
) -> Result<NodeId> {
    let hidden = inp * t;
    let mut y = x;
    let mut idx = 0;
    if t != 1 {
        y = conv_bn_relu6(
            b,
            &format!("{name}.conv.0"),
            y,
            Conv2dSpec::new(inp, hidden, 1, 1, 0, false),
        )?;
        idx = 1;
    }
    let dw = Conv2dSpec::new(hidden, hidden, 3, stride, 1, false).with_groups(hidden);
    y = conv_bn_relu6(b, &format!("{name}.conv.{idx}"), y, dw)?;
    y = b.conv2d(
        &format!("{name}.conv.{}", idx + 1),
        y,
        Conv2dSpec::new(hidden, oup, 1, 1, 0, false),
    )?;
    y = b.batch_norm(&format!("{name}.conv.{}", idx + 2), y)?;
    if stride == 1 && inp == oup {
        b.add(x, y)
    } else {
        Ok(y)
    }
}

/// torchvision `mobilenet_v2(width_mult)`.
pub(super) fn mobilenetv2(cfg: &ZooConfig, seed: u64, device: &Device) -> Result<Graph> {
    let mut b = GraphBuilder::new(&cfg.input_shape, device, seed);
    b.conv_init(ConvInit::KaimingNormalFanOut);
    let settings: [(usize, usize, usize, usize); 7] = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    let mut inp = make_divisible(32.0 * cfg.width, 8);
    let last = make_divisible(1280.0 * cfg.width.max(1.0), 8);
    let c = cfg.input_shape[0];
    let input = b.input();
    let mut x = conv_bn_relu6(
        &mut b,
        "features.0",
        input,
        Conv2dSpec::new(c, inp, 3, 2, 1, false),
    )?;
    let mut index = 1;
    for (t, ch, n, s) in settings {
        let oup = make_divisible(ch as f64 * cfg.width, 8);
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            x = inverted_residual(&mut b, &format!("features.{index}"), x, inp, oup, stride, t)?;
            inp = oup;
            index += 1;
        }
    }
    x = conv_bn_relu6(
        &mut b,
        &format!("features.{index}"),
        x,
        Conv2dSpec::new(inp, last, 1, 1, 0, false),
    )?;
    let x = b.global_avg_pool(x)?;
    let x = b.flatten(x)?;
    let x = b.dropout(x, 0.2)?;
    let x = b.linear("classifier.1", x, cfg.classes, true)?;
    b.finish(x)
}
