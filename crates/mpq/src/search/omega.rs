//! The cost of quantization error, Ω (HAWQ-V2, Dong et al. NeurIPS 2020, docs/algorithms.md §2.4–§2.6;
//! HAWQ, Dong et al. ICCV 2019, §1.4–§1.5):
//!
//! - weights: `Ω^w_i(b) = s_i · ‖Q_b(W_i) − W_i‖²` with `s_i = Tr(H_i)/n_i` (trace metric) or
//!   HAWQ-V1's `s_i = λ_i/n_i` (eigen metric);
//! - activations: `Ω^a_i(b) = α · (Tr(H_{a_i})/m_i) · E‖Q_b(a_i) − a_i‖²`, with the error
//!   measured on data (`mpq analyze` writes it beside every activation trace, as `act_error`);
//!   a layer with an activation trace but no measured error at a searched width is an input
//!   error;
//! - `Ω_i(w, a) = Ω^w_i(w) + Ω^a_i(a)`; full precision (32 bits) has no error.
//!
//! Negative curvature estimates (Hutchinson noise on flat layers) count as zero sensitivity.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::graph::LayerInfo;
use crate::plan::{BitWidth, FULL_PRECISION, QuantPlan};
use crate::sensitivity::SensitivityTable;
use crate::{Error, Result};

/// Which curvature scales the weight error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OmegaMetric {
    /// `Tr(H_i)/n_i` (HAWQ-V2).
    #[default]
    Trace,
    /// `λ_i/n_i`, the top eigenvalue per parameter (HAWQ).
    Eigen,
}

/// How Ω is formed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OmegaConfig {
    /// The weight curvature.
    pub metric: OmegaMetric,
    /// Weight `α` of the activation term (0 turns it off).
    pub act_weight: f64,
}

impl Default for OmegaConfig {
    fn default() -> Self {
        OmegaConfig {
            metric: OmegaMetric::Trace,
            act_weight: 1.0,
        }
    }
}

/// One layer's Ω ingredients.
#[derive(Debug, Clone, PartialEq)]
struct OmegaRow {
    name: String,
    weight_scale: f64,
    weight_error: BTreeMap<BitWidth, f64>,
    eigenvalue: Option<f64>,
    act_scale: f64,
    act_error: BTreeMap<BitWidth, f64>,
}

/// Ω per layer and bit pair, aligned with a model's layer table.
#[derive(Debug, Clone, PartialEq)]
pub struct OmegaTable {
    rows: Vec<Option<OmegaRow>>,
    cfg: OmegaConfig,
}

impl OmegaTable {
    /// Ω ingredients of every model layer that has a row in `sens`. A row naming no model
    /// layer, a `params` that differs from the model, or a row without the metric's
    /// curvature is an input error; model layers without a row have no Ω (they must be
    /// pinned, see [`super::SearchSpace::set_omega`]).
    pub fn new(
        layers: &[LayerInfo],
        sens: &SensitivityTable,
        cfg: OmegaConfig,
    ) -> Result<OmegaTable> {
        if !(cfg.act_weight.is_finite() && cfg.act_weight >= 0.0) {
            return Err(Error::config("act-weight", "must be a non-negative number"));
        }
        if let Some(r) = sens
            .layers
            .iter()
            .find(|r| !layers.iter().any(|l| l.name == r.name))
        {
            return Err(Error::UnknownLayer {
                name: r.name.clone(),
            });
        }
        let rows = layers
            .iter()
            .map(|l| {
                let Some(r) = sens.layer(&l.name) else {
                    return Ok(None);
                };
                if r.params != 0 && r.params != l.params {
                    return Err(Error::ShapeMismatch {
                        name: format!("sensitivity row {}", l.name),
                        expected: format!("{} weight elements (the model's)", l.params),
                        got: format!("{}", r.params),
                    });
                }
                let n = l.params.max(1) as f64;
                let curvature = match cfg.metric {
                    OmegaMetric::Trace => r.trace_per_param.or(r.trace.map(|t| t / n)),
                    OmegaMetric::Eigen => r.top_eigenvalue.map(|e| e / n),
                };
                let Some(s) = curvature else {
                    let (what, metric) = match cfg.metric {
                        OmegaMetric::Trace => ("trace", "trace"),
                        OmegaMetric::Eigen => ("top_eigenvalue", "eigen"),
                    };
                    return Err(Error::config(
                        "sensitivity",
                        format!(
                            "layer {} has no {what} (run `mpq analyze --metric {metric}`)",
                            l.name
                        ),
                    ));
                };
                let act_elems = if r.act_elems > 0 {
                    r.act_elems
                } else {
                    l.input_elems
                };
                let act_elems = act_elems.max(1);
                Ok(Some(OmegaRow {
                    name: l.name.clone(),
                    weight_scale: s.max(0.0),
                    weight_error: r.weight_error.clone().unwrap_or_default(),
                    eigenvalue: r.top_eigenvalue,
                    act_scale: r.act_trace.map_or(0.0, |t| (t / act_elems as f64).max(0.0)),
                    act_error: r.act_error.clone().unwrap_or_default(),
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(OmegaTable { rows, cfg })
    }

    /// The configuration.
    pub fn config(&self) -> OmegaConfig {
        self.cfg
    }

    /// Whether model layer `i` has a sensitivity row.
    pub fn has_row(&self, i: usize) -> bool {
        self.rows.get(i).is_some_and(Option::is_some)
    }

    fn row(&self, i: usize) -> Result<&OmegaRow> {
        self.rows.get(i).and_then(Option::as_ref).ok_or_else(|| {
            Error::config("sensitivity", format!("no sensitivity row for layer #{i}"))
        })
    }

    /// `‖Q_b(W_i) − W_i‖²` of layer `i` (0 at 32 bits).
    pub fn weight_error(&self, i: usize, bits: BitWidth) -> Result<f64> {
        let r = self.row(i)?;
        if bits >= FULL_PRECISION {
            return Ok(0.0);
        }
        r.weight_error.get(&bits).copied().ok_or_else(|| {
            Error::config(
                "sensitivity",
                format!(
                    "layer {} has no weight_error for {bits} bits (add it to the sensitivity \
                     JSON, or give --model weights to compute it)",
                    r.name
                ),
            )
        })
    }

    /// `Ω^w_i(b)`.
    pub fn weight_term(&self, i: usize, bits: BitWidth) -> Result<f64> {
        Ok(self.row(i)?.weight_scale * self.weight_error(i, bits)?)
    }

    /// `Ω^a_i(b)` (0 without an activation trace).
    pub fn act_term(&self, i: usize, bits: BitWidth) -> Result<f64> {
        let r = self.row(i)?;
        if r.act_scale == 0.0 || self.cfg.act_weight == 0.0 || bits >= FULL_PRECISION {
            return Ok(0.0);
        }
        let e = r.act_error.get(&bits).copied().ok_or_else(|| {
            Error::config(
                "sensitivity",
                format!(
                    "layer {} has an activation trace but no measured activation error at \
                     {bits} bits (`mpq analyze --metric act-trace` measures them; or search \
                     with --act-weight 0)",
                    r.name
                ),
            )
        })?;
        Ok(self.cfg.act_weight * r.act_scale * e)
    }

    /// `Ω_i(w, a) = Ω^w_i(w) + Ω^a_i(a)`.
    pub fn omega(&self, i: usize, w_bits: BitWidth, a_bits: BitWidth) -> Result<f64> {
        Ok(self.weight_term(i, w_bits)? + self.act_term(i, a_bits)?)
    }

    /// HAWQ's `λ_i / n_i` of layer `i`, when the row has an eigenvalue.
    pub fn hawq_score(&self, i: usize, params: usize) -> Option<f64> {
        let r = self.rows.get(i)?.as_ref()?;
        r.eigenvalue.map(|e| e / params.max(1) as f64)
    }

    /// HAWQ's fine-tuning weight `λ_i · ‖Q_b(W_i) − W_i‖²` (docs/algorithms.md §1.5), or the trace-based
    /// `s_i · n_i · ‖ΔW‖²` when the row has no eigenvalue.
    pub fn finetune_weight(&self, i: usize, params: usize, bits: BitWidth) -> Result<f64> {
        let r = self.row(i)?;
        let lambda = r.eigenvalue.unwrap_or(r.weight_scale * params as f64);
        Ok(lambda * self.weight_error(i, bits)?)
    }

    /// Σ Ω of `plan` over `layers` (layers absent from the plan are full precision). Layers
    /// without a sensitivity row count zero.
    pub fn plan_omega(&self, layers: &[LayerInfo], plan: &QuantPlan) -> Result<f64> {
        let mut total = 0.0;
        for (i, l) in layers.iter().enumerate() {
            if !self.has_row(i) {
                continue;
            }
            let (w, a) = plan.bits(&l.name);
            total += self.omega(i, w, a)?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Versioned;

    fn table(act_trace: Option<f64>, metric: OmegaMetric) -> (Vec<LayerInfo>, OmegaTable) {
        let layers = vec![
            LayerInfo::linear(0, "fc1", 4, 8),
            LayerInfo::linear(1, "fc2", 2, 4),
        ];
        let text = format!(
            r#"{{"layers": [{{"name": "fc1", "params": 32, "trace": 6.4, "top_eigenvalue": 3.2,
                "act_trace": {}, "weight_error": {{"2": 10.0, "4": 1.0, "8": 0.01}},
                "act_error": {{"8": 0.5}} }}]}}"#,
            act_trace.map_or("null".to_string(), |t| t.to_string())
        );
        let s = SensitivityTable::parse(text.as_bytes(), "s").unwrap();
        let cfg = OmegaConfig {
            metric,
            act_weight: 1.0,
        };
        (layers.clone(), OmegaTable::new(&layers, &s, cfg).unwrap())
    }

    #[test]
    fn weight_term_is_trace_per_param_times_error() {
        let (_, t) = table(None, OmegaMetric::Trace);
        assert!((t.weight_term(0, 4).unwrap() - 0.2).abs() < 1e-15);
        assert!((t.weight_term(0, 2).unwrap() - 2.0).abs() < 1e-15);
        assert_eq!(t.weight_term(0, 32).unwrap(), 0.0);
        assert_eq!(t.act_term(0, 4).unwrap(), 0.0);
        assert!(t.weight_term(0, 3).unwrap_err().to_string().contains("fc1"));
        assert!(!t.has_row(1));
        let (_, e) = table(None, OmegaMetric::Eigen);
        assert!((e.weight_term(0, 4).unwrap() - 0.1).abs() < 1e-15);
        assert!((e.finetune_weight(0, 32, 4).unwrap() - 3.2).abs() < 1e-15);
        assert_eq!(e.hawq_score(0, 32), Some(0.1));
    }

    #[test]
    fn activation_term_is_trace_per_element_times_measured_error() {
        let (layers, t) = table(Some(16.0), OmegaMetric::Trace);
        // act_scale = 16 / 8 inputs = 2; 8 bits from the table: 2 * 0.5.
        assert!((t.act_term(0, 8).unwrap() - 1.0).abs() < 1e-15);
        assert_eq!(t.act_term(0, 32).unwrap(), 0.0);
        // No measured error at 4 bits: an input error naming the layer and the command.
        let msg = t.act_term(0, 4).unwrap_err().to_string();
        assert!(msg.contains("fc1") && msg.contains("mpq analyze"), "{msg}");
        let plan = QuantPlan::uniform(&layers, 4, 8);
        let total = t.plan_omega(&layers, &plan).unwrap();
        assert!((total - (0.2 + 1.0)).abs() < 1e-12);
        // Without an activation trace the activation term is 0 at any width.
        let (_, w) = table(None, OmegaMetric::Trace);
        assert_eq!(w.act_term(0, 4).unwrap(), 0.0);
    }

    #[test]
    fn mismatched_rows_are_input_errors() {
        let layers = vec![LayerInfo::linear(0, "fc1", 4, 8)];
        let cfg = OmegaConfig::default();
        let table = |json: &str| SensitivityTable::parse(json.as_bytes(), "s").unwrap();
        let s = table(r#"{"layers": [{"name": "fc9", "trace": 1}]}"#);
        assert!(matches!(
            OmegaTable::new(&layers, &s, cfg),
            Err(Error::UnknownLayer { .. })
        ));
        let s = table(r#"{"layers": [{"name": "fc1", "params": 3, "trace": 1}]}"#);
        assert!(matches!(
            OmegaTable::new(&layers, &s, cfg),
            Err(Error::ShapeMismatch { .. })
        ));
        let s = table(r#"{"layers": [{"name": "fc1", "trace": 1}]}"#);
        let eig = OmegaConfig {
            metric: OmegaMetric::Eigen,
            act_weight: 1.0,
        };
        let msg = OmegaTable::new(&layers, &s, eig).unwrap_err().to_string();
        assert!(
            msg.contains("top_eigenvalue") && msg.contains("fc1"),
            "{msg}"
        );
    }
}
