//! A small dense two-phase primal simplex (Dantzig's rule, Bland's rule after degenerate
//! stalls) for the LP relaxation of the multiple-choice knapsack (docs/algorithms.md §7.6: "an exact B&B
//! with LP or Lagrangian bounds"). Its row duals are the exact Lagrange multipliers of the
//! budgets; the problems are tiny (tens of rows, hundreds to a few thousand columns).

/// `min c·x` subject to `A x = b`, `x ≥ 0`, `b ≥ 0`; `a` is row-major `rows × cols`.
#[derive(Debug, Clone)]
pub(crate) struct Lp {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) a: Vec<f64>,
    pub(crate) b: Vec<f64>,
    pub(crate) c: Vec<f64>,
}

/// An optimal basic solution.
#[derive(Debug, Clone)]
pub(crate) struct LpSolution {
    pub(crate) x: Vec<f64>,
    pub(crate) value: f64,
    /// Reduced costs `c_j − yᵀA_j` of the columns.
    pub(crate) reduced: Vec<f64>,
}

const EPS: f64 = 1e-10;
const MAX_PIVOTS: usize = 20_000;

struct Tableau {
    /// `(rows + 1) × width`, the last row holds the reduced costs, the last column the
    /// right-hand sides.
    t: Vec<f64>,
    width: usize,
    rows: usize,
    basis: Vec<usize>,
}

impl Tableau {
    fn at(&self, r: usize, j: usize) -> f64 {
        self.t[r * self.width + j]
    }

    fn pivot(&mut self, r: usize, j: usize) {
        let w = self.width;
        let p = self.t[r * w + j];
        for k in 0..w {
            self.t[r * w + k] /= p;
        }
        let (before, rest) = self.t.split_at_mut(r * w);
        let (prow, after) = rest.split_at_mut(w);
        for row in before.chunks_mut(w).chain(after.chunks_mut(w)) {
            let f = row[j];
            if f != 0.0 {
                for (x, y) in row.iter_mut().zip(prow.iter()) {
                    *x -= f * y;
                }
            }
        }
        self.basis[r] = j;
    }

    /// Sets the objective row for costs `cost` (per column, `width − 1` entries).
    fn set_objective(&mut self, cost: &[f64]) {
        let (w, m) = (self.width, self.rows);
        for j in 0..w {
            let mut d = if j < w - 1 { cost[j] } else { 0.0 };
            for r in 0..m {
                d -= cost[self.basis[r]] * self.at(r, j);
            }
            self.t[m * w + j] = d;
        }
    }

    /// Runs the simplex over columns `j < allowed`; false when it hit the pivot limit.
    fn optimise(&mut self, allowed: usize) -> bool {
        let (w, m) = (self.width, self.rows);
        let mut degenerate = 0;
        for _ in 0..MAX_PIVOTS {
            let obj = &self.t[m * w..(m + 1) * w];
            let entering = if degenerate > 50 {
                (0..allowed).find(|&j| obj[j] < -EPS)
            } else {
                (0..allowed)
                    .filter(|&j| obj[j] < -EPS)
                    .min_by(|&a, &b| obj[a].total_cmp(&obj[b]))
            };
            let Some(j) = entering else { return true };
            let mut leave: Option<(usize, f64)> = None;
            for r in 0..m {
                let a = self.at(r, j);
                if a > EPS {
                    let ratio = self.at(r, w - 1) / a;
                    let better = match leave {
                        None => true,
                        Some((lr, lv)) => {
                            ratio < lv - EPS
                                || (ratio <= lv + EPS && self.basis[r] < self.basis[lr])
                        }
                    };
                    if better {
                        leave = Some((r, ratio));
                    }
                }
            }
            let Some((r, ratio)) = leave else {
                // Unbounded: cannot happen for bounded problems; stop.
                return false;
            };
            degenerate = if ratio <= EPS { degenerate + 1 } else { 0 };
            self.pivot(r, j);
        }
        false
    }
}

/// Solves `lp`; `None` when it is infeasible or the pivot limit is hit.
pub(crate) fn solve(lp: &Lp) -> Option<LpSolution> {
    let (m, n) = (lp.rows, lp.cols);
    let width = n + m + 1;
    let mut t = vec![0.0; (m + 1) * width];
    for r in 0..m {
        t[r * width..r * width + n].copy_from_slice(&lp.a[r * n..(r + 1) * n]);
        t[r * width + n + r] = 1.0;
        t[r * width + width - 1] = lp.b[r];
    }
    let mut tab = Tableau {
        t,
        width,
        rows: m,
        basis: (n..n + m).collect(),
    };
    // Phase 1: minimise the artificials.
    let mut cost1 = vec![0.0; width - 1];
    for c in &mut cost1[n..] {
        *c = 1.0;
    }
    tab.set_objective(&cost1);
    if !tab.optimise(n) {
        return None;
    }
    let infeas = -tab.at(m, width - 1);
    let scale = lp.b.iter().fold(1.0f64, |s, v| s.max(v.abs()));
    if infeas > 1e-9 * scale {
        return None;
    }
    // Drive zero-level artificials out of the basis where possible.
    for r in 0..m {
        if tab.basis[r] >= n
            && let Some(j) = (0..n).find(|&j| tab.at(r, j).abs() > 1e-9)
        {
            tab.pivot(r, j);
        }
    }
    // Phase 2.
    let mut cost2 = lp.c.clone();
    cost2.extend(std::iter::repeat_n(0.0, m));
    tab.set_objective(&cost2);
    if !tab.optimise(n) {
        return None;
    }
    let mut x = vec![0.0; n];
    for r in 0..m {
        if tab.basis[r] < n {
            x[tab.basis[r]] = tab.at(r, width - 1).max(0.0);
        }
    }
    let value = x.iter().zip(&lp.c).map(|(a, b)| a * b).sum();
    let reduced = (0..n).map(|j| tab.at(m, j)).collect();
    Some(LpSolution { x, value, reduced })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_lp_hand_solution() {
        // min -x - y  s.t. x + 2y + s1 = 4, 3x + y + s2 = 6.  Optimum x = 1.6, y = 1.2.
        let lp = Lp {
            rows: 2,
            cols: 4,
            a: vec![1.0, 2.0, 1.0, 0.0, 3.0, 1.0, 0.0, 1.0],
            b: vec![4.0, 6.0],
            c: vec![-1.0, -1.0, 0.0, 0.0],
        };
        let s = solve(&lp).unwrap();
        assert!(
            (s.x[0] - 1.6).abs() < 1e-12 && (s.x[1] - 1.2).abs() < 1e-12,
            "{s:?}"
        );
        assert!((s.value + 2.8).abs() < 1e-12);
        // Slack reduced costs are the negated row duals: 0.4 and 0.2.
        assert!((s.reduced[2] - 0.4).abs() < 1e-12 && (s.reduced[3] - 0.2).abs() < 1e-12);
        let infeasible = Lp {
            rows: 1,
            cols: 1,
            a: vec![0.0],
            b: vec![1.0],
            c: vec![1.0],
        };
        assert!(solve(&infeasible).is_none());
    }
}
