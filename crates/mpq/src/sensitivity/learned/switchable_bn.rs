//! Switchable batch norm (LIMPQ, Tang et al. ECCV 2022, docs/algorithms.md §5.2, after the code's
//! `SwithableBatchNorm`): every batch norm right after a searched convolution keeps one copy
//! of its affine parameters and running statistics per candidate bit-width, and a pass uses
//! the copy of the bits its convolution runs at.
//!
//! The graph keeps one set of batch-norm variables; before a pass [`SwitchableBn::load`]
//! writes the selected copies into them, and after it [`SwitchableBn::store`] moves their
//! gradients onto the copies' own variables and saves the updated running statistics, so
//! gradients of passes at different bits accumulate on different copies.

use candle::backprop::GradStore;
use candle::{Tensor, Var};

use super::hooks::IndicatorHooks;
use crate::graph::{Graph, Op};
use crate::{Error, Result};

/// One batch norm's per-width copies.
#[derive(Debug, Clone)]
struct BnCopies {
    /// The batch norm node's name.
    name: String,
    /// The searched convolution before it.
    conv: String,
    /// Per candidate: weight, bias (trainable), running mean, running var.
    weight: Vec<Var>,
    bias: Vec<Var>,
    mean: Vec<Tensor>,
    var: Vec<Tensor>,
}

/// The switchable batch norms of a graph.
#[derive(Debug, Clone)]
pub struct SwitchableBn {
    bns: Vec<BnCopies>,
}

fn deep(t: &Tensor) -> Result<Tensor> {
    Ok(t.detach().copy()?)
}

impl SwitchableBn {
    /// Copies of every batch norm whose input is one of `hooks`' searched convolutions, all
    /// starting from the graph's current values.
    pub fn new(graph: &Graph, hooks: &IndicatorHooks) -> Result<Self> {
        let k = hooks.bits().len();
        let nodes = graph.nodes();
        let mut bns = Vec::new();
        for node in nodes {
            if !matches!(node.op, Op::BatchNorm2d(_)) {
                continue;
            }
            let Some(&src) = node.inputs.first() else {
                continue;
            };
            let conv = &nodes[src];
            if !matches!(conv.op, Op::Conv2d(_)) || !hooks.layers().contains(&conv.name) {
                continue;
            }
            let p = |s: &str| graph.params().var(&format!("{}.{s}", node.name));
            let copies = |s: &str| -> Result<Vec<Var>> {
                (0..k)
                    .map(|_| Ok(Var::from_tensor(&deep(p(s)?.as_tensor())?)?))
                    .collect()
            };
            let stats = |s: &str| -> Result<Vec<Tensor>> {
                (0..k).map(|_| deep(p(s)?.as_tensor())).collect()
            };
            bns.push(BnCopies {
                name: node.name.clone(),
                conv: conv.name.clone(),
                weight: copies("weight")?,
                bias: copies("bias")?,
                mean: stats("running_mean")?,
                var: stats("running_var")?,
            });
        }
        Ok(SwitchableBn { bns })
    }

    /// Names of the switchable batch norms.
    pub fn names(&self) -> Vec<&str> {
        self.bns.iter().map(|b| b.name.as_str()).collect()
    }

    fn index(&self, hooks: &IndicatorHooks, bn: &BnCopies) -> Result<usize> {
        hooks.current(&bn.conv).ok_or_else(|| {
            Error::config(
                "limpq",
                format!("no bits set for {} (before {})", bn.conv, bn.name),
            )
        })
    }

    /// Writes the copies selected by `hooks`' current bits into the graph's variables.
    pub fn load(&self, graph: &Graph, hooks: &IndicatorHooks) -> Result<()> {
        for bn in &self.bns {
            let k = self.index(hooks, bn)?;
            let p = |s: &str| graph.params().var(&format!("{}.{s}", bn.name));
            p("weight")?.set(bn.weight[k].as_tensor())?;
            p("bias")?.set(bn.bias[k].as_tensor())?;
            p("running_mean")?.set(&bn.mean[k])?;
            p("running_var")?.set(&bn.var[k])?;
        }
        Ok(())
    }

    /// After a pass: moves the gradients of the graph's batch-norm variables in `grads` to the
    /// selected copies (adding to what earlier passes left in `acc`) and keeps the updated
    /// running statistics.
    pub fn store(
        &mut self,
        graph: &Graph,
        hooks: &IndicatorHooks,
        grads: &mut GradStore,
        acc: &mut GradStore,
    ) -> Result<()> {
        for i in 0..self.bns.len() {
            let k = self.index(hooks, &self.bns[i])?;
            let bn = &mut self.bns[i];
            let p = |s: &str| graph.params().var(&format!("{}.{s}", bn.name));
            for (s, copy) in [("weight", &bn.weight[k]), ("bias", &bn.bias[k])] {
                if let Some(g) = grads.remove(p(s)?.as_tensor()) {
                    let g = match acc.remove(copy.as_tensor()) {
                        Some(old) => (old + g)?,
                        None => g,
                    };
                    acc.insert(copy.as_tensor(), g);
                }
            }
            bn.mean[k] = deep(p("running_mean")?.as_tensor())?;
            bn.var[k] = deep(p("running_var")?.as_tensor())?;
        }
        Ok(())
    }

    /// The copies' trainable variables (what the optimizer updates instead of the graph's
    /// batch-norm affine parameters).
    pub fn trainable(&self) -> Vec<Var> {
        self.bns
            .iter()
            .flat_map(|b| b.weight.iter().chain(&b.bias).cloned())
            .collect()
    }

    /// The graph's batch-norm variables the copies stand in for (left out of the optimizer).
    pub fn replaced(&self, graph: &Graph) -> Result<Vec<Var>> {
        let mut v = Vec::new();
        for b in &self.bns {
            for s in ["weight", "bias"] {
                v.push(graph.params().var(&format!("{}.{s}", b.name))?.clone());
            }
        }
        Ok(v)
    }

    /// The running mean of batch norm `name` for candidate index `k`.
    pub fn running_mean(&self, name: &str, k: usize) -> Option<&Tensor> {
        self.bns.iter().find(|b| b.name == name).map(|b| &b.mean[k])
    }
}
