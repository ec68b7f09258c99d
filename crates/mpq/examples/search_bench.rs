//! Times the exact bit-width solvers on ImageNet layer shapes: the HAWQ-V3 / LIMPQ integer
//! program (Yao et al. ICML 2021; Tang et al. ECCV 2022) on ResNet-18 (21 layers, w and a bits
//! in {2,3,4,5,6,8}, BOPs + size budgets) and HAWQ-V2's Pareto frontier (Dong et al. NeurIPS
//! 2020) on ResNet-50 (54 layers). Sensitivities are synthetic (log-uniform traces, uniform
//! rounding-noise errors), which is all the solvers see.
//!
//! `cargo run --release -p mpq --example search_bench -- [--reps 51]`
#![expect(
    clippy::print_stdout,
    reason = "a benchmark report printed to the terminal"
)]

use std::collections::BTreeMap;
use std::time::Instant;

mod common;
use common::median;

use mpq::graph::{LayerInfo, LayerOp};
use mpq::search::{
    Budget, Candidates, OmegaConfig, OmegaTable, SearchOptions, SearchSpace, ilp, pareto,
};
use mpq::sensitivity::{LayerSensitivity, SensitivityTable};
use mpq::zoo::{self, ZooConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn conv(name: String, cin: usize, cout: usize, k: usize, in_hw: usize, stride: usize) -> LayerInfo {
    let out = in_hw / stride;
    let params = cout * cin * k * k;
    LayerInfo {
        index: 0,
        name,
        op: LayerOp::Conv,
        weight_shape: vec![cout, cin, k, k],
        params,
        bias_params: 0,
        input_shape: vec![cin, in_hw, in_hw],
        output_shape: vec![cout, out, out],
        input_elems: cin * in_hw * in_hw,
        macs: (params * out * out) as u64,
        out_channels: cout,
    }
}

/// torchvision ResNet-50 (v1.5, stride in the 3x3 conv) at 224x224: 53 convs + fc.
fn resnet50() -> Vec<LayerInfo> {
    let mut l = vec![conv("conv1".into(), 3, 64, 7, 224, 2)];
    let mut cin = 64;
    for (s, (mid, blocks, hw)) in [(64, 3, 56), (128, 4, 56), (256, 6, 28), (512, 3, 14)]
        .into_iter()
        .enumerate()
    {
        for b in 0..blocks {
            let stride = if b == 0 && s > 0 { 2 } else { 1 };
            let p = format!("layer{}.{b}", s + 1);
            let in_hw = if b == 0 {
                hw
            } else {
                hw / if s > 0 { 2 } else { 1 }
            };
            let out_hw = in_hw / stride;
            l.push(conv(format!("{p}.conv1"), cin, mid, 1, in_hw, 1));
            l.push(conv(format!("{p}.conv2"), mid, mid, 3, in_hw, stride));
            l.push(conv(format!("{p}.conv3"), mid, mid * 4, 1, out_hw, 1));
            if b == 0 {
                l.push(conv(
                    format!("{p}.downsample.0"),
                    cin,
                    mid * 4,
                    1,
                    in_hw,
                    stride,
                ));
            }
            cin = mid * 4;
        }
    }
    l.push(LayerInfo::linear(0, "fc", 1000, 2048));
    for (i, x) in l.iter_mut().enumerate() {
        x.index = i;
    }
    l
}

fn synthetic(layers: &[LayerInfo], seed: u64) -> SensitivityTable {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rows = layers
        .iter()
        .map(|l| {
            let n = l.params as f64;
            let scale: f64 = 10f64.powf(rng.random_range(-2.0..0.5));
            let errs: BTreeMap<u32, f64> = [2u32, 3, 4, 5, 6, 8]
                .into_iter()
                .map(|b| {
                    let step = 0.1 / ((1u64 << (b - 1)) - 1) as f64;
                    (b, n * step * step / 12.0 * rng.random_range(0.8..1.2))
                })
                .collect();
            LayerSensitivity {
                name: l.name.clone(),
                params: l.params,
                trace: Some(scale * n),
                top_eigenvalue: Some(scale * 10.0),
                act_trace: Some(10f64.powf(rng.random_range(-1.0..1.0))),
                weight_error: Some(errs),
                ..Default::default()
            }
        })
        .collect();
    SensitivityTable {
        layers: rows,
        ..Default::default()
    }
}

fn main() -> mpq::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = common::flag("--reps").unwrap_or(51);
    let bits = vec![2, 3, 4, 5, 6, 8];
    let r18 = zoo::layer_infos("resnet18", &ZooConfig::default_for("resnet18"))?;
    let sens = synthetic(&r18, 18);
    let omega = OmegaTable::new(&r18, &sens, OmegaConfig::default())?;
    let macs: f64 = r18.iter().map(|l| l.macs as f64).sum();
    println!(
        "ILP on ResNet-18 shapes: {} layers, w and a in {bits:?} ({} choices per layer), {reps} runs each",
        r18.len(),
        bits.len() * bits.len()
    );
    println!("| budgets | ties | median ms | nodes |\n| --- | --- | --- | --- |");
    let ties = SearchOptions {
        ties: (2..=4)
            .map(|s| {
                vec![
                    format!("layer{s}.0.conv1"),
                    format!("layer{s}.0.downsample.0"),
                ]
            })
            .collect(),
        ..Default::default()
    };
    let cands = Candidates {
        w_bits: bits.clone(),
        a_bits: bits.clone(),
    };
    if args.iter().any(|a| a == "--diagnose") {
        let budget = Budget {
            avg_bits: Some(6.0),
            max_bops_g: Some(macs * 40.0 / 1e9),
            ..Default::default()
        };
        let mut space = SearchSpace::new(&r18, &cands, &budget, None, &SearchOptions::default())?;
        space.set_omega(&omega)?;
        let p = space.to_mckp();
        for limit in [1_000u64, 100_000, 10_000_000] {
            let t = Instant::now();
            let s = mpq::search::mckp::solve_with_limit(&p, limit).expect("feasible");
            println!(
                "limit {limit}: value {} root {} heuristic {} nodes {} proven {} {:.1} ms",
                s.value,
                s.root_bound,
                s.heuristic,
                s.nodes,
                s.proven_optimal,
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        return Ok(());
    }
    let mut all = Vec::new();
    for (label, avg, bops_wa) in [
        ("r=0.25 (W4A4..W8A8)", 5.0, 16.0 + 0.25 * 48.0),
        ("r=0.5", 6.0, 16.0 + 0.5 * 48.0),
        ("r=0.75", 7.0, 16.0 + 0.75 * 48.0),
        ("W3A4 (LIMPQ)", 3.0, 12.0),
        ("W4A6", 4.0, 24.0),
    ] {
        for (tie_label, opts) in [
            ("no", SearchOptions::default()),
            ("3 downsample", ties.clone()),
        ] {
            let budget = Budget {
                avg_bits: Some(avg),
                max_bops_g: Some(macs * bops_wa / 1e9),
                ..Default::default()
            };
            let mut space = SearchSpace::new(&r18, &cands, &budget, None, &opts)?;
            space.set_omega(&omega)?;
            let mut times = Vec::new();
            let mut nodes = 0;
            for _ in 0..reps {
                let t = Instant::now();
                let (_, stats) = ilp(&space)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
                nodes = stats.nodes;
            }
            let m = median(times);
            all.push(m);
            println!(
                "| avg_bits {avg} + BOPs {:.1} G ({label}) | {tie_label} | {m:.3} | {nodes} |",
                macs * bops_wa / 1e9
            );
        }
    }
    println!("median over all ILP cases: {:.3} ms\n", median(all));

    let r50 = resnet50();
    let n50: u64 = r50.iter().map(|l| l.params as u64).sum();
    let sens50 = synthetic(&r50, 50);
    let omega50 = OmegaTable::new(&r50, &sens50, OmegaConfig::default())?;
    println!(
        "Pareto on ResNet-50 shapes: {} layers, {n50} weights, {:.3} GMACs, w in {bits:?}, a = 8, {reps} runs each",
        r50.len(),
        r50.iter().map(|l| l.macs as f64).sum::<f64>() / 1e9
    );
    println!("| size budget | frontier points | median ms |\n| --- | --- | --- |");
    let cands50 = Candidates {
        w_bits: bits.clone(),
        a_bits: vec![8],
    };
    for avg in [3.0, 4.0, 6.0] {
        let budget = Budget {
            avg_bits: Some(avg),
            ..Default::default()
        };
        let mut space = SearchSpace::new(&r50, &cands50, &budget, None, &SearchOptions::default())?;
        space.set_omega(&omega50)?;
        let mut times = Vec::new();
        let mut points = 0;
        for _ in 0..reps {
            let t = Instant::now();
            let r = pareto(&space)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            points = r.frontier.points.len();
        }
        println!("| avg_bits {avg} | {points} | {:.2} |", median(times));
    }
    Ok(())
}
