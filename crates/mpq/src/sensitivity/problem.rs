//! What a Hessian is taken of (PyHessian: Yao et al. 2020, as used by HAWQ: Dong et al. 2019
//! and HAWQ-V2: Dong et al. 2020): a model in eval mode, the analysed layers, the data batches
//! and the loss, with the base pass that records the loss, the activation norms and the frozen
//! ReLU / max-pool patterns of every batch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::forward::{Pass, PatternMode, Patterns, Perturbation, forward, last_uses};
use super::reverse::{self, Grads, Prefix};
use crate::data::Batch;
use crate::graph::{Graph, LayerInfo, ParamStore};
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
    last_use: Vec<usize>,
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
    /// the last reverse pass (see `reverse::Prefix`).
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
            last_use: last_uses(&graph),
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
                index: &self.index,
                p: &none,
                tracked: &[],
                patterns: PatternMode::Record(&mut patterns),
                sq_norms: Some(&mut norms),
            };
            let batch = &self.batches[b];
            let logits = forward(&self.graph, &self.last_use, &batch.x, &mut pass)?;
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
    pub(crate) fn gradient(&self, b: usize, p: &Perturbation, tracked: &[bool]) -> Result<Grads> {
        let n = self.batches[b].x.dim(0)?;
        self.gradient_part(b, 0..n, p, tracked)
    }

    /// [`Self::gradient`] of the part of batch `b`'s loss that comes from its samples `part`
    /// (in eval mode samples do not interact): one pass over those samples only, with `p`'s
    /// activation offsets shaped `[part.len(), ...]`. For a mean loss, the part's mean is
    /// scaled by `part.len() / n`, so each sample's activation gradient is the whole batch's;
    /// the parts' weight gradients sum to the batch's (up to rounding). Memory of the pass
    /// scales with `part.len()`. With `f32` on the CPU and frozen patterns the pass runs
    /// through the hand-written reverse executor (`reverse`), otherwise under candle's
    /// autograd; both give the same gradients to rounding.
    pub(crate) fn gradient_part(
        &self,
        b: usize,
        part: std::ops::Range<usize>,
        p: &Perturbation,
        tracked: &[bool],
    ) -> Result<Grads> {
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
        let mut pass = Pass {
            index: &self.index,
            p,
            tracked,
            patterns,
            sq_norms: None,
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
        if !self.autograd_only && reverse::applies(self.dtype, self.graph.device(), self.frozen) {
            let mut prefixes = self
                .prefixes
                .lock()
                .map_err(|_| Error::config("sensitivity", "prefix cache poisoned"))?;
            let cache = prefixes.entry((b, part.start, part.end)).or_default();
            return reverse::gradients(
                &self.graph,
                &self.last_use,
                &x,
                &loss,
                &mut pass,
                Some(cache),
            );
        }
        let logits = forward(&self.graph, &self.last_use, &x, &mut pass)?;
        let grads = loss(&logits)?.backward()?;
        let nl = self.layers.len();
        Ok(Grads {
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
