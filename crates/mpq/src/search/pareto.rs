//! HAWQ-V2's Pareto-frontier bit selection (Dong et al., NeurIPS 2020; docs/algorithms.md §2.5): the exact
//! `(size, Ω)` frontier of the multiple-choice knapsack, by dynamic programming over layers
//! with the state kept as the frontier itself (no enumeration, no size buckets): after each
//! layer, every partial point shifted by every choice is merged in size order and only points
//! whose Ω is strictly below every smaller-or-equal-size point survive. A partial point
//! dominated in both size and Ω can never complete into a frontier point, so the result is
//! exactly `{(s, F[s]) : F[s] < min_{s'<s} F[s']}` of the DP of docs/algorithms.md §2.5.
//!
//! The search picks the frontier point with the largest size under the size budget (the
//! smallest Ω under it) that also meets every other budget. Activation bits do not change
//! size, so each layer's activation bits are the ones with the least Ω for its weight bits.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::MB;
use super::space::{BudgetKind, SearchSpace};
use crate::io::Versioned;
use crate::plan::{BitWidth, Constraints, QuantPlan};
use crate::{Error, Result};

/// One frontier point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FrontierPoint {
    /// Summed size cost (bits).
    pub size_bits: u64,
    /// Summed Ω.
    pub omega: f64,
}

/// The exact frontier: sizes strictly increasing, Ω strictly decreasing, with back-pointers
/// to recover each point's choices.
#[derive(Debug, Clone, PartialEq)]
pub struct Frontier {
    /// The points.
    pub points: Vec<FrontierPoint>,
    /// Per group: `(parent point of the previous group, item)` of each surviving point.
    back: Vec<Vec<(u32, u32)>>,
}

impl Frontier {
    /// The item index per group of point `idx`.
    pub fn choices(&self, idx: usize) -> Vec<usize> {
        let mut out = vec![0; self.back.len()];
        let mut p = idx;
        for g in (0..self.back.len()).rev() {
            let (parent, item) = self.back[g][p];
            out[g] = item as usize;
            p = parent as usize;
        }
        out
    }

    /// The point with the largest size `≤ limit` (the least Ω within it).
    pub fn best_under(&self, limit: u64) -> Option<usize> {
        self.points
            .partition_point(|p| p.size_bits <= limit)
            .checked_sub(1)
    }
}

/// Merges two lists sorted by `key` = (cost, value), keeping the points whose value is below
/// every earlier point's: the Pareto stair of the union (also used by the ILP's bounds).
pub(super) fn merge_prune<T: Copy>(
    a: &[T],
    b: &[T],
    out: &mut Vec<T>,
    key: impl Fn(&T) -> (f64, f64),
) {
    out.clear();
    let (mut i, mut j) = (0, 0);
    let mut last = f64::INFINITY;
    while i < a.len() || j < b.len() {
        let take_a = j >= b.len() || (i < a.len() && key(&a[i]) <= key(&b[j]));
        let x = if take_a {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        let v = key(&x).1;
        if v < last {
            last = v;
            out.push(x);
        }
    }
}

/// The exact frontier of choosing one `(size, Ω)` item per group.
pub fn pareto_frontier(groups: &[Vec<(u64, f64)>]) -> Frontier {
    let mut cur: Vec<(u64, f64)> = vec![(0, 0.0)];
    let mut back = Vec::with_capacity(groups.len());
    let (mut acc, mut shifted, mut merged) = (Vec::new(), Vec::new(), Vec::new());
    for items in groups {
        acc.clear();
        for (j, &(s, o)) in items.iter().enumerate() {
            shifted.clear();
            shifted.extend(
                cur.iter()
                    .enumerate()
                    .map(|(p, &(cs, co))| (cs + s, co + o, p as u32, j as u32)),
            );
            merge_prune(&acc, &shifted, &mut merged, |p| (p.0 as f64, p.1));
            std::mem::swap(&mut acc, &mut merged);
        }
        back.push(acc.iter().map(|x| (x.2, x.3)).collect());
        cur = acc.iter().map(|x| (x.0, x.1)).collect();
    }
    Frontier {
        points: cur
            .into_iter()
            .map(|(size_bits, omega)| FrontierPoint { size_bits, omega })
            .collect(),
        back,
    }
}

/// The frontier by enumerating every choice (tests; exponential).
pub fn brute_force_frontier(groups: &[Vec<(u64, f64)>]) -> Vec<FrontierPoint> {
    let mut all = Vec::new();
    let mut pick = vec![0usize; groups.len()];
    if groups.iter().any(|g| g.is_empty()) {
        return Vec::new();
    }
    'outer: loop {
        let (mut s, mut o) = (0u64, 0.0f64);
        for (g, &i) in pick.iter().enumerate() {
            s += groups[g][i].0;
            o += groups[g][i].1;
        }
        all.push((s, o));
        for g in 0..pick.len() {
            pick[g] += 1;
            if pick[g] < groups[g].len() {
                continue 'outer;
            }
            pick[g] = 0;
        }
        break;
    }
    all.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut out: Vec<FrontierPoint> = Vec::new();
    for (s, o) in all {
        if out.last().is_none_or(|p| o < p.omega) {
            out.push(FrontierPoint {
                size_bits: s,
                omega: o,
            });
        }
    }
    out
}

/// A uniform plan's place in the `(size, Ω)` plane (fields alphabetical, as written).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UniformPoint {
    /// Activation bits of every searched layer (on the `bops` axis, where they cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a_bits: Option<BitWidth>,
    /// Summed Ω.
    pub omega: f64,
    /// Summed cost on the axis (bits, or bit operations on the `bops` axis).
    pub size_bits: u64,
    /// Weight bits of every searched layer.
    pub w_bits: BitWidth,
}

/// What [`pareto`] found: the plan, the whole frontier and the uniform plans.
#[derive(Debug, Clone)]
pub struct ParetoResult {
    /// The chosen plan.
    pub plan: QuantPlan,
    /// The exact frontier.
    pub frontier: Frontier,
    /// Index of the chosen point.
    pub chosen: usize,
    /// `weight_bits` (`Σ n·w`), `size_bits` (with scales, under `--max-size-mb`) or `bops`
    /// (`Σ MAC·w·a`, under a BitOps budget without a size budget).
    pub axis: &'static str,
    /// `Σ n` over the layers.
    pub params: u64,
    /// Uniform plans (one per candidate weight width).
    pub uniform: Vec<UniformPoint>,
    /// Per group: the space's choice index of each frontier item.
    item_choice: Vec<Vec<usize>>,
}

impl ParetoResult {
    /// Weight bits per model layer of frontier point `idx`.
    pub fn point_w_bits(&self, space: &SearchSpace, idx: usize) -> Vec<BitWidth> {
        let mut bits = vec![0; space.layers().len()];
        for (g, item) in self.frontier.choices(idx).into_iter().enumerate() {
            let group = &space.groups()[g];
            for &l in &group.layers {
                bits[l] = group.choices[self.item_choice[g][item]].w_bits;
            }
        }
        bits
    }

    fn x_of(&self, size_bits: u64) -> f64 {
        axis_x(self.axis, size_bits, self.params)
    }

    /// The frontier file: every point (size, average bits or MiB, Ω, per-layer weight bits
    /// as `"8,4,…"`), the chosen index and the uniform plans; `model` and `policy` name where
    /// it came from and went.
    pub fn to_file(&self, space: &SearchSpace, model: &str, policy: &str) -> FrontierFile {
        let weight_axis = self.axis == "weight_bits";
        let bops_axis = self.axis == "bops";
        let points = self
            .frontier
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let bits: Vec<String> = self
                    .point_w_bits(space, i)
                    .iter()
                    .map(|b| b.to_string())
                    .collect();
                let x = self.x_of(p.size_bits);
                FrontierRow {
                    avg_w_bits: weight_axis.then_some(x),
                    gbops: bops_axis.then_some(x),
                    omega: p.omega,
                    size_bits: p.size_bits,
                    size_mb: (!weight_axis && !bops_axis).then_some(x),
                    w_bits: bits.join(","),
                }
            })
            .collect();
        FrontierFile {
            axis: self.axis.to_string(),
            chosen: self.chosen,
            constraints: space.plan_constraints(),
            model: model.to_string(),
            params: self.params,
            points,
            policy: policy.to_string(),
            uniform: self.uniform.clone(),
        }
    }
}

/// The frontier file (`mpq.frontier`, `OUT.frontier.json` of `mpq search --method pareto`;
/// fields in alphabetical order, as earlier versions wrote them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontierFile {
    /// `weight_bits` (x is the average weight bits) or `size_bits` (x is MiB, scales
    /// included).
    pub axis: String,
    /// Index of the chosen point.
    pub chosen: usize,
    /// The plan's constraints.
    #[serde(default)]
    pub constraints: Constraints,
    /// The model searched.
    #[serde(default)]
    pub model: String,
    /// `Σ n` over the searched layers.
    pub params: u64,
    /// The frontier, size ascending.
    pub points: Vec<FrontierRow>,
    /// The policy file written with it.
    #[serde(default)]
    pub policy: String,
    /// The uniform plans.
    pub uniform: Vec<UniformPoint>,
}

impl FrontierFile {
    /// The x value of a point (average bits or MiB).
    pub fn x(row: &FrontierRow) -> f64 {
        (row.avg_w_bits.or(row.size_mb).or(row.gbops)).unwrap_or(f64::NAN)
    }

    /// The x value of a uniform plan, on the frontier's axis.
    pub fn uniform_x(&self, u: &UniformPoint) -> f64 {
        axis_x(&self.axis, u.size_bits, self.params)
    }
}

/// The x value of a summed axis cost: average weight bits, MiB, or giga bit-operations.
fn axis_x(axis: &str, cost: u64, params: u64) -> f64 {
    match axis {
        "weight_bits" => cost as f64 / params.max(1) as f64,
        "bops" => cost as f64 / 1e9,
        _ => (cost as f64 / 8.0).ceil() / MB,
    }
}

impl Versioned for FrontierFile {
    const FORMAT: &'static str = "mpq.frontier";
    const VERSION: u32 = 1;
    const WHAT: &'static str = "a Pareto frontier";
}

/// One frontier point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontierRow {
    /// Average weight bits (on the `weight_bits` axis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_w_bits: Option<f64>,
    /// Giga bit-operations per sample (on the `bops` axis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gbops: Option<f64>,
    /// Summed Ω.
    pub omega: f64,
    /// Summed cost on the axis: bits of storage, or bit operations on the `bops` axis.
    pub size_bits: u64,
    /// MiB, scales included (on the `size_bits` axis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mb: Option<f64>,
    /// Weight bits per model layer, comma separated.
    pub w_bits: String,
}

/// HAWQ-V2's search: the exact frontier and its best point under the budgets. Needs Ω
/// ([`SearchSpace::set_omega`]).
pub fn pareto(space: &SearchSpace) -> Result<ParetoResult> {
    let start = Instant::now();
    space.check_omega_search("pareto")?;
    let kinds: Vec<BudgetKind> = space.constraints().iter().map(|c| c.kind).collect();
    let has = |k: &[BudgetKind]| kinds.iter().any(|c| k.contains(c));
    let size_mb = has(&[BudgetKind::SizeMb, BudgetKind::SizeRatio]);
    let weight_only = has(&[BudgetKind::AvgBits, BudgetKind::Compression]);
    let bops = kinds
        .iter()
        .position(|&k| matches!(k, BudgetKind::Bops | BudgetKind::BopsRatio));
    // One additive cost is the frontier's axis: size when a size budget is given, else BitOps;
    // latency and energy alone have no integer axis.
    let axis = if size_mb {
        "size_bits"
    } else if weight_only || kinds.is_empty() {
        "weight_bits"
    } else if bops.is_some() {
        "bops"
    } else {
        return Err(Error::config(
            "method",
            "pareto's frontier is over size or BitOps: with only latency or energy budgets \
             use --method ilp (the exact program under any budget)",
        ));
    };
    let limit = space
        .constraints()
        .iter()
        .filter(|c| match c.kind {
            BudgetKind::SizeMb | BudgetKind::SizeRatio => axis == "size_bits",
            BudgetKind::AvgBits | BudgetKind::Compression => axis == "weight_bits",
            BudgetKind::Bops | BudgetKind::BopsRatio => axis == "bops",
            _ => false,
        })
        .map(|c| (c.cost_limit * (1.0 + 1e-12)).floor() as u64)
        .min()
        .unwrap_or(u64::MAX);
    let size_of = |ch: &super::space::Choice| match (axis, bops) {
        ("size_bits", _) => ch.size_bits,
        ("bops", Some(k)) => ch.costs[k].round() as u64,
        _ => ch.weight_bits,
    };
    let mut items = Vec::new();
    let mut item_choice = Vec::new();
    for g in space.groups() {
        let (mut it, mut map): (Vec<(u64, f64)>, Vec<usize>) = (Vec::new(), Vec::new());
        for (i, ch) in g.choices.iter().enumerate() {
            match map
                .iter()
                .position(|&j| size_of(&g.choices[j]) == size_of(ch))
            {
                Some(k) if ch.omega <= it[k].1 => {
                    it[k] = (size_of(ch), ch.omega);
                    map[k] = i;
                }
                Some(_) => {}
                None => {
                    it.push((size_of(ch), ch.omega));
                    map.push(i);
                }
            }
        }
        items.push(it);
        item_choice.push(map);
    }
    let frontier = pareto_frontier(&items);
    let to_choice = |idx: usize| -> Vec<usize> {
        frontier
            .choices(idx)
            .into_iter()
            .enumerate()
            .map(|(g, it)| item_choice[g][it])
            .collect()
    };
    let top = frontier.best_under(limit);
    let chosen = top.and_then(|top| {
        (0..=top)
            .rev()
            .find(|&i| space.fits(&space.totals(&to_choice(i))))
    });
    let Some(chosen) = chosen else {
        let others: Vec<&str> = (space.constraints().iter())
            .filter(|c| !match axis {
                "size_bits" => matches!(c.kind, BudgetKind::SizeMb | BudgetKind::SizeRatio),
                "bops" => matches!(c.kind, BudgetKind::Bops | BudgetKind::BopsRatio),
                _ => matches!(c.kind, BudgetKind::AvgBits | BudgetKind::Compression),
            })
            .map(|c| c.kind.name())
            .collect();
        return Err(Error::config(
            "method",
            format!(
                "pareto: no point of the ({axis}, Ω) frontier within its budget also meets {} \
                 (the frontier keeps the least-Ω choice at each {axis} cost); use --method ilp, \
                 which is exact under every budget at once",
                others.join(", ")
            ),
        ));
    };
    let params: u64 = space.layers().iter().map(|l| l.params as u64).sum();
    // Uniform plans on the axis: one per weight width (the least-Ω activation width), or on
    // the BitOps axis one per (w, a) pair; pinned groups keep their pin.
    let pairs: Vec<(BitWidth, Option<BitWidth>)> = if axis == "bops" {
        space
            .pairs()
            .into_iter()
            .map(|(w, a)| (w, Some(a)))
            .collect()
    } else {
        (space.candidates().w_bits.iter())
            .map(|&w| (w, None))
            .collect()
    };
    let uniform = pairs
        .into_iter()
        .map(|(w, a)| {
            let (mut size_bits, mut omega) = (0u64, 0.0);
            for g in space.groups() {
                let matches =
                    |c: &&super::space::Choice| c.w_bits == w && a.is_none_or(|a| c.a_bits == a);
                let least = |it: &mut dyn Iterator<Item = &super::space::Choice>| {
                    it.min_by(|x, y| x.omega.total_cmp(&y.omega)).cloned()
                };
                let pick = least(&mut g.choices.iter().filter(matches))
                    .or_else(|| least(&mut g.choices.iter()));
                if let Some(c) = pick {
                    size_bits += size_of(&c);
                    omega += c.omega;
                }
            }
            UniformPoint {
                a_bits: a,
                w_bits: w,
                size_bits,
                omega,
            }
        })
        .collect();
    let plan = space.plan(&to_choice(chosen), "pareto", start)?;
    Ok(ParetoResult {
        plan,
        frontier,
        chosen,
        axis,
        params,
        uniform,
        item_choice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn dp_frontier_equals_brute_force_on_200_random_tables() {
        let mut rng = ChaCha8Rng::seed_from_u64(2020);
        for case in 0..200 {
            let layers = rng.random_range(1..=8);
            let groups: Vec<Vec<(u64, f64)>> = (0..layers)
                .map(|_| {
                    let n = rng.random_range(1..=4);
                    (0..n)
                        .map(|_| {
                            let size =
                                rng.random_range(1..40u64) * [1, 2, 4][rng.random_range(0..3)];
                            // Integer Ω (sums exact) in odd cases, real Ω in even ones.
                            let o = if case % 2 == 1 {
                                f64::from(rng.random_range(0..50u32))
                            } else {
                                rng.random_range(0.0..10.0)
                            };
                            (size, o)
                        })
                        .collect()
                })
                .collect();
            let dp = pareto_frontier(&groups);
            let brute = brute_force_frontier(&groups);
            assert_eq!(dp.points, brute, "case {case}: {groups:?}");
            // Every point's back-pointers rebuild its size and Ω exactly.
            for (i, p) in dp.points.iter().enumerate() {
                let ch = dp.choices(i);
                let s: u64 = ch.iter().enumerate().map(|(g, &c)| groups[g][c].0).sum();
                let o = ch
                    .iter()
                    .enumerate()
                    .fold(0.0, |acc, (g, &c)| acc + groups[g][c].1);
                assert_eq!((s, o), (p.size_bits, p.omega), "case {case} point {i}");
            }
        }
    }

    #[test]
    fn best_under_picks_the_largest_size_within_the_limit() {
        let groups = vec![
            vec![(2, 10.0), (4, 3.0), (8, 1.0)],
            vec![(1, 5.0), (3, 0.0)],
        ];
        let f = pareto_frontier(&groups);
        let sizes: Vec<u64> = f.points.iter().map(|p| p.size_bits).collect();
        assert_eq!(sizes, [3, 5, 7, 11]);
        assert_eq!(f.best_under(6), Some(1));
        assert_eq!(f.choices(1), vec![1, 0]);
        assert_eq!(f.best_under(2), None);
        assert_eq!(f.best_under(u64::MAX), Some(3));
    }
}
