//! Applying a [`QuantPlan`] to a graph through the executor hooks: each planned layer's
//! weight is fake-quantized (symmetric scales from the max-abs or the MSE-optimal clip, per
//! output channel or per tensor, or asymmetric min/max) and its input activation is fake-quantized with a range calibrated on
//! sample batches (unsigned when the activation is non-negative, as after ReLU).
//! Rounding is half to even, the same as export. K-means layers (HAQ, docs/algorithms.md §4.9) are
//! clustered once at calibration; each forward pass then uses the per-cluster means of the
//! current weights over that fixed assignment (centroid sharing), with a straight-through
//! gradient.

use std::collections::HashMap;
use std::sync::Arc;

use candle::Tensor;

use super::kmeans::{Codebook, cluster_means, kmeans_1d, layer_seed};
use super::lsq::LsqQuantizer;
use super::observer::{Observer, RangeMethod};
use super::params::{QuantParams, mse_symmetric_max, mse_symmetric_max_rows};
use crate::data::{self, Dataset, LoaderConfig, Normalization};
use crate::graph::{ForwardOptions, Graph, Hooks, Mode};
use crate::plan::{Granularity, LayerPrecision, QuantPlan, QuantizerKind, WeightRange};
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

/// How a planned layer's weight is quantized on each forward pass.
#[derive(Debug, Clone)]
enum WeightQuant {
    /// Scales from the current weight (max-abs per channel or tensor, or min/max), so QAT
    /// sees the quantizer follow the weights.
    Dynamic(LayerPrecision),
    /// LSQ's learned step.
    Lsq(LsqQuantizer),
    /// A k-means assignment fixed at calibration: the weight is the per-cluster mean of the
    /// current weights (centroid sharing).
    KMeans(KMeansWeight),
    /// The weight already holds dequantized values (a loaded packed model): identity.
    Frozen,
}

/// A k-means layer's fixed clustering.
#[derive(Debug, Clone)]
struct KMeansWeight {
    /// Code width `b` (the plan's `w_bits`).
    bits: u32,
    /// Cluster of each weight element (row-major), shared by clones of the hooks.
    codes: Arc<[u16]>,
    /// The centroids found at calibration: the value of a cluster without members.
    centroids: Vec<f32>,
}

impl KMeansWeight {
    /// Per-cluster means of `w` (`f32` values in row-major order) over the fixed codes.
    fn means(&self, layer: &str, w: &Tensor) -> Result<Vec<f32>> {
        let v: Vec<f32> = w
            .detach()
            .flatten_all()?
            .to_dtype(candle::DType::F32)?
            .to_vec1()?;
        if v.len() != self.codes.len() {
            return Err(Error::ShapeMismatch {
                name: format!("weight of k-means layer {layer}"),
                expected: format!("{} elements (as calibrated)", self.codes.len()),
                got: format!("{} elements", v.len()),
            });
        }
        Ok(cluster_means(&v, &self.codes, &self.centroids))
    }

    /// The shared weight: every element its cluster's mean of the current weights, with the
    /// straight-through gradient `∂/∂w = 1`. The value is exactly `means[code]`:
    /// `w − detach(w)` is `+0` everywhere and the means are never `−0`.
    fn apply(&self, layer: &str, w: &Tensor) -> Result<Tensor> {
        let means = self.means(layer, w)?;
        let q: Vec<f32> = self.codes.iter().map(|&c| means[usize::from(c)]).collect();
        let q = Tensor::from_vec(q, w.shape(), w.device())?.to_dtype(w.dtype())?;
        Ok((q + (w - w.detach())?)?)
    }
}

/// How a planned layer's input activation is quantized.
#[derive(Debug, Clone)]
enum ActQuant {
    /// A calibrated range.
    Fixed(QuantParams),
    /// LSQ's learned step (initialised from calibration).
    Lsq(LsqQuantizer),
}

/// Hooks that simulate a plan exactly: fake-quantized weights and input activations.
#[derive(Debug, Clone)]
pub struct PlanHooks {
    plan: QuantPlan,
    weights: HashMap<String, WeightQuant>,
    activations: HashMap<String, ActQuant>,
}

/// Settings of activation calibration.
#[derive(Debug, Clone, PartialEq)]
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

/// Refuses `p` unless its quantizer is symmetric per channel, the one per-channel bit-widths
/// need: an input error on `field`, "layer L: `needs` the symmetric per-channel quantizer".
pub(super) fn require_symmetric_per_channel(
    p: &LayerPrecision,
    field: &str,
    needs: &str,
) -> Result<()> {
    if p.quantizer != QuantizerKind::Symmetric || p.granularity != Granularity::PerChannel {
        return Err(Error::config(
            field,
            format!(
                "layer {}: {needs} the symmetric per-channel quantizer",
                p.name
            ),
        ));
    }
    Ok(())
}

/// Quantization parameters of a weight tensor `[out, ...]` under `p` (`bits < 32`):
/// symmetric max-abs (per channel, with optional per-channel widths, or per tensor) or
/// asymmetric min/max (per channel or per tensor). LSQ layers get theirs from their learned
/// step ([`PlanHooks::weight_quant_params`]); k-means layers have a codebook instead
/// ([`PlanHooks::weight_codebook`]), an error here.
pub fn weight_params(w: &Tensor, p: &LayerPrecision) -> Result<QuantParams> {
    let out = w.dim(0)?;
    let flat = w.detach().reshape((out, w.elem_count() / out.max(1)))?;
    if let Some(bits) = &p.channel_w_bits {
        require_symmetric_per_channel(p, "policy", "channel_w_bits needs")?;
        let m: Vec<f32> = match p.weight_range {
            WeightRange::MaxAbs => flat.abs()?.max(1)?.to_vec1()?,
            WeightRange::Mse => {
                let rows: Vec<Vec<f32>> = flat.to_dtype(candle::DType::F32)?.to_vec2()?;
                mse_symmetric_max_rows(&rows, |c| bits[c])?
            }
        };
        return QuantParams::symmetric_channel_bits(&m, bits, 0);
    }
    match (p.quantizer, p.granularity) {
        (QuantizerKind::KMeans, _) => Err(Error::config(
            "policy",
            format!(
                "layer {}: k-means weights use a codebook, not uniform parameters",
                p.name
            ),
        )),
        (QuantizerKind::Lsq, _) => Err(Error::config(
            "policy",
            format!(
                "layer {}: LSQ weight steps are learned, not computed",
                p.name
            ),
        )),
        (QuantizerKind::Asymmetric, Granularity::PerChannel) => {
            let lo: Vec<f32> = flat.min(1)?.to_vec1()?;
            let hi: Vec<f32> = flat.max(1)?.to_vec1()?;
            QuantParams::asymmetric_per_channel(&lo, &hi, p.w_bits, 0)
        }
        (QuantizerKind::Asymmetric, Granularity::PerTensor) => {
            let lo = flat.min_all()?.to_scalar::<f32>()?;
            let hi = flat.max_all()?.to_scalar::<f32>()?;
            QuantParams::asymmetric(lo, hi, p.w_bits)
        }
        (QuantizerKind::Symmetric, Granularity::PerChannel) => {
            let m: Vec<f32> = match p.weight_range {
                WeightRange::MaxAbs => flat.abs()?.max(1)?.to_vec1()?,
                WeightRange::Mse => {
                    let rows: Vec<Vec<f32>> = flat.to_dtype(candle::DType::F32)?.to_vec2()?;
                    mse_symmetric_max_rows(&rows, |_| p.w_bits)?
                }
            };
            QuantParams::symmetric_per_channel(&m, p.w_bits, 0)
        }
        (QuantizerKind::Symmetric, Granularity::PerTensor) => {
            let m = match p.weight_range {
                WeightRange::MaxAbs => flat.abs()?.max_all()?.to_scalar::<f32>()?,
                WeightRange::Mse => {
                    let v: Vec<f32> = flat
                        .flatten_all()?
                        .to_dtype(candle::DType::F32)?
                        .to_vec1()?;
                    mse_symmetric_max(&v, p.w_bits)?
                }
            };
            QuantParams::symmetric(m, p.w_bits)
        }
    }
}

/// Fake-quantizes `x` with `q` (per channel along `q.axis`). With per-channel widths, each
/// channel is first clamped to its own range `[lo_c·s_c, hi_c·s_c]` (so a clipped range, such
/// as the MSE clip, saturates at the channel's width, and the straight-through gradient stops
/// outside it), then quantized with the widest range: `clamp(round(x/s), lo, hi)` equals
/// `round(clamp(x/s, lo, hi))` for integer bounds, so codes match [`QuantParams::code`].
pub fn fake_quant_tensor(x: &Tensor, q: &QuantParams) -> Result<Tensor> {
    let dev = x.device();
    if let (Some(bits), Some(axis)) = (&q.channel_bits, q.axis)
        && bits.iter().any(|&b| b != q.bits)
        && q.scale.len() == x.dim(axis)?
    {
        let mut shape = vec![1usize; x.rank()];
        shape[axis] = q.scale.len();
        let (lo, hi): (Vec<f32>, Vec<f32>) = (0..q.scale.len())
            .map(|c| {
                let (l, h) = q.range(c);
                (l * q.scale[c], h * q.scale[c])
            })
            .unzip();
        let lo = Tensor::from_vec(lo, shape.as_slice(), dev)?.to_dtype(x.dtype())?;
        let hi = Tensor::from_vec(hi, shape.as_slice(), dev)?.to_dtype(x.dtype())?;
        let clamped = x.broadcast_maximum(&lo)?.broadcast_minimum(&hi)?;
        let wide = QuantParams {
            channel_bits: None,
            ..q.clone()
        };
        return fake_quant_tensor(&clamped, &wide);
    }
    let scale = Tensor::from_slice(&q.scale, q.scale.len(), dev)?;
    let zp = Tensor::from_slice(&q.zero_point, q.zero_point.len(), dev)?;
    let axis = if q.scale.len() > 1 { q.axis } else { None };
    Ok(mpq_kernels::fake_quant(
        x, &scale, &zp, q.qmin, q.qmax, axis,
    )?)
}

/// The graph a plan runs on: with `plan.fold_bn`, every foldable BatchNorm merged into its
/// convolution (as deployed integer models do, so weights are quantized after folding);
/// otherwise a copy. Either way the result owns its weights, so fine-tuning it leaves
/// `graph` unchanged.
pub fn prepare_graph(graph: &Graph, plan: &QuantPlan) -> Result<Graph> {
    if plan.fold_bn {
        Ok(graph.fold_batch_norm()?.0)
    } else {
        graph.deep_copy()
    }
}

/// Eval-mode forward passes over the first `cfg.samples` samples of `calib` (in file order),
/// for hooks that observe activations; returns the number of samples seen.
pub(crate) fn calibration_pass(
    graph: &Graph,
    calib: &Dataset,
    norm: &Normalization,
    cfg: &CalibrationConfig,
    hooks: &mut dyn Hooks,
) -> Result<usize> {
    let samples = cfg.samples.min(calib.len());
    if samples == 0 {
        return Err(Error::config("calibration", "no calibration samples"));
    }
    let subset = calib.take(samples);
    let loader = LoaderConfig {
        batch_size: cfg.batch_size.max(1),
        shuffle: false,
        augment: false,
        drop_last: false,
        seed: 0,
    };
    for batch in data::batches(&subset, norm, &loader, 0, graph.device()) {
        let batch = batch?;
        graph.forward_with(&batch.x, &mut ForwardOptions::new(Mode::Eval, hooks))?;
    }
    Ok(samples)
}

impl PlanHooks {
    /// Validates `plan` against the graph and calibrates the activation ranges of every layer
    /// whose activations it quantizes, on the first `cfg.samples` samples of `calib`. LSQ
    /// layers get their initial steps here (`2·mean|x|/√Qp` over the calibration samples
    /// for activations). K-means layers are clustered here, once, on the graph's current
    /// weights: `2^b` clusters, [`LayerPrecision::kmeans_max_iter`] Lloyd rounds, seeded by
    /// [`layer_seed`] of the layer name. Run it on [`prepare_graph`]'s graph.
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
            calibration_pass(graph, calib, norm, cfg, &mut hooks)?;
        }
        let mut activations = HashMap::new();
        for (name, obs) in &hooks.observers {
            let p = &layers[name];
            let bits = p.a_bits;
            let (lo, hi) = obs.range(bits, false)?;
            let q = if p.quantizer == QuantizerKind::Lsq {
                ActQuant::Lsq(LsqQuantizer::for_activation(
                    obs.mean_abs(),
                    bits,
                    lo < 0.0,
                    graph.device(),
                )?)
            } else if lo >= 0.0 {
                ActQuant::Fixed(QuantParams::unsigned(hi, bits)?)
            } else {
                ActQuant::Fixed(QuantParams::asymmetric(lo, hi, bits)?)
            };
            activations.insert(name.clone(), q);
        }
        let mut weights = HashMap::new();
        for p in layers.values().filter(|p| !p.weights_full_precision()) {
            let q = if p.quantizer == QuantizerKind::Lsq {
                if p.channel_w_bits.is_some() {
                    return Err(Error::config(
                        "policy",
                        format!("layer {}: channel_w_bits is not supported with LSQ", p.name),
                    ));
                }
                let w = graph.params().var(&format!("{}.weight", p.name))?;
                WeightQuant::Lsq(LsqQuantizer::for_weight(
                    w.as_tensor(),
                    p.w_bits,
                    p.granularity == Granularity::PerChannel,
                )?)
            } else if p.quantizer == QuantizerKind::KMeans {
                let w = graph.params().var(&format!("{}.weight", p.name))?;
                let v: Vec<f32> = w
                    .as_tensor()
                    .flatten_all()?
                    .to_dtype(candle::DType::F32)?
                    .to_vec1()?;
                let fit = kmeans_1d(
                    &v,
                    1usize << p.w_bits,
                    p.kmeans_max_iter(),
                    layer_seed(&p.name),
                )
                .map_err(|e| match e {
                    Error::NonFinite(_) => {
                        Error::NonFinite(format!("weights of k-means layer {}", p.name))
                    }
                    e => e,
                })?;
                WeightQuant::KMeans(KMeansWeight {
                    bits: p.w_bits,
                    codes: fit.codes.into(),
                    centroids: fit.centroids,
                })
            } else {
                WeightQuant::Dynamic(p.clone())
            };
            weights.insert(p.name.clone(), q);
        }
        Ok(PlanHooks {
            plan: plan.clone(),
            weights,
            activations,
        })
    }

    /// Hooks of an already-quantized model whose weights hold dequantized values: weights
    /// pass unchanged, input activations are fake-quantized with the given parameters.
    pub fn frozen(plan: &QuantPlan, activations: HashMap<String, QuantParams>) -> PlanHooks {
        let weights = plan
            .layers
            .iter()
            .filter(|p| !p.weights_full_precision())
            .map(|p| (p.name.clone(), WeightQuant::Frozen))
            .collect();
        PlanHooks {
            plan: plan.clone(),
            weights,
            activations: activations
                .into_iter()
                .map(|(k, v)| (k, ActQuant::Fixed(v)))
                .collect(),
        }
    }

    /// The plan being simulated.
    pub fn plan(&self) -> &QuantPlan {
        &self.plan
    }

    /// The activation parameters of `layer` now (LSQ steps as uniform parameters), if its
    /// activations are quantized.
    pub fn activation_params(&self, layer: &str) -> Result<Option<QuantParams>> {
        match self.activations.get(layer) {
            Some(ActQuant::Fixed(q)) => Ok(Some(q.clone())),
            Some(ActQuant::Lsq(l)) => Ok(Some(l.params()?)),
            None => Ok(None),
        }
    }

    /// The parameters that quantize `layer`'s weight `w` on the next forward pass, if its
    /// weights are quantized. Frozen (already dequantized) weights are an error: their
    /// parameters were consumed when they were loaded.
    pub fn weight_quant_params(&self, layer: &str, w: &Tensor) -> Result<Option<QuantParams>> {
        match self.weights.get(layer) {
            Some(WeightQuant::Dynamic(p)) => Ok(Some(weight_params(w, p)?)),
            Some(WeightQuant::Lsq(l)) => Ok(Some(l.params()?)),
            Some(WeightQuant::KMeans(_)) => Err(Error::config(
                "policy",
                format!("layer {layer}: k-means weights use a codebook, not uniform parameters"),
            )),
            Some(WeightQuant::Frozen) => Err(Error::config(
                "model",
                format!("layer {layer} is already quantized"),
            )),
            None => Ok(None),
        }
    }

    /// The codebook and codes that quantize `layer`'s weight `w` on the next forward pass,
    /// if it is a k-means layer: the per-cluster means of `w` over the assignment fixed at
    /// calibration (a cluster without members keeps its calibration centroid), so that
    /// `centroids[codes[i]]` is, bit for bit, element `i` of the simulated weight.
    pub fn weight_codebook(&self, layer: &str, w: &Tensor) -> Result<Option<Codebook>> {
        match self.weights.get(layer) {
            Some(WeightQuant::KMeans(k)) => {
                let centroids = k.means(layer, w)?;
                Ok(Some(Codebook {
                    bits: k.bits,
                    centroids,
                    codes: k.codes.clone(),
                }))
            }
            _ => Ok(None),
        }
    }

    /// Whether the weights are already quantized (a loaded packed model).
    pub fn is_frozen(&self) -> bool {
        self.weights
            .values()
            .any(|w| matches!(w, WeightQuant::Frozen))
    }
}

impl Hooks for PlanHooks {
    fn weight(&mut self, layer: &str, w: &Tensor) -> Result<Tensor> {
        match self.weights.get(layer) {
            Some(WeightQuant::Dynamic(p)) => fake_quant_tensor(w, &weight_params(w, p)?),
            Some(WeightQuant::Lsq(l)) => l.apply(w),
            Some(WeightQuant::KMeans(k)) => k.apply(layer, w),
            Some(WeightQuant::Frozen) | None => Ok(w.clone()),
        }
    }

    fn activation(&mut self, layer: &str, x: &Tensor) -> Result<Tensor> {
        match self.activations.get(layer) {
            Some(ActQuant::Fixed(q)) => fake_quant_tensor(x, q),
            Some(ActQuant::Lsq(l)) => l.apply(x),
            None => Ok(x.clone()),
        }
    }

    fn trainable(&self) -> Vec<candle::Var> {
        let names: std::collections::BTreeSet<&String> =
            self.weights.keys().chain(self.activations.keys()).collect();
        let mut vars = Vec::new();
        for n in names {
            if let Some(WeightQuant::Lsq(l)) = self.weights.get(n) {
                vars.push(l.var().clone());
            }
            if let Some(ActQuant::Lsq(l)) = self.activations.get(n) {
                vars.push(l.var().clone());
            }
        }
        vars
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

    fn kmeans_setup(bits: u32) -> (Graph, PlanHooks) {
        let splits = data::load("synthetic:1x28x28:10:32", &Default::default()).unwrap();
        let model = zoo::build("lenet5", &ZooConfig::new([1, 28, 28], 10), 4).unwrap();
        let layers = model.graph.layer_infos().unwrap();
        let mut plan = QuantPlan::uniform(&layers, bits, 8);
        for l in &mut plan.layers[1..3] {
            l.quantizer = QuantizerKind::KMeans;
        }
        plan.layers[2].kmeans_iters = Some(3);
        let graph = prepare_graph(&model.graph, &plan).unwrap();
        let hooks = PlanHooks::calibrate(
            &graph,
            &plan,
            &splits.train,
            &splits.normalization,
            &CalibrationConfig::default(),
        )
        .unwrap();
        (graph, hooks)
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn kmeans_weight_is_the_calibrated_codebook() {
        let (graph, mut hooks) = kmeans_setup(3);
        for (layer, iters) in [("conv2", 50), ("fc1", 3)] {
            let w = graph
                .params()
                .var(&format!("{layer}.weight"))
                .unwrap()
                .as_tensor()
                .clone();
            let v = flat(&w);
            let fit = kmeans_1d(&v, 8, iters, layer_seed(layer)).unwrap();
            let cb = hooks.weight_codebook(layer, &w).unwrap().unwrap();
            assert_eq!(cb.bits, 3);
            assert_eq!(cb.centroids, fit.centroids, "{layer}");
            assert_eq!(&cb.codes[..], &fit.codes[..], "{layer}");
            let q = hooks.weight(layer, &w).unwrap();
            assert_eq!(q.dims(), w.dims());
            let q = flat(&q);
            let want: Vec<f32> = fit
                .codes
                .iter()
                .map(|&c| fit.centroids[usize::from(c)])
                .collect();
            assert_eq!(
                q.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{layer}"
            );
            assert!(hooks.weight_quant_params(layer, &w).is_err());
        }
        // Uniform layers have no codebook.
        let w = graph
            .params()
            .var("fc2.weight")
            .unwrap()
            .as_tensor()
            .clone();
        assert!(hooks.weight_codebook("fc2", &w).unwrap().is_none());
    }

    #[test]
    fn kmeans_weight_shares_the_mean_of_updated_members() {
        let (graph, mut hooks) = kmeans_setup(2);
        let var = graph.params().var("conv2.weight").unwrap().clone();
        let cb = hooks
            .weight_codebook("conv2", var.as_tensor())
            .unwrap()
            .unwrap();
        // A manual "SGD step": every weight moves by its own amount.
        let step: Vec<f32> = (0..cb.codes.len())
            .map(|i| ((i * 7919) % 101) as f32 * 1e-4 - 5e-3)
            .collect();
        let updated = (var.as_tensor()
            + Tensor::from_vec(step, var.as_tensor().shape(), &Device::Cpu).unwrap())
        .unwrap();
        var.set(&updated).unwrap();
        let v = flat(var.as_tensor());
        let q = flat(&hooks.weight("conv2", var.as_tensor()).unwrap());
        let mut sum = vec![0.0f64; cb.centroids.len()];
        let mut count = vec![0usize; cb.centroids.len()];
        for (&x, &c) in v.iter().zip(cb.codes.iter()) {
            sum[usize::from(c)] += f64::from(x);
            count[usize::from(c)] += 1;
        }
        for (i, &c) in cb.codes.iter().enumerate() {
            let mean = (sum[usize::from(c)] / count[usize::from(c)] as f64) as f32;
            assert_eq!(q[i], mean, "element {i}");
        }
        // The assignment stays fixed; the codebook follows the means.
        let after = hooks
            .weight_codebook("conv2", var.as_tensor())
            .unwrap()
            .unwrap();
        assert_eq!(after.codes, cb.codes);
        assert_ne!(after.centroids, cb.centroids);
    }

    #[test]
    fn kmeans_weight_gradient_is_straight_through() {
        let (graph, mut hooks) = kmeans_setup(2);
        let var = graph.params().var("fc1.weight").unwrap().clone();
        let q = hooks.weight("fc1", var.as_tensor()).unwrap();
        let coef = Tensor::rand(0f32, 1.0, q.shape(), &Device::Cpu).unwrap();
        let loss = (&q * &coef).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .expect("a gradient for the weight");
        assert_eq!(flat(g), flat(&coef));
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
            let first = hooks.activation_params("conv1").unwrap().unwrap();
            assert!(
                first.qmin == 0.0 && first.zero_point[0] > 0.0,
                "normalised input is signed"
            );
            assert_eq!(
                hooks.activation_params("fc1").unwrap().unwrap().zero_point[0],
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
