//! What a Hessian is taken of (PyHessian: Yao et al. 2020, as used by HAWQ: Dong et al. 2019
//! and HAWQ-V2: Dong et al. 2020): a model in eval mode, the analysed layers, the data batches
//! and the loss, with the base pass that records the loss, the activation norms and the frozen
//! ReLU / max-pool patterns of every batch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::forward::{Pass, forward};
use crate::data::Batch;
use crate::graph::{
    self, Analysed, Graph, LayerGrads, LayerInfo, ParamStore, PatternMode, Patterns, Perturbation,
    Prefix,
};
use crate::{Error, Result};

/// Arithmetic of the analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The model's own f32 (fast kernels).
    #[default]
    F32,
    /// An f64 copy of the model (candle's generic ops; slower, differences accurate to ~1e-9).
    F64,
}

impl Precision {
    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F64 => DType::F64,
        }
    }

    /// The precision of `dtype`.
    pub(crate) fn of(dtype: DType) -> Self {
        if dtype == DType::F64 {
            Precision::F64
        } else {
            Precision::F32
        }
    }
}

/// `loss(logits, targets)` → scalar.
type LossFn = dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync;

/// The loss whose Hessian is analysed: `loss(logits, targets)` → scalar mean over the batch.
#[derive(Clone)]
pub struct Loss(Arc<LossFn>);

impl Loss {
    /// Mean cross-entropy against u32 labels (PyHessian's loss).
    pub fn cross_entropy() -> Self {
        Loss(Arc::new(|logits, y| {
            crate::train::cross_entropy(logits, y, 0.0)
        }))
    }

    /// Any scalar loss, e.g. a squared error against float targets.
    pub fn new(f: impl Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static) -> Self {
        Loss(Arc::new(f))
    }

    fn eval(&self, logits: &Tensor, y: &Tensor) -> Result<Tensor> {
        (self.0)(logits, y)
    }
}

impl std::fmt::Debug for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Loss")
    }
}

/// What the Hessian is taken of: a graph in eval mode (BatchNorm with running statistics),
/// analysed layers, data batches and a loss. The loss over the data is the sample-weighted
/// mean of the batch losses, so every product is the sample-weighted mean of per-batch products.
/// Setting up runs one forward pass per batch that records the loss, each analysed layer's
/// input-activation norm and the ReLU / max-pool patterns that later passes keep frozen (see
/// the `forward` module: differences of gradients then match autodiff's Hessian).
#[derive(Debug)]
pub struct HessianProblem {
    graph: Graph,
    batches: Vec<Batch>,
    loss: Loss,
    layers: Vec<LayerInfo>,
    index: HashMap<String, usize>,
    weights: Vec<Var>,
    samples: usize,
    dtype: DType,
    patterns: Vec<Patterns>,
    act_sq_norms: Vec<Vec<f64>>,
    loss_value: f64,
    frozen: bool,
    autograd_only: bool,
    /// Per batch and sample range: the forward values before the first perturbed node of
    /// the last reverse pass (see `graph::Prefix`).
    prefixes: Mutex<HashMap<(usize, usize, usize), Option<Prefix>>>,
}

impl HessianProblem {
    /// Sets up the analysis of `layers` (all quantizable layers when `None`) of `graph` on
    /// `batches` in `precision`. Fails with an input error when there is no layer to analyse,
    /// no data, a batch of the wrong shape, a non-finite weight or input, or a non-finite loss.
    pub fn new(
        graph: &Graph,
        batches: Vec<Batch>,
        loss: Loss,
        layers: Option<&[String]>,
        precision: Precision,
    ) -> Result<Self> {
        let all = graph.layer_infos()?;
        if all.is_empty() {
            return Err(Error::config(
                "model",
                "it has no quantizable layers (Conv2d or Linear) to analyse",
            ));
        }
        let infos: Vec<LayerInfo> = match layers {
            None => all,
            Some(names) => {
                if names.is_empty() {
                    return Err(Error::config("layers", "no layer given"));
                }
                let mut out = Vec::new();
                for n in names {
                    let info = all
                        .iter()
                        .find(|l| &l.name == n)
                        .ok_or_else(|| Error::UnknownLayer { name: n.clone() })?;
                    if !out.iter().any(|l: &LayerInfo| &l.name == n) {
                        out.push(info.clone());
                    }
                }
                out.sort_by_key(|l| l.index);
                out
            }
        };
        if batches.is_empty() {
            return Err(Error::config("batches", "no data to analyse (0 batches)"));
        }
        for p in graph.params().iter() {
            check_finite(p.var.as_tensor(), || format!("weight {}", p.name))?;
        }
        let dtype = precision.dtype();
        let graph = with_dtype(graph, dtype)?;
        let mut samples = 0;
        let mut converted = Vec::with_capacity(batches.len());
        for (i, b) in batches.into_iter().enumerate() {
            let dims = b.x.dims();
            if dims.len() != graph.input_shape().len() + 1 || dims[1..] != *graph.input_shape() {
                return Err(Error::ShapeMismatch {
                    name: format!("batch {i}"),
                    expected: format!("[N, {:?}]", graph.input_shape()),
                    got: format!("{dims:?}"),
                });
            }
            if dims[0] == 0 {
                return Err(Error::config("batches", format!("batch {i} is empty")));
            }
            check_finite(&b.x, || format!("input data (batch {i})"))?;
            let y = if b.y.dtype().is_float() {
                check_finite(&b.y, || format!("targets (batch {i})"))?;
                b.y.to_dtype(dtype)?
            } else {
                b.y
            };
            samples += dims[0];
            converted.push(Batch {
                x: b.x.to_dtype(dtype)?,
                y,
            });
        }
        let weights = infos
            .iter()
            .map(|l| Ok(graph.params().var(&format!("{}.weight", l.name))?.clone()))
            .collect::<Result<Vec<_>>>()?;
        let index = infos
            .iter()
            .enumerate()
            .map(|(i, l)| (l.name.clone(), i))
            .collect();
        let mut problem = HessianProblem {
            graph,
            batches: converted,
            loss,
            layers: infos,
            index,
            weights,
            samples,
            dtype,
            patterns: Vec::new(),
            act_sq_norms: Vec::new(),
            loss_value: 0.0,
            frozen: true,
            autograd_only: false,
            prefixes: Mutex::new(HashMap::new()),
        };
        problem.record()?;
        Ok(problem)
    }

    /// The base pass of every batch: loss, activation norms, patterns.
    fn record(&mut self) -> Result<()> {
        let mut total = 0.0;
        for b in 0..self.batches.len() {
            let mut patterns = Patterns::new();
            let mut norms = vec![0.0; self.layers.len()];
            let none = Perturbation::default();
            let mut pass = Pass {
                layers: Analysed {
                    index: &self.index,
                    p: &none,
                    tracked: &[],
                },
                patterns: PatternMode::Record(&mut patterns),
                sq_norms: Some(&mut norms),
            };
            let batch = &self.batches[b];
            let logits = forward(&self.graph, &batch.x, &mut pass)?;
            let loss = self.loss.eval(&logits, &batch.y)?;
            total += self.batch_weight(b)? * loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            self.patterns.push(patterns);
            self.act_sq_norms.push(norms);
        }
        if !total.is_finite() {
            return Err(Error::NonFinite(
                "loss at the model's weights (check the weights and data)".into(),
            ));
        }
        self.loss_value = total;
        Ok(())
    }

    /// Whether ReLU / max-pool patterns are frozen at the unperturbed weights (the default).
    /// Turning it off measures what sign changes add to finite differences.
    pub fn set_frozen_patterns(&mut self, frozen: bool) {
        self.frozen = frozen;
    }

    /// Runs every gradient under candle's autograd, never the hand-written reverse pass (the
    /// reference the reverse pass is tested against).
    #[cfg(test)]
    pub(crate) fn set_autograd_only(&mut self, on: bool) {
        self.autograd_only = on;
    }

    /// The analysed layers, in execution order.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    /// The batches (in the analysis dtype).
    pub fn batches(&self) -> &[Batch] {
        &self.batches
    }

    /// Total samples over all batches.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The analysis dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device of the model and the data.
    pub(crate) fn device(&self) -> &candle::Device {
        self.graph.device()
    }

    /// Mean loss over the data at the unperturbed weights.
    pub fn loss(&self) -> f64 {
        self.loss_value
    }

    /// Weight of batch `b` in the data-set mean: its share of the samples.
    pub(crate) fn batch_weight(&self, b: usize) -> Result<f64> {
        Ok(self.batches[b].x.dim(0)? as f64 / self.samples as f64)
    }

    /// The weight tensor of analysed layer `i`.
    pub(crate) fn weight(&self, i: usize) -> &Var {
        &self.weights[i]
    }

    /// Squared norm of each analysed layer's input activation on batch `b`.
    pub(crate) fn activation_sq_norms(&self, b: usize) -> &[f64] {
        &self.act_sq_norms[b]
    }

    /// The gradients of the loss on batch `b` under perturbation `p`: of the analysed
    /// weights that `tracked` marks (indexed by analysed layer), and of `p.acts`.
    pub(crate) fn gradient(
        &self,
        b: usize,
        p: &Perturbation,
        tracked: &[bool],
    ) -> Result<LayerGrads> {
        let n = self.batches[b].x.dim(0)?;
        self.gradient_part(b, 0..n, p, tracked)
    }

    /// [`Self::gradient`] of the part of batch `b`'s loss that comes from its samples `part`
    /// (in eval mode samples do not interact): one pass over those samples only, with `p`'s
    /// activation offsets shaped `[part.len(), ...]`. For a mean loss, the part's mean is
    /// scaled by `part.len() / n`, so each sample's activation gradient is the whole batch's;
    /// the parts' weight gradients sum to the batch's (up to rounding). Memory of the pass
    /// scales with `part.len()`. With `f32` on the CPU and frozen patterns the pass runs
    /// through the graph's reverse-mode engine ([`Graph::frozen_gradients`]), otherwise under
    /// candle's autograd; both give the same gradients to rounding.
    pub(crate) fn gradient_part(
        &self,
        b: usize,
        part: std::ops::Range<usize>,
        p: &Perturbation,
        tracked: &[bool],
    ) -> Result<LayerGrads> {
        let batch = &self.batches[b];
        let n = batch.x.dim(0)?;
        if part.start >= part.end || part.end > n {
            return Err(Error::config(
                "batches",
                format!("samples {part:?} of a batch of {n}"),
            ));
        }
        let whole = part.len() == n;
        let narrowed: Patterns;
        let patterns = if !self.frozen {
            PatternMode::Free
        } else if whole {
            PatternMode::Frozen(&self.patterns[b])
        } else {
            narrowed = self.patterns[b]
                .iter()
                .map(|m| {
                    m.as_ref()
                        .map(|m| m.narrow(0, part.start, part.len()))
                        .transpose()
                })
                .collect::<candle::Result<_>>()?;
            PatternMode::Frozen(&narrowed)
        };
        let layers = Analysed {
            index: &self.index,
            p,
            tracked,
        };
        let (x, y) = if whole {
            (batch.x.clone(), batch.y.clone())
        } else {
            (
                batch.x.narrow(0, part.start, part.len())?,
                batch.y.narrow(0, part.start, part.len())?,
            )
        };
        let share = part.len() as f64 / n as f64;
        let loss = |logits: &Tensor| -> Result<Tensor> {
            let l = self.loss.eval(logits, &y)?;
            Ok(if whole { l } else { (l * share)? })
        };
        if let PatternMode::Frozen(patterns) = &patterns
            && !self.autograd_only
            && graph::reverse_applies(self.dtype, self.graph.device())
        {
            let mut prefixes = self
                .prefixes
                .lock()
                .map_err(|_| Error::config("sensitivity", "prefix cache poisoned"))?;
            let cache = prefixes.entry((b, part.start, part.end)).or_default();
            return self
                .graph
                .frozen_gradients(&x, &loss, patterns, &layers, Some(cache));
        }
        let mut pass = Pass {
            layers,
            patterns,
            sq_norms: None,
        };
        let logits = forward(&self.graph, &x, &mut pass)?;
        let grads = loss(&logits)?.backward()?;
        let nl = self.layers.len();
        Ok(LayerGrads {
            weights: (0..nl)
                .map(|i| {
                    let t = tracked.get(i) == Some(&true);
                    t.then(|| grads.get(self.weights[i].as_tensor()).cloned())
                        .flatten()
                })
                .collect(),
            acts: (0..nl)
                .map(|i| {
                    p.acts
                        .get(i)
                        .and_then(Option::as_ref)
                        .and_then(|v| grads.get(v.as_tensor()).cloned())
                })
                .collect(),
        })
    }
}

/// An input error unless every element of `t` is finite.
fn check_finite(t: &Tensor, what: impl FnOnce() -> String) -> Result<()> {
    if !t.dtype().is_float() {
        return Ok(());
    }
    // x - x is 0 for finite x and NaN for NaN or ±inf.
    let s = t
        .broadcast_sub(t)?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    if s == 0.0 {
        Ok(())
    } else {
        Err(Error::NonFinite(what()))
    }
}

/// `graph` itself when its weights are already `dtype`, else a converted copy.
fn with_dtype(graph: &Graph, dtype: DType) -> Result<Graph> {
    let same = graph
        .params()
        .iter()
        .all(|p| !p.var.dtype().is_float() || p.var.dtype() == dtype);
    if same {
        return Ok(graph.clone());
    }
    let mut store = ParamStore::new(graph.device());
    for p in graph.params().iter() {
        let t = p.var.as_tensor();
        let t = if t.dtype().is_float() {
            t.to_dtype(dtype)?
        } else {
            t.copy()?
        };
        store.insert(&p.name, t, p.kind)?;
    }
    Graph::from_parts(
        graph.nodes().to_vec(),
        graph.output(),
        graph.input_shape().to_vec(),
        store,
    )
}

#[cfg(test)]
mod tests {
    use candle::{Device, Tensor, Var};

    use super::{HessianProblem, Loss, Precision};
    use crate::data::Batch;
    use crate::graph::{Conv2dSpec, Graph, GraphBuilder, Perturbation, PoolSpec};

    fn noise(dims: &[usize], seed: u64) -> Tensor {
        let n: usize = dims.iter().product();
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    /// Every node kind: conv (with and without bias) → BN → ReLU (fused), a residual sum with
    /// its ReLU (fused), a conv → ReLU (unfused), BN alone, ReLU6, max- and average pools,
    /// dropout, global average pool, flatten and two linear layers.
    fn every_kind() -> Graph {
        let mut b = GraphBuilder::new(&[3, 12, 12], &Device::Cpu, 5);
        let x = b
            .conv2d("c1", b.input(), Conv2dSpec::new(3, 8, 3, 1, 1, true))
            .unwrap();
        let x = b.batch_norm("bn1", x).unwrap();
        let x = b.relu(x).unwrap();
        let y = b
            .conv2d("c2", x, Conv2dSpec::new(8, 8, 3, 1, 1, false))
            .unwrap();
        let y = b.batch_norm("bn2", y).unwrap();
        let x = b.add(x, y).unwrap();
        let x = b.relu(x).unwrap();
        let x = b
            .conv2d("c3", x, Conv2dSpec::new(8, 6, 3, 2, 1, true))
            .unwrap();
        let x = b.relu(x).unwrap();
        let x = b.batch_norm("bn3", x).unwrap();
        let x = b.relu6(x).unwrap();
        let x = b.max_pool(x, PoolSpec::new(2, 2, 0)).unwrap();
        let x = b
            .conv2d("c4", x, Conv2dSpec::new(6, 6, 1, 1, 0, false))
            .unwrap();
        let x = b.avg_pool(x, PoolSpec::new(3, 1, 1)).unwrap();
        let x = b.dropout(x, 0.1).unwrap();
        let g = b.global_avg_pool(x).unwrap();
        let g = b.flatten(g).unwrap();
        let g = b.linear("fc1", g, 7, true).unwrap();
        let g = b.relu(g).unwrap();
        let g = b.linear("fc2", g, 4, true).unwrap();
        let graph = b.finish(g).unwrap();
        for (i, bn) in ["bn1", "bn2", "bn3"].iter().enumerate() {
            let p = graph.params();
            let c = p.var(&format!("{bn}.weight")).unwrap().dims()[0];
            let set = |s: &str, t: Tensor| p.var(&format!("{bn}.{s}")).unwrap().set(&t).unwrap();
            set("weight", (noise(&[c], 10 + i as u64) + 1.2).unwrap());
            set("bias", noise(&[c], 20 + i as u64));
            set("running_mean", (noise(&[c], 30 + i as u64) * 0.3).unwrap());
            set(
                "running_var",
                ((noise(&[c], 40 + i as u64) * 0.4).unwrap() + 1.0).unwrap(),
            );
        }
        graph
    }

    fn problem(graph: &Graph, autograd: bool) -> HessianProblem {
        let x = noise(&[5, 3, 12, 12], 1);
        let y = Tensor::from_vec(vec![0u32, 3, 1, 2, 3], 5, &Device::Cpu).unwrap();
        let mut p = HessianProblem::new(
            graph,
            vec![Batch { x, y }],
            Loss::cross_entropy(),
            None,
            Precision::F32,
        )
        .unwrap();
        p.set_autograd_only(autograd);
        p
    }

    fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        let num = (a - b).unwrap().sqr().unwrap().sum_all().unwrap();
        let den = b.sqr().unwrap().sum_all().unwrap();
        let (num, den) = (
            num.to_scalar::<f32>().unwrap(),
            den.to_scalar::<f32>().unwrap(),
        );
        (num / den.max(1e-30)).sqrt()
    }

    #[test]
    fn weight_and_activation_gradients_match_candle_autograd() {
        let graph = every_kind();
        let (fast, slow) = (problem(&graph, false), problem(&graph, true));
        let layers = fast.layers().to_vec();
        assert_eq!(layers.len(), 6);
        // Perturbed weights in some layers, gradients of a subset; the last case starts past
        // the first layers, so its second pass begins from the cached prefix.
        let cases = [
            (vec![0, 2, 4], vec![true; 6]),
            (vec![0, 2, 4], vec![false, true, false, false, true, false]),
            (vec![2, 4], vec![false, false, true, false, true, true]),
            (vec![2, 4], vec![false, false, true, false, true, true]),
        ];
        for (perturbed, tracked) in cases {
            let weights: Vec<Option<Tensor>> = layers
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    perturbed
                        .contains(&i)
                        .then(|| (noise(&l.weight_shape, 50 + i as u64) * 1e-2).unwrap())
                })
                .collect();
            let p = Perturbation {
                weights,
                acts: Vec::new(),
            };
            let (a, b) = (
                fast.gradient(0, &p, &tracked).unwrap(),
                slow.gradient(0, &p, &tracked).unwrap(),
            );
            for (i, l) in layers.iter().enumerate() {
                match (&a.weights[i], &b.weights[i]) {
                    (Some(ga), Some(gb)) => {
                        let d = rel_diff(ga, gb);
                        assert!(d < 1e-5, "{}: {d}", l.name);
                    }
                    (None, None) => assert!(!tracked[i]),
                    _ => panic!("{}: one executor has a gradient", l.name),
                }
            }
        }
        // Activation perturbations of three layers, no weight gradients.
        let acts: Vec<Option<Var>> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (i != 1 && i != 4).then(|| {
                    let mut dims = vec![3];
                    dims.extend(&l.input_shape);
                    Var::from_tensor(&(noise(&dims, 70 + i as u64) * 1e-2).unwrap()).unwrap()
                })
            })
            .collect();
        let p = Perturbation {
            weights: Vec::new(),
            acts,
        };
        let (a, b) = (
            fast.gradient_part(0, 1..4, &p, &[]).unwrap(),
            slow.gradient_part(0, 1..4, &p, &[]).unwrap(),
        );
        for (i, l) in layers.iter().enumerate() {
            assert!(a.weights[i].is_none() && b.weights[i].is_none());
            match (&a.acts[i], &b.acts[i]) {
                (Some(ga), Some(gb)) => {
                    let d = rel_diff(ga, gb);
                    assert!(d < 1e-5, "{}: {d}", l.name);
                }
                (None, None) => assert!(i == 1 || i == 4),
                _ => panic!("{}: one executor has an activation gradient", l.name),
            }
        }
    }
}
