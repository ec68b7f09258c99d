//! HAWQ (Dong et al., ICCV 2019; docs/algorithms.md §1.4–§1.5): layers ordered by `S_i = λ_i / n_i`
//! (top Hessian eigenvalue per parameter), bits non-increasing along that order, and the plan
//! with the largest size that meets every budget (ties broken by the least Ω); then the
//! block-wise fine-tuning order, layers by descending `λ_i · ‖Q_{b_i}(W_i) − W_i‖²`.
//!
//! The monotone sequences are enumerated depth first (the toolkit default of docs/algorithms.md §7.6, NNCF-style),
//! pruned by the smallest cost the remaining layers can add and by the largest size they can
//! still reach. Activation bits are uniform over the searched layers: of the candidates that
//! admit a plan, the one whose plan has the least Ω (under size budgets, which activations do
//! not cost, the largest; under a BitOps budget the activation width trades against the
//! weights' bits). Pinned layers keep their pins.

use std::time::Instant;

use super::omega::OmegaTable;
use super::space::SearchSpace;
use crate::plan::{BitWidth, QuantPlan};
use crate::{Error, Result};

/// Most enumeration nodes per activation width before the best plan found is returned.
const NODE_LIMIT: u64 = 50_000_000;

struct Enum<'s> {
    space: &'s SearchSpace<'s>,
    /// Searched groups in S order; per position the choice index of each weight width
    /// (ascending) at the current activation width.
    order: Vec<usize>,
    opts: Vec<Vec<usize>>,
    /// Suffix sums per position: least cost per constraint, least Ω.
    suf_cost: Vec<Vec<f64>>,
    suf_omega: Vec<f64>,
    /// Per position and weight-width index: Σ weight bits of the later positions at that width.
    suf_size: Vec<Vec<u64>>,
    pick: Vec<usize>,
    best: Option<(Vec<usize>, u64, f64)>,
    nodes: u64,
}

impl Enum<'_> {
    fn dfs(&mut self, pos: usize, max_w: usize, size: u64, omega: f64, used: &mut Vec<f64>) {
        self.nodes += 1;
        if self.nodes > NODE_LIMIT {
            return;
        }
        if pos == self.order.len() {
            let better = match &self.best {
                None => true,
                Some((_, s, o)) => size > *s || (size == *s && omega < *o),
            };
            if better {
                self.best = Some((self.pick.clone(), size, omega));
            }
            return;
        }
        let g = &self.space.groups()[self.order[pos]];
        for wi in (0..=max_w.min(self.opts[pos].len() - 1)).rev() {
            let ch = &g.choices[self.opts[pos][wi]];
            // Largest reachable size: every later layer at this width.
            let upper = size + ch.weight_bits + self.suf_size[pos + 1][wi];
            if let Some((_, bs, bo)) = &self.best
                && (upper < *bs
                    || (upper == *bs && omega + ch.omega + self.suf_omega[pos + 1] >= *bo))
            {
                continue;
            }
            let fits = used
                .iter()
                .zip(&ch.costs)
                .zip(&self.suf_cost[pos + 1])
                .zip(self.space.constraints())
                .all(|(((u, c), s), k)| u + c + s <= k.cost_limit * (1.0 + 1e-12));
            if !fits {
                continue;
            }
            for (u, c) in used.iter_mut().zip(&ch.costs) {
                *u += c;
            }
            self.pick[self.order[pos]] = self.opts[pos][wi];
            self.dfs(pos + 1, wi, size + ch.weight_bits, omega + ch.omega, used);
            for (u, c) in used.iter_mut().zip(&ch.costs) {
                *u -= c;
            }
        }
    }
}

/// HAWQ's plan and fine-tuning order. `omega` gives `λ_i` (every searched layer needs a
/// `top_eigenvalue`) and the weight errors; the space's Ω (set from the same table) breaks
/// ties and is reported.
pub fn hawq_v1(space: &SearchSpace, omega: &OmegaTable) -> Result<QuantPlan> {
    let start = Instant::now();
    space.check_omega_search("hawq-v1")?;
    let layers = space.layers();
    let groups = space.groups();
    // S of a group: the largest λ/n of its layers.
    let mut scored = Vec::new();
    for (gi, g) in groups
        .iter()
        .enumerate()
        .filter(|(_, g)| g.choices.len() > 1)
    {
        let mut s = f64::NEG_INFINITY;
        for &i in &g.layers {
            let v = omega.hawq_score(i, layers[i].params).ok_or_else(|| {
                Error::config(
                    "sensitivity",
                    format!(
                        "hawq-v1 needs top_eigenvalue for layer {} (run `mpq analyze --metric eigen`)",
                        layers[i].name
                    ),
                )
            })?;
            s = s.max(v);
        }
        scored.push((gi, s));
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let order: Vec<usize> = scored.iter().map(|&(g, _)| g).collect();
    let k = space.constraints().len();
    let mut base = vec![0usize; groups.len()];
    let mut used0 = vec![0.0; k];
    let (mut size0, mut omega0) = (0u64, 0.0);
    for (gi, g) in groups
        .iter()
        .enumerate()
        .filter(|(_, g)| g.choices.len() <= 1)
    {
        let ch = &g.choices[0];
        base[gi] = 0;
        size0 += ch.weight_bits;
        omega0 += ch.omega;
        for (u, c) in used0.iter_mut().zip(&ch.costs) {
            *u += c;
        }
    }
    let cands = space.candidates();
    let mut found = None;
    for &a in cands.a_bits.iter().rev() {
        let opts: Vec<Vec<usize>> = order
            .iter()
            .map(|&gi| {
                let mut o: Vec<(BitWidth, usize)> = groups[gi]
                    .choices
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.a_bits == a)
                    .map(|(i, c)| (c.w_bits, i))
                    .collect();
                o.sort_unstable();
                o.into_iter().map(|(_, i)| i).collect()
            })
            .collect();
        if opts.iter().any(Vec::is_empty) {
            continue;
        }
        let n = order.len();
        let mut suf_cost = vec![vec![0.0; k]; n + 1];
        let mut suf_omega = vec![0.0; n + 1];
        let widths = opts.iter().map(Vec::len).max().unwrap_or(0);
        let mut suf_size = vec![vec![0u64; widths]; n + 1];
        for p in (0..n).rev() {
            let chs = &groups[order[p]].choices;
            let (head, tail) = suf_cost.split_at_mut(p + 1);
            for (kk, (c, next)) in head[p].iter_mut().zip(&tail[0]).enumerate().take(k) {
                let m = opts[p]
                    .iter()
                    .map(|&i| chs[i].costs[kk])
                    .fold(f64::INFINITY, f64::min);
                *c = next + m;
            }
            for wi in 0..widths {
                let i = opts[p][wi.min(opts[p].len() - 1)];
                suf_size[p][wi] = suf_size[p + 1][wi] + chs[i].weight_bits;
            }
            suf_omega[p] = suf_omega[p + 1]
                + opts[p]
                    .iter()
                    .map(|&i| chs[i].omega)
                    .fold(f64::INFINITY, f64::min);
        }
        let mut e = Enum {
            space,
            order: order.clone(),
            opts,
            suf_cost,
            suf_omega,
            suf_size,
            pick: base.clone(),
            best: None,
            nodes: 0,
        };
        let mut used = used0.clone();
        e.dfs(0, usize::MAX, size0, omega0, &mut used);
        if let Some((pick, _, omega)) = e.best
            && found
                .as_ref()
                .is_none_or(|f: &(Vec<usize>, f64)| omega < f.1)
        {
            found = Some((pick, omega));
        }
    }
    let found = found.map(|f| f.0);
    let Some(choice) = found else {
        return Err(Error::Infeasible {
            budget: "hawq-v1: no bit sequence that is non-increasing in λ/n meets the budgets"
                .into(),
            min_value: "loosen the budget, or use --method ilp (no order constraint)".into(),
        });
    };
    let mut plan = space.plan(&choice, "hawq-v1", start)?;
    let mut weights = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let w = if omega.has_row(i) {
            omega.finetune_weight(i, l.params, plan.bits(&l.name).0)?
        } else {
            f64::NEG_INFINITY
        };
        weights.push((i, w));
    }
    weights.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    plan.finetune_order = Some(
        weights
            .iter()
            .map(|&(i, _)| layers[i].name.clone())
            .collect(),
    );
    plan.seconds = start.elapsed().as_secs_f64();
    Ok(plan)
}
