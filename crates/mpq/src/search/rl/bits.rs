//! HAQ (Wang et al., CVPR 2019): the mapping from the agent's continuous action to a
//! bit-width (docs/algorithms.md §4.4) and the budget repair that "sequentially decreases bit-widths" until
//! the policy meets its resource target (docs/algorithms.md §4.5, the reference code's
//! `_final_action_wall` for the linear (weight, activation) environment and its weights-only
//! counterpart of the k-means environment).
//!
//! Both are plain arithmetic over a caller-supplied cost function, so they work with any cost
//! model (lookup tables, BOPs, size); the repair only needs the cost to be non-decreasing in
//! each bit-width for its feasibility guarantee.

use crate::plan::{BitWidth, FULL_PRECISION};
use crate::{Error, Result};

/// Maps an action `a ∈ [0, 1]` to `round((b_min − 0.5) + a·(b_max − b_min + 1))`, clamped to
/// `[b_min, b_max]`: every integer bit-width gets an interval of width `1/(b_max − b_min + 1)`.
/// Actions outside `[0, 1]` clamp; a NaN action gives `b_min`.
pub fn action_to_bits(a: f32, b_min: BitWidth, b_max: BitWidth) -> BitWidth {
    let a = f64::from(a);
    let span = f64::from(b_max) - f64::from(b_min) + 1.0;
    let b = (f64::from(b_min) - 0.5 + a * span).round();
    if b.is_nan() || b <= f64::from(b_min) {
        b_min
    } else if b >= f64::from(b_max) {
        b_max.max(b_min)
    } else {
        b as BitWidth
    }
}

/// Options of the linear-environment repair [`repair_linear`].
#[derive(Debug, Clone, PartialEq)]
pub struct RepairOptions {
    /// The smallest bit-width the repair may reach (the reference search script uses 2).
    pub min_bit: BitWidth,
    /// The largest quantised bit-width; a [`FULL_PRECISION`] entry is first lowered to it.
    pub max_bit: BitWidth,
    /// Force the first layer to [`RepairOptions::first_layer`] and the last to
    /// [`RepairOptions::last_layer`], as the reference code does inside its wall.
    pub pin_first_last: bool,
    /// `(w, a)` of the first layer when pinned: 8-bit weights, unquantised input
    /// ([`FULL_PRECISION`]; the reference passes `a = −1`).
    pub first_layer: (BitWidth, BitWidth),
    /// `(w, a)` of the last layer when pinned.
    pub last_layer: (BitWidth, BitWidth),
}

impl Default for RepairOptions {
    fn default() -> Self {
        RepairOptions {
            min_bit: 2,
            max_bit: 8,
            pin_first_last: true,
            first_layer: (8, FULL_PRECISION),
            last_layer: (8, 8),
        }
    }
}

fn lower(b: BitWidth, max_bit: BitWidth) -> BitWidth {
    if b > max_bit { max_bit } else { b - 1 }
}

fn checked_total(values: impl Iterator<Item = f64>) -> Result<f64> {
    let mut total = 0.0;
    for v in values {
        if !v.is_finite() {
            return Err(Error::NonFinite(format!("cost model returned {v}")));
        }
        total += v;
    }
    Ok(total)
}

fn infeasible(target: f64, min_cost: f64) -> Error {
    Error::Infeasible {
        budget: format!("cost target {target}"),
        min_value: format!("{min_cost}"),
    }
}

/// Repairs a `(w_bits, a_bits)` policy in place until `Σ_l cost(l, w_l, a_l) ≤ target`, the
/// way the reference linear environment does: pin the first/last layers if asked, then, while
/// over the target, walk the layers from last to first, lowering each layer's activation bits
/// by one and then its weight bits by one (never below `min_bit`), stopping as soon as the
/// cost is within the target. Returns the final cost.
///
/// Fails with [`Error::Infeasible`] when even every (unpinned) layer at `min_bit` costs more
/// than `target`, with [`Error::InvalidConfig`] for an inconsistent `opts`, and with
/// [`Error::NonFinite`] when the cost model returns a non-finite value.
pub fn repair_linear(
    bits: &mut [(BitWidth, BitWidth)],
    cost: impl Fn(usize, BitWidth, BitWidth) -> f64,
    target: f64,
    opts: &RepairOptions,
) -> Result<f64> {
    if opts.min_bit == 0 || opts.min_bit > opts.max_bit {
        return Err(Error::config(
            "repair bits",
            format!(
                "need 1 ≤ min_bit ≤ max_bit, got {}..{}",
                opts.min_bit, opts.max_bit
            ),
        ));
    }
    if !target.is_finite() {
        return Err(Error::config(
            "cost target",
            format!("{target} is not finite"),
        ));
    }
    let n = bits.len();
    let pinned = |l: usize| opts.pin_first_last && (l == 0 || l + 1 == n);
    if opts.pin_first_last && n > 0 {
        bits[0] = opts.first_layer;
        bits[n - 1] = opts.last_layer;
    }
    let floor = |l: usize, b: BitWidth| if pinned(l) { b } else { b.min(opts.min_bit) };
    let min_cost = checked_total(
        bits.iter()
            .enumerate()
            .map(|(l, &(w, a))| cost(l, floor(l, w), floor(l, a))),
    )?;
    if min_cost > target {
        return Err(infeasible(target, min_cost));
    }
    let total = |bits: &[(BitWidth, BitWidth)]| {
        checked_total(bits.iter().enumerate().map(|(l, &(w, a))| cost(l, w, a)))
    };
    let mut cur = total(bits)?;
    while cur > target {
        let mut changed = false;
        for l in (0..n).rev() {
            if pinned(l) {
                continue;
            }
            if bits[l].1 > opts.min_bit {
                bits[l].1 = lower(bits[l].1, opts.max_bit);
                changed = true;
                cur = total(bits)?;
                if cur <= target {
                    break;
                }
            }
            if bits[l].0 > opts.min_bit {
                bits[l].0 = lower(bits[l].0, opts.max_bit);
                changed = true;
                cur = total(bits)?;
                if cur <= target {
                    break;
                }
            }
        }
        if !changed {
            break;
        }
    }
    if cur > target {
        // Only reachable when the cost is not monotone in the bit-widths.
        return Err(infeasible(target, cur));
    }
    Ok(cur)
}

/// The weights-only repair of the reference k-means environment: while
/// `Σ_l cost(l, w_l) > target`, walk the layers from last to first lowering each weight
/// bit-width by one (never below `min_bit`), stopping as soon as the cost is within the
/// target. No first/last-layer exception. Returns the final cost; the errors are those of
/// [`repair_linear`].
pub fn repair_weights(
    bits: &mut [BitWidth],
    cost: impl Fn(usize, BitWidth) -> f64,
    target: f64,
    min_bit: BitWidth,
    max_bit: BitWidth,
) -> Result<f64> {
    let opts = RepairOptions {
        min_bit,
        max_bit,
        pin_first_last: false,
        ..RepairOptions::default()
    };
    // A weights-only policy is a linear one whose activations already sit at the floor.
    let mut pairs: Vec<(BitWidth, BitWidth)> = bits.iter().map(|&w| (w, min_bit)).collect();
    let c = repair_linear(&mut pairs, |l, w, _| cost(l, w), target, &opts)?;
    for (b, (w, _)) in bits.iter_mut().zip(pairs) {
        *b = w;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn check_equal_widths(b_min: BitWidth, b_max: BitWidth) {
        let n = 10_000_000usize;
        let k = (b_max - b_min + 1) as usize;
        let mut lo = vec![f64::INFINITY; k];
        let mut hi = vec![f64::NEG_INFINITY; k];
        for i in 0..=n {
            let a = i as f64 / n as f64;
            let b = action_to_bits(a as f32, b_min, b_max);
            assert!((b_min..=b_max).contains(&b));
            let j = (b - b_min) as usize;
            lo[j] = lo[j].min(a);
            hi[j] = hi[j].max(a);
        }
        let step = 1.0 / n as f64;
        for j in 0..k {
            // Interval [lo, hi + step) up to the sweep's resolution (and f32 rounding of a).
            let width = if j + 1 == k {
                hi[j] - lo[j]
            } else {
                hi[j] + step - lo[j]
            };
            assert!(
                (width - 1.0 / k as f64).abs() <= 1e-6,
                "bits {}: width {width}, want {}",
                b_min + j as BitWidth,
                1.0 / k as f64
            );
        }
        // Monotone: the intervals come in bit order.
        for j in 1..k {
            assert!(hi[j - 1] < lo[j]);
        }
    }

    #[test]
    fn action_to_bits_gives_equal_width_intervals() {
        check_equal_widths(1, 8);
        check_equal_widths(2, 8);
        assert_eq!(action_to_bits(0.0, 2, 8), 2);
        assert_eq!(action_to_bits(1.0, 2, 8), 8);
        assert_eq!(action_to_bits(1.5, 2, 8), 8);
        assert_eq!(action_to_bits(-0.5, 2, 8), 2);
        assert_eq!(action_to_bits(f32::NAN, 2, 8), 2);
    }

    /// Index of a bit-width in the test tables: 1..=8 as is, full precision as 9.
    fn idx(b: BitWidth) -> usize {
        if b == FULL_PRECISION { 9 } else { b as usize }
    }

    /// A random cost table `[layer][w][a]`, non-decreasing in both bit-widths.
    fn random_table(rng: &mut ChaCha8Rng, layers: usize) -> Vec<[[f64; 10]; 10]> {
        (0..layers)
            .map(|_| {
                let scale = rng.random_range(0.1..100.0);
                let dw: Vec<f64> = (0..10).map(|_| rng.random_range(0.0..1.0)).collect();
                let da: Vec<f64> = (0..10).map(|_| rng.random_range(0.0..1.0)).collect();
                let mut t = [[0.0; 10]; 10];
                for w in 0..10 {
                    for a in 0..10 {
                        let sw: f64 = dw[..=w].iter().sum();
                        let sa: f64 = da[..=a].iter().sum();
                        t[w][a] = scale * (sw + sa + 0.05 * (w * a) as f64);
                    }
                }
                t
            })
            .collect()
    }

    #[test]
    fn repair_meets_the_budget_or_reports_infeasible() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (mut ok, mut bad) = (0, 0);
        for trial in 0..400 {
            let n = rng.random_range(1..12);
            let table = random_table(&mut rng, n);
            let cost = |l: usize, w: BitWidth, a: BitWidth| table[l][idx(w)][idx(a)];
            let opts = RepairOptions {
                min_bit: rng.random_range(1..4),
                pin_first_last: trial % 2 == 0,
                ..RepairOptions::default()
            };
            let pick = |rng: &mut ChaCha8Rng| {
                if rng.random_bool(0.1) {
                    FULL_PRECISION
                } else {
                    rng.random_range(opts.min_bit..=8)
                }
            };
            let start: Vec<(BitWidth, BitWidth)> =
                (0..n).map(|_| (pick(&mut rng), pick(&mut rng))).collect();
            let max: f64 = (0..n).map(|l| cost(l, 32, 32)).sum();
            let target = rng.random_range(0.0..max * 1.1);
            // The independent lower bound: everything at min_bit except pinned layers.
            let min_cost: f64 = (0..n)
                .map(|l| {
                    let (w, a) = if opts.pin_first_last && l + 1 == n {
                        opts.last_layer
                    } else if opts.pin_first_last && l == 0 {
                        opts.first_layer
                    } else {
                        (opts.min_bit, opts.min_bit)
                    };
                    cost(l, w, a)
                })
                .sum();
            let mut bits = start.clone();
            match repair_linear(&mut bits, cost, target, &opts) {
                Ok(c) => {
                    ok += 1;
                    let recomputed: f64 = bits
                        .iter()
                        .enumerate()
                        .map(|(l, &(w, a))| cost(l, w, a))
                        .sum();
                    assert!((c - recomputed).abs() <= 1e-9 * recomputed.max(1.0));
                    assert!(
                        recomputed <= target,
                        "trial {trial}: {recomputed} > {target}"
                    );
                    for (l, (&(w, a), &(w0, a0))) in bits.iter().zip(&start).enumerate() {
                        if opts.pin_first_last && (l == 0 || l + 1 == n) {
                            continue;
                        }
                        assert!(w <= w0 && a <= a0, "repair never raises bits");
                        assert!(w >= opts.min_bit && a >= opts.min_bit);
                    }
                }
                Err(Error::Infeasible { .. }) => {
                    bad += 1;
                    assert!(
                        min_cost > target,
                        "trial {trial}: feasible target reported infeasible"
                    );
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert!(
            ok > 50 && bad > 20,
            "both outcomes exercised: {ok} ok, {bad} infeasible"
        );

        // An explicitly infeasible target.
        let mut bits = vec![(8, 8); 4];
        let err = repair_linear(
            &mut bits,
            |_, w, a| f64::from(w * a),
            3.9 * 4.0,
            &RepairOptions {
                pin_first_last: false,
                ..RepairOptions::default()
            },
        );
        assert!(matches!(err, Err(Error::Infeasible { .. })), "{err:?}");
        // Exactly the minimum is feasible and lands every layer at min_bit.
        let c = repair_linear(
            &mut bits,
            |_, w, a| f64::from(w * a),
            16.0,
            &RepairOptions {
                pin_first_last: false,
                ..RepairOptions::default()
            },
        )
        .unwrap();
        assert_eq!(c, 16.0);
        assert_eq!(bits, vec![(2, 2); 4]);
    }

    #[test]
    fn repair_lowers_the_last_layers_first() {
        // Layers 1..=3 unpinned, 0 and 4 pinned; a small overshoot only touches layer 3's
        // activations.
        let mut bits = vec![(8, 8); 5];
        let cost = |_: usize, w: BitWidth, a: BitWidth| f64::from(w) + f64::from(a.min(8));
        let start: f64 = 5.0 * 16.0;
        let c = repair_linear(&mut bits, cost, start - 1.0, &RepairOptions::default()).unwrap();
        assert_eq!(c, start - 1.0);
        assert_eq!(bits, vec![(8, 32), (8, 8), (8, 8), (8, 7), (8, 8)]);
    }

    #[test]
    fn weights_only_repair_meets_the_budget() {
        let n = [100.0, 50.0, 10.0];
        let mut bits = vec![8, 8, 8];
        let target = 0.5 * 8.0 * 160.0;
        let c = repair_weights(&mut bits, |l, w| n[l] * f64::from(w), target, 2, 8).unwrap();
        assert!(c <= target);
        assert!(bits.iter().all(|&b| (2..=8).contains(&b)));
        let mut bits = vec![8, 8, 8];
        assert!(matches!(
            repair_weights(&mut bits, |l, w| n[l] * f64::from(w), 100.0, 2, 8),
            Err(Error::Infeasible { .. })
        ));
    }
}
