//! Times LIMPQ's one-shot integer program (Tang et al. ECCV 2022, docs/algorithms.md §5.6) on ResNet-18 layer
//! shapes: 19 searched layers (16 body convs and 3 downsample convs; conv1 and fc pinned at
//! 8 bits), 5 candidate bits {2..6} for weights and for activations (25 choices a layer, 475
//! binaries), under BitOps, BitOps + compression-ratio, and average-bit budgets. Indicators
//! are synthetic but shaped like learned LSQ steps (weights ∝ 1/2^{b−1}, activations ∝ 1/√Qp,
//! a per-layer scale, ±20% noise, and a dip in one series of ten, which the cleaning bans), which is
//! all the solver sees. The paper reports 0.06 s for ResNet-18.
//!
//! `cargo run --release -p mpq --example limpq_bench -- [--reps 101]`
#![expect(
    clippy::print_stdout,
    reason = "a benchmark report printed to the terminal"
)]

use std::collections::BTreeMap;
use std::time::Instant;

mod common;
use common::median;

use mpq::plan::QuantizerKind;
use mpq::search::limpq::{Indicators, limpq, set_limpq_omega};
use mpq::search::{Budget, Candidates, SearchOptions, SearchSpace};
use mpq::sensitivity::learned::LayerIndicators;
use mpq::zoo::{self, ZooConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() -> mpq::Result<()> {
    let reps: usize = common::flag("--reps").unwrap_or(101);
    let bits: Vec<u32> = vec![2, 3, 4, 5, 6];
    let r18 = zoo::layer_infos("resnet18", &ZooConfig::default_for("resnet18"))?;
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    let searched = &r18[1..r18.len() - 1];
    let ind = Indicators::from_layers(
        searched
            .iter()
            .map(|l| {
                let ws: f64 = 10f64.powf(rng.random_range(-2.0..-1.0));
                let as_: f64 = 10f64.powf(rng.random_range(-1.5..-0.5));
                let mut w = BTreeMap::new();
                let mut a = BTreeMap::new();
                for &b in &bits {
                    let noise = |r: &mut ChaCha8Rng| r.random_range(0.8..1.2);
                    w.insert(b, ws * 32.0 / f64::from(1u32 << (b - 1)) * noise(&mut rng));
                    let qp = f64::from((1u32 << b) - 1);
                    a.insert(b, as_ * 8.0 / qp.sqrt() * noise(&mut rng));
                }
                // One series in ten gets a dip (an artefact of joint training to clean).
                if rng.random_range(0.0..1.0) < 0.1 {
                    let b = bits[rng.random_range(0..bits.len() - 1)];
                    *w.get_mut(&b).expect("a candidate") *= 0.3;
                }
                if rng.random_range(0.0..1.0) < 0.1 {
                    let b = bits[rng.random_range(0..bits.len() - 1)];
                    *a.get_mut(&b).expect("a candidate") *= 0.3;
                }
                (l.name.clone(), LayerIndicators::new(w, a))
            })
            .collect(),
    );
    let banned: usize = ind
        .layers()
        .map(|(_, l)| l.banned_w_bits.len() + l.banned_a_bits.len())
        .sum();
    let opts = SearchOptions {
        pins: ind.pins(&r18)?,
        quantizer: QuantizerKind::Lsq,
        ..Default::default()
    };
    let cands = Candidates {
        w_bits: bits.clone(),
        a_bits: bits.clone(),
    };
    let fixed_macs = (r18[0].macs + r18[r18.len() - 1].macs) as f64;
    let macs: f64 = searched.iter().map(|l| l.macs as f64).sum();
    let bops = |wa: f64| (fixed_macs * 64.0 + macs * wa) / 1e9;
    println!(
        "LIMPQ ILP on ResNet-18 shapes: {} searched layers (+ conv1, fc at 8 bits), w and a in \
         {bits:?} ({} binaries), {banned} indicators banned by the cleaning, {reps} runs each",
        searched.len(),
        searched.len() * bits.len() * bits.len()
    );
    println!(
        "| budgets | median ms (solve) | median ms (space + Ω + solve) | nodes |\n| --- | --- | --- | --- |"
    );
    let mut all = Vec::new();
    // (label, BitOps budget as w·a bits of the searched layers, compression, average bits)
    for (label, wa, compression, avg_bits) in [
        ("BitOps W3A4", 12.0, None, None),
        ("BitOps W4A4", 16.0, None, None),
        ("BitOps W3A3", 9.0, None, None),
        ("BitOps W3A4 + CR 10", 12.0, Some(10.0), None),
        ("BitOps W4A4 + avg 3.5 bits", 16.0, None, Some(3.5)),
    ] {
        let budget = Budget {
            max_bops_g: Some(bops(wa)),
            compression,
            avg_bits,
            ..Default::default()
        };
        let (mut solve, mut total, mut nodes) = (Vec::new(), Vec::new(), 0);
        for _ in 0..reps {
            let t0 = Instant::now();
            let mut space = SearchSpace::new(&r18, &cands, &budget, None, &opts)?;
            set_limpq_omega(&mut space, &ind, 2.0)?;
            let t1 = Instant::now();
            let (_, stats) = limpq(&space)?;
            let end = Instant::now();
            solve.push((end - t1).as_secs_f64() * 1e3);
            total.push((end - t0).as_secs_f64() * 1e3);
            nodes = stats.nodes;
        }
        let m = median(solve);
        all.push(m);
        println!("| {label} | {m:.3} | {:.3} | {nodes} |", median(total));
    }
    println!("median over all cases (solve): {:.3} ms", median(all));
    Ok(())
}
