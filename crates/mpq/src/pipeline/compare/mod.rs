//! `mpq compare`: does mixed precision pay on this model (docs/compare.md)? For every budget
//! and method it searches a plan, measures it after post-training quantization and after
//! fine-tuning with several seeds, draws random plans of the same budget, measures uniform
//! precision at the nearest cost within and above the budget, and writes the comparison
//! ([`crate::compare`]): `DIR/compare.json`, `DIR/compare.md` and a plot per cost axis.
//!
//! Every measurement is a cell file under `DIR/cells/` written atomically as soon as it is
//! done, with a key that digests what determined it; a rerun (after a crash, or with more
//! methods, budgets, seeds or random plans) measures only the cells that are missing or
//! whose key changed.

mod cells;
mod measure;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use self::cells::{Digest, Store};
use self::measure::Bench;
use super::{
    Analysis, AnalyzeRequest, BudgetSpec, FinetuneOptions, Method, MethodKind, SearchRequest,
};
use crate::compare::{Axis, BudgetInput, CompareFile, CompareInput, Setup, analyse};
use crate::cost::{CostTable, HardwareModel};
use crate::io::Versioned;
use crate::plan::{BitWidth, QuantPlan};
use crate::progress::Progress;
use crate::quant::CalibrationConfig;
use crate::search::Pin;
use crate::sensitivity::{Metric, SensitivityTable};
use crate::{Error, Result};

/// `mpq compare`.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRequest {
    /// What every search shares: the model, candidate bits, formats, pins, ties, hardware
    /// model, weight range and Ω options (its method, budget, sensitivity, seed and output
    /// are set per cell).
    pub template: SearchRequest,
    /// Data: the training split calibrates and fine-tunes, the test split measures.
    pub data: String,
    /// The methods, in the order of the tables (`random` draws [`Self::random_plans`]).
    pub methods: Vec<Method>,
    /// The budgets, each one limit.
    pub budgets: Vec<BudgetSpec>,
    /// Plans of the user's (`NAME`, policy file), compared at every budget they fit.
    pub plans: Vec<(String, PathBuf)>,
    /// A Hessian sensitivity file (`mpq analyze --metric all`); `None`: computed into
    /// `DIR/sensitivity.json` when a method or Ω needs it.
    pub sensitivity: Option<PathBuf>,
    /// LIMPQ's indicators (`mpq analyze --metric limpq`); `None`: trained into
    /// `DIR/limpq.json` when `limpq` is compared.
    pub indicators: Option<PathBuf>,
    /// Random plans per budget.
    pub random_plans: usize,
    /// Fine-tuning seeds per plan (0: post-training quantization only).
    pub seeds: usize,
    /// Fine-tuning (every layer at once; `epochs` ≥ 1 when `seeds` > 0).
    pub finetune: FinetuneOptions,
    /// Activation calibration.
    pub calibration: CalibrationConfig,
    /// Bootstrap resamples of every interval.
    pub resamples: usize,
    /// Seed of the searches, the random plans, the fine-tunings (`seed + s`) and the
    /// bootstrap.
    pub seed: u64,
    /// The output folder.
    pub out: PathBuf,
}

impl CompareRequest {
    /// Option combinations that cannot work, found before any file is read.
    pub fn validate(&self) -> Result<()> {
        if self.methods.is_empty() && self.plans.is_empty() {
            return Err(Error::Usage("--methods names no method".into()));
        }
        if self.budgets.is_empty() {
            return Err(Error::Usage(
                "give at least one budget (--avg-bits, --max-size-mb, --max-bops, --bops-as, \
                 --max-latency-ms or --max-energy-mj; comma lists for several)"
                    .into(),
            ));
        }
        for b in &self.budgets {
            budget_axis(b)?;
        }
        if self.seeds > 0 && self.finetune.epochs == 0 {
            return Err(Error::Usage(
                "--seeds needs --finetune-epochs of at least 1 (or --seeds 0 for post-training \
                 quantization only)"
                    .into(),
            ));
        }
        if self.resamples < 100 {
            return Err(Error::Usage("--resamples must be at least 100".into()));
        }
        let random = self.methods.iter().any(|m| m.kind() == MethodKind::Random);
        if random && self.random_plans == 0 {
            return Err(Error::Usage(
                "--method random needs --random-plans of at least 1".into(),
            ));
        }
        for (name, _) in &self.plans {
            if self.methods.iter().any(|m| m.name() == name) || name.starts_with("random-") {
                return Err(Error::Usage(format!(
                    "--plan {name}=…: the name is taken by a method; choose another"
                )));
            }
        }
        if self.out.is_file() {
            return Err(Error::config(
                "out",
                format!("{} is a file, not a folder", self.out.display()),
            ));
        }
        Ok(())
    }
}

/// What `mpq compare` measured and wrote.
#[derive(Debug, Clone)]
pub struct CompareOutcome {
    /// The comparison.
    pub file: CompareFile,
    /// Cells measured by this run.
    pub cells_run: usize,
    /// Cells kept from an earlier run.
    pub cells_reused: usize,
    /// `compare.json`, `compare.md` and the plots.
    pub written: Vec<PathBuf>,
    /// Seconds in all.
    pub seconds: f64,
}

/// The axis and limit of a one-limit budget.
fn budget_axis(b: &BudgetSpec) -> Result<(Axis, Option<f64>)> {
    let l = &b.limits;
    let mut found: Vec<(Axis, Option<f64>)> = Vec::new();
    let mut add = |axis, v: Option<f64>| {
        if let Some(v) = v {
            found.push((axis, Some(v)));
        }
    };
    add(Axis::AvgWBits, l.avg_bits);
    add(Axis::SizeMb, l.max_size_mb);
    add(Axis::Gbops, l.max_bops_g);
    add(Axis::LatencyMs, l.max_latency_ms);
    add(Axis::EnergyMj, l.max_energy_mj);
    if b.bops_as.is_some() {
        found.push((Axis::Gbops, None));
    }
    let others = [
        l.compression,
        l.size_ratio,
        l.bops_ratio,
        l.latency_ratio,
        l.energy_ratio,
    ];
    if others.iter().any(Option::is_some) || found.len() != 1 {
        return Err(Error::Usage(
            "each budget of mpq compare is one of --avg-bits, --max-size-mb, --max-bops, \
             --bops-as, --max-latency-ms, --max-energy-mj"
                .into(),
        ));
    }
    Ok(found[0])
}

/// A budget's folder name and its flags as a user writes them (with the candidate widths).
fn budget_names(b: &BudgetSpec, t: &SearchRequest) -> Result<(String, String)> {
    let (axis, v) = budget_axis(b)?;
    let num = |v: f64| format!("{v}");
    let (key, mut label) = match (axis, v, b.bops_as) {
        (Axis::Gbops, None, Some((w, a))) => {
            (format!("bops-as-{w}x{a}"), format!("--bops-as {w}/{a}"))
        }
        (Axis::AvgWBits, Some(v), _) => (
            format!("avg-bits-{}", num(v)),
            format!("--avg-bits {}", num(v)),
        ),
        (Axis::SizeMb, Some(v), _) => (
            format!("size-mb-{}", num(v)),
            format!("--max-size-mb {}", num(v)),
        ),
        (Axis::Gbops, Some(v), _) => (
            format!("gbops-{}", num(v)),
            format!("--max-bops {}", num(v)),
        ),
        (Axis::LatencyMs, Some(v), _) => (
            format!("latency-ms-{}", num(v)),
            format!("--max-latency-ms {}", num(v)),
        ),
        (Axis::EnergyMj, Some(v), _) => (
            format!("energy-mj-{}", num(v)),
            format!("--max-energy-mj {}", num(v)),
        ),
        _ => return Err(Error::Usage("a budget without a limit".into())),
    };
    let list = |v: &[BitWidth]| {
        v.iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    if let Some(w) = &t.w_bits {
        label.push_str(&format!(" --w-bits {}", list(w)));
    }
    if let Some(a) = &t.a_bits {
        label.push_str(&format!(" --a-bits {}", list(a)));
    }
    if let Some(f) = &t.formats {
        let f: Vec<String> = f.iter().map(|(w, a)| format!("{w}/{a}")).collect();
        label.push_str(&format!(" --formats {}", f.join(",")));
    }
    Ok((key, label))
}

/// The searched layers' common `(w, a)`, when they share one.
fn uniform_bits(
    plan: &QuantPlan,
    pins: &[Pin],
    layers: &[crate::graph::LayerInfo],
) -> Option<(BitWidth, BitWidth)> {
    let pinned: BTreeSet<usize> = pins
        .iter()
        .filter_map(|p| p.layer_index(layers).ok())
        .collect();
    let mut bits = (layers.iter().enumerate())
        .filter(|(i, _)| !pinned.contains(i))
        .map(|(_, l)| {
            plan.precision(&l.name)
                .map(|p| (p.w_bits, p.a_bits, p.channel_w_bits.is_some()))
        });
    let first = bits.next()??;
    if first.2 {
        return None;
    }
    bits.all(|b| b == Some(first)).then_some((first.0, first.1))
}

/// Runs the comparison of `req` into `req.out`, measuring only the cells not already there.
pub fn compare(req: &CompareRequest, progress: &mut dyn Progress) -> Result<CompareOutcome> {
    let started = Instant::now();
    req.validate()?;
    let t = &req.template;
    let mut inputs: Vec<(&str, &Path)> = Vec::new();
    inputs.extend(super::model_file(&t.model).map(|m| ("model", m)));
    inputs.extend(req.sensitivity.as_deref().map(|p| ("sensitivity file", p)));
    inputs.extend(req.indicators.as_deref().map(|p| ("indicator file", p)));
    inputs.extend(req.plans.iter().map(|(_, p)| ("plan", p.as_path())));
    let outputs: Vec<PathBuf> = ["compare.json", "compare.md"]
        .iter()
        .map(|f| req.out.join(f))
        .collect();
    let outputs: Vec<&Path> = std::iter::once(req.out.as_path())
        .chain(outputs.iter().map(PathBuf::as_path))
        .collect();
    crate::outputs::refuse_overwrite(&inputs, &outputs)?;
    std::fs::create_dir_all(&req.out).map_err(|e| Error::io(&req.out, e))?;
    let (model, splits) = super::open_with_data(&t.model, &req.data, req.seed)?;
    let layers = model.graph.layer_infos()?;
    let norm = model.normalization_or(&splits.normalization);
    let fp = crate::train::evaluate(
        &model.graph,
        &splits.test,
        &norm,
        256,
        &mut crate::graph::NoHooks,
    )?;
    let hardware = t
        .hardware
        .as_deref()
        .map(HardwareModel::from_reference)
        .transpose()?;

    // The sensitivity files: given, or computed once into the folder.
    let needs = |k: &[MethodKind]| req.methods.iter().any(|m| k.contains(&m.kind()));
    use MethodKind as K;
    let hessian = needs(&[
        K::HawqV1,
        K::Pareto,
        K::Ilp,
        K::CwHawq,
        K::CwIlp,
        K::Random,
        K::Uniform,
    ]);
    let sens_path = match (&req.sensitivity, hessian) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(analysed(
            req,
            Analysis::hessian(Metric::All),
            "sensitivity.json",
            splits.train.len(),
            progress,
        )?),
        (None, false) => None,
    };
    let ind_path = match (&req.indicators, needs(&[K::Limpq])) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => {
            // The paper's widths and every candidate of the comparison (8-bit activations
            // of weight-only budgets need their own indicators).
            let mut config = crate::sensitivity::learned::LimpqConfig {
                seed: req.seed,
                ..Default::default()
            };
            let given = [&t.w_bits, &t.a_bits];
            config
                .bits
                .extend(given.into_iter().flatten().flatten().copied());
            config.bits.retain(|&b| b != crate::plan::FULL_PRECISION);
            config.bits.sort_by(|a, b| b.cmp(a));
            config.bits.dedup();
            let analysis = Analysis::Limpq {
                config,
                label_smoothing: None,
            };
            Some(analysed(
                req,
                analysis,
                "limpq.json",
                splits.train.len(),
                progress,
            )?)
        }
        (None, false) => None,
    };
    let omega = match &sens_path {
        Some(p) => {
            let s = SensitivityTable::load(p)?;
            measure::trace_omega(&model, &layers, &s, t.weight_range, t.omega.act_weight).ok()
        }
        None => None,
    };
    let bench = Bench {
        model: &model,
        layers: layers.clone(),
        splits: &splits,
        norm,
        calibration: req.calibration.clone(),
        finetune: req.finetune.clone(),
        hardware,
        omega,
    };
    let digest = Digest::new(req, sens_path.as_ref())?;
    let mut store = Store::new(
        &req.out,
        &bench,
        digest,
        req.seeds,
        req.seed,
        t.pins.clone(),
    );

    // 1. Every budget's plans: the methods', the user's, the random ones.
    let mut budgets = Vec::new();
    let mut uniform_pairs: BTreeSet<(BitWidth, BitWidth)> = BTreeSet::new();
    let mut uniform_method: Vec<(usize, usize, (BitWidth, BitWidth))> = Vec::new();
    for (bi, b) in req.budgets.iter().enumerate() {
        let (axis, _) = budget_axis(b)?;
        let (key, label) = budget_names(b, t)?;
        let limit = budget_limit(&bench, b, &t.pins)?;
        let mut methods = Vec::new();
        let mut random = Vec::new();
        for m in &req.methods {
            if m.kind() == MethodKind::Random {
                let s = search_request(req, m, b, &sens_path, &ind_path);
                let mut seen = Vec::new();
                for i in 0..req.random_plans {
                    let ks = if i < req.seeds { i..i + 1 } else { 0..0 };
                    random.push(store.random(&key, i, &s, &mut seen, ks, progress)?);
                }
                continue;
            }
            let s = search_request(req, m, b, &sens_path, &ind_path);
            let mp = store.searched(&key, m.name(), &s, 0..0, progress)?;
            if m.kind() == MethodKind::Uniform
                && let Some(wa) = mp.cell.uniform_bits
            {
                uniform_pairs.insert(wa);
                uniform_method.push((bi, methods.len(), wa));
            }
            methods.push(mp);
        }
        for (name, path) in &req.plans {
            methods.push(store.given(&key, name, path, (axis, limit), progress)?);
        }
        uniform_pairs.extend(neighbour_pairs(&bench, req, axis, limit)?);
        budgets.push(BudgetInput {
            key,
            label,
            axis,
            limit,
            methods,
            random,
        });
    }

    // 2. Uniform precision around every budget, shared between budgets.
    let mut uniform = Vec::new();
    for &(w, a) in &uniform_pairs {
        let mut s = SearchRequest::new(t.model.clone(), Method::Uniform);
        (s.w_bits, s.a_bits) = (Some(vec![w]), Some(vec![a]));
        (s.pins, s.ties, s.weight_range) = (t.pins.clone(), t.ties.clone(), t.weight_range);
        s.sensitivity = sens_path.clone();
        s.omega = t.omega;
        let name = format!("w{w}a{a}");
        uniform.push(store.searched("uniform", &name, &s, 0..req.seeds, progress)?);
    }
    // The `uniform` method's plan is one of them: measured once.
    for (bi, mi, (w, a)) in uniform_method {
        let name = format!("w{w}a{a}");
        if let Some(u) = uniform.iter().find(|u| u.cell.name == name) {
            let m = &mut budgets[bi].methods[mi];
            m.finetuned = u.finetuned.clone();
            m.cell.ptq = u.cell.ptq.clone();
        }
    }

    // 3. Fine-tune the methods' plans (the references were above, the random ones as drawn).
    for b in &mut budgets {
        for m in &mut b.methods {
            if m.cell.error.is_none() && m.finetuned.is_empty() {
                store.finetune_all(m, progress)?;
            }
        }
    }

    let input = CompareInput {
        setup: Setup {
            model: t.model.reference.clone(),
            arch: model.meta.arch.clone(),
            data: req.data.clone(),
            fp32_accuracy: fp.accuracy,
            fp32_loss: fp.loss,
            seeds: req.seeds,
            finetune_epochs: if req.seeds > 0 {
                req.finetune.epochs
            } else {
                0
            },
            random_plans: if needs(&[K::Random]) {
                req.random_plans
            } else {
                0
            },
            resamples: req.resamples,
        },
        seed: req.seed,
        budgets,
        uniform,
    };
    let file = analyse(&input)?;
    let mut files = vec![
        (req.out.join("compare.json"), file.to_bytes()?),
        (
            req.out.join("compare.md"),
            crate::compare::markdown(&file).into_bytes(),
        ),
    ];
    for (id, svg) in crate::report::compare_charts(&file) {
        files.push((req.out.join(format!("compare-{id}.svg")), svg.into_bytes()));
    }
    // compare.json last: the file the report reads is on disk only with its pictures and
    // markdown beside it.
    files.rotate_left(1);
    crate::io::write_files_atomic(&files)?;
    files.rotate_right(1);
    Ok(CompareOutcome {
        file,
        cells_run: store.run,
        cells_reused: store.reused,
        written: files.into_iter().map(|f| f.0).collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Runs `analysis` into `DIR/name` unless the file is there (a Hessian analysis on one batch
/// of at most 128 training samples, as `mpq analyze` by default).
fn analysed(
    req: &CompareRequest,
    mut analysis: Analysis,
    name: &str,
    train_samples: usize,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    let out = req.out.join(name);
    if out.is_file() {
        progress.note(&format!("reusing {}", out.display()));
        return Ok(out);
    }
    if let Analysis::Hessian { config, sample, .. } = &mut analysis {
        config.seed = req.seed;
        sample.seed = req.seed;
        sample.batch_size = sample.batch_size.min(train_samples.max(1));
    }
    progress.note(&format!("analysing the model into {}", out.display()));
    super::analyze(
        &AnalyzeRequest {
            model: req.template.model.clone(),
            data: req.data.clone(),
            analysis,
            seed: req.seed,
            out: out.clone(),
        },
        progress,
    )?;
    Ok(out)
}

/// The search of method `m` at budget `b`.
fn search_request(
    req: &CompareRequest,
    m: &Method,
    b: &BudgetSpec,
    sens: &Option<PathBuf>,
    ind: &Option<PathBuf>,
) -> SearchRequest {
    let mut s = req.template.clone();
    s.method = m.clone();
    s.budget = b.clone();
    s.seed = req.seed;
    s.sensitivity = match m.kind() {
        MethodKind::Limpq => ind.clone(),
        _ => sens.clone(),
    };
    if let Some(a) = m.agent() {
        let mut a = a.clone();
        a.data = req.data.clone();
        s.method = match &s.method {
            Method::Haq(h) => Method::Haq(super::HaqOptions {
                agent: a,
                ..h.clone()
            }),
            _ => Method::CwHawq(a),
        };
    }
    if m.channel_wise() && req.template.a_bits.as_ref().is_some_and(|a| a.len() > 1) {
        // CW-HAWQ searches weights only: one activation width, the highest given.
        s.a_bits = req
            .template
            .a_bits
            .as_ref()
            .and_then(|a| a.iter().max())
            .map(|&a| vec![a]);
    }
    if !m.takes_formats() {
        s.formats = None;
    }
    s
}

/// The uniform plan of `(w, a)` with the user's pins.
fn uniform_plan(bench: &Bench, (w, a): (BitWidth, BitWidth), pins: &[Pin]) -> Result<QuantPlan> {
    let mut plan = QuantPlan::uniform(&bench.layers, w, a);
    for p in pins {
        let l = &mut plan.layers[p.layer_index(&bench.layers)?];
        (l.w_bits, l.a_bits) = (p.w_bits, p.a_bits);
    }
    Ok(plan)
}

/// The budget's limit on its axis (`--bops-as`: the uniform plan's BitOps with the user's pins).
fn budget_limit(bench: &Bench, b: &BudgetSpec, pins: &[Pin]) -> Result<f64> {
    let (_, v) = budget_axis(b)?;
    match (v, b.bops_as) {
        (Some(v), _) => Ok(v),
        (None, Some(wa)) => {
            let plan = uniform_plan(bench, wa, pins)?;
            Ok(CostTable::new(&bench.layers, &plan)?.bops / 1e9)
        }
        _ => Err(Error::Usage("a budget without a limit".into())),
    }
}

/// The uniform `(w, a)` pairs at the highest cost within `limit` and the lowest above it
/// (every pair tied at either).
fn neighbour_pairs(
    bench: &Bench,
    req: &CompareRequest,
    axis: Axis,
    limit: f64,
) -> Result<Vec<(BitWidth, BitWidth)>> {
    let t = &req.template;
    let pairs: Vec<(BitWidth, BitWidth)> = match &t.formats {
        Some(f) => f.clone(),
        None => {
            let w = t.w_bits.clone().unwrap_or_else(|| vec![2, 3, 4, 5, 6, 8]);
            let a = t.a_bits.clone().unwrap_or_else(|| vec![4, 8]);
            w.iter()
                .flat_map(|&w| a.iter().map(move |&a| (w, a)))
                .collect()
        }
    };
    let mut costed = Vec::new();
    for wa in pairs {
        let c = bench.costs(&uniform_plan(bench, wa, &t.pins)?)?.on(axis);
        if c.is_finite() {
            costed.push((c, wa));
        }
    }
    let tol = 1e-9 * limit.abs().max(1e-12);
    let below = costed
        .iter()
        .filter(|c| c.0 <= limit + tol)
        .map(|c| c.0)
        .fold(f64::NAN, f64::max);
    let above = costed
        .iter()
        .filter(|c| c.0 > limit + tol)
        .map(|c| c.0)
        .fold(f64::NAN, f64::min);
    Ok(costed
        .into_iter()
        .filter(|(c, _)| (c - below).abs() <= tol || (c - above).abs() <= tol)
        .map(|(_, wa)| wa)
        .collect())
}
