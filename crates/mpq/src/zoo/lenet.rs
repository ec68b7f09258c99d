//! LeNet-5 (LeCun et al. 1998, as the customary PyTorch module) and a small MLP.

use candle::Device;

use super::ZooConfig;
use crate::Result;
use crate::graph::{Conv2dSpec, Graph, GraphBuilder, PoolSpec};

/// `conv1` 6@5x5, ReLU, max-pool 2, `conv2` 16@5x5, ReLU, max-pool 2, flatten,
/// `fc1` 120, ReLU, `fc2` 84, ReLU, `fc3` classes; all with biases, no padding.
pub(super) fn lenet5(cfg: &ZooConfig, seed: u64, device: &Device) -> Result<Graph> {
    let mut b = GraphBuilder::new(&cfg.input_shape, device, seed);
    let c = cfg.input_shape[0];
    let x = b.conv2d("conv1", b.input(), Conv2dSpec::new(c, 6, 5, 1, 0, true))?;
    let x = b.relu(x)?;
    let x = b.max_pool(x, PoolSpec::new(2, 2, 0))?;
    let x = b.conv2d("conv2", x, Conv2dSpec::new(6, 16, 5, 1, 0, true))?;
    let x = b.relu(x)?;
    let x = b.max_pool(x, PoolSpec::new(2, 2, 0))?;
    let x = b.flatten(x)?;
    let x = b.linear("fc1", x, 120, true)?;
    let x = b.relu(x)?;
    let x = b.linear("fc2", x, 84, true)?;
    let x = b.relu(x)?;
    let x = b.linear("fc3", x, cfg.classes, true)?;
    b.finish(x)
}

/// flatten, `fc1` 256, ReLU, `fc2` 128, ReLU, `fc3` classes.
pub(super) fn mlp(cfg: &ZooConfig, seed: u64, device: &Device) -> Result<Graph> {
    let mut b = GraphBuilder::new(&cfg.input_shape, device, seed);
    let x = b.flatten(b.input())?;
    let x = b.linear("fc1", x, 256, true)?;
    let x = b.relu(x)?;
    let x = b.linear("fc2", x, 128, true)?;
    let x = b.relu(x)?;
    let x = b.linear("fc3", x, cfg.classes, true)?;
    b.finish(x)
}
