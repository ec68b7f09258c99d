//! The inputs of a search besides the model's layer table: the candidate bits (the flags, or
//! each method's defaults), the plans' weight quantizer, a BitOps budget "as uniform W/A",
//! and the sensitivity file turned into Ω (HAWQ, HAWQ-V2, `docs/algorithms.md` §1.4, §2.4),
//! channel tables (CW-HAWQ, §3) or LIMPQ's indicators (§5), with the quantization errors the
//! file lacks computed from the model's weights.

use std::collections::{BTreeMap, BTreeSet};

use super::{BudgetSpec, Method, SearchRequest, WeightQuantizer};
use crate::cost::CostTable;
use crate::graph::LayerInfo;
use crate::io::Versioned;
use crate::model::Model;
use crate::plan::{BitWidth, FULL_PRECISION, LayerPrecision, QuantPlan, QuantizerKind};
use crate::quant::{channel_weight_errors, weight_errors};
use crate::search::limpq::Indicators;
use crate::search::{
    Candidates, ChannelTable, OmegaConfig, OmegaMetric, OmegaTable, Pin, SearchOptions,
};
use crate::sensitivity::SensitivityTable;
use crate::{Error, Result};

/// The candidate sets: the request's, or the method's defaults (HAQ: every width 2..8, and
/// weights only with k-means; CW-HAWQ: 2, 4, 8 with one activation width; LIMPQ: the trained
/// widths).
pub(super) fn candidates(req: &SearchRequest, ind: Option<&Indicators>) -> Candidates {
    let (w_default, a_default): (Vec<BitWidth>, Vec<BitWidth>) = match (&req.method, ind) {
        (_, Some(ind)) => ind.candidates(),
        (Method::Haq(h), _) if h.weight_quantizer == WeightQuantizer::Kmeans => {
            ((2..=8).collect(), vec![FULL_PRECISION])
        }
        // Activation bits cannot help a size, average-bit or compression budget: under those
        // alone HAQ keeps activations at one width (docs/algorithms.md §4.5).
        (Method::Haq(_), _) if !counts_activations(&req.budget) => {
            ((2..=8).collect(), vec![HAQ_WEIGHT_ONLY_A_BITS])
        }
        (Method::Haq(_), _) => ((2..=8).collect(), (2..=8).collect()),
        (m, _) if m.channel_wise() => (vec![2, 4, 8], vec![8]),
        _ => (vec![2, 3, 4, 5, 6, 8], vec![4, 8]),
    };
    // Paired formats without candidate lists: the candidates are the formats' widths.
    let from_formats = |pick: fn(&(BitWidth, BitWidth)) -> BitWidth| {
        req.formats
            .as_ref()
            .map(|f| f.iter().map(pick).collect::<Vec<_>>())
    };
    Candidates {
        w_bits: (req.w_bits.clone())
            .or_else(|| from_formats(|f| f.0))
            .unwrap_or(w_default),
        a_bits: (req.a_bits.clone())
            .or_else(|| from_formats(|f| f.1))
            .unwrap_or(a_default),
    }
}

/// HAQ's activation width under weight-only budgets, unless `--a-bits` gives one.
pub(super) const HAQ_WEIGHT_ONLY_A_BITS: BitWidth = 8;

/// Whether any limit of `b` depends on activation bit-widths.
pub(super) fn counts_activations(b: &BudgetSpec) -> bool {
    b.bops_as.is_some() || b.limits.counts_activations()
}

/// The weight quantizer of the method's plans (its metadata counts in size budgets).
pub(super) fn quantizer(method: &Method) -> QuantizerKind {
    match method {
        Method::Haq(h) if h.weight_quantizer == WeightQuantizer::Kmeans => QuantizerKind::KMeans,
        Method::Limpq { .. } => QuantizerKind::Lsq,
        _ => QuantizerKind::Symmetric,
    }
}

/// BOPs of the plan with every layer at `(w, a)` bits but the pinned ones (at their pins).
pub(super) fn uniform_bops(
    layers: &[LayerInfo],
    (w, a): (BitWidth, BitWidth),
    pins: &[Pin],
) -> Result<f64> {
    let mut plan = QuantPlan::uniform(layers, w, a);
    for p in pins {
        let l = &mut plan.layers[p.layer_index(layers)?];
        (l.w_bits, l.a_bits) = (p.w_bits, p.a_bits);
    }
    Ok(CostTable::new(layers, &plan)?.bops)
}

/// Ω or channel data for the space.
#[derive(Debug, Default)]
pub(super) struct Tables {
    /// Ω per layer and bit pair (the sensitivity-driven layer-wise methods, and the
    /// baselines' reported Ω).
    pub(super) omega: Option<OmegaTable>,
    /// Ω on the trace scale, when `omega` ranks by another metric (HAWQ's eigenvalues) and
    /// the file has traces: every Ω printed or written is on this one scale.
    pub(super) trace_omega: Option<OmegaTable>,
    /// Channel traces and errors (CW-HAWQ).
    pub(super) channels: Option<ChannelTable>,
    /// Ω per `(layer index, w_bits, a_bits)` of a problem table (`--table`).
    pub(super) choice_omega: Option<BTreeMap<(usize, BitWidth, BitWidth), f64>>,
}

impl Tables {
    /// The Ω that is printed and written (the trace Ω), if the file gives one.
    pub(super) fn reported(&self) -> Option<&OmegaTable> {
        match &self.omega {
            Some(o) if o.config().metric == OmegaMetric::Trace => Some(o),
            _ => self.trace_omega.as_ref(),
        }
    }
}

/// The request's sensitivity file, as the method reads it.
pub(super) struct Sensitivity {
    table: Option<SensitivityTable>,
    indicators: Option<Indicators>,
    source: String,
}

impl Sensitivity {
    /// No sensitivity file.
    pub(super) fn none() -> Sensitivity {
        Sensitivity {
            table: None,
            indicators: None,
            source: String::new(),
        }
    }

    /// Reads the file (LIMPQ: its indicators, cleaned).
    pub(super) fn load(req: &SearchRequest) -> Result<Sensitivity> {
        let Some(path) = &req.sensitivity else {
            return Ok(Sensitivity::none());
        };
        let table = SensitivityTable::load(path)?;
        let source = path.display().to_string();
        let indicators = match req.method {
            Method::Limpq { .. } => Some(Indicators::from_table(&table, &source)?),
            _ => None,
        };
        Ok(Sensitivity {
            table: Some(table),
            indicators,
            source,
        })
    }

    /// LIMPQ's indicators.
    pub(super) fn indicators(&self) -> Option<&Indicators> {
        self.indicators.as_ref()
    }

    /// Ω (layer-wise methods) or the channel table (CW-HAWQ), errors computed from `model`
    /// with the plan's weight quantizer where the file has none.
    pub(super) fn tables(
        &self,
        req: &SearchRequest,
        model: &Model,
        layers: &[LayerInfo],
        cands: &Candidates,
        opts: &SearchOptions,
    ) -> Result<Tables> {
        let Some(table) = &self.table else {
            return Ok(Tables::default());
        };
        if self.indicators.is_some() {
            return Ok(Tables::default());
        }
        if req.method.channel_wise() {
            let channels = self.channel_table(req, model, layers, cands)?;
            return Ok(Tables {
                channels: Some(channels),
                ..Tables::default()
            });
        }
        let metric = req.omega.metric.unwrap_or(match req.method {
            Method::HawqV1 => OmegaMetric::Eigen,
            _ => OmegaMetric::Trace,
        });
        let cfg = OmegaConfig {
            metric,
            act_weight: req.omega.act_weight,
        };
        let mut table = table.clone();
        let bits: BTreeSet<BitWidth> = cands
            .w_bits
            .iter()
            .copied()
            .chain(opts.pins.iter().map(|p| p.w_bits))
            .filter(|&b| b != FULL_PRECISION)
            .collect();
        let mut missing: Vec<(String, Vec<BitWidth>)> = Vec::new();
        for row in table.layers.iter().filter(|r| known(layers, &r.name)) {
            let need: Vec<BitWidth> = bits
                .iter()
                .copied()
                .filter(|&b| row.weight_error_at(b).is_none())
                .collect();
            if !need.is_empty() {
                missing.push((row.name.clone(), need));
            }
        }
        if let (Some((name, _)), Some(_)) = (missing.first(), &model.quantized) {
            return Err(Error::Usage(format!(
                "{} has no weight_error for layer {name} and the model is already quantized (a \
                 packed file): give the float model, or per-bit weight_error entries in the \
                 sensitivity JSON",
                self.source
            )));
        }
        let template = QuantPlan {
            layers: missing.iter().map(|(n, _)| precision(n, 8, req)).collect(),
            ..QuantPlan::uniform(&[], FULL_PRECISION, FULL_PRECISION)
        };
        let all: Vec<BitWidth> = bits.into_iter().collect();
        let errors = weight_errors(&model.graph, &template, &all)?;
        for (name, need) in missing {
            for b in need {
                table.set_weight_error(&name, b, errors[&name][&b]);
            }
        }
        let trace_omega = match metric {
            OmegaMetric::Trace => None,
            _ => OmegaTable::new(
                layers,
                &table,
                OmegaConfig {
                    metric: OmegaMetric::Trace,
                    ..cfg
                },
            )
            .ok(),
        };
        Ok(Tables {
            omega: Some(OmegaTable::new(layers, &table, cfg)?),
            trace_omega,
            ..Tables::default()
        })
    }

    /// Channel traces from the file, `‖Q_b(W_c) − W_c‖²` per channel and candidate width
    /// from the model's unfolded weights.
    fn channel_table(
        &self,
        req: &SearchRequest,
        model: &Model,
        layers: &[LayerInfo],
        cands: &Candidates,
    ) -> Result<ChannelTable> {
        let Some(sens) = &self.table else {
            return Err(Error::Usage(
                "channel-wise methods need --sensitivity".into(),
            ));
        };
        if let Some(row) = sens.layers.iter().find(|r| !known(layers, &r.name)) {
            return Err(Error::UnknownLayer {
                name: row.name.clone(),
            });
        }
        if !sens.layers.iter().any(|r| r.channel_traces.is_some()) {
            return Err(Error::Usage(format!(
                "{} has no channel_traces: write them with `mpq analyze --metric channel-trace`",
                self.source
            )));
        }
        if model.quantized.is_some() {
            return Err(Error::Usage(
                "cw-hawq needs the float model's weights for its channel errors, not a packed \
                 file"
                    .into(),
            ));
        }
        let bits: Vec<BitWidth> = cands
            .w_bits
            .iter()
            .copied()
            .filter(|&b| b != FULL_PRECISION)
            .collect();
        let mut errors = BTreeMap::new();
        for row in sens.layers.iter().filter(|r| r.channel_traces.is_some()) {
            let w = weights(model, &row.name)?;
            let per_bit = bits
                .iter()
                .map(|&b| Ok((b, channel_weight_errors(&w, &precision(&row.name, b, req))?)))
                .collect::<Result<BTreeMap<_, _>>>()?;
            errors.insert(row.name.clone(), per_bit);
        }
        ChannelTable::new(layers, sens, &errors)
    }
}

fn known(layers: &[LayerInfo], name: &str) -> bool {
    layers.iter().any(|l| l.name == name)
}

/// The unfolded weights of `layer`, whose Hessian `mpq analyze` measured.
fn weights(model: &Model, layer: &str) -> Result<candle::Tensor> {
    Ok(model
        .graph
        .params()
        .var(&format!("{layer}.weight"))?
        .as_tensor()
        .clone())
}

/// The symmetric per-channel quantizer of a searched plan at `bits`, with the request's
/// range rule.
fn precision(layer: &str, bits: BitWidth, req: &SearchRequest) -> LayerPrecision {
    LayerPrecision {
        weight_range: req.weight_range,
        ..LayerPrecision::new(layer, bits, 8)
    }
}
