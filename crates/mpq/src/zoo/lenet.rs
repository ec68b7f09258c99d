//! LeNet-5 (LeCun et al. 1998, as the customary PyTorch module) and a small MLP.

use candle::Device;

use super::ZooConfig;
use crate::Result;
use crate::graph::{Conv2dSpec, Graph, GraphBuilder, NodeId, PoolSpec};

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
    fc_head(b, x, [120, 84], cfg.classes)
}

/// flatten, `fc1` 256, ReLU, `fc2` 128, ReLU, `fc3` classes.
pub(super) fn mlp(cfg: &ZooConfig, seed: u64, device: &Device) -> Result<Graph> {
    let b = GraphBuilder::new(&cfg.input_shape, device, seed);
    let x = b.input();
    fc_head(b, x, [256, 128], cfg.classes)
}

/// flatten, `fc1` `hidden[0]`, ReLU, `fc2` `hidden[1]`, ReLU, `fc3` classes (with biases).
fn fc_head(mut b: GraphBuilder, x: NodeId, hidden: [usize; 2], classes: usize) -> Result<Graph> {
    let mut x = b.flatten(x)?;
    for (i, h) in hidden.into_iter().enumerate() {
        x = b.linear(&format!("fc{}", i + 1), x, h, true)?;
        x = b.relu(x)?;
    }
    let x = b.linear("fc3", x, classes, true)?;
    b.finish(x)
}
