//! The gradient plumbing of the reverse-mode engine: node gradients moved or summed into
//! their slots, the local candle autograd that runs the nodes without a hand-written rule
//! (their own forward on a variable, then `backward` of `Σ y·dy`), and the sink that collects
//! a pass's results (a training step's parameter gradients, as `loss.backward()` gives them;
//! a Hessian pass's per-layer gradients, as PyHessian, Yao et al. 2020, differentiates).

use candle::backprop::GradStore;
use candle::{Tensor, Var};

use super::LayerGrads;
use crate::Result;

/// Adds `g` to a node's gradient slot (moved in when it is the first).
pub(super) fn add_grad(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        None => g,
        Some(a) => mpq_kernels::add_masked(&a, &g, None)?,
    });
    Ok(())
}

/// The input gradient of a global average pool over an input of `dims` `[N, C, H, W]`.
pub(super) fn global_avg_pool_grad(g: &Tensor, dims: &[usize]) -> Result<Tensor> {
    let hw: usize = dims[2..].iter().product();
    Ok((g / hw.max(1) as f64)?.broadcast_as(dims)?.contiguous()?)
}

/// The backward step of a node run under candle's autograd on the variable `x` with output
/// `y`: the gradient of `x` for the output gradient `g`, and the whole local store (the
/// gradients of whatever else `y` depends on).
pub(super) fn local_grad(x: &Var, y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, GradStore)> {
    let local = local_backward(y, g)?;
    Ok((local.get(x.as_tensor()).cloned(), local))
}

/// [`local_grad`] for a node with several input variables `xs`.
pub(super) fn local_grads(
    xs: &[Var],
    y: &Tensor,
    g: &Tensor,
) -> Result<(Vec<Option<Tensor>>, GradStore)> {
    let local = local_backward(y, g)?;
    let gs = xs
        .iter()
        .map(|x| local.get(x.as_tensor()).cloned())
        .collect();
    Ok((gs, local))
}

/// candle's backward of `y` (built under autograd) for the output gradient `g`.
pub(super) fn local_backward(y: &Tensor, g: &Tensor) -> Result<GradStore> {
    Ok((y * g)?.sum_all()?.backward()?)
}

/// Where one pass's gradients go.
#[derive(Default)]
pub(super) struct Sink {
    /// A training step's gradients of parameters and hook variables, keyed by tensor.
    pub(super) store: GradStore,
    /// The tensors whose gradients a local backward contributes to `store` (a training step:
    /// the parameters and the hooks' trainable variables; none in a Hessian pass).
    pub(super) targets: Vec<Tensor>,
    /// A Hessian pass's gradients of the analysed layers' weights and input activations.
    pub(super) layers: LayerGrads,
}

impl Sink {
    /// Adds `grad` to `t`'s gradient in the store.
    pub(super) fn accumulate(&mut self, t: &Tensor, grad: Tensor) -> Result<()> {
        accumulate(&mut self.store, t, grad)
    }

    /// Adds a local backward's gradients of the targets into the store; the rest of `local`
    /// (its intermediate nodes) is dropped.
    pub(super) fn merge(&mut self, local: GradStore) -> Result<()> {
        for t in &self.targets {
            if let Some(g) = local.get(t) {
                accumulate(&mut self.store, t, g.clone())?;
            }
        }
        Ok(())
    }
}

/// Adds `grad` to `t`'s gradient in `store`.
fn accumulate(store: &mut GradStore, t: &Tensor, grad: Tensor) -> Result<()> {
    let g = match store.remove(t) {
        Some(a) => (a + grad)?,
        None => grad,
    };
    store.insert(t, g);
    Ok(())
}
