//! [`SensitivityTable`]: the sensitivity file (`mpq.sensitivity`, `docs/file-formats.md`)
//! that `mpq analyze` writes and every search reads: per layer the Hessian trace, top
//! eigenvalue, activation and channel traces (HAWQ, HAWQ-V2, CW-HAWQ: Dong et al. 2019,
//! 2020), LIMPQ's learned indicators (Tang et al. 2022), and optionally per-bit quantization
//! errors `‖Q_b(W) − W‖²` and `E‖Q_b(a) − a‖²` (docs/algorithms.md §2.4, §2.6), so a plan can
//! be searched from published tables plus layer shapes. Every field but `layers` (and each
//! row's `name`) may be absent, as in a hand-written table.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::density::Density;
use super::hvp::FdScheme;
use super::indicators::{LayerIndicators, LimpqReport};
use super::problem::Precision;
use super::{Estimator, Metric};
use crate::graph::{LayerInfo, LayerOp};
use crate::io::Versioned;
use crate::plan::{BitWidth, FULL_PRECISION};
use crate::{Error, Result};

/// Second-order sensitivity of every analysed layer, plus how it was computed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SensitivityTable {
    /// The model reference (`zoo:resnet20`, a file path).
    #[serde(default)]
    pub model: String,
    /// What was computed.
    #[serde(default)]
    pub metric: Metric,
    /// Trace estimator.
    #[serde(default)]
    pub estimator: Estimator,
    /// Seed of every probe.
    #[serde(default)]
    pub seed: u64,
    /// Batches analysed.
    #[serde(default)]
    pub batches: usize,
    /// Samples per batch (the first batch's).
    #[serde(default)]
    pub batch_size: usize,
    /// Hessian-vector products computed (weight and activation products, each over all batches).
    #[serde(default)]
    pub hvp_count: u64,
    /// Wall-clock seconds of the analysis.
    #[serde(default)]
    pub seconds: f64,
    /// One row per analysed layer, in execution order.
    pub layers: Vec<LayerSensitivity>,
    /// The data reference.
    #[serde(default)]
    pub data: Option<String>,
    /// The data split analysed (`train` or `test`).
    #[serde(default)]
    pub split: Option<String>,
    /// Samples analysed (`batches × batch_size` unless the last batch is short).
    #[serde(default)]
    pub samples: usize,
    /// Mean loss at the model's weights over the analysed samples.
    #[serde(default)]
    pub loss: f64,
    /// Finite-difference scheme of the Hutchinson trace products (weights and activations).
    #[serde(default)]
    pub trace_scheme: FdScheme,
    /// Relative step of the Hutchinson trace products.
    #[serde(default)]
    pub trace_rel_step: f64,
    /// Finite-difference scheme of the other products (eigenvalues, exact blocks, densities).
    #[serde(default)]
    pub scheme: FdScheme,
    /// Arithmetic of the analysis.
    #[serde(default)]
    pub precision: Precision,
    /// Relative step of the other products.
    #[serde(default)]
    pub rel_step: f64,
    /// Stopping tolerance of traces and power iteration.
    #[serde(default)]
    pub tol: f64,
    /// Most probes / iterations.
    #[serde(default)]
    pub max_iter: usize,
    /// Fewest Hutchinson probes.
    #[serde(default)]
    pub min_probes: usize,
    /// Weight probes used by Hutchinson (shared by all layers).
    #[serde(default)]
    pub probes: Option<usize>,
    /// Activation probes used by Hutchinson.
    #[serde(default)]
    pub act_probes: Option<usize>,
    /// Sum of the analysed layers' weight traces (the block-diagonal part of the trace).
    #[serde(default)]
    pub model_trace: Option<f64>,
    /// Largest-magnitude eigenvalues of the whole analysed Hessian (power iteration with
    /// deflation).
    #[serde(default)]
    pub model_top_eigenvalues: Option<Vec<f64>>,
    /// Spectral density of the whole analysed Hessian (SLQ).
    #[serde(default)]
    pub density: Option<Density>,
    /// LIMPQ's indicator training run (metric `limpq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limpq: Option<LimpqReport>,
}

/// One layer's row.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LayerSensitivity {
    /// Dotted layer name.
    #[serde(default = "no_name")]
    pub name: String,
    /// Layer kind (`conv`, `depthwise_conv`, `grouped_conv`, `linear`).
    pub op: Option<LayerOp>,
    /// Weight elements.
    pub params: usize,
    /// Multiply-accumulates per sample.
    pub macs: u64,
    /// Trace of the Hessian w.r.t. the layer's weight.
    pub trace: Option<f64>,
    /// Standard error of `trace` (0 for `exact`).
    pub trace_stderr: Option<f64>,
    /// `trace / params` (HAWQ-V2's average).
    pub trace_per_param: Option<f64>,
    /// Largest-magnitude eigenvalue of the Hessian w.r.t. the layer's weight (HAWQ).
    pub top_eigenvalue: Option<f64>,
    /// Per-sample trace of the Hessian w.r.t. the layer's input activation (HAWQ-V2).
    pub act_trace: Option<f64>,
    /// Per-output-channel weight traces (CW-HAWQ); they sum to `trace`.
    pub channel_traces: Option<Vec<f64>>,
    /// Standard error of each channel trace (Hutchinson; 0 for `exact`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_trace_stderr: Option<Vec<f64>>,
    /// Probes behind `trace`.
    pub trace_probes: Option<usize>,
    /// The probe count at which this layer's stopping rule first held.
    pub trace_converged_at: Option<usize>,
    /// Power iterations behind `top_eigenvalue`.
    pub eigen_iterations: Option<usize>,
    /// Whether the power iteration met its tolerance.
    pub eigen_converged: Option<bool>,
    /// Elements of the input activation per sample.
    pub act_elems: usize,
    /// Standard error of `act_trace`.
    pub act_trace_stderr: Option<f64>,
    /// `act_trace / act_elems`.
    pub act_trace_per_elem: Option<f64>,
    /// Per-channel activation traces (input channels); they sum to `act_trace`.
    pub act_channel_traces: Option<Vec<f64>>,
    /// Spectral density of the layer's weight Hessian block (SLQ).
    pub density: Option<Density>,
    /// LIMPQ's learned indicators per candidate bit-width (metric `limpq`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limpq: Option<LayerIndicators>,
    /// `‖Q_b(W) − W‖²` per weight bit-width, when given (a published table, or precomputed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_error: Option<BTreeMap<BitWidth, f64>>,
    /// `E_x ‖Q_b(a) − a‖²` per activation bit-width, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act_error: Option<BTreeMap<BitWidth, f64>>,
}

impl LayerSensitivity {
    /// How much of the order of this layer's channel traces is decided beyond noise: the
    /// fraction of channel pairs whose traces differ by more than 1.96 standard errors of
    /// their difference (`None` without channel traces and their standard errors, or with
    /// fewer than two channels).
    pub fn channel_order_decided(&self) -> Option<f64> {
        let (t, se) = (
            self.channel_traces.as_ref()?,
            self.channel_trace_stderr.as_ref()?,
        );
        if t.len() < 2 || t.len() != se.len() {
            return None;
        }
        let (mut decided, mut pairs) = (0u64, 0u64);
        for i in 0..t.len() {
            for j in i + 1..t.len() {
                pairs += 1;
                let noise = 1.96 * (se[i] * se[i] + se[j] * se[j]).sqrt();
                if (t[i] - t[j]).abs() > noise {
                    decided += 1;
                }
            }
        }
        Some(decided as f64 / pairs as f64)
    }

    /// An empty row for `info`.
    pub fn new(info: &LayerInfo) -> Self {
        LayerSensitivity {
            name: info.name.clone(),
            op: Some(info.op),
            params: info.params,
            macs: info.macs,
            trace: None,
            trace_stderr: None,
            trace_per_param: None,
            top_eigenvalue: None,
            act_trace: None,
            channel_traces: None,
            channel_trace_stderr: None,
            trace_probes: None,
            trace_converged_at: None,
            eigen_iterations: None,
            eigen_converged: None,
            act_elems: info.input_elems,
            act_trace_stderr: None,
            act_trace_per_elem: None,
            act_channel_traces: None,
            density: None,
            limpq: None,
            weight_error: None,
            act_error: None,
        }
    }

    /// The weight error at `bits`, if given (0 at 32 bits).
    pub fn weight_error_at(&self, bits: BitWidth) -> Option<f64> {
        if bits == FULL_PRECISION {
            return Some(0.0);
        }
        self.weight_error.as_ref()?.get(&bits).copied()
    }

    /// `Tr(H)/n`: `trace_per_param`, else `trace / params` when both are known.
    pub fn trace_per_param_or_derived(&self) -> Option<f64> {
        self.trace_per_param.or_else(|| {
            let t = self.trace?;
            (self.params > 0).then(|| t / self.params as f64)
        })
    }
}

impl SensitivityTable {
    /// The row of layer `name`.
    pub fn layer(&self, name: &str) -> Option<&LayerSensitivity> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// Sets `‖Q_b(W) − W‖²` of layer `name` at `bits` (adding a row when there is none).
    pub fn set_weight_error(&mut self, name: &str, bits: BitWidth, error: f64) {
        let idx = match self.layers.iter().position(|r| r.name == name) {
            Some(i) => i,
            None => {
                self.layers.push(LayerSensitivity {
                    name: name.to_string(),
                    ..Default::default()
                });
                self.layers.len() - 1
            }
        };
        self.layers[idx]
            .weight_error
            .get_or_insert_with(BTreeMap::new)
            .insert(bits, error);
    }
}

fn no_name() -> String {
    String::new()
}

impl Versioned for SensitivityTable {
    const FORMAT: &'static str = "mpq.sensitivity";
    const VERSION: u32 = 1;
    const WHAT: &'static str = "a sensitivity";

    /// Every row named, once; every number finite; quantization errors non-negative; a
    /// `layers` list present.
    fn check(&self, source: &str) -> Result<()> {
        let bad = |reason: String| Err(Error::corrupt(source, reason));
        let mut seen = HashSet::new();
        for r in &self.layers {
            if r.name.is_empty() {
                return bad("a layer row has no name".into());
            }
            if !seen.insert(r.name.as_str()) {
                return bad(format!("layer {} appears more than once", r.name));
            }
            let numbers = [
                ("trace", r.trace),
                ("trace_per_param", r.trace_per_param),
                ("top_eigenvalue", r.top_eigenvalue),
                ("act_trace", r.act_trace),
            ];
            let errors = r
                .weight_error
                .iter()
                .chain(&r.act_error)
                .flat_map(|m| m.values().map(|&v| ("error", Some(v))));
            let traces = r
                .channel_traces
                .iter()
                .flatten()
                .map(|&v| ("channel_traces", Some(v)));
            for (what, v) in numbers.into_iter().chain(errors).chain(traces) {
                if v.is_some_and(|v| !v.is_finite()) {
                    return bad(format!("layer {}: {what} is not finite", r.name));
                }
            }
            if r.weight_error
                .iter()
                .chain(&r.act_error)
                .flatten()
                .any(|(_, &e)| e < 0.0)
            {
                return bad(format!(
                    "layer {}: a quantization error is negative",
                    r.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_order_counts_the_pairs_apart_beyond_noise() {
        let mut row = LayerSensitivity::new(&LayerInfo::linear(0, "fc", 4, 2));
        assert_eq!(row.channel_order_decided(), None);
        // Traces 10, 10.5, 20, 40 with standard errors 1: the noise of a difference is
        // 1.96·√2 ≈ 2.77, so 10 vs 10.5 is undecided and the other 5 of 6 pairs are decided.
        row.channel_traces = Some(vec![10.0, 10.5, 20.0, 40.0]);
        assert_eq!(row.channel_order_decided(), None);
        row.channel_trace_stderr = Some(vec![1.0; 4]);
        assert_eq!(row.channel_order_decided(), Some(5.0 / 6.0));
        // Standard errors of 10: only 10 or 10.5 against 40 (gap ≥ 29.5 > 27.7) are decided.
        row.channel_trace_stderr = Some(vec![10.0; 4]);
        assert_eq!(row.channel_order_decided(), Some(2.0 / 6.0));
        // Exact traces (standard error 0): every distinct pair is decided.
        row.channel_trace_stderr = Some(vec![0.0; 4]);
        assert_eq!(row.channel_order_decided(), Some(1.0));
    }

    #[test]
    fn reads_a_hand_written_table_with_extra_fields_and_errors() {
        let text = r#"{ "model": "zoo:lenet5", "metric": "trace", "estimator": "hutchinson",
          "seed": 0, "batches": 1, "batch_size": 256, "hvp_count": 412, "seconds": 3.2,
          "layers": [ { "name": "conv1", "op": "conv", "params": 150, "macs": 117600,
                        "trace": 0.49, "trace_stderr": 0.01, "trace_per_param": 0.0033,
                        "top_eigenvalue": 0.23, "act_trace": null, "channel_traces": null,
                        "weight_error": {"2": 1.5, "4": 0.25, "8": 0.001},
                        "act_error": {"4": 0.5}, "note": "extra" },
                      { "name": "fc", "trace": 1.0, "weight_error": null } ] }"#;
        let s = SensitivityTable::parse(text.as_bytes(), "s.json").unwrap();
        assert_eq!(s.layers.len(), 2);
        let c = s.layer("conv1").unwrap();
        assert_eq!((c.params, c.op), (150, Some(LayerOp::Conv)));
        assert_eq!(c.top_eigenvalue, Some(0.23));
        assert_eq!(c.act_trace, None);
        assert_eq!(c.weight_error_at(4), Some(0.25));
        assert_eq!(c.weight_error_at(3), None);
        assert_eq!(c.weight_error_at(32), Some(0.0));
        assert_eq!(c.act_error.as_ref().unwrap()[&4], 0.5);
        let fc = s.layer("fc").unwrap();
        assert_eq!(
            (fc.weight_error.as_ref(), fc.params, fc.op),
            (None, 0, None)
        );
        assert_eq!(fc.trace_per_param_or_derived(), None);
    }

    #[test]
    fn bad_files_are_input_errors() {
        for bad in [
            "{",
            r#"{"layers": [{"name": "a"}, {"name": "a"}]}"#,
            r#"{"layers": [{"trace": 1}]}"#,
            r#"{"layers": [{"name": "a", "weight_error": {"x": 1}}]}"#,
            r#"{"layers": [{"name": "a", "weight_error": {"4": -1}}]}"#,
            r#"{"model": "m"}"#,
        ] {
            let err = SensitivityTable::parse(bad.as_bytes(), "bad.json").unwrap_err();
            assert!(
                err.is_input_error() && err.to_string().contains("bad.json"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn set_weight_error_fills_rows() {
        let mut s = SensitivityTable::default();
        s.set_weight_error("fc", 4, 0.5);
        s.set_weight_error("fc", 2, 2.0);
        assert_eq!(s.layer("fc").unwrap().weight_error_at(2), Some(2.0));
        assert_eq!(s.layers.len(), 1);
    }
}
