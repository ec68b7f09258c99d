//! One training step's forward and backward pass, [`Graph::forward_backward`]: the engine's
//! training variant where it applies (`f32` on the CPU with the fast kernels), candle's
//! autograd of [`Graph::forward_with`] elsewhere. This is PyTorch's `loss.backward()` that
//! every method of mpq ends in (HAWQ's, Dong et al. 2019, and HAWQ-V2's, Dong et al. 2020,
//! fine-tuning; LIMPQ's joint training; HAQ's short fine-tunes). The two paths agree to
//! rounding (test `forward_backward_matches_candle_autograd_with_every_node_kind`).

use candle::backprop::GradStore;
use candle::{DType, Tensor};

use super::{Engine, Variant, applies};
use crate::graph::{ForwardOptions, Graph};
use crate::{Error, Result};

impl Graph {
    /// Runs the graph forward under `opts` (as [`Graph::forward_with`]) and back-propagates
    /// `loss(logits)`: returns the logits, the loss and the gradients of every parameter that
    /// gets one (and of the hooks' trainable variables), like `loss.backward()`.
    pub fn forward_backward(
        &self,
        x: &Tensor,
        opts: &mut ForwardOptions<'_>,
        loss: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, GradStore)> {
        let fast = applies(x.dtype(), x.device())
            && self.params.iter().all(|p| p.var.dtype() != DType::F64);
        if !fast {
            return self.forward_backward_autograd(x, opts, loss);
        }
        self.check_input(x)?;
        let (logits, l, sink) = Engine::new(self, Variant::Step(opts)).run(x, loss, None)?;
        let l = l.ok_or_else(|| Error::config("graph", "training step without a loss"))?;
        Ok((logits, l, sink.store))
    }

    /// [`Graph::forward_backward`] through candle's autograd on any device (the reference of
    /// the hand-written pass).
    pub fn forward_backward_autograd(
        &self,
        x: &Tensor,
        opts: &mut ForwardOptions<'_>,
        loss: &dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, GradStore)> {
        let logits = self.forward_with(x, opts)?;
        let l = loss(&logits)?;
        let grads = l.backward()?;
        Ok((logits, l, grads))
    }
}
