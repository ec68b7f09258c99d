//! `vgg11-small`: VGG-11 with BatchNorm (Simonyan & Zisserman 2015) at a quarter of the
//! width (16-32-64-64-128-128-128-128 channels) for 32x32 inputs. torchvision `vgg11_bn`
//! naming: `features.i` (conv at i, BN at i+1), then global average pooling and
//! `classifier.0` (Linear 128→128), ReLU, Dropout, `classifier.3` (Linear → classes).

use candle::Device;

use super::ZooConfig;
use crate::Result;
use crate::graph::{Conv2dSpec, ConvInit, Graph, GraphBuilder, PoolSpec};

/// Channel plan; 0 is a 2x2 max-pool.
const PLAN: [usize; 13] = [16, 0, 32, 0, 64, 64, 0, 128, 128, 0, 128, 128, 0];

pub(super) fn vgg11_small(cfg: &ZooConfig, seed: u64, device: &Device) -> Result<Graph> {
    let mut b = GraphBuilder::new(&cfg.input_shape, device, seed);
    b.conv_init(ConvInit::KaimingNormalFanOut);
    let mut x = b.input();
    let mut cin = cfg.input_shape[0];
    let mut index = 0;
    for c in PLAN {
        if c == 0 {
            x = b.max_pool(x, PoolSpec::new(2, 2, 0))?;
            index += 1;
        } else {
            x = b.conv2d(
                &format!("features.{index}"),
                x,
                Conv2dSpec::new(cin, c, 3, 1, 1, true),
            )?;
            x = b.batch_norm(&format!("features.{}", index + 1), x)?;
            x = b.relu(x)?;
            index += 3;
            cin = c;
        }
    }
    let x = b.global_avg_pool(x)?;
    let x = b.flatten(x)?;
    let x = b.linear("classifier.0", x, 128, true)?;
    let x = b.relu(x)?;
    let x = b.dropout(x, 0.5)?;
    let x = b.linear("classifier.3", x, cfg.classes, true)?;
    b.finish(x)
}
