//! Applying a [`QuantPlan`] to a graph through the executor hooks: each planned layer's
//! weight is fake-quantized (symmetric max-abs scales, per output channel or per tensor, or
//! asymmetric min/max) and its input activation is fake-quantized with a range calibrated on
//! sample batches (unsigned when the activation is non-negative, as after ReLU).
//! Rounding is half to even, the same as export.

use std::collections::HashMap;

use candle::Tensor;

use super::observer::{Observer, RangeMethod};
use super::params::QuantParams;
use crate::data::{self, Dataset, LoaderConfig, Normalization};
use crate::graph::{ForwardOptions, Graph, Hooks, Mode};
use crate::plan::{Granularity, LayerPrecision, QuantPlan, QuantizerKind};
use crate::{Error, Result};

/// Collects the input-activation ranges of the layers a plan quantizes.
struct CalibrationHooks {
    observers: HashMap<String, Observer>,
}

impl Hooks for CalibrationHooks {
    fn activation(&mut self, layer: &str, x: &Tensor) -> Result<Tensor> {
        if let Some(o) = self.observers.get_mut(layer) {
            let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
            o.observe(&v);
        }
        Ok(x.clone())
    }
}

/// Hooks that simulate a plan exactly: fake-quantized weights and input activations.
#[derive(Debug, Clone)]
pub struct PlanHooks {
    layers: HashMap<String, LayerPrecision>,
    activations: HashMap<String, QuantParams>,
}

/// Settings of activation calibration.
#[derive(Debug, Clone)]
pub struct CalibrationConfig {
    /// Samples of the calibration set used (its first ones, in file order).
    pub samples: usize,
    /// Samples per forward pass.
    pub batch_size: usize,
    /// How ranges are chosen.
    pub method: RangeMethod,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        CalibrationConfig {
            samples: 512,
            batch_size: 128,
            method: RangeMethod::MinMax,
        }
    }
}

/// Quantization parameters of a weight tensor `[out, ...]` under `p` (`bits < 32`).
pub fn weight_params(w: &Tensor, p: &LayerPrecision) -> Result<QuantParams> {
    if p.channel_w_bits.is_some() {
        return Err(Error::config(
            "policy",
            format!(
                "layer {}: per-channel bit-widths are not supported by this build yet",
                p.name
            ),
        ));
    }
    let out = w.dim(0)?;
    let flat = w.detach().reshape((out, w.elem_count() / out.max(1)))?;
    match (p.quantizer, p.granularity) {
        (QuantizerKind::Asymmetric, _) => {
            let lo = flat.min_all()?.to_scalar::<f32>()?;
            let hi = flat.max_all()?.to_scalar::<f32>()?;
            QuantParams::asymmetric(lo, hi, p.w_bits)
        }
        (_, Granularity::PerChannel) => {
            let m: Vec<f32> = flat.abs()?.max(1)?.to_vec1()?;
            QuantParams::symmetric_per_channel(&m, p.w_bits, 0)
        }
        (_, Granularity::PerTensor) => {
            let m = flat.abs()?.max_all()?.to_scalar::<f32>()?;
            QuantParams::symmetric(m, p.w_bits)
        }
    }
}

/// Fake-quantizes `x` with `q` (per channel along `q.axis`).
pub fn fake_quant_tensor(x: &Tensor, q: &QuantParams) -> Result<Tensor> {
    let dev = x.device();
    let scale = Tensor::from_slice(&q.scale, q.scale.len(), dev)?;
    let zp = Tensor::from_slice(&q.zero_point, q.zero_point.len(), dev)?;
    let axis = if q.scale.len() > 1 { q.axis } else { None };
    Ok(mpq_kernels::fake_quant(
        x, &scale, &zp, q.qmin, q.qmax, axis,
    )?)
}

impl PlanHooks {
    /// Validates `plan` against the graph and calibrates the activation ranges of every layer
    /// whose activations it quantizes, on the first `cfg.samples` samples of `calib`.
    pub fn calibrate(
        graph: &Graph,
        plan: &QuantPlan,
        calib: &Dataset,
        norm: &Normalization,
        cfg: &CalibrationConfig,
    ) -> Result<PlanHooks> {
        plan.validate(&graph.layer_infos()?)?;
        let layers: HashMap<String, LayerPrecision> = plan
            .layers
            .iter()
            .map(|l| (l.name.clone(), l.clone()))
            .collect();
        let mut hooks = CalibrationHooks {
            observers: layers
                .values()
                .filter(|l| l.a_bits < 32)
                .map(|l| (l.name.clone(), Observer::new(cfg.method)))
                .collect(),
        };
        if !hooks.observers.is_empty() {
            if calib.is_empty() || cfg.samples == 0 {
                return Err(Error::config("calibration", "no calibration samples"));
            }
            let subset = calib.take(cfg.samples.min(calib.len()));
            let loader = LoaderConfig {
                batch_size: cfg.batch_size.max(1),
                shuffle: false,
                augment: false,
                drop_last: false,
                seed: 0,
            };
            for batch in data::batches(&subset, norm, &loader, 0, graph.device()) {
                let batch = batch?;
                graph.forward_with(&batch.x, &mut ForwardOptions::new(Mode::Eval, &mut hooks))?;
            }
        }
        let mut activations = HashMap::new();
        for (name, obs) in &hooks.observers {
            let bits = layers[name].a_bits;
            let (lo, hi) = obs.range(bits, false)?;
            let q = if lo >= 0.0 {
                QuantParams::unsigned(hi, bits)?
            } else {
                QuantParams::asymmetric(lo, hi, bits)?
            };
            activations.insert(name.clone(), q);
        }
        Ok(PlanHooks {
            layers,
            activations,
        })
    }

    /// The calibrated activation parameters of `layer`, if its activations are quantized.
    pub fn activation_params(&self, layer: &str) -> Option<&QuantParams> {
        self.activations.get(layer)
    }
}

impl Hooks for PlanHooks {
    fn weight(&mut self, layer: &str, w: &Tensor) -> Result<Tensor> {
        match self.layers.get(layer) {
            Some(p) if p.w_bits < 32 => fake_quant_tensor(w, &weight_params(w, p)?),
            _ => Ok(w.clone()),
        }
    }

    fn activation(&mut self, layer: &str, x: &Tensor) -> Result<Tensor> {
        match self.activations.get(layer) {
            Some(q) => fake_quant_tensor(x, q),
            None => Ok(x.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::fake_quant_values;
    use crate::zoo::{self, ZooConfig};
    use candle::Device;

    #[test]
    fn weight_hook_equals_reference_fake_quant() {
        let model = zoo::build("lenet5", &ZooConfig::new([1, 28, 28], 10), 3).unwrap();
        let w = model
            .graph
            .params()
            .var("conv2.weight")
            .unwrap()
            .as_tensor()
            .clone();
        for (bits, gran) in [(4, Granularity::PerChannel), (3, Granularity::PerTensor)] {
            let mut p = LayerPrecision::new("conv2", bits, 32);
            p.granularity = gran;
            let q = weight_params(&w, &p).unwrap();
            let fast: Vec<f32> = fake_quant_tensor(&w, &q)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let slow = fake_quant_values(&w.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &q);
            assert_eq!(fast, slow, "{bits} bits {gran:?}");
            let distinct: std::collections::BTreeSet<u32> =
                fast.iter().map(|v| v.to_bits()).collect();
            let per = if gran == Granularity::PerChannel {
                16
            } else {
                1
            };
            assert!(
                distinct.len() <= per * ((1 << bits) - 1),
                "{} levels",
                distinct.len()
            );
        }
    }

    #[test]
    fn calibrated_plan_changes_logits_by_bits() {
        let splits = data::load("synthetic:1x28x28:10:64", &Default::default()).unwrap();
        let model = zoo::build("lenet5", &ZooConfig::new([1, 28, 28], 10), 1).unwrap();
        let layers = model.graph.layer_infos().unwrap();
        let x = data::to_tensor(
            &splits.test,
            &[0, 1, 2, 3],
            &splits.normalization,
            &Device::Cpu,
        )
        .unwrap();
        let fp = model.graph.forward(&x, Mode::Eval).unwrap();
        let mut errs = Vec::new();
        for bits in [8, 4, 2] {
            let plan = QuantPlan::uniform(&layers, bits, bits);
            let mut hooks = PlanHooks::calibrate(
                &model.graph,
                &plan,
                &splits.train,
                &splits.normalization,
                &CalibrationConfig::default(),
            )
            .unwrap();
            let first = hooks.activation_params("conv1").unwrap().clone();
            assert!(
                first.qmin == 0.0 && first.zero_point[0] > 0.0,
                "normalised input is signed"
            );
            assert_eq!(
                hooks.activation_params("fc1").unwrap().zero_point[0],
                0.0,
                "post-ReLU is unsigned"
            );
            let q = model
                .graph
                .forward_with(&x, &mut ForwardOptions::new(Mode::Eval, &mut hooks))
                .unwrap();
            let e = (q - &fp)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            errs.push(e);
        }
        assert!(
            errs[0] > 0.0 && errs[0] < errs[1] && errs[1] < errs[2],
            "{errs:?}"
        );
    }
}
