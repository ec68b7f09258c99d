//! The quantization plan: the shared contract between search, quantization, evaluation and
//! export. A [`QuantPlan`] serialises to the plan part of the policy file
//! ([`crate::search::Policy`], `docs/file-formats.md`)
//! ("JSON results", `mpq search`), and carries the bit conventions of docs/algorithms.md §0.3–§0.4
//! (`b^w_l`, `b^a_l`; 32 bits = full precision).
//!
//! A model layer that has no entry in a plan is kept in full precision (FP32 weights and
//! activations); see [`QuantPlan::precision`] and [`QuantPlan::bits`].

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Deserializer, Serialize};

use crate::graph::LayerInfo;
use crate::{Error, Result};

/// A weight or activation bit-width: `2..=8` (integer quantization) or
/// [`FULL_PRECISION`] (`32`, not quantized).
pub type BitWidth = u32;

/// The bit-width that means "full precision" (FP32, not quantized).
pub const FULL_PRECISION: BitWidth = 32;

/// The smallest quantized bit-width a plan may use.
pub const MIN_BITS: BitWidth = 2;

/// The largest quantized bit-width a plan may use.
pub const MAX_BITS: BitWidth = 8;

/// Lloyd iterations of the k-means weight quantizer during HAQ's search (docs/algorithms.md §4.9:
/// `max_iter = 3`, cheap).
pub const KMEANS_SEARCH_ITERS: u32 = 3;

/// Lloyd iterations of the k-means weight quantizer for the final model (docs/algorithms.md §4.9:
/// `max_iter = 50`); the default when a plan does not say ([`LayerPrecision::kmeans_iters`]).
pub const KMEANS_FINETUNE_ITERS: u32 = 50;

/// Whether `bits` is a bit-width a plan may hold (`2..=8` or `32`).
pub fn is_valid_bits(bits: BitWidth) -> bool {
    (MIN_BITS..=MAX_BITS).contains(&bits) || bits == FULL_PRECISION
}

/// How many scales a weight quantizer keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// One scale (and zero point) for the whole tensor.
    PerTensor,
    /// One scale (and zero point) per output channel.
    #[default]
    PerChannel,
}

/// Which quantizer maps values to integers (docs/algorithms.md §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantizerKind {
    /// Symmetric uniform quantizer (scale only, zero point 0).
    #[default]
    Symmetric,
    /// Asymmetric uniform quantizer (scale and zero point).
    Asymmetric,
    /// Learned step size quantization (LSQ, docs/algorithms.md §5.2): a learned scale, no zero point.
    Lsq,
    /// HAQ's model-size quantizer (docs/algorithms.md §4.9): 1-D k-means with `2^b` clusters over the
    /// whole weight tensor, weights replaced by their cluster's centroid (a codebook of `f32`
    /// values and `b`-bit indices). Weights only: the layer's activations, if quantized, use
    /// the uniform calibrated quantizer; `granularity` does not apply (one codebook per
    /// tensor).
    #[serde(rename = "kmeans")]
    KMeans,
}

impl QuantizerKind {
    /// Whether the quantizer stores a zero point next to each scale.
    pub fn has_zero_point(self) -> bool {
        matches!(self, QuantizerKind::Asymmetric)
    }

    /// Whether the weights are stored as indices into a codebook (k-means) rather than as
    /// uniform integer codes with scales.
    pub fn is_codebook(self) -> bool {
        matches!(self, QuantizerKind::KMeans)
    }
}

/// How a weight quantizer chooses its range (docs/algorithms.md §7.2.2, applied to weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightRange {
    /// The largest absolute value (per channel or tensor): nothing is clipped.
    #[default]
    MaxAbs,
    /// The clip, a fraction `k/100` of the max-abs range, that minimises `‖Q(W) − W‖²`
    /// (per channel or tensor). At 2–3 bits max-abs wastes levels on rare large weights and
    /// rounds most weights to zero; the MSE clip keeps them.
    Mse,
}

impl WeightRange {
    /// Whether this is the default (max-abs) rule; plans omit it then.
    pub fn is_max_abs(&self) -> bool {
        *self == WeightRange::MaxAbs
    }
}

/// The precision of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerPrecision {
    /// Layer name, as in [`LayerInfo::name`].
    pub name: String,
    /// Weight bit-width (`2..=8`, or `32` for full precision). With `channel_w_bits` this is
    /// a representative value only; the per-channel widths are authoritative.
    pub w_bits: BitWidth,
    /// Input activation bit-width (`2..=8`, or `32` for full precision).
    pub a_bits: BitWidth,
    /// Per-output-channel weight bit-widths (CW-HAWQ, docs/algorithms.md §3); `None`: all channels use
    /// `w_bits`. Its length must equal the layer's output channels.
    #[serde(default)]
    pub channel_w_bits: Option<Vec<BitWidth>>,
    /// Scale granularity of the weight quantizer (default per channel).
    #[serde(default)]
    pub granularity: Granularity,
    /// Weight quantizer (default symmetric).
    #[serde(default)]
    pub quantizer: QuantizerKind,
    /// How the symmetric weight quantizer picks its range (default max-abs; omitted from the
    /// JSON then).
    #[serde(default, skip_serializing_if = "WeightRange::is_max_abs")]
    pub weight_range: WeightRange,
    /// Lloyd iterations (`max_iter`) of the k-means quantizer; `None` (omitted from the JSON):
    /// [`KMEANS_FINETUNE_ITERS`]. HAQ's search uses [`KMEANS_SEARCH_ITERS`]. Ignored by the
    /// other quantizers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kmeans_iters: Option<u32>,
}

impl LayerPrecision {
    /// A per-channel symmetric layer precision with uniform weight bits.
    pub fn new(name: impl Into<String>, w_bits: BitWidth, a_bits: BitWidth) -> Self {
        LayerPrecision {
            name: name.into(),
            w_bits,
            a_bits,
            channel_w_bits: None,
            granularity: Granularity::default(),
            quantizer: QuantizerKind::default(),
            weight_range: WeightRange::default(),
            kmeans_iters: None,
        }
    }

    /// The k-means quantizer's Lloyd iterations: `kmeans_iters`, or
    /// [`KMEANS_FINETUNE_ITERS`] when the plan does not say.
    pub fn kmeans_max_iter(&self) -> u32 {
        self.kmeans_iters.unwrap_or(KMEANS_FINETUNE_ITERS)
    }

    /// Mean weight bit-width: the mean of `channel_w_bits` when present and non-empty,
    /// otherwise `w_bits`.
    pub fn mean_w_bits(&self) -> f64 {
        match &self.channel_w_bits {
            Some(c) if !c.is_empty() => {
                c.iter().map(|&b| f64::from(b)).sum::<f64>() / c.len() as f64
            }
            _ => f64::from(self.w_bits),
        }
    }

    /// Whether the weights stay in full precision (every channel at 32 bits).
    pub fn weights_full_precision(&self) -> bool {
        match &self.channel_w_bits {
            Some(c) if !c.is_empty() => c.iter().all(|&b| b == FULL_PRECISION),
            _ => self.w_bits == FULL_PRECISION,
        }
    }
}

fn default_true() -> bool {
    true
}

/// The budgets, candidates, hardware, pins and ties a plan was searched under (the plan's
/// `constraints` object). Every field is optional; the fields are in alphabetical order, the
/// order earlier versions wrote them in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Constraints {
    /// Candidate activation bit-widths.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "one_or_many"
    )]
    pub a_bits: Option<Vec<BitWidth>>,
    /// Largest average weight bit-width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_bits: Option<f64>,
    /// BitOps ratio of the searched layers (0: all-low, 1: all-high).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bops_ratio: Option<f64>,
    /// Smallest compression ratio versus FP32 weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<f64>,
    /// Energy ratio of the searched layers on `hardware`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_ratio: Option<f64>,
    /// Paired `[w_bits, a_bits]` formats each searched layer chose from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formats: Option<Vec<[BitWidth; 2]>>,
    /// The hardware model of the latency and energy budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    /// Latency ratio of the searched layers on `hardware`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ratio: Option<f64>,
    /// Largest giga bit-operations per sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bops_g: Option<f64>,
    /// Largest energy in mJ on `hardware`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_energy_mj: Option<f64>,
    /// Largest latency in ms on `hardware`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<f64>,
    /// Largest weight storage in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size_mb: Option<f64>,
    /// Pinned layers (`first`, `last` or a name) and their `[w_bits, a_bits]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pins: Option<BTreeMap<String, [BitWidth; 2]>>,
    /// The weight quantizer, when not the default symmetric one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantizer: Option<QuantizerKind>,
    /// Size ratio of the searched layers (0: all-low, 1: all-high).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_ratio: Option<f64>,
    /// Groups of layers that share bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ties: Option<Vec<Vec<String>>>,
    /// Candidate weight bit-widths.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "one_or_many"
    )]
    pub w_bits: Option<Vec<BitWidth>>,
}

/// A bit-width list, or one bit-width (what uniform plans of earlier versions wrote).
fn one_or_many<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<BitWidth>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(BitWidth),
        Many(Vec<BitWidth>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(b) => vec![b],
        OneOrMany::Many(v) => v,
    }))
}

/// The precision of every layer a plan does not list (`"default": {"w_bits": 32,
/// "a_bits": 32}` keeps them in full precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultPrecision {
    /// Weight bits.
    pub w_bits: BitWidth,
    /// Activation bits.
    pub a_bits: BitWidth,
}

/// A mixed-precision quantization plan (the plan part of a policy file).
///
/// A plan applied to a model ([`QuantPlan::for_model`]) names every quantizable layer, or
/// says in [`QuantPlan::default`] what the layers it does not name get: a plan that
/// silently leaves layers in full precision is usually a plan written for another model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantPlan {
    /// The search method that produced the plan (`pareto`, `ilp`, `haq`, `uniform`, …).
    pub method: String,
    /// The constraints the search ran under.
    #[serde(default)]
    pub constraints: Constraints,
    /// Search wall time in seconds.
    #[serde(default)]
    pub seconds: f64,
    /// Per-layer precisions.
    pub layers: Vec<LayerPrecision>,
    /// Whether BatchNorm is folded into the preceding conv before quantizing (default true).
    #[serde(default = "default_true")]
    pub fold_bn: bool,
    /// Model size in bytes, when computed (see [`crate::cost::CostTable::size_bytes`]).
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Parameter-weighted mean weight bit-width, when computed.
    #[serde(default)]
    pub avg_w_bits: Option<f64>,
    /// Bit operations per sample (`Σ MAC·b_w·b_a`), when computed.
    #[serde(default)]
    pub bops: Option<f64>,
    /// The search objective (e.g. HAWQ-V2's Ω = Σ Tr(H)·‖ΔW‖²), when the method has one.
    #[serde(default)]
    pub omega: Option<f64>,
    /// Simulated latency in milliseconds, when a hardware model was used.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// Simulated energy in millijoules, when a hardware model was used.
    #[serde(default)]
    pub energy_mj: Option<f64>,
    /// Block-wise fine-tuning order (HAWQ, docs/algorithms.md §1.5): layer or block names, most sensitive
    /// first. Not checked against the model's layers, since it may name blocks.
    #[serde(default)]
    pub finetune_order: Option<Vec<String>>,
    /// The precision of the model's layers that [`QuantPlan::layers`] does not name; `None`
    /// (the default): every layer must be named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<DefaultPrecision>,
}

impl QuantPlan {
    /// A plan with every layer of `layers` at `w_bits`/`a_bits` (method `uniform`).
    pub fn uniform(layers: &[LayerInfo], w_bits: BitWidth, a_bits: BitWidth) -> QuantPlan {
        QuantPlan {
            method: "uniform".into(),
            constraints: Constraints {
                w_bits: Some(vec![w_bits]),
                a_bits: Some(vec![a_bits]),
                ..Constraints::default()
            },
            seconds: 0.0,
            layers: layers
                .iter()
                .map(|l| LayerPrecision::new(l.name.clone(), w_bits, a_bits))
                .collect(),
            fold_bn: true,
            size_bytes: None,
            avg_w_bits: None,
            bops: None,
            omega: None,
            latency_ms: None,
            energy_mj: None,
            finetune_order: None,
            default: None,
        }
    }

    /// The plan as applied to the model with `layers`: every quantizable layer named, the
    /// ones the plan leaves out given [`QuantPlan::default`] (in the model's order), then
    /// [`QuantPlan::validate`]. A plan that leaves layers out without a default is an
    /// error naming them.
    pub fn for_model(mut self, layers: &[LayerInfo]) -> Result<QuantPlan> {
        // The entries it has first (an unknown layer, a bad width), then what it lacks. The
        // entries the default adds need no second validation: a layer of the model each, at
        // the default's checked widths, with the default quantizer.
        self.validate(layers)?;
        if let Some(d) = self.default {
            for (what, bits) in [("w_bits", d.w_bits), ("a_bits", d.a_bits)] {
                if !is_valid_bits(bits) {
                    return Err(Error::config(
                        what,
                        format!("default: {bits} bits is not allowed"),
                    ));
                }
            }
        }
        let missing: Vec<&LayerInfo> = layers
            .iter()
            .filter(|l| self.precision(&l.name).is_none())
            .collect();
        if !missing.is_empty() {
            let Some(d) = self.default else {
                let names: Vec<&str> = missing.iter().map(|l| l.name.as_str()).collect();
                let shown = if names.len() > 8 {
                    format!("{}, … ({} in all)", names[..8].join(", "), names.len())
                } else {
                    names.join(", ")
                };
                return Err(Error::config(
                    "policy",
                    format!(
                        "it does not name {} of the model's {} quantizable layers ({shown}); \
                         was it written for another model? Name them, or add \
                         \"default\": {{\"w_bits\": 32, \"a_bits\": 32}} to give the rest \
                         full precision",
                        names.len(),
                        layers.len()
                    ),
                ));
            };
            let mut all = Vec::with_capacity(layers.len());
            for l in layers {
                match self.layers.iter().position(|p| p.name == l.name) {
                    Some(i) => all.push(self.layers[i].clone()),
                    None => all.push(LayerPrecision::new(l.name.clone(), d.w_bits, d.a_bits)),
                }
            }
            self.layers = all;
        }
        Ok(self)
    }

    /// The entry for layer `name`; `None` means the layer is kept in full precision.
    pub fn precision(&self, name: &str) -> Option<&LayerPrecision> {
        self.layers.iter().find(|p| p.name == name)
    }

    /// `(w_bits, a_bits)` of layer `name`, `(32, 32)` when the plan has no entry for it.
    pub fn bits(&self, name: &str) -> (BitWidth, BitWidth) {
        self.precision(name)
            .map(|p| (p.w_bits, p.a_bits))
            .unwrap_or((FULL_PRECISION, FULL_PRECISION))
    }

    /// Checks the plan against the model's layer table.
    ///
    /// Errors: an entry naming no layer of the model ([`Error::UnknownLayer`]); a layer
    /// listed twice; a bit-width outside `2..=8` and `32`; `channel_w_bits` whose length is
    /// not the layer's output channels, that mixes `32` with quantized widths, or that is
    /// combined with per-tensor granularity or a non-symmetric quantizer; the `mse` weight
    /// range with a non-symmetric quantizer or with `channel_w_bits`; `kmeans_iters` of 0;
    /// negative or non-finite `seconds`.
    /// Model layers missing from the plan are allowed (full precision).
    pub fn validate(&self, layers: &[LayerInfo]) -> Result<()> {
        if !self.seconds.is_finite() || self.seconds < 0.0 {
            return Err(Error::config(
                "seconds",
                format!("must be a finite non-negative number, got {}", self.seconds),
            ));
        }
        let mut seen = HashSet::new();
        for p in &self.layers {
            let info =
                layers
                    .iter()
                    .find(|l| l.name == p.name)
                    .ok_or_else(|| Error::UnknownLayer {
                        name: p.name.clone(),
                    })?;
            if !seen.insert(p.name.as_str()) {
                return Err(Error::config(
                    "layers",
                    format!("layer {} appears more than once in the plan", p.name),
                ));
            }
            for (what, bits) in [("w_bits", p.w_bits), ("a_bits", p.a_bits)] {
                if !is_valid_bits(bits) {
                    return Err(Error::config(
                        what,
                        format!(
                            "layer {}: {bits} bits is not allowed (use {MIN_BITS}..={MAX_BITS} \
                             or {FULL_PRECISION})",
                            p.name
                        ),
                    ));
                }
            }
            if p.kmeans_iters == Some(0) {
                return Err(Error::config(
                    "kmeans_iters",
                    format!("layer {}: k-means needs at least one iteration", p.name),
                ));
            }
            if p.weight_range == WeightRange::Mse && p.quantizer != QuantizerKind::Symmetric {
                return Err(Error::config(
                    "weight_range",
                    format!(
                        "layer {}: the mse weight range needs the symmetric quantizer",
                        p.name
                    ),
                ));
            }
            if let Some(ch) = &p.channel_w_bits {
                if ch.len() != info.out_channels {
                    return Err(Error::ShapeMismatch {
                        name: format!("channel_w_bits of layer {}", p.name),
                        expected: format!("{} entries (output channels)", info.out_channels),
                        got: format!("{} entries", ch.len()),
                    });
                }
                let all_fp = ch.iter().all(|&b| b == FULL_PRECISION);
                if let Some((c, &bits)) = ch
                    .iter()
                    .enumerate()
                    .find(|(_, b)| !(MIN_BITS..=MAX_BITS).contains(*b) && !all_fp)
                {
                    return Err(Error::config(
                        "channel_w_bits",
                        format!(
                            "layer {} channel {c}: {bits} bits is not allowed (use \
                             {MIN_BITS}..={MAX_BITS}; {FULL_PRECISION} only for every channel)",
                            p.name
                        ),
                    ));
                }
                if p.quantizer != QuantizerKind::Symmetric && !all_fp {
                    return Err(Error::config(
                        "quantizer",
                        format!(
                            "layer {}: channel_w_bits needs the symmetric quantizer",
                            p.name
                        ),
                    ));
                }
                if p.granularity == Granularity::PerTensor {
                    return Err(Error::config(
                        "granularity",
                        format!(
                            "layer {}: channel_w_bits needs per_channel granularity",
                            p.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(index: usize, name: &str, out: usize, inp: usize) -> LayerInfo {
        LayerInfo::linear(index, name, out, inp)
    }

    fn model() -> Vec<LayerInfo> {
        vec![info(0, "fc1", 4, 8), info(1, "fc2", 2, 4)]
    }

    #[test]
    fn uniform_covers_every_layer() {
        let p = QuantPlan::uniform(&model(), 4, 8);
        assert_eq!(p.method, "uniform");
        assert_eq!(p.layers.len(), 2);
        assert_eq!(p.bits("fc2"), (4, 8));
        assert_eq!(p.constraints.w_bits, Some(vec![4]));
        assert!(p.fold_bn);
        p.validate(&model()).unwrap();
    }

    #[test]
    fn missing_layer_is_full_precision() {
        let mut p = QuantPlan::uniform(&model(), 4, 4);
        p.layers.remove(1);
        p.validate(&model()).unwrap();
        assert!(p.precision("fc2").is_none());
        assert_eq!(p.bits("fc2"), (32, 32));
    }

    #[test]
    fn a_plan_applied_to_a_model_names_every_layer_or_says_the_default() {
        let mut p = QuantPlan::uniform(&model(), 4, 4);
        p.layers.remove(0);
        let msg = p.clone().for_model(&model()).unwrap_err().to_string();
        assert!(
            msg.contains("does not name 1 of the model's 2") && msg.contains("fc1"),
            "{msg}"
        );
        assert!(msg.contains("\"default\""), "{msg}");
        // Written for another model: a layer this model lacks is named first.
        let other = vec![info(0, "dense", 4, 8)];
        let msg = QuantPlan::uniform(&other, 4, 4)
            .for_model(&model())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unknown layer \"dense\""), "{msg}");
        // With a default, the missing layer gets it, in the model's order.
        let json = r#"{"method": "hand", "layers": [{"name": "fc2", "w_bits": 4, "a_bits": 4}],
                       "default": {"w_bits": 32, "a_bits": 32}}"#;
        let p: QuantPlan = serde_json::from_str(json).unwrap();
        let full = p.for_model(&model()).unwrap();
        let names: Vec<&str> = full.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["fc1", "fc2"]);
        assert_eq!(full.bits("fc1"), (32, 32));
        assert_eq!(full.bits("fc2"), (4, 4));
        let json = json.replace("\"w_bits\": 32", "\"w_bits\": 1");
        let p: QuantPlan = serde_json::from_str(&json).unwrap();
        assert!(p.for_model(&model()).is_err());
        // A complete plan is unchanged.
        let u = QuantPlan::uniform(&model(), 4, 8);
        assert_eq!(u.clone().for_model(&model()).unwrap(), u);
    }

    #[test]
    fn json_round_trip() {
        let mut p = QuantPlan::uniform(&model(), 4, 8);
        p.layers[0].channel_w_bits = Some(vec![2, 4, 8, 32]);
        p.layers[1].quantizer = QuantizerKind::Lsq;
        p.layers[1].granularity = Granularity::PerTensor;
        p.size_bytes = Some(12);
        p.omega = Some(0.5);
        p.finetune_order = Some(vec!["fc2".into(), "fc1".into()]);
        let back: QuantPlan = serde_json::from_slice(&serde_json::to_vec(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn field_names_match_cli_policy_json() {
        let p = QuantPlan::uniform(&model(), 8, 8);
        let v = serde_json::to_value(&p).unwrap();
        let obj = v.as_object().unwrap();
        for key in [
            "method",
            "constraints",
            "seconds",
            "layers",
            "size_bytes",
            "avg_w_bits",
            "bops",
            "omega",
            "latency_ms",
            "energy_mj",
            "fold_bn",
            "finetune_order",
        ] {
            assert!(obj.contains_key(key), "missing {key}");
        }
        assert!(obj["size_bytes"].is_null());
        assert!(obj["latency_ms"].is_null());
        let layer = obj["layers"][0].as_object().unwrap();
        for key in ["name", "w_bits", "a_bits", "channel_w_bits"] {
            assert!(layer.contains_key(key), "missing layers[].{key}");
        }
        assert!(layer["channel_w_bits"].is_null());
        assert_eq!(layer["granularity"], "per_channel");
        assert_eq!(layer["quantizer"], "symmetric");
    }

    #[test]
    fn parses_the_cli_example_with_defaults() {
        let text = r#"{ "method": "pareto", "constraints": {"avg_bits": 4}, "seconds": 0.004,
          "layers": [ { "name": "fc1", "w_bits": 8, "a_bits": 8, "channel_w_bits": null } ],
          "size_bytes": 12345, "avg_w_bits": 3.98, "bops": 1.2e9, "omega": 0.0123,
          "latency_ms": null, "energy_mj": null }"#;
        let p: QuantPlan = serde_json::from_str(text).unwrap();
        assert_eq!(p.method, "pareto");
        assert_eq!(p.size_bytes, Some(12345));
        assert_eq!(p.bops, Some(1.2e9));
        assert!(p.fold_bn);
        assert_eq!(p.finetune_order, None);
        assert_eq!(p.layers[0].granularity, Granularity::PerChannel);
        assert_eq!(p.layers[0].quantizer, QuantizerKind::Symmetric);
        p.validate(&model()).unwrap();

        let minimal: QuantPlan = serde_json::from_str(r#"{"method":"x","layers":[]}"#).unwrap();
        assert_eq!(minimal.constraints, Constraints::default());
        assert_eq!(minimal.seconds, 0.0);
    }

    #[test]
    fn kmeans_quantizer_json_and_iterations() {
        let mut p = QuantPlan::uniform(&model(), 4, 8);
        // Plans without k-means settings serialise as before (no kmeans_iters key).
        let v = serde_json::to_value(&p).unwrap();
        assert!(
            !v["layers"][0]
                .as_object()
                .unwrap()
                .contains_key("kmeans_iters")
        );
        assert_eq!(p.layers[0].kmeans_max_iter(), KMEANS_FINETUNE_ITERS);
        p.layers[0].quantizer = QuantizerKind::KMeans;
        p.layers[1].quantizer = QuantizerKind::KMeans;
        p.layers[1].kmeans_iters = Some(KMEANS_SEARCH_ITERS);
        p.validate(&model()).unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["layers"][0]["quantizer"], "kmeans");
        assert_eq!(v["layers"][1]["kmeans_iters"], 3);
        let back: QuantPlan = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.layers[1].kmeans_max_iter(), 3);
        let text = r#"{"method":"haq","layers":[{"name":"fc1","w_bits":3,"a_bits":32,
            "quantizer":"kmeans"}]}"#;
        let hand: QuantPlan = serde_json::from_str(text).unwrap();
        assert_eq!(hand.layers[0].quantizer, QuantizerKind::KMeans);
        assert_eq!(hand.layers[0].kmeans_iters, None);

        p.layers[1].kmeans_iters = Some(0);
        let msg = p.validate(&model()).unwrap_err().to_string();
        assert!(msg.contains("fc2") && msg.contains("kmeans_iters"), "{msg}");
        p.layers[1].kmeans_iters = None;
        p.layers[1].channel_w_bits = Some(vec![4, 4]);
        assert!(
            p.validate(&model()).is_err(),
            "k-means has no per-channel widths"
        );
    }

    #[test]
    fn unknown_layer_is_named() {
        let mut p = QuantPlan::uniform(&model(), 4, 4);
        p.layers.push(LayerPrecision::new("fc9", 4, 4));
        let err = p.validate(&model()).unwrap_err();
        assert!(
            matches!(&err, Error::UnknownLayer { name } if name == "fc9"),
            "{err}"
        );
    }

    #[test]
    fn bad_bits_name_layer_and_value() {
        for (w, a) in [(1, 8), (9, 8), (16, 8), (0, 8), (8, 1), (8, 33)] {
            let mut p = QuantPlan::uniform(&model(), 8, 8);
            p.layers[1].w_bits = w;
            p.layers[1].a_bits = a;
            let msg = p.validate(&model()).unwrap_err().to_string();
            let bad = if is_valid_bits(w) { a } else { w };
            assert!(msg.contains("fc2"), "{msg}");
            assert!(msg.contains(&format!("{bad} bits")), "{msg}");
        }
        for b in [2, 3, 5, 8, 32] {
            let p = QuantPlan::uniform(&model(), b, b);
            p.validate(&model()).unwrap();
        }
    }

    #[test]
    fn channel_bits_length_and_values() {
        let mut p = QuantPlan::uniform(&model(), 4, 8);
        p.layers[0].channel_w_bits = Some(vec![4, 4, 4]);
        let err = p.validate(&model()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{msg}");
        assert!(
            msg.contains("fc1") && msg.contains('4') && msg.contains('3'),
            "{msg}"
        );

        p.layers[0].channel_w_bits = Some(vec![4, 4, 4, 7]);
        p.validate(&model()).unwrap();
        assert_eq!(p.layers[0].mean_w_bits(), 4.75);

        p.layers[0].channel_w_bits = Some(vec![4, 4, 1, 4]);
        let msg = p.validate(&model()).unwrap_err().to_string();
        assert!(msg.contains("fc1") && msg.contains("channel 2"), "{msg}");

        p.layers[0].channel_w_bits = Some(vec![4, 4, 4, 4]);
        p.layers[0].granularity = Granularity::PerTensor;
        let msg = p.validate(&model()).unwrap_err().to_string();
        assert!(msg.contains("per_channel"), "{msg}");
    }

    #[test]
    fn duplicate_layer_is_rejected() {
        let mut p = QuantPlan::uniform(&model(), 4, 4);
        p.layers.push(LayerPrecision::new("fc1", 8, 8));
        let msg = p.validate(&model()).unwrap_err().to_string();
        assert!(
            msg.contains("fc1") && msg.contains("more than once"),
            "{msg}"
        );
    }

    #[test]
    fn constraints_accept_one_bit_width_and_keep_alphabetical_order() {
        let c: Constraints =
            serde_json::from_str(r#"{"w_bits": 4, "a_bits": [8, 4], "avg_bits": 3}"#).unwrap();
        assert_eq!(c.w_bits, Some(vec![4]));
        assert_eq!(c.a_bits, Some(vec![8, 4]));
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(text, r#"{"a_bits":[8,4],"avg_bits":3.0,"w_bits":[4]}"#);
        let mut p = QuantPlan::uniform(&model(), 4, 4);
        p.seconds = -1.0;
        assert!(p.validate(&model()).is_err());
    }
}
