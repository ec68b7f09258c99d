//! Search problems from a table alone (`mpq search --table`, docs/file-formats.md "Problem
//! tables"): a row per layer and allowed `(w_bits, a_bits)` with its Ω, or Ω's parts
//! (HAWQ-V2's `Tr(H)/n·‖Q(W)−W‖²` plus the activation term, docs/algorithms.md §2.6), and any
//! costs (size, BitOps, latency, energy). Sensitivities from another tool or from a paper's
//! tables can then be searched without a model, by the same solvers, into the same plan
//! format. [`ProblemTable::csv_of`] writes a model's search space in this form.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::space::SearchSpace;
use crate::cost::{COST_COLUMNS, CsvRows, LookupTable, read_rows};
use crate::graph::{LayerInfo, LayerOp};
use crate::plan::BitWidth;
use crate::{Error, Result};

/// The columns a problem table may name after `layer,w_bits,a_bits`.
pub const PROBLEM_COLUMNS: [&str; 12] = [
    "omega",
    "trace",
    "weight_error",
    "act_trace",
    "act_elems",
    "act_error",
    "params",
    "macs",
    "size_bits",
    "bops",
    "latency_ms",
    "energy_mj",
];

/// A search problem read from a table.
#[derive(Debug, Clone, PartialEq)]
pub struct ProblemTable {
    /// The table's name (its path).
    pub name: String,
    /// One layer per distinct name, in order of first appearance: `params` and `macs` from
    /// their columns (0 when absent).
    pub layers: Vec<LayerInfo>,
    /// Ω per `(layer index, w_bits, a_bits)`.
    pub omega: BTreeMap<(usize, BitWidth, BitWidth), f64>,
    /// The priced costs (size, BitOps, latency, energy), when any cost column is given.
    pub costs: Option<LookupTable>,
    /// Whether a `params` column gives the layers' sizes (average-bit and compression budgets
    /// need it).
    pub has_params: bool,
}

impl ProblemTable {
    /// Parses CSV text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<ProblemTable> {
        let rows = read_rows(text, source, &PROBLEM_COLUMNS, &[])?;
        let has = |c: &str| rows.column(c).is_some();
        let parts = has("trace") && has("weight_error") && has("params");
        if !(has("omega") || parts) {
            return Err(Error::corrupt(
                source,
                "needs an omega column, or trace, weight_error and params (Ω's parts)",
            ));
        }
        let act = ["act_trace", "act_elems", "act_error"];
        if !has("omega") && act.iter().any(|c| has(c)) && !act.iter().all(|c| has(c)) {
            return Err(Error::corrupt(
                source,
                "the activation term needs act_trace, act_elems and act_error together",
            ));
        }
        let mut layers: Vec<LayerInfo> = Vec::new();
        let mut omega = BTreeMap::new();
        for r in &rows.rows {
            let get = |c: &str| rows.column(c).and_then(|k| r.values[k]);
            let bad = |why: String| Error::corrupt(source, format!("line {}: {why}", r.line));
            let params = get("params").unwrap_or(0.0);
            let macs = get("macs").unwrap_or(0.0);
            if params.fract() != 0.0 || macs.fract() != 0.0 {
                return Err(bad("params and macs must be whole numbers".into()));
            }
            let i = match layers.iter().position(|l| l.name == r.layer) {
                Some(i) => {
                    let l = &layers[i];
                    if l.params as f64 != params || l.macs as f64 != macs {
                        return Err(bad(format!(
                            "layer {} has other params or macs on an earlier row",
                            r.layer
                        )));
                    }
                    i
                }
                None => {
                    layers.push(layer_info(layers.len(), &r.layer, params, macs));
                    layers.len() - 1
                }
            };
            let value = match get("omega") {
                Some(o) => o,
                None => {
                    let n = params.max(1.0);
                    let w = get("trace").unwrap_or(0.0) / n * get("weight_error").unwrap_or(0.0);
                    let a = match (get("act_trace"), get("act_elems"), get("act_error")) {
                        (Some(t), Some(m), Some(e)) if m > 0.0 => t / m * e,
                        (Some(_), Some(_), Some(_)) => {
                            return Err(bad("act_elems must be positive".into()));
                        }
                        _ => 0.0,
                    };
                    w + a
                }
            };
            omega.insert((i, r.w_bits, r.a_bits), value);
        }
        let costs = costs_of(&rows, source);
        Ok(ProblemTable {
            name: source.to_string(),
            layers,
            omega,
            costs,
            has_params: rows.column("params").is_some(),
        })
    }

    /// Reads a CSV file.
    pub fn load(path: impl AsRef<Path>) -> Result<ProblemTable> {
        crate::io::parse_file(path.as_ref(), "a problem table", ProblemTable::parse)
    }

    /// Ω of layer `i` at `w_bits × a_bits`, if the table has that row.
    pub fn omega(&self, i: usize, w_bits: BitWidth, a_bits: BitWidth) -> Option<f64> {
        self.omega.get(&(i, w_bits, a_bits)).copied()
    }

    /// The rows of `space` as a problem table: per layer and allowed choice its Ω (from
    /// `omega(layer index, w_bits, a_bits)`), params, MACs, size in bits (scales included) and
    /// BitOps, and its latency and energy when the space's hardware model gives them.
    pub fn csv_of(
        space: &SearchSpace,
        omega: impl Fn(usize, BitWidth, BitWidth) -> Result<f64>,
    ) -> Result<String> {
        let hw = space.hardware();
        let latency = hw.is_some_and(|h| h.has_latency());
        let energy = hw.is_some_and(|h| h.has_energy());
        let mut s = String::from("layer,w_bits,a_bits,omega,params,macs,size_bits,bops");
        if latency {
            s.push_str(",latency_ms");
        }
        if energy {
            s.push_str(",energy_mj");
        }
        s.push('\n');
        for g in space.groups() {
            for &i in &g.layers {
                let l = &space.layers()[i];
                for ch in &g.choices {
                    let (w, a) = (ch.w_bits, ch.a_bits);
                    let (size_bits, bops) = space.layer_costs(i, w, a)?;
                    let _ = write!(
                        s,
                        "{},{w},{a},{},{},{},{},{}",
                        l.name,
                        omega(i, w, a)?,
                        l.params,
                        l.macs,
                        size_bits,
                        bops
                    );
                    if let Some(h) = hw.filter(|_| latency || energy) {
                        let r = h.layer(l, w, a)?;
                        if latency {
                            let _ = write!(s, ",{}", r.latency_ms);
                        }
                        if energy {
                            let _ = write!(s, ",{}", r.energy_mj.unwrap_or_default());
                        }
                    }
                    s.push('\n');
                }
            }
        }
        Ok(s)
    }
}

/// A layer row of a table: a fully connected layer of `params` weights and `macs` MACs with
/// one output channel (one quantizer scale, when no `size_bits` column prices the size).
fn layer_info(index: usize, name: &str, params: f64, macs: f64) -> LayerInfo {
    LayerInfo {
        index,
        name: name.to_string(),
        op: LayerOp::Linear,
        weight_shape: vec![1, params as usize],
        params: params as usize,
        bias_params: 0,
        input_shape: vec![],
        output_shape: vec![1],
        input_elems: 0,
        macs: macs as u64,
        out_channels: 1,
    }
}

/// The cost columns as a lookup table (the search's hardware model), if any is given.
fn costs_of(rows: &CsvRows, source: &str) -> Option<LookupTable> {
    (COST_COLUMNS.iter())
        .any(|c| rows.column(c).is_some())
        .then(|| LookupTable::from_rows(rows, source))
}
