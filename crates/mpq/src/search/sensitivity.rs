//! The search's view of the Sensitivity JSON of `design/cli.md` (what `mpq analyze` writes,
//! HAWQ / HAWQ-V2, Dong et al. 2019, 2020): per layer the weight-Hessian trace and top
//! eigenvalue, the activation trace, and optionally precomputed per-bit quantization errors
//! `weight_error: {"2": e, "4": e, …}` = `‖Q_b(W) − W‖²` and `act_error` = `E‖Q_b(a) − a‖²`
//! (spec §2.4, §2.6), so a plan can be searched from published tables plus layer shapes.
//! Parsed on its own (tolerant of extra fields) so `search` needs no tensors.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::plan::BitWidth;
use crate::{Error, Result};

/// One layer's row of the sensitivity table.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SensitivityRow {
    /// Dotted layer name.
    pub name: String,
    /// Weight elements `n_i` (checked against the model when present).
    #[serde(default)]
    pub params: Option<usize>,
    /// `Tr(H_i)`, the weight-Hessian trace.
    #[serde(default)]
    pub trace: Option<f64>,
    /// `Tr(H_i) / n_i`.
    #[serde(default)]
    pub trace_per_param: Option<f64>,
    /// `λ_i`, the top eigenvalue of the weight Hessian (HAWQ).
    #[serde(default)]
    pub top_eigenvalue: Option<f64>,
    /// Per-sample trace of the Hessian w.r.t. the layer's input activation (HAWQ-V2 §2.6).
    #[serde(default)]
    pub act_trace: Option<f64>,
    /// Input activation elements per sample `m_i`.
    #[serde(default)]
    pub act_elems: Option<usize>,
    /// Per-output-channel weight traces (CW-HAWQ, `mpq analyze --metric channel-trace`).
    #[serde(default)]
    pub channel_traces: Option<Vec<f64>>,
    /// `‖Q_b(W_i) − W_i‖²` per weight bit-width.
    #[serde(default)]
    pub weight_error: Option<BTreeMap<BitWidth, f64>>,
    /// `E_x ‖Q_b(a_i) − a_i‖²` per activation bit-width.
    #[serde(default)]
    pub act_error: Option<BTreeMap<BitWidth, f64>>,
}

impl SensitivityRow {
    /// The weight error at `bits`, if given (0 at 32 bits).
    pub fn weight_error_at(&self, bits: BitWidth) -> Option<f64> {
        if bits == crate::plan::FULL_PRECISION {
            return Some(0.0);
        }
        self.weight_error.as_ref()?.get(&bits).copied()
    }
}

/// The layers of a sensitivity JSON (other fields are ignored).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sensitivities {
    /// The model it was computed for.
    #[serde(default)]
    pub model: Option<String>,
    /// The metric (`trace`, `eigen`, `all`, …).
    #[serde(default)]
    pub metric: Option<serde_json::Value>,
    /// One row per layer.
    pub layers: Vec<SensitivityRow>,
}

impl Sensitivities {
    /// Parses JSON text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Sensitivities> {
        let s: Sensitivities = serde_json::from_str(text)
            .map_err(|e| Error::corrupt(source, format!("not a valid sensitivity JSON: {e}")))?;
        s.validate(source)?;
        Ok(s)
    }

    /// Reads a sensitivity JSON file.
    pub fn load(path: impl AsRef<Path>) -> Result<Sensitivities> {
        let path = path.as_ref();
        let bytes = crate::io::read(path)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::corrupt(path, "a sensitivity JSON must be UTF-8 text"))?;
        Sensitivities::parse(&text, &path.display().to_string())
    }

    fn validate(&self, source: &str) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for r in &self.layers {
            if !seen.insert(r.name.as_str()) {
                return Err(Error::corrupt(
                    source,
                    format!("layer {} appears more than once", r.name),
                ));
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
            for (what, v) in numbers.into_iter().chain(errors) {
                if v.is_some_and(|v| !v.is_finite()) {
                    return Err(Error::corrupt(
                        source,
                        format!("layer {}: {what} is not finite", r.name),
                    ));
                }
            }
            if r.weight_error
                .iter()
                .chain(&r.act_error)
                .flatten()
                .any(|(_, &e)| e < 0.0)
            {
                return Err(Error::corrupt(
                    source,
                    format!("layer {}: a quantization error is negative", r.name),
                ));
            }
        }
        Ok(())
    }

    /// The row of layer `name`.
    pub fn row(&self, name: &str) -> Option<&SensitivityRow> {
        self.layers.iter().find(|r| r.name == name)
    }

    /// Sets `‖Q_b(W) − W‖²` of layer `name` at `bits` (adding a row when there is none).
    pub fn set_weight_error(&mut self, name: &str, bits: BitWidth, error: f64) {
        let idx = match self.layers.iter().position(|r| r.name == name) {
            Some(i) => i,
            None => {
                self.layers.push(SensitivityRow {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cli_example_with_extra_fields_and_errors() {
        let text = r#"{ "model": "zoo:lenet5", "metric": "trace", "estimator": "hutchinson",
          "seed": 0, "batches": 1, "batch_size": 256, "hvp_count": 412, "seconds": 3.2,
          "layers": [ { "name": "conv1", "op": "conv", "params": 150, "macs": 117600,
                        "trace": 0.49, "trace_stderr": 0.01, "trace_per_param": 0.0033,
                        "top_eigenvalue": 0.23, "act_trace": null, "channel_traces": null,
                        "weight_error": {"2": 1.5, "4": 0.25, "8": 0.001},
                        "act_error": {"4": 0.5} },
                      { "name": "fc", "trace": 1.0, "weight_error": null } ] }"#;
        let s = Sensitivities::parse(text, "s.json").unwrap();
        assert_eq!(s.layers.len(), 2);
        let c = s.row("conv1").unwrap();
        assert_eq!(c.params, Some(150));
        assert_eq!(c.top_eigenvalue, Some(0.23));
        assert_eq!(c.act_trace, None);
        assert_eq!(c.weight_error_at(4), Some(0.25));
        assert_eq!(c.weight_error_at(3), None);
        assert_eq!(c.weight_error_at(32), Some(0.0));
        assert_eq!(c.act_error.as_ref().unwrap()[&4], 0.5);
        assert_eq!(s.row("fc").unwrap().weight_error, None);
    }

    #[test]
    fn bad_files_are_input_errors() {
        for bad in [
            "{",
            r#"{"layers": [{"name": "a"}, {"name": "a"}]}"#,
            r#"{"layers": [{"name": "a", "weight_error": {"x": 1}}]}"#,
            r#"{"layers": [{"name": "a", "weight_error": {"4": -1}}]}"#,
            r#"{"model": "m"}"#,
        ] {
            let err = Sensitivities::parse(bad, "bad.json").unwrap_err();
            assert!(
                err.is_input_error() && err.to_string().contains("bad.json"),
                "{err}"
            );
        }
    }

    #[test]
    fn set_weight_error_fills_rows() {
        let mut s = Sensitivities::default();
        s.set_weight_error("fc", 4, 0.5);
        s.set_weight_error("fc", 2, 2.0);
        assert_eq!(s.row("fc").unwrap().weight_error_at(2), Some(2.0));
        assert_eq!(s.layers.len(), 1);
    }
}
