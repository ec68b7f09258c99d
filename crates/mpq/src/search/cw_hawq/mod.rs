//! CW-HAWQ: Channel-wise Hessian Aware trace-Weighted Quantization (Qian, Li, Crews,
//! "Channel-wise Hessian Aware trace-Weighted Quantization of Neural Networks", 2020, arXiv
//! 2008.08284; docs/algorithms.md §3, reconstructed). Per layer, output channels are ordered by their
//! Hessian trace per element; a layer's decision is only the *ratio* of channels at each
//! candidate weight bit-width, and the highest bits go to the highest-trace channels.
//!
//! - this file: the plain channel table ([`ChannelTable`]), the trace order, the assignment
//!   of counts to channels, the channel Ω `Σ_c Tr(H_c)/|J_c| · ‖Q_b(W_c) − W_c‖²`, the costs
//!   of a count vector under the search space's budgets, the plan of a count vector per layer,
//!   and the deterministic baseline [`cw_ilp`] (a grid of ratio vectors per layer as the
//!   choices of the exact multiple-choice knapsack);
//! - [`env`](mod@env): the DDPG ratio environment and the search loop [`cw_hawq`].
//!
//! Decisions: activation bits are not searched (the candidate set must hold one value);
//! tied layers and latency/energy budgets are not supported (per-channel widths have no
//! hardware table); pinned layers keep their pinned uniform bits.

pub mod env;
#[cfg(test)]
mod tests;

pub use env::{CwConfig, CwEpisode, CwHistory, CwResult, CwSettings, RatioEnv, cw_hawq};

use std::collections::BTreeMap;
use std::time::Instant;

use super::mckp::{self, Item, Mckp};
use super::space::{BudgetKind, SearchSpace};
use crate::cost::{CostTable, overhead_bits};
use crate::graph::LayerInfo;
use crate::plan::{BitWidth, FULL_PRECISION, LayerPrecision, QuantPlan};
use crate::sensitivity::SensitivityTable;
use crate::{Error, Result};

/// One layer's channel data: output-channel traces and per-channel quantization errors.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChannelRow {
    /// `Tr(H_{l,c})` per output channel.
    pub traces: Vec<f64>,
    /// `‖Q_b(W_c) − W_c‖²` per channel, for each candidate weight bit-width.
    pub errors: BTreeMap<BitWidth, Vec<f64>>,
}

/// Channel traces and errors of every searched layer, aligned with a layer table (`None`:
/// the layer has no channel data and must be pinned).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelTable {
    rows: Vec<Option<ChannelRow>>,
}

impl ChannelTable {
    /// Takes the `channel_traces` of `sens` (written by `mpq analyze --metric channel-trace`)
    /// and the per-channel errors in `errors` (layer name → bits → one error per channel).
    /// Lengths must match each layer's output channels.
    pub fn new(
        layers: &[LayerInfo],
        sens: &SensitivityTable,
        errors: &BTreeMap<String, BTreeMap<BitWidth, Vec<f64>>>,
    ) -> Result<ChannelTable> {
        let rows = layers
            .iter()
            .map(|l| {
                let Some(traces) = sens.layer(&l.name).and_then(|r| r.channel_traces.clone())
                else {
                    return Ok(None);
                };
                let err = errors.get(&l.name).cloned().unwrap_or_default();
                let row = ChannelRow {
                    traces,
                    errors: err,
                };
                check_row(l, &row)?;
                Ok(Some(row))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ChannelTable { rows })
    }

    /// A table from ready rows (checked against `layers`).
    pub fn from_rows(layers: &[LayerInfo], rows: Vec<Option<ChannelRow>>) -> Result<Self> {
        if rows.len() != layers.len() {
            return Err(Error::ShapeMismatch {
                name: "channel table".into(),
                expected: format!("{} rows", layers.len()),
                got: format!("{}", rows.len()),
            });
        }
        for (l, r) in layers.iter().zip(&rows) {
            if let Some(r) = r {
                check_row(l, r)?;
            }
        }
        Ok(ChannelTable { rows })
    }

    /// The row of layer `i`.
    pub fn row(&self, i: usize) -> Option<&ChannelRow> {
        self.rows.get(i).and_then(Option::as_ref)
    }
}

fn check_row(l: &LayerInfo, r: &ChannelRow) -> Result<()> {
    let bad = |what: &str, got: usize| Error::ShapeMismatch {
        name: format!("{what} of layer {}", l.name),
        expected: format!("{} entries (output channels)", l.out_channels),
        got: format!("{got}"),
    };
    if r.traces.len() != l.out_channels {
        return Err(bad("channel_traces", r.traces.len()));
    }
    for e in r.errors.values() {
        if e.len() != l.out_channels {
            return Err(bad("channel errors", e.len()));
        }
    }
    if r.traces
        .iter()
        .chain(r.errors.values().flatten())
        .any(|v| !v.is_finite())
    {
        return Err(Error::NonFinite(format!(
            "channel data of layer {}",
            l.name
        )));
    }
    Ok(())
}

/// Channel indices by trace descending (ties: lower index first). Traces per element order
/// the same way, since every channel of a layer has the same number of elements.
pub fn channel_order(traces: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..traces.len()).collect();
    idx.sort_by(|&a, &b| traces[b].total_cmp(&traces[a]).then(a.cmp(&b)));
    idx
}

/// Per-channel bits from `counts[k]` channels at `bits_desc[k]` (bits in descending order):
/// the first `counts[0]` channels of `order` get the most bits, and so on.
pub fn assign_bits(order: &[usize], counts: &[usize], bits_desc: &[BitWidth]) -> Vec<BitWidth> {
    let mut out = vec![bits_desc.last().copied().unwrap_or(FULL_PRECISION); order.len()];
    let mut pos = 0;
    for (&n, &b) in counts.iter().zip(bits_desc) {
        for &c in order.iter().skip(pos).take(n) {
            out[c] = b;
        }
        pos += n;
    }
    out
}

/// Channel Ω of a layer: `Σ_c Tr(H_c)/|J_c| · ‖Q_{b_c}(W_c) − W_c‖²` (traces clamped at 0).
pub fn channel_omega(layer: &LayerInfo, row: &ChannelRow, bits: &[BitWidth]) -> Result<f64> {
    let per = (layer.params / layer.out_channels.max(1)).max(1) as f64;
    let mut s = 0.0;
    for (c, &b) in bits.iter().enumerate() {
        let e = row.errors.get(&b).map(|v| v[c]).ok_or_else(|| {
            Error::config(
                "sensitivity",
                format!("layer {}: no channel error at {b} bits", layer.name),
            )
        })?;
        s += row.traces[c].max(0.0) / per * e;
    }
    Ok(s)
}

/// The checked setting of a channel-wise search: the space's weight candidates (descending),
/// its single activation width, and which layers are searched.
#[derive(Debug, Clone)]
pub(crate) struct CwSetup<'s, 'a> {
    pub(crate) space: &'s SearchSpace<'a>,
    pub(crate) bits_desc: Vec<BitWidth>,
    pub(crate) a_bits: BitWidth,
    /// Per layer: `Some(order)` when searched, `None` when pinned (its group's only choice).
    pub(crate) orders: Vec<Option<Vec<usize>>>,
    pub(crate) pinned: Vec<Option<(BitWidth, BitWidth)>>,
}

impl<'s, 'a> CwSetup<'s, 'a> {
    pub(crate) fn new(space: &'s SearchSpace<'a>, table: &ChannelTable) -> Result<Self> {
        let c = space.candidates();
        if c.a_bits.len() != 1 {
            return Err(Error::config(
                "a-bits",
                "cw-hawq searches weight ratios only: give one activation bit-width",
            ));
        }
        if c.w_bits.contains(&FULL_PRECISION) {
            return Err(Error::config(
                "w-bits",
                "cw-hawq needs quantized widths (2..8)",
            ));
        }
        if space
            .constraints()
            .iter()
            .any(|k| matches!(k.kind, BudgetKind::Latency | BudgetKind::Energy))
        {
            return Err(Error::config(
                "method",
                "cw-hawq supports size, average-bits, compression and BOPs budgets only",
            ));
        }
        let layers = space.layers();
        let mut orders = vec![None; layers.len()];
        let mut pinned = vec![None; layers.len()];
        for g in space.groups() {
            if g.layers.len() > 1 {
                return Err(Error::config("tie", "cw-hawq does not support tied layers"));
            }
            let i = g.layers[0];
            if g.choices.len() > 1 {
                let row = table.row(i).ok_or_else(|| {
                    Error::config(
                        "sensitivity",
                        format!(
                            "layer {} is searched but has no channel_traces (run `mpq analyze \
                             --metric channel-trace`, or pin the layer)",
                            layers[i].name
                        ),
                    )
                })?;
                orders[i] = Some(channel_order(&row.traces));
            } else {
                let ch =
                    g.choices.first().ok_or_else(|| Error::Infeasible {
                        budget: format!("layer {} has no allowed choice", layers[i].name),
                        min_value:
                            "loosen the budget (mpq search reports each budget's smallest value)"
                                .into(),
                    })?;
                pinned[i] = Some((ch.w_bits, ch.a_bits));
            }
        }
        let mut bits_desc = c.w_bits.clone();
        bits_desc.sort_unstable_by(|a, b| b.cmp(a));
        Ok(CwSetup {
            space,
            bits_desc,
            a_bits: c.a_bits[0],
            orders,
            pinned,
        })
    }

    /// Indices of the searched layers.
    pub(crate) fn searched(&self) -> Vec<usize> {
        (0..self.orders.len())
            .filter(|&i| self.orders[i].is_some())
            .collect()
    }

    /// Channel bits of searched layer `i` at `counts` (descending bits).
    pub(crate) fn bits_of(&self, i: usize, counts: &[usize]) -> Vec<BitWidth> {
        let order = self.orders[i].as_deref().unwrap_or(&[]);
        assign_bits(order, counts, &self.bits_desc)
    }

    /// One cost per constraint of the space for layer `i` at per-channel `bits`.
    pub(crate) fn layer_costs(&self, i: usize, bits: &[BitWidth]) -> Vec<f64> {
        let l = &self.space.layers()[i];
        let per = (l.params / l.out_channels.max(1)) as f64;
        let sum: f64 = bits.iter().map(|&b| f64::from(b)).sum();
        let wb = per * sum;
        let p = LayerPrecision::new(&l.name, bits[0], self.a_bits);
        let ob = overhead_bits(l, Some(&p)) as f64;
        self.space
            .constraints()
            .iter()
            .map(|k| match k.kind {
                BudgetKind::AvgBits | BudgetKind::Compression => wb,
                BudgetKind::SizeMb | BudgetKind::SizeRatio => wb + ob,
                BudgetKind::Bops | BudgetKind::BopsRatio => {
                    l.macs as f64 * sum / l.out_channels.max(1) as f64 * f64::from(self.a_bits)
                }
                BudgetKind::Latency
                | BudgetKind::Energy
                | BudgetKind::LatencyRatio
                | BudgetKind::EnergyRatio => 0.0,
            })
            .collect()
    }

    /// Costs of the pinned layers (fixed), per constraint.
    pub(crate) fn pinned_costs(&self) -> Vec<f64> {
        let mut t = vec![0.0; self.space.constraints().len()];
        for g in self.space.groups() {
            if g.choices.len() == 1 {
                for (x, y) in t.iter_mut().zip(&g.choices[0].costs) {
                    *x += y;
                }
            }
        }
        t
    }

    /// The plan of per-layer counts (`counts[i]` for searched layers, ignored otherwise),
    /// with costs filled in; an error when it breaks the budget.
    pub(crate) fn plan(
        &self,
        counts: &[Vec<usize>],
        method: &str,
        start: Instant,
    ) -> Result<QuantPlan> {
        let layers = self.space.layers();
        let mut plan = QuantPlan::uniform(&[], 32, 32);
        plan.method = method.to_string();
        plan.layers = layers
            .iter()
            .enumerate()
            .map(|(i, l)| match (&self.orders[i], self.pinned[i]) {
                (Some(_), _) => {
                    let bits = self.bits_of(i, &counts[i]);
                    let mut p = LayerPrecision::new(
                        &l.name,
                        bits.iter().copied().max().unwrap_or(self.bits_desc[0]),
                        self.a_bits,
                    );
                    p.channel_w_bits = Some(bits);
                    p
                }
                (None, Some((w, a))) => LayerPrecision::new(&l.name, w, a),
                (None, None) => LayerPrecision::new(&l.name, FULL_PRECISION, FULL_PRECISION),
            })
            .collect();
        plan.validate(layers)?;
        let cost = CostTable::new(layers, &plan)?;
        cost.fill_plan(&mut plan);
        let v = self.space.budget().violations(&cost);
        if !v.is_empty() {
            let s: Vec<String> = v
                .iter()
                .map(|(n, l, x)| format!("{n} {l} (plan: {x})"))
                .collect();
            return Err(Error::Infeasible {
                budget: format!("{method} plan breaks {}", s.join(", ")),
                min_value: "this is an internal error: please report it".into(),
            });
        }
        plan.constraints = self.space.plan_constraints();
        plan.seconds = start.elapsed().as_secs_f64();
        Ok(plan)
    }
}

/// Checks that `space` and `table` make a channel-wise search (one activation width,
/// quantized weight widths, no ties, size/average-bits/compression/BOPs budgets only, channel
/// traces for every searched layer) before any costly work.
pub fn validate(space: &SearchSpace<'_>, table: &ChannelTable) -> Result<()> {
    CwSetup::new(space, table).map(|_| ())
}

/// Count vectors (descending bits) of a layer with `channels` channels over `k` widths: every
/// composition of `g = min(channels, grid)` parts, scaled to `channels` (remainders to the
/// highest bits), deduplicated.
pub fn ratio_grid(channels: usize, k: usize, grid: usize) -> Vec<Vec<usize>> {
    let g = channels.min(grid).max(1);
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur = vec![0usize; k];
    fn rec(pos: usize, left: usize, cur: &mut Vec<usize>, all: &mut Vec<Vec<usize>>) {
        if pos + 1 == cur.len() {
            cur[pos] = left;
            all.push(cur.clone());
            return;
        }
        for n in 0..=left {
            cur[pos] = n;
            rec(pos + 1, left - n, cur, all);
        }
    }
    let mut parts = Vec::new();
    if k == 0 {
        return out;
    }
    rec(0, g, &mut cur, &mut parts);
    for p in parts {
        let mut counts: Vec<usize> = p.iter().map(|&x| x * channels / g).collect();
        let rest = channels - counts.iter().sum::<usize>();
        counts[0] += rest;
        if !out.contains(&counts) {
            out.push(counts);
        }
    }
    out
}

/// The deterministic baseline: per searched layer the ratio vectors of [`ratio_grid`]
/// (`grid` parts) are the choices, valued by their channel Ω; the exact multiple-choice
/// knapsack ([`mckp::solve`]) picks the least total Ω within every budget.
pub fn cw_ilp(space: &SearchSpace<'_>, table: &ChannelTable, grid: usize) -> Result<QuantPlan> {
    let start = Instant::now();
    space.feasibility().check()?;
    let setup = CwSetup::new(space, table)?;
    let searched = setup.searched();
    let fixed = setup.pinned_costs();
    let mut groups = Vec::new();
    let mut grids = Vec::new();
    for &i in &searched {
        let l = &space.layers()[i];
        let row = table
            .row(i)
            .expect("searched layers should have a channel row");
        let counts = ratio_grid(l.out_channels, setup.bits_desc.len(), grid);
        let items = counts
            .iter()
            .map(|c| {
                let bits = setup.bits_of(i, c);
                Ok(Item {
                    value: channel_omega(l, row, &bits)?,
                    costs: setup.layer_costs(i, &bits),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        groups.push(items);
        grids.push(counts);
    }
    let limits = space
        .constraints()
        .iter()
        .zip(&fixed)
        .map(|(k, f)| k.cost_limit - f)
        .collect();
    let sol = mckp::solve(&Mckp { groups, limits }).ok_or_else(|| Error::Infeasible {
        budget: "cw-ilp: no grid of channel ratios meets the budgets".into(),
        min_value: "loosen the budget or use a finer --ratio-grid".into(),
    })?;
    let mut counts = vec![Vec::new(); space.layers().len()];
    for ((&i, g), &c) in searched.iter().zip(&grids).zip(&sol.choice) {
        counts[i] = g[c].clone();
    }
    let mut plan = setup.plan(&counts, "cw-ilp", start)?;
    plan.omega = Some(sol.value);
    Ok(plan)
}
