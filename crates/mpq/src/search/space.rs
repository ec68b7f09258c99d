//! The search space every method shares: per layer the allowed `(w_bits, a_bits)` choices
//! (candidates, pinned layers, tied layers that share bits as in HAWQ-V3's residual
//! downsample ties, docs/algorithms.md §2.7), each choice's Ω and its cost under every budget as a linear
//! constraint (docs/algorithms.md §0.4, §5.6, §7.6), and the feasibility pre-flight: the smallest achievable
//! value of each budget, which budgets bind, and layers left with no allowed choice.

use std::fmt;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::omega::OmegaTable;
use super::{Budget, Candidates, MB};
use crate::cost::{CostTable, HardwareModel, overhead_bits};
use crate::graph::LayerInfo;
use crate::plan::{
    BitWidth, Constraints, FULL_PRECISION, LayerPrecision, QuantPlan, QuantizerKind, is_valid_bits,
};
use crate::{Error, Result};

/// A budget as a linear constraint `Σ_l cost_l(w, a) ≤ limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetKind {
    /// `Σ n·w ≤ B·Σ n`.
    AvgBits,
    /// `Σ (n·w + scale bits) ≤ 8·⌊X·2^20⌋`.
    SizeMb,
    /// `Σ n·w ≤ 32·Σ n / R`.
    Compression,
    /// `Σ MAC·w·a ≤ G·10^9`.
    Bops,
    /// `Σ latency ≤ L` ms on the hardware model.
    Latency,
    /// `Σ energy ≤ E` mJ on the hardware model.
    Energy,
    /// Size (scales included) of the searched layers at most all-low + r·(all-high − all-low).
    SizeRatio,
    /// BitOps of the searched layers at most all-low + r·(all-high − all-low).
    BopsRatio,
    /// Latency of the searched layers at most all-low + r·(all-high − all-low).
    LatencyRatio,
    /// Energy of the searched layers at most all-low + r·(all-high − all-low).
    EnergyRatio,
}

impl BudgetKind {
    /// The budget's name in plans and messages.
    pub fn name(self) -> &'static str {
        match self {
            BudgetKind::AvgBits => "avg_bits",
            BudgetKind::SizeMb => "max_size_mb",
            BudgetKind::Compression => "compression",
            BudgetKind::Bops => "max_bops_g",
            BudgetKind::Latency => "max_latency_ms",
            BudgetKind::Energy => "max_energy_mj",
            BudgetKind::SizeRatio => "size_ratio",
            BudgetKind::BopsRatio => "bops_ratio",
            BudgetKind::LatencyRatio => "latency_ratio",
            BudgetKind::EnergyRatio => "energy_ratio",
        }
    }

    /// Whether the limit is a ratio between the all-low and all-high plans of the searched
    /// layers (HAWQ-V3's budgets).
    pub fn is_ratio(self) -> bool {
        matches!(
            self,
            BudgetKind::SizeRatio
                | BudgetKind::BopsRatio
                | BudgetKind::LatencyRatio
                | BudgetKind::EnergyRatio
        )
    }

    /// Whether the cost comes from the hardware model (latency, energy).
    fn needs_hardware(self) -> bool {
        matches!(
            self,
            BudgetKind::Latency
                | BudgetKind::Energy
                | BudgetKind::LatencyRatio
                | BudgetKind::EnergyRatio
        )
    }

    /// Whether activation bit-widths change this budget's cost (BitOps, latency, energy);
    /// size, average bits and compression count weights only.
    pub fn depends_on_activations(self) -> bool {
        matches!(
            self,
            BudgetKind::Bops
                | BudgetKind::Latency
                | BudgetKind::Energy
                | BudgetKind::BopsRatio
                | BudgetKind::LatencyRatio
                | BudgetKind::EnergyRatio
        )
    }

    fn relation(self) -> &'static str {
        if self == BudgetKind::Compression {
            ">="
        } else {
            "<="
        }
    }
}

/// One budget of a search space: the user's limit and the constraint's limit in cost units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constraint {
    /// What is limited.
    pub kind: BudgetKind,
    /// The user's number (bits, MiB, ratio, GBOPs, ms, mJ).
    pub limit: f64,
    /// The limit of `Σ cost` in cost units.
    pub cost_limit: f64,
    /// For ratio budgets: the cost of the all-low plan (pinned layers included) and the
    /// all-high minus all-low cost of the searched layers, so `ratio = (cost − base)/span`.
    pub base: f64,
    /// See `base` (1 for the other budgets).
    pub span: f64,
}

/// A layer pinned to fixed bits (`first`, `last` or a layer name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Layer name, `first` or `last`.
    pub layer: String,
    /// Weight bits.
    pub w_bits: BitWidth,
    /// Activation bits.
    pub a_bits: BitWidth,
}

impl Pin {
    /// The index in `layers` of the pinned layer (`first`, `last` or a name).
    pub fn layer_index(&self, layers: &[LayerInfo]) -> Result<usize> {
        layer_index(&self.layer, layers)
    }

    /// Parses the pins of `--pin NAME=W[/A]` (each entry) and `--pin-first-last W[/A]`.
    pub fn parse_all(specs: &[String], first_last: Option<&str>) -> Result<Vec<Pin>> {
        let mut pins = specs
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| Pin::parse(s))
            .collect::<Result<Vec<_>>>()?;
        if let Some(bits) = first_last {
            for end in ["first", "last"] {
                pins.push(Pin::parse(&format!("{end}={bits}")).map_err(|_| {
                    Error::config(
                        "pin-first-last",
                        format!("expected W or W/A bits (2..8 or 32), got {bits:?}"),
                    )
                })?);
            }
        }
        Ok(pins)
    }

    /// Parses `W/A` bits (e.g. `3/4`); `flag` names the option in errors.
    pub fn parse_bits(spec: &str, flag: &str) -> Result<(BitWidth, BitWidth)> {
        let p = Pin::parse(&format!("x={spec}")).map_err(|_| {
            Error::config(
                flag,
                format!("expected W/A bits (2..8 or 32), e.g. 3/4, got {spec:?}"),
            )
        })?;
        Ok((p.w_bits, p.a_bits))
    }

    /// Parses `NAME=W` (weights and activations at `W`) or `NAME=W:A` (or `W/A`).
    pub fn parse(spec: &str) -> Result<Pin> {
        let bad = || Error::config("pin", format!("expected NAME=W or NAME=W:A, got {spec:?}"));
        let (name, bits) = spec.split_once('=').ok_or_else(bad)?;
        let num = |s: &str| {
            s.trim()
                .parse::<BitWidth>()
                .ok()
                .filter(|&b| is_valid_bits(b))
        };
        let (w, a) = match bits.split_once([':', '/']) {
            Some((w, a)) => (num(w).ok_or_else(bad)?, num(a).ok_or_else(bad)?),
            None => {
                let b = num(bits).ok_or_else(bad)?;
                (b, b)
            }
        };
        if name.trim().is_empty() {
            return Err(bad());
        }
        Ok(Pin {
            layer: name.trim().to_string(),
            w_bits: w,
            a_bits: a,
        })
    }
}

/// Pins, ties and the weight quantizer of the plans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchOptions {
    /// Layers at fixed bits.
    pub pins: Vec<Pin>,
    /// Groups of layers that must share `(w_bits, a_bits)`.
    pub ties: Vec<Vec<String>>,
    /// The weight quantizer of every quantized layer (its metadata counts in the size
    /// budget: scales, or a k-means codebook).
    pub quantizer: QuantizerKind,
    /// Paired formats (HAWQ-V3's `W4A4` or `W8A8`): when set, every searched layer chooses
    /// one of these `(w_bits, a_bits)` pairs instead of any pair of the candidate grid.
    pub formats: Option<Vec<(BitWidth, BitWidth)>>,
}

/// One allowed `(w_bits, a_bits)` of a group, with its Ω and costs summed over the group.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Weight bits.
    pub w_bits: BitWidth,
    /// Activation bits.
    pub a_bits: BitWidth,
    /// Σ Ω of the group's layers (0 before [`SearchSpace::set_omega`]).
    pub omega: f64,
    /// One cost per constraint of [`SearchSpace::constraints`].
    pub costs: Vec<f64>,
    /// `Σ n·w`.
    pub weight_bits: u64,
    /// `Σ n·w` plus quantizer scales.
    pub size_bits: u64,
}

/// Layers that share bits (one layer unless tied) and their allowed choices.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Indices into the layer table, ascending.
    pub layers: Vec<usize>,
    /// Allowed choices, weight bits major, both ascending.
    pub choices: Vec<Choice>,
    /// Whether a pin fixes the group.
    pub pinned: bool,
}

/// The shared search space of a model, candidates, budget, hardware, pins and ties.
#[derive(Debug, Clone)]
pub struct SearchSpace<'a> {
    layers: &'a [LayerInfo],
    cands: Candidates,
    budget: Budget,
    hw: Option<&'a HardwareModel>,
    constraints: Vec<Constraint>,
    groups: Vec<Group>,
    opts: SearchOptions,
    has_omega: bool,
}

fn fits(cost: f64, limit: f64) -> bool {
    cost <= limit + 1e-12 * limit.abs()
}

impl Budget {
    /// A budget of `bits` average weight bits, and nothing else.
    pub fn avg_bits(bits: f64) -> Budget {
        Budget {
            avg_bits: Some(bits),
            ..Budget::default()
        }
    }

    /// Whether a limit depends on activation bit-widths (BitOps, latency, energy).
    pub fn counts_activations(&self) -> bool {
        self.max_bops_g.is_some()
            || self.max_latency_ms.is_some()
            || self.max_energy_mj.is_some()
            || self.bops_ratio.is_some()
            || self.latency_ratio.is_some()
            || self.energy_ratio.is_some()
    }

    /// Whether any limit is given.
    pub fn is_empty(&self) -> bool {
        *self == Budget::default()
    }

    /// Checks that every limit given is a positive finite number.
    pub fn validate(&self) -> Result<()> {
        let limits = [
            ("avg-bits", self.avg_bits),
            ("max-size-mb", self.max_size_mb),
            ("compression", self.compression),
            ("max-bops", self.max_bops_g),
            ("max-latency-ms", self.max_latency_ms),
            ("max-energy-mj", self.max_energy_mj),
        ];
        for (name, v) in limits {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(Error::config(name, "must be a positive number"));
            }
        }
        let ratios = [
            ("size-ratio", self.size_ratio),
            ("bops-ratio", self.bops_ratio),
            ("latency-ratio", self.latency_ratio),
            ("energy-ratio", self.energy_ratio),
        ];
        for (name, v) in ratios {
            if let Some(r) = v
                && !(0.0..=1.0).contains(&r)
            {
                return Err(Error::config(
                    name,
                    format!("must be between 0 and 1 (0: all-low, 1: all-high), got {r}"),
                ));
            }
        }
        Ok(())
    }
}

/// The index of `name` in `layers`: `first`, `last`, or a layer name.
fn layer_index(name: &str, layers: &[LayerInfo]) -> Result<usize> {
    match name {
        "first" if !layers.is_empty() => Ok(0),
        "last" if !layers.is_empty() => Ok(layers.len() - 1),
        _ => layers
            .iter()
            .position(|l| l.name == name)
            .ok_or_else(|| Error::UnknownLayer {
                name: name.to_string(),
            }),
    }
}

fn union_find_root(parent: &mut [usize], i: usize) -> usize {
    let mut r = i;
    while parent[r] != r {
        r = parent[r];
    }
    parent[i] = r;
    r
}

impl<'a> SearchSpace<'a> {
    /// Builds the space. Unknown layer names in pins or ties, conflicting pins on one layer,
    /// a latency or energy budget without hardware, and invalid budgets are input errors; a
    /// lookup table missing an entry a choice needs is an input error naming it.
    pub fn new(
        layers: &'a [LayerInfo],
        cands: &Candidates,
        budget: &Budget,
        hw: Option<&'a HardwareModel>,
        opts: &SearchOptions,
    ) -> Result<SearchSpace<'a>> {
        let cands = cands.validated()?;
        budget.validate()?;
        if layers.is_empty() {
            return Err(Error::config("model", "has no quantizable layers"));
        }
        let mut constraints = constraints_of(layers, budget, hw)?;
        let formats = formats_of(opts.formats.as_deref(), &cands)?;
        let index = |name: &str| layer_index(name, layers);
        let mut pin: Vec<Option<(BitWidth, BitWidth)>> = vec![None; layers.len()];
        for p in &opts.pins {
            let i = index(&p.layer)?;
            if !is_valid_bits(p.w_bits) || !is_valid_bits(p.a_bits) {
                return Err(Error::config(
                    "pin",
                    format!("{}: bits must be 2..8 or 32", p.layer),
                ));
            }
            match pin[i] {
                Some(old) if old != (p.w_bits, p.a_bits) => {
                    return Err(Error::config(
                        "pin",
                        format!(
                            "layer {} is pinned twice with different bits",
                            layers[i].name
                        ),
                    ));
                }
                _ => pin[i] = Some((p.w_bits, p.a_bits)),
            }
        }
        let mut parent: Vec<usize> = (0..layers.len()).collect();
        for tie in &opts.ties {
            if tie.len() < 2 {
                return Err(Error::config("tie", "a tie needs at least two layers"));
            }
            let first = index(&tie[0])?;
            for name in &tie[1..] {
                let (a, b) = (
                    union_find_root(&mut parent, first),
                    union_find_root(&mut parent, index(name)?),
                );
                parent[a.max(b)] = a.min(b);
            }
        }
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); layers.len()];
        for i in 0..layers.len() {
            let r = union_find_root(&mut parent, i);
            members[r].push(i);
        }
        let mut groups = Vec::new();
        for m in members.into_iter().filter(|m| !m.is_empty()) {
            let pins: Vec<(BitWidth, BitWidth)> = m.iter().filter_map(|&i| pin[i]).collect();
            let pairs: Vec<(BitWidth, BitWidth)> = if let Some(&p) = pins.first() {
                if pins.iter().all(|&q| q == p) {
                    vec![p]
                } else {
                    Vec::new()
                }
            } else {
                pairs_of(formats.as_deref(), &cands)
            };
            let choices = pairs
                .into_iter()
                .map(|(w, a)| choice_of(layers, &m, (w, a, opts.quantizer), &constraints, hw))
                .collect::<Result<Vec<_>>>()?;
            groups.push(Group {
                layers: m,
                choices,
                pinned: !pins.is_empty(),
            });
        }
        set_ratio_limits(&mut constraints, &groups);
        Ok(SearchSpace {
            layers,
            cands,
            budget: budget.clone(),
            hw,
            constraints,
            groups,
            opts: SearchOptions {
                formats,
                ..opts.clone()
            },
            has_omega: false,
        })
    }

    /// Fills every choice's Ω. Layers with more than one allowed choice need a sensitivity
    /// row (pin the others).
    pub fn set_omega(&mut self, omega: &OmegaTable) -> Result<()> {
        for g in &mut self.groups {
            let searched = g.choices.len() > 1;
            for c in &mut g.choices {
                c.omega = 0.0;
                for &i in &g.layers {
                    if !omega.has_row(i) {
                        if searched {
                            return Err(Error::config(
                                "sensitivity",
                                format!(
                                    "layer {} is searched but the sensitivity JSON has no row \
                                     for it (add one, or pin the layer)",
                                    self.layers[i].name
                                ),
                            ));
                        }
                        continue;
                    }
                    c.omega += omega.omega(i, c.w_bits, c.a_bits)?;
                }
            }
        }
        self.check_omega_finite()?;
        self.has_omega = true;
        Ok(())
    }

    /// Fills every choice's Ω from `f(layer index, w_bits, a_bits)`, summed over tied layers;
    /// `None` means the layer has no Ω (allowed only for layers with one choice). For Ω that
    /// does not come from a sensitivity table (LIMPQ's learned indicators).
    pub fn set_omega_by(
        &mut self,
        f: impl Fn(usize, BitWidth, BitWidth) -> Result<Option<f64>>,
    ) -> Result<()> {
        for g in &mut self.groups {
            let searched = g.choices.len() > 1;
            for c in &mut g.choices {
                c.omega = 0.0;
                for &i in &g.layers {
                    match f(i, c.w_bits, c.a_bits)? {
                        Some(v) => c.omega += v,
                        None if searched => {
                            return Err(Error::config(
                                "sensitivity",
                                format!(
                                    "layer {} is searched but has no importance values (pin it)",
                                    self.layers[i].name
                                ),
                            ));
                        }
                        None => {}
                    }
                }
            }
        }
        self.check_omega_finite()?;
        self.has_omega = true;
        Ok(())
    }

    /// Refuses Ω values that are not finite, alone or summed over the layers (a sensitivity
    /// of 1e308 passes every reader but makes every plan's Ω infinite, so no plan compares).
    fn check_omega_finite(&self) -> Result<()> {
        let mut worst = 0.0f64;
        for g in &self.groups {
            let names: Vec<&str> = g
                .layers
                .iter()
                .map(|&i| self.layers[i].name.as_str())
                .collect();
            for c in &g.choices {
                if !c.omega.is_finite() {
                    return Err(Error::NonFinite(format!(
                        "Omega of layer {} at W{}A{} is {}: the sensitivity values overflow \
                         (check the sensitivity file)",
                        names.join("+"),
                        c.w_bits,
                        c.a_bits,
                        c.omega
                    )));
                }
            }
            worst += g.choices.iter().map(|c| c.omega.abs()).fold(0.0, f64::max);
        }
        if !worst.is_finite() {
            return Err(Error::NonFinite(
                "the sensitivity values overflow: Omega summed over the layers is infinite \
                 (check the sensitivity file)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether Ω has been set.
    pub fn has_omega(&self) -> bool {
        self.has_omega
    }

    /// What the Ω-based searches (HAWQ, HAWQ-V2, HAWQ-V3) need before they start: Ω is set
    /// (else a config error naming `method`) and the budgets are feasible.
    pub fn check_omega_search(&self, method: &str) -> Result<()> {
        if !self.has_omega {
            return Err(Error::config(
                "method",
                format!("{method} needs a sensitivity table (--sensitivity)"),
            ));
        }
        self.feasibility().check()
    }

    /// The model's layers.
    pub fn layers(&self) -> &'a [LayerInfo] {
        self.layers
    }

    /// The validated candidates.
    pub fn candidates(&self) -> &Candidates {
        &self.cands
    }

    /// The budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The hardware model, if any.
    pub fn hardware(&self) -> Option<&'a HardwareModel> {
        self.hw
    }

    /// The budgets as constraints, in the order of [`Choice::costs`].
    pub fn constraints(&self) -> &[Constraint] {
        &self.constraints
    }

    /// The groups, in order of their first layer.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Layer `i`'s size in bits (scales included) and BitOps at `w_bits × a_bits`: the
    /// hardware table's prices where it gives them, else the formulas of [`crate::cost`].
    pub fn layer_costs(&self, i: usize, w_bits: BitWidth, a_bits: BitWidth) -> Result<(f64, f64)> {
        let quantizer = self.opts.quantizer;
        let (_, size, bops) = layer_cost(&self.layers[i], (w_bits, a_bits, quantizer), self.hw)?;
        Ok((size, bops))
    }

    /// The `(w_bits, a_bits)` pairs a searched layer may take: the paired formats (sorted),
    /// or every pair of the candidate grid, weight bits major.
    pub fn pairs(&self) -> Vec<(BitWidth, BitWidth)> {
        pairs_of(self.opts.formats.as_deref(), &self.cands)
    }

    /// Summed costs of a choice index per group.
    pub fn totals(&self, choice: &[usize]) -> Vec<f64> {
        let mut t = vec![0.0; self.constraints.len()];
        for (g, &c) in self.groups.iter().zip(choice) {
            for (x, y) in t.iter_mut().zip(&g.choices[c].costs) {
                *x += y;
            }
        }
        t
    }

    /// The constraints that summed costs break.
    pub fn broken(&self, totals: &[f64]) -> impl Iterator<Item = &Constraint> {
        totals
            .iter()
            .zip(&self.constraints)
            .filter(|(t, c)| !fits(**t, c.cost_limit))
            .map(|(_, c)| c)
    }

    /// Whether summed costs meet every constraint.
    pub fn fits(&self, totals: &[f64]) -> bool {
        totals
            .iter()
            .zip(&self.constraints)
            .all(|(&t, c)| fits(t, c.cost_limit))
    }

    /// Σ Ω of a choice.
    pub fn omega_of(&self, choice: &[usize]) -> f64 {
        self.groups
            .iter()
            .zip(choice)
            .map(|(g, &c)| g.choices[c].omega)
            .sum()
    }

    /// The pre-flight report.
    pub fn feasibility(&self) -> Feasibility {
        let n: u64 = self.layers.iter().map(|l| l.params as u64).sum();
        let budgets = self
            .constraints
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let fold = |f: fn(f64, f64) -> f64, init: f64| -> f64 {
                    self.groups
                        .iter()
                        .filter(|g| !g.choices.is_empty())
                        .map(|g| g.choices.iter().map(|ch| ch.costs[k]).fold(init, f))
                        .sum()
                };
                let (lo, hi) = (
                    fold(f64::min, f64::INFINITY),
                    fold(f64::max, f64::NEG_INFINITY),
                );
                BudgetStatus {
                    budget: c.kind.name(),
                    relation: c.kind.relation(),
                    limit: c.limit,
                    best: value_of(c, lo, n),
                    worst: value_of(c, hi, n),
                    feasible: fits(lo, c.cost_limit),
                    binding: !fits(hi, c.cost_limit),
                }
            })
            .collect();
        let empty_layers = self
            .groups
            .iter()
            .filter(|g| g.choices.is_empty())
            .flat_map(|g| g.layers.iter().map(|&i| self.layers[i].name.clone()))
            .collect();
        Feasibility {
            budgets,
            empty_layers,
            w_min: self.cands.w_bits[0],
            a_min: self.cands.a_bits[0],
        }
    }

    /// For each group in turn, the largest `(w, a)` (weights first) whose Ω is no larger than
    /// the current choice's and which keeps every budget: spends slack that Ω does not price
    /// (e.g. activation bits without an activation trace) on more bits.
    pub fn raise_free_bits(&self, choice: &mut [usize]) {
        let mut totals = self.totals(choice);
        for (g, c) in self.groups.iter().zip(choice.iter_mut()) {
            let cur = &g.choices[*c];
            let mut best = *c;
            for (j, ch) in g.choices.iter().enumerate() {
                let better =
                    (ch.w_bits, ch.a_bits) > (g.choices[best].w_bits, g.choices[best].a_bits);
                if !better || ch.omega > cur.omega {
                    continue;
                }
                let t: Vec<f64> = totals
                    .iter()
                    .zip(&ch.costs)
                    .zip(&cur.costs)
                    .map(|((t, n), o)| t - o + n)
                    .collect();
                if self.fits(&t) {
                    best = j;
                }
            }
            if best != *c {
                for ((t, n), o) in totals
                    .iter_mut()
                    .zip(&g.choices[best].costs)
                    .zip(&cur.costs)
                {
                    *t += n - o;
                }
                *c = best;
            }
        }
    }

    /// The plan of a choice index per group, with sizes, BOPs, Ω (when set), latency and
    /// energy (with hardware) and the constraints filled in; `start` times `seconds`.
    pub fn plan(&self, choice: &[usize], method: &str, start: Instant) -> Result<QuantPlan> {
        let mut bits = vec![(FULL_PRECISION, FULL_PRECISION); self.layers.len()];
        for (g, &c) in self.groups.iter().zip(choice) {
            for &i in &g.layers {
                bits[i] = (g.choices[c].w_bits, g.choices[c].a_bits);
            }
        }
        let mut plan = QuantPlan::uniform(&[], 32, 32);
        plan.method = method.to_string();
        plan.layers = self
            .layers
            .iter()
            .zip(&bits)
            .map(|(l, &(w, a))| precision(&l.name, w, a, self.opts.quantizer))
            .collect();
        let cost = CostTable::new(self.layers, &plan)?;
        cost.fill_plan(&mut plan);
        if self.has_omega {
            plan.omega = Some(self.omega_of(choice));
        }
        let (priced_size, priced_bops) = self.hw.map_or((false, false), |h| h.prices());
        if priced_size || priced_bops {
            let (mut size, mut bops) = (0.0, 0.0);
            for (l, &(w, a)) in self.layers.iter().zip(&bits) {
                let (_, s, b) = layer_cost(l, (w, a, self.opts.quantizer), self.hw)?;
                size += s;
                bops += b;
            }
            if priced_size {
                plan.size_bytes = Some((size / 8.0).ceil() as u64);
            }
            if priced_bops {
                plan.bops = Some(bops);
            }
        }
        let hw = match self.hw {
            Some(hw) if hw.has_latency() => {
                let t = hw.table(self.layers, &plan)?;
                t.fill_plan(&mut plan);
                Some(t)
            }
            _ => None,
        };
        // The search's own totals, then (where the costs are the formulas') the plan's cost
        // table as an independent check.
        let n: u64 = self.layers.iter().map(|l| l.params as u64).sum();
        let totals = self.totals(choice);
        let mut violated: Vec<String> = totals
            .iter()
            .zip(&self.constraints)
            .filter(|(t, c)| !fits(**t, c.cost_limit))
            .map(|(t, c)| {
                format!(
                    "{} {} (plan: {})",
                    c.kind.name(),
                    c.limit,
                    value_of(c, *t, n)
                )
            })
            .collect();
        if !priced_size && !priced_bops {
            violated.extend(
                self.budget
                    .violations(&cost)
                    .into_iter()
                    .map(|(n, l, v)| format!("{n} {l} (plan: {v})")),
            );
        }
        if let (Some(t), Some(l)) = (&hw, self.budget.max_latency_ms)
            && !fits(t.latency_ms, l)
        {
            violated.push(format!("max_latency_ms {l} (plan: {})", t.latency_ms));
        }
        if let (Some(e), Some(l)) = (plan.energy_mj, self.budget.max_energy_mj)
            && !fits(e, l)
        {
            violated.push(format!("max_energy_mj {l} (plan: {e})"));
        }
        if !violated.is_empty() {
            return Err(Error::Infeasible {
                budget: format!("{method} plan breaks {}", violated.join(", ")),
                min_value: "this is an internal error: please report it".into(),
            });
        }
        plan.constraints = self.plan_constraints();
        plan.seconds = start.elapsed().as_secs_f64();
        Ok(plan)
    }

    /// The budgets, candidates, hardware, pins and ties, as plans record them.
    pub fn plan_constraints(&self) -> Constraints {
        let mut c = self.budget.to_constraints();
        c.w_bits = Some(self.cands.w_bits.clone());
        c.a_bits = Some(self.cands.a_bits.clone());
        c.hardware = self.hw.map(|hw| hw.name().to_string());
        if !self.opts.pins.is_empty() {
            let pins = self.opts.pins.iter();
            c.pins = Some(
                pins.map(|p| (p.layer.clone(), [p.w_bits, p.a_bits]))
                    .collect(),
            );
        }
        if !self.opts.ties.is_empty() {
            c.ties = Some(self.opts.ties.clone());
        }
        if self.opts.quantizer != QuantizerKind::default() {
            c.quantizer = Some(self.opts.quantizer);
        }
        if let Some(f) = &self.opts.formats {
            c.formats = Some(f.iter().map(|&(w, a)| [w, a]).collect());
        }
        c
    }

    /// The best uniform plan within every budget; pinned groups keep their pins. Every
    /// candidate `(w, a)` pair is tried; of the pairs that fit and that no other fitting pair
    /// beats in both widths, the one of least Ω wins (without Ω, or on equal Ω: the most
    /// balanced `|w − a|`, then the most weight bits). So a BitOps budget of W3A3 gives W3A3
    /// rather than W4A2 unless Ω prefers W4A2, and a weight-only budget keeps the most
    /// activation bits.
    pub fn uniform(&self) -> Result<QuantPlan> {
        let start = Instant::now();
        self.feasibility().check()?;
        let mut fitting = Vec::new();
        for (w, a) in self.pairs() {
            let choice: Vec<usize> = self
                .groups
                .iter()
                .map(|g| {
                    g.choices
                        .iter()
                        .position(|c| (c.w_bits, c.a_bits) == (w, a))
                        .unwrap_or(0)
                })
                .collect();
            if self.fits(&self.totals(&choice)) {
                fitting.push((w, a, choice));
            }
        }
        let dominated = |w: BitWidth, a: BitWidth| {
            fitting
                .iter()
                .any(|&(w2, a2, _)| w2 >= w && a2 >= a && (w2, a2) != (w, a))
        };
        let best = fitting
            .iter()
            .filter(|(w, a, _)| !dominated(*w, *a))
            .min_by(|x, y| {
                let key = |(w, a, c): &(BitWidth, BitWidth, Vec<usize>)| {
                    let omega = if self.has_omega {
                        self.omega_of(c)
                    } else {
                        0.0
                    };
                    (omega, w.abs_diff(*a), std::cmp::Reverse(*w))
                };
                let (kx, ky) = (key(x), key(y));
                kx.0.total_cmp(&ky.0)
                    .then(kx.1.cmp(&ky.1))
                    .then(kx.2.cmp(&ky.2))
            });
        match best {
            Some((_, _, choice)) => self.plan(choice, "uniform", start),
            None => Err(Error::Infeasible {
                budget: "the budget with one bit-width for every layer".into(),
                min_value: "only a mixed plan meets it: try --method ilp or random".into(),
            }),
        }
    }

    /// A seeded random plan near the budget. First, up to `max_tries` × [`BAND_DRAWS`]
    /// draws of uniformly random widths: the first that fits every budget and uses its
    /// tightest to within [`RANDOM_NEAR_BUDGET`] is returned, so every plan of that band is
    /// equally likely. When the band is too thin for that, each draw starts from uniformly
    /// random widths, lowers randomly chosen layers one candidate at a time until every
    /// budget holds, then raises randomly chosen layers one candidate at a time while every
    /// budget still holds, until no layer can rise: the first draw within the band is
    /// returned; after `max_tries` draws, the draw closest to its budget (as close as the
    /// candidates allow). Without any budget: uniform over every choice.
    pub fn random(&self, seed: u64, max_tries: usize) -> Result<QuantPlan> {
        let start = Instant::now();
        self.feasibility().check()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (nw, na) = (self.cands.w_bits.len(), self.cands.a_bits.len());
        let paired = self.opts.formats.as_ref().map(Vec::len);
        let searched: Vec<usize> = (0..self.groups.len())
            .filter(|&g| !self.groups[g].pinned)
            .collect();
        let draw = |rng: &mut ChaCha8Rng| -> Vec<usize> {
            self.groups
                .iter()
                .map(|g| {
                    if g.pinned {
                        0
                    } else if let Some(n) = paired {
                        rng.random_range(0..n)
                    } else {
                        rng.random_range(0..nw) * na + rng.random_range(0..na)
                    }
                })
                .collect()
        };
        if self.constraints.is_empty() {
            let choice = draw(&mut rng);
            return self.plan(&choice, "random", start);
        }
        // The choices one candidate up (`up`) or down from `c`, on either axis.
        // With paired formats: the next format up or down.
        let moves = |c: usize, up: bool| -> Vec<usize> {
            if let Some(n) = paired {
                return match up {
                    true if c + 1 < n => vec![c + 1],
                    false if c > 0 => vec![c - 1],
                    _ => Vec::new(),
                };
            }
            let (w, a) = (c / na, c % na);
            let mut m = Vec::with_capacity(2);
            if up && w + 1 < nw || !up && w > 0 {
                m.push(if up { c + na } else { c - na });
            }
            if up && a + 1 < na || !up && a > 0 {
                m.push(if up { c + 1 } else { c - 1 });
            }
            m
        };
        for _ in 0..max_tries.max(1).saturating_mul(BAND_DRAWS) {
            let choice = draw(&mut rng);
            let totals = self.totals(&choice);
            if self.fits(&totals) && self.slack(&totals) <= RANDOM_NEAR_BUDGET {
                return self.plan(&choice, "random", start);
            }
        }
        let mut closest: Option<(f64, Vec<usize>)> = None;
        for _ in 0..max_tries.max(1) {
            let mut choice = draw(&mut rng);
            while !self.fits(&self.totals(&choice)) {
                let lowerable: Vec<usize> = searched
                    .iter()
                    .copied()
                    .filter(|&g| !moves(choice[g], false).is_empty())
                    .collect();
                if lowerable.is_empty() {
                    break;
                }
                let g = lowerable[rng.random_range(0..lowerable.len())];
                let down = moves(choice[g], false);
                choice[g] = down[rng.random_range(0..down.len())];
            }
            if !self.fits(&self.totals(&choice)) {
                continue;
            }
            let mut open = searched.clone();
            while !open.is_empty() {
                let k = rng.random_range(0..open.len());
                let g = open[k];
                let up: Vec<usize> = moves(choice[g], true)
                    .into_iter()
                    .filter(|&n| {
                        let mut t = choice.clone();
                        t[g] = n;
                        self.fits(&self.totals(&t))
                    })
                    .collect();
                if up.is_empty() {
                    open.swap_remove(k);
                } else {
                    choice[g] = up[rng.random_range(0..up.len())];
                }
            }
            let slack = self.slack(&self.totals(&choice));
            if slack <= RANDOM_NEAR_BUDGET {
                return self.plan(&choice, "random", start);
            }
            if closest.as_ref().is_none_or(|(s, _)| slack < *s) {
                closest = Some((slack, choice));
            }
        }
        match closest {
            Some((_, choice)) => self.plan(&choice, "random", start),
            None => Err(Error::Infeasible {
                budget: format!("random sampling: no plan met the budget in {max_tries} draws"),
                min_value: "loosen the budget".into(),
            }),
        }
    }

    /// The smallest relative slack `(limit − cost)/limit` over the budgets (0: a budget is
    /// used exactly).
    pub fn slack(&self, totals: &[f64]) -> f64 {
        totals
            .iter()
            .zip(&self.constraints)
            .map(|(&t, c)| (c.cost_limit - t) / c.cost_limit.abs().max(f64::MIN_POSITIVE))
            .fold(f64::INFINITY, f64::min)
    }
}

/// How close to its tightest budget a random plan is drawn: within 2%.
pub(crate) const RANDOM_NEAR_BUDGET: f64 = 0.02;

/// Uniform draws per `max_tries` of [`SearchSpace::random`] before it lowers and raises
/// draws into the band.
pub(crate) const BAND_DRAWS: usize = 100;

fn constraints_of(
    layers: &[LayerInfo],
    b: &Budget,
    hw: Option<&HardwareModel>,
) -> Result<Vec<Constraint>> {
    let n: f64 = layers.iter().map(|l| l.params as f64).sum();
    let mut out = Vec::new();
    let mut push = |kind, limit: Option<f64>, cost_limit: &dyn Fn(f64) -> f64| {
        if let Some(l) = limit {
            out.push(Constraint {
                kind,
                limit: l,
                cost_limit: cost_limit(l),
                base: 0.0,
                span: 1.0,
            });
        }
    };
    push(BudgetKind::AvgBits, b.avg_bits, &|l| l * n);
    push(BudgetKind::SizeMb, b.max_size_mb, &|l| {
        8.0 * (l * MB).floor()
    });
    push(BudgetKind::Compression, b.compression, &|l| 32.0 * n / l);
    push(BudgetKind::Bops, b.max_bops_g, &|l| l * 1e9);
    push(BudgetKind::Latency, b.max_latency_ms, &|l| l);
    push(BudgetKind::Energy, b.max_energy_mj, &|l| l);
    // Ratio limits are set once the choices are known (`set_ratio_limits`).
    push(BudgetKind::SizeRatio, b.size_ratio, &|_| f64::INFINITY);
    push(BudgetKind::BopsRatio, b.bops_ratio, &|_| f64::INFINITY);
    push(BudgetKind::LatencyRatio, b.latency_ratio, &|_| {
        f64::INFINITY
    });
    push(BudgetKind::EnergyRatio, b.energy_ratio, &|_| f64::INFINITY);
    for c in &out {
        match (c.kind, hw) {
            (k, None) if k.needs_hardware() => {
                return Err(Error::config(
                    c.kind.name().replace('_', "-"),
                    "needs a hardware model (--hardware bitfusion|bismo|PATH.toml|PATH.csv)",
                ));
            }
            (BudgetKind::Energy | BudgetKind::EnergyRatio, Some(h)) if !h.has_energy() => {
                return Err(Error::config(
                    c.kind.name().replace('_', "-"),
                    format!(
                        "hardware {} gives no energy (add an energy_mj column)",
                        h.name()
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The paired formats, sorted and deduplicated, each checked against the candidate bits.
fn formats_of(
    formats: Option<&[(BitWidth, BitWidth)]>,
    cands: &Candidates,
) -> Result<Option<Vec<(BitWidth, BitWidth)>>> {
    let Some(f) = formats else {
        return Ok(None);
    };
    if f.is_empty() {
        return Err(Error::config("formats", "needs at least one W/A pair"));
    }
    let list = |v: &[BitWidth]| {
        v.iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    for &(w, a) in f {
        if !cands.w_bits.contains(&w) || !cands.a_bits.contains(&a) {
            return Err(Error::config(
                "formats",
                format!(
                    "{w}/{a} is outside the candidate bits (w-bits {}; a-bits {})",
                    list(&cands.w_bits),
                    list(&cands.a_bits)
                ),
            ));
        }
    }
    let mut f = f.to_vec();
    f.sort_unstable();
    f.dedup();
    Ok(Some(f))
}

/// Sets each ratio budget's limit: the all-low cost of the searched groups plus the pinned
/// groups' cost, plus `r` times the all-high minus all-low cost of the searched groups.
fn set_ratio_limits(constraints: &mut [Constraint], groups: &[Group]) {
    for (k, c) in constraints.iter_mut().enumerate() {
        if !c.kind.is_ratio() {
            continue;
        }
        let (mut base, mut span) = (0.0, 0.0);
        for g in groups.iter().filter(|g| !g.choices.is_empty()) {
            let costs = g.choices.iter().map(|ch| ch.costs[k]);
            let lo = costs.clone().fold(f64::INFINITY, f64::min);
            let hi = costs.fold(f64::NEG_INFINITY, f64::max);
            base += lo;
            if !g.pinned {
                span += hi - lo;
            }
        }
        c.base = base;
        c.span = span;
        c.cost_limit = base + c.limit * span;
    }
}

/// A layer's precision with `quantizer` on quantized weights.
fn precision(name: &str, w: BitWidth, a: BitWidth, quantizer: QuantizerKind) -> LayerPrecision {
    let mut p = LayerPrecision::new(name, w, a);
    if w != FULL_PRECISION {
        p.quantizer = quantizer;
    }
    p
}

/// Every `(w, a)` of `formats`, or of the candidate grid (weight bits major).
fn pairs_of(
    formats: Option<&[(BitWidth, BitWidth)]>,
    cands: &Candidates,
) -> Vec<(BitWidth, BitWidth)> {
    match formats {
        Some(f) => f.to_vec(),
        None => (cands.w_bits.iter())
            .flat_map(|&w| cands.a_bits.iter().map(move |&a| (w, a)))
            .collect(),
    }
}

/// A layer's weight bits `n·w`, its size in bits (scales included) and its BitOps at
/// `w × a`: a hardware table's prices where it gives them, else the formulas of
/// [`crate::cost`].
fn layer_cost(
    l: &LayerInfo,
    (w, a, quantizer): (BitWidth, BitWidth, QuantizerKind),
    hw: Option<&HardwareModel>,
) -> Result<(u64, f64, f64)> {
    let wb = l.params as u64 * u64::from(w);
    let (size, bops) = match hw {
        Some(h) => h.priced(&l.name, w, a)?,
        None => (None, None),
    };
    let ob = overhead_bits(l, Some(&precision(&l.name, w, a, quantizer)));
    Ok((
        wb,
        size.unwrap_or((wb + ob) as f64),
        bops.unwrap_or(l.macs as f64 * f64::from(w) * f64::from(a)),
    ))
}

fn choice_of(
    layers: &[LayerInfo],
    members: &[usize],
    (w, a, quantizer): (BitWidth, BitWidth, QuantizerKind),
    constraints: &[Constraint],
    hw: Option<&HardwareModel>,
) -> Result<Choice> {
    let mut costs = vec![0.0; constraints.len()];
    let (mut weight_bits, mut size_bits) = (0u64, 0u64);
    for &i in members {
        let l = &layers[i];
        let (wb, sb, bops) = layer_cost(l, (w, a, quantizer), hw)?;
        weight_bits += wb;
        size_bits += sb.round() as u64;
        let sim = match hw {
            Some(h) if constraints.iter().any(|c| c.kind.needs_hardware()) => {
                Some(h.layer(l, w, a)?)
            }
            _ => None,
        };
        for (x, c) in costs.iter_mut().zip(constraints) {
            *x += match c.kind {
                BudgetKind::AvgBits | BudgetKind::Compression => wb as f64,
                BudgetKind::SizeMb | BudgetKind::SizeRatio => sb,
                BudgetKind::Bops | BudgetKind::BopsRatio => bops,
                BudgetKind::Latency | BudgetKind::LatencyRatio => {
                    sim.as_ref().map_or(0.0, |s| s.latency_ms)
                }
                BudgetKind::Energy | BudgetKind::EnergyRatio => {
                    sim.as_ref().and_then(|s| s.energy_mj).unwrap_or(0.0)
                }
            };
        }
    }
    Ok(Choice {
        w_bits: w,
        a_bits: a,
        omega: 0.0,
        costs,
        weight_bits,
        size_bits,
    })
}

/// The plan-level value of a summed cost (average bits, MiB, ratio, GBOPs, ms, mJ).
fn value_of(c: &Constraint, cost: f64, params: u64) -> f64 {
    let n = params as f64;
    match c.kind {
        BudgetKind::AvgBits => {
            if n > 0.0 {
                cost / n
            } else {
                0.0
            }
        }
        BudgetKind::SizeMb => (cost / 8.0).ceil() / MB,
        BudgetKind::Compression => {
            if cost > 0.0 {
                32.0 * n / cost
            } else {
                f64::INFINITY
            }
        }
        BudgetKind::Bops => cost / 1e9,
        BudgetKind::Latency | BudgetKind::Energy => cost,
        BudgetKind::SizeRatio
        | BudgetKind::BopsRatio
        | BudgetKind::LatencyRatio
        | BudgetKind::EnergyRatio => {
            if c.span > 0.0 {
                (cost - c.base) / c.span
            } else {
                0.0
            }
        }
    }
}

/// One budget in the pre-flight report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BudgetStatus {
    /// Budget name.
    pub budget: &'static str,
    /// `<=` or `>=` (compression).
    pub relation: &'static str,
    /// The user's limit.
    pub limit: f64,
    /// The best achievable value (smallest; largest for compression).
    pub best: f64,
    /// The value of the largest allowed plan.
    pub worst: f64,
    /// Whether the best plan meets it.
    pub feasible: bool,
    /// Whether it constrains the search (the largest plan breaks it).
    pub binding: bool,
}

/// The feasibility pre-flight of a search space.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Feasibility {
    /// One entry per budget.
    pub budgets: Vec<BudgetStatus>,
    /// Layers whose pins and ties leave no allowed choice.
    pub empty_layers: Vec<String>,
    /// Smallest candidate weight bits.
    pub w_min: BitWidth,
    /// Smallest candidate activation bits.
    pub a_min: BitWidth,
}

impl Feasibility {
    /// Whether every budget is achievable and every layer has a choice.
    pub fn is_feasible(&self) -> bool {
        self.empty_layers.is_empty() && self.budgets.iter().all(|b| b.feasible)
    }

    /// [`Error::Infeasible`] for the first problem, naming the budget and its best value.
    pub fn check(&self) -> Result<()> {
        if !self.empty_layers.is_empty() {
            return Err(Error::Infeasible {
                budget: format!(
                    "pins and ties: layers {} have no allowed choice",
                    self.empty_layers.join(", ")
                ),
                min_value: "none: tied layers are pinned to different bits".into(),
            });
        }
        match self.budgets.iter().find(|b| !b.feasible) {
            None => Ok(()),
            Some(b) => Err(Error::Infeasible {
                budget: format!(
                    "{} {} (with w-bits >= {}, a-bits >= {})",
                    b.budget, b.limit, self.w_min, self.a_min
                ),
                min_value: format!("{:.6}", b.best),
            }),
        }
    }
}

impl Feasibility {
    /// The report of an infeasible request: each budget's best value and whether it can be
    /// met, the layers pins and ties leave without a choice, and the smallest candidates.
    pub fn infeasible_report(&self, pinned: bool) -> String {
        let mut s = String::from("the request is infeasible (feasibility pre-flight):");
        for b in &self.budgets {
            let word = if b.relation == ">=" {
                "largest"
            } else {
                "smallest"
            };
            let status = if b.feasible { "ok" } else { "CANNOT BE MET" };
            s.push_str(&format!(
                "\n  {} {} {}: {word} feasible value {:.6} ({status})",
                b.budget, b.relation, b.limit, b.best
            ));
        }
        if !self.empty_layers.is_empty() {
            s.push_str(&format!(
                "\n  layers with no allowed candidate (pins and ties conflict): {}",
                self.empty_layers.join(", ")
            ));
        }
        let fixed = if pinned {
            ", with the pins and ties given"
        } else {
            ""
        };
        s.push_str(&format!(
            "\n  (smallest candidates: w-bits {}, a-bits {}{fixed})",
            self.w_min, self.a_min
        ));
        s
    }

    /// [`Feasibility::check`] with [`Feasibility::infeasible_report`] as the error's context.
    pub fn check_with_report(&self, pinned: bool) -> Result<()> {
        self.check().map_err(|e| Error::Context {
            context: self.infeasible_report(pinned),
            source: Box::new(e),
        })
    }
}

impl fmt::Display for Feasibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "feasibility pre-flight:")?;
        for b in &self.budgets {
            let status = if !b.feasible {
                "INFEASIBLE"
            } else if b.binding {
                "binding"
            } else {
                "not binding"
            };
            let word = if b.relation == ">=" {
                "largest"
            } else {
                "smallest"
            };
            write!(
                f,
                "\n  {} {} {}: {word} achievable {:.6}, largest plan {:.6} ({status})",
                b.budget, b.relation, b.limit, b.best, b.worst
            )?;
        }
        if !self.empty_layers.is_empty() {
            write!(
                f,
                "\n  layers with no allowed choice: {}",
                self.empty_layers.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "space_tests.rs"]
mod tests;
