//! Numerical guards (docs/file-formats.md, "Numbers that are not finite"): a model whose
//! weights hold NaN or infinity is refused when it is opened, and the stages that compute
//! from it (training, fine-tuning, evaluation, learned indicators) stop at the first
//! non-finite gradient, loss or result with one error naming the layer and the step, never
//! a number computed from NaN. ReLU and max-pooling can hide a NaN (its comparisons are
//! false), so a NaN-poisoned model can still give a finite loss and a plausible accuracy:
//! only the parameters themselves tell.

use candle::Tensor;

use crate::graph::Graph;
use crate::{Error, Result};

/// The layer a parameter belongs to (`conv1.weight` → `conv1`).
fn layer_of(param: &str) -> &str {
    param.rsplit_once('.').map_or(param, |(l, _)| l)
}

/// How many of `t`'s values are NaN or infinite.
pub fn non_finite_count(t: &Tensor) -> Result<usize> {
    let v = t
        .flatten_all()?
        .to_dtype(candle::DType::F32)?
        .to_vec1::<f32>()?;
    Ok(v.iter().filter(|x| !x.is_finite()).count())
}

/// Whether the sum of `t` is finite (one pass, no copy: NaN and infinity propagate through
/// a sum, so a finite sum means finite values unless they overflow together).
pub fn sum_is_finite(t: &Tensor) -> Result<bool> {
    let s = t
        .sum_all()?
        .to_dtype(candle::DType::F64)?
        .to_scalar::<f64>()?;
    Ok(s.is_finite())
}

/// Refuses a graph any of whose parameters (weights, biases, BatchNorm statistics) holds a
/// value that is not finite; `stage` says when it was found (`"the model file"`, `"after
/// training"`).
pub fn check_params(graph: &Graph, stage: &str) -> Result<()> {
    for p in graph.params().iter() {
        let t = p.var.as_tensor();
        if sum_is_finite(t)? {
            continue;
        }
        let bad = non_finite_count(t)?;
        if bad == 0 {
            continue;
        }
        return Err(Error::NonFinite(format!(
            "{stage}: parameter {} of layer {} holds {bad} NaN or infinite values of {}; \
             the model cannot be used",
            p.name,
            layer_of(&p.name),
            t.elem_count()
        )));
    }
    Ok(())
}

/// Refuses gradients that are not finite, naming the first parameter whose gradient is not
/// (`what` locates the step, e.g. `"training at epoch 2 step 130"`).
pub fn check_grads(grads: &candle::backprop::GradStore, graph: &Graph, what: &str) -> Result<()> {
    for p in graph.params().iter() {
        if let Some(g) = grads.get(p.var.as_tensor())
            && !sum_is_finite(g)?
        {
            return Err(Error::NonFinite(format!(
                "{what}: the gradient of {} (layer {}) is NaN or infinite (try a smaller --lr)",
                p.name,
                layer_of(&p.name)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;

    #[test]
    fn a_nan_in_one_weight_is_found_and_named() {
        let cfg = crate::meta::ZooConfig::new([1, 28, 28], 10);
        let graph = crate::zoo::build_graph("lenet5", &cfg, 0, &Device::Cpu).unwrap();
        check_params(&graph, "the model file").unwrap();
        let var = graph.params().var("conv2.weight").unwrap();
        let mut v = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        v[7] = f32::NAN;
        v[9] = f32::INFINITY;
        var.set(&Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap())
            .unwrap();
        let e = check_params(&graph, "the model file").unwrap_err();
        assert!(e.is_input_error());
        let msg = e.to_string();
        assert!(
            msg.contains("conv2.weight") && msg.contains("layer conv2"),
            "{msg}"
        );
        assert!(msg.contains("holds 2 NaN"), "{msg}");
    }
}
