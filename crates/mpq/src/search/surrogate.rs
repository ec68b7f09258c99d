//! Node bounds for the multiple-choice knapsack branch and bound (docs/algorithms.md §7.6): the LP bound of
//! a *surrogate* relaxation, where the budgets are combined into one constraint
//! `Σ μ·c' ≤ μ·r` for a fixed direction `μ ≥ 0`. The LP of a one-constraint multiple-choice
//! knapsack is solved greedily on each group's lower convex hull (Sinha & Zoltners 1979), so
//! the bound of every suffix of groups is a precomputed piecewise-linear function of the
//! remaining capacity, queried by binary search. Along the direction of the root LP's
//! multipliers it equals the LP bound at the root and adapts the multipliers' size at every
//! node; along each budget's own axis it is that budget's one-constraint LP bound.
//! [`FrontierBound`] is stronger still: one budget kept exact by a Pareto frontier, the
//! others priced by Lagrange multipliers.

use super::pareto::merge_prune;

/// LP bounds of every suffix of a group order along one direction.
#[derive(Debug, Clone)]
pub(crate) struct RayBound {
    /// The direction, per normalised budget.
    pub(crate) mu: Vec<f64>,
    /// Per depth: Σ of each group's lightest hull point (weight, value).
    base_w: Vec<f64>,
    base_v: Vec<f64>,
    /// Per depth: cumulative weight and value of the hull segments, steepest first.
    cum_w: Vec<Vec<f64>>,
    cum_v: Vec<Vec<f64>>,
}

/// Lower-left convex hull of `(weight, value)` points: the lightest point (least value among
/// equals), then segments of strictly falling value with increasing slopes.
fn hull(points: &mut [(f64, f64)]) -> ((f64, f64), Vec<(f64, f64)>) {
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut stair: Vec<(f64, f64)> = Vec::new();
    for &p in points.iter() {
        if stair.last().is_none_or(|l| p.1 < l.1 && p.0 > l.0) {
            stair.push(p);
        }
    }
    let mut h: Vec<(f64, f64)> = Vec::new();
    for p in stair {
        while h.len() >= 2 {
            let (a, b) = (h[h.len() - 2], h[h.len() - 1]);
            // Drop b when it lies on or above the segment a→p.
            if (b.1 - a.1) * (p.0 - a.0) >= (p.1 - a.1) * (b.0 - a.0) {
                h.pop();
            } else {
                break;
            }
        }
        h.push(p);
    }
    let segs = h
        .windows(2)
        .map(|w| (w[1].0 - w[0].0, w[1].1 - w[0].1))
        .collect();
    (h[0], segs)
}

impl RayBound {
    /// Precomputes the bounds along `mu` for `order` (groups by depth); `weights(g, i)` is
    /// item `i` of group `g`'s normalised cost vector, `values[g][i]` its value.
    pub(crate) fn new<'c>(
        mu: Vec<f64>,
        order: &[usize],
        values: &[Vec<f64>],
        costs: impl Fn(usize, usize) -> &'c [f64],
        scale: &[f64],
    ) -> RayBound {
        let groups = order.len();
        let mut starts = Vec::with_capacity(groups);
        let mut segs_of = Vec::with_capacity(groups);
        for &g in order {
            let mut pts: Vec<(f64, f64)> = (0..values[g].len())
                .map(|i| {
                    let w: f64 = costs(g, i)
                        .iter()
                        .zip(scale)
                        .zip(&mu)
                        .map(|((c, s), m)| c * s * m)
                        .sum();
                    (w, values[g][i])
                })
                .collect();
            let (start, segs) = hull(&mut pts);
            starts.push(start);
            segs_of.push(segs);
        }
        let mut base_w = vec![0.0; groups + 1];
        let mut base_v = vec![0.0; groups + 1];
        let mut cum_w = vec![vec![0.0]; groups + 1];
        let mut cum_v = vec![vec![0.0]; groups + 1];
        let mut segs: Vec<(f64, f64)> = Vec::new();
        for d in (0..groups).rev() {
            base_w[d] = base_w[d + 1] + starts[d].0;
            base_v[d] = base_v[d + 1] + starts[d].1;
            segs.extend_from_slice(&segs_of[d]);
            segs.sort_by(|a, b| (a.1 / a.0).total_cmp(&(b.1 / b.0)));
            let (mut w, mut v) = (0.0, 0.0);
            let (mut cw, mut cv) = (vec![0.0], vec![0.0]);
            for &(dw, dv) in &segs {
                w += dw;
                v += dv;
                cw.push(w);
                cv.push(v);
            }
            cum_w[d] = cw;
            cum_v[d] = cv;
        }
        RayBound {
            mu,
            base_w,
            base_v,
            cum_w,
            cum_v,
        }
    }

    /// The LP value of the groups at depths `d..` with surrogate capacity `cap`
    /// (`+∞` when even the lightest items exceed it).
    pub(crate) fn bound(&self, d: usize, cap: f64) -> f64 {
        let w0 = self.base_w[d];
        if cap < w0 - 1e-9 * w0.abs().max(1e-12) {
            return f64::INFINITY;
        }
        let rem = (cap - w0).max(0.0);
        let (cw, cv) = (&self.cum_w[d], &self.cum_v[d]);
        let k = cw.partition_point(|&w| w <= rem) - 1;
        let mut v = self.base_v[d] + cv[k];
        if k + 1 < cw.len() {
            let (dw, dv) = (cw[k + 1] - cw[k], cv[k + 1] - cv[k]);
            v += dv * (rem - cw[k]) / dw;
        }
        v
    }
}

/// Exact bounds with one budget kept and the others priced by multipliers: for budget `k`,
/// every suffix of groups gets its `(c'_k, P)` Pareto frontier, where
/// `P = v + Σ_{j≠k} λ_j·c'_j`, so `min Ω ≥ P_fixed + G_d(r_k) − Σ_{j≠k} λ_j·r_j` with `G_d(r)`
/// the least `P` of the suffix within capacity `r` (a Lagrangian bound that is exact in
/// budget `k`, so at least as strong as the LP bound at the same multipliers).
#[derive(Debug, Clone)]
pub(crate) struct FrontierBound {
    /// The budget kept exact.
    pub(crate) k: usize,
    /// Multipliers of the other budgets (0 at `k`).
    pub(crate) lambda: Vec<f64>,
    /// Per depth: frontier costs ascending and penalised values descending.
    cost: Vec<Vec<f64>>,
    pen: Vec<Vec<f64>>,
}

impl FrontierBound {
    /// Builds the suffix frontiers; `None` when one grows past `max_points`.
    pub(crate) fn new<'c>(
        k: usize,
        lambda: Vec<f64>,
        order: &[usize],
        values: &[Vec<f64>],
        costs: impl Fn(usize, usize) -> &'c [f64],
        scale: &[f64],
        max_points: usize,
    ) -> Option<FrontierBound> {
        let groups = order.len();
        let mut cost = vec![vec![0.0]; groups + 1];
        let mut pen = vec![vec![0.0]; groups + 1];
        let mut cur: Vec<(f64, f64)> = vec![(0.0, 0.0)];
        let (mut acc, mut shifted, mut merged) = (Vec::new(), Vec::new(), Vec::new());
        for d in (0..groups).rev() {
            let g = order[d];
            acc.clear();
            // The group's own frontier first: dominated items never help.
            let mut items: Vec<(f64, f64)> = (0..values[g].len())
                .map(|i| {
                    let c = costs(g, i);
                    let p: f64 = values[g][i]
                        + c.iter()
                            .zip(scale)
                            .zip(&lambda)
                            .map(|((c, s), l)| c * s * l)
                            .sum::<f64>();
                    (c[k] * scale[k], p)
                })
                .collect();
            items.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let mut last = f64::INFINITY;
            items.retain(|x| {
                let keep = x.1 < last;
                if keep {
                    last = x.1;
                }
                keep
            });
            for &(ck, p) in &items {
                shifted.clear();
                shifted.extend(cur.iter().map(|&(a, b)| (a + ck, b + p)));
                merge_prune(&acc, &shifted, &mut merged, |p| *p);
                std::mem::swap(&mut acc, &mut merged);
            }
            if acc.len() > max_points {
                return None;
            }
            cur.clone_from(&acc);
            cost[d] = acc.iter().map(|x| x.0).collect();
            pen[d] = acc.iter().map(|x| x.1).collect();
        }
        Some(FrontierBound {
            k,
            lambda,
            cost,
            pen,
        })
    }

    /// The least penalised value of the groups at depths `d..` within capacity `r_k`
    /// (`+∞` when none fits).
    pub(crate) fn least(&self, d: usize, r_k: f64) -> f64 {
        let n = self.cost[d].partition_point(|&c| c <= r_k + 1e-12);
        if n == 0 {
            f64::INFINITY
        } else {
            self.pen[d][n - 1]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_constraint_lp_by_hand() {
        // Group 0: (w, v) = (1, 10), (2, 4), (3, 3.5), (4, 1); group 1: (1, 5), (3, 0).
        let values = vec![vec![10.0, 4.0, 3.5, 1.0], vec![5.0, 0.0]];
        let costs = [vec![1.0, 2.0, 3.0, 4.0], vec![1.0, 3.0]];
        let cost = |g: usize, i: usize| -> &[f64] { std::slice::from_ref(&costs[g][i]) };
        let r = RayBound::new(vec![1.0], &[0, 1], &values, cost, &[1.0]);
        // Hull of group 0: (1,10) → (2,4) slope −6 → (4,1) slope −1.5; group 1 slope −2.5.
        assert_eq!(r.bound(0, 1.0), f64::INFINITY);
        assert_eq!(r.bound(0, 2.0), 15.0);
        assert_eq!(r.bound(0, 3.0), 9.0); // 4 + 5
        assert_eq!(r.bound(0, 5.0), 4.0); // (2,4) + (3,0)
        assert_eq!(r.bound(0, 6.0), 2.5); // half of the last segment
        assert_eq!(r.bound(0, 100.0), 1.0);
        assert_eq!(r.bound(1, 2.0), 2.5);
        assert_eq!(r.bound(2, 0.0), 0.0);
    }
}
