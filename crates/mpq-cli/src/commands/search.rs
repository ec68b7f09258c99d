//! `mpq search`: writes a policy (QuantPlan JSON) that meets a budget. Every method first runs
//! the feasibility pre-flight (the smallest achievable value of each budget, layers that pins
//! and ties leave without a choice); an infeasible request exits 2 with that report and writes
//! nothing. Methods: `uniform`, `random`, `hawq-v1` (HAWQ), `pareto` (HAWQ-V2, plus the whole
//! frontier as `OUT.frontier.json` and `OUT.frontier.svg`), `ilp` (HAWQ-V3), `limpq` (LIMPQ's
//! learned indicators through the same integer program), `haq` (HAQ, in [`super::haq`]: the
//! history in the policy, `OUT.curve.svg`, `OUT.haq-state.json`) and `cw-hawq` / `cw-ilp`
//! (CW-HAWQ's per-channel bits, in [`super::cw_hawq`]).

use std::collections::BTreeSet;
use std::path::Path;

use mpq::QuantPlan;
use mpq::cost::{HardwareModel, HwTable};
use mpq::graph::LayerInfo;
use mpq::model::Model;
use mpq::plan::{FULL_PRECISION, LayerPrecision, WeightRange};
use mpq::quant::weight_error;
use mpq::search::{
    self, Budget, Candidates, Feasibility, OmegaConfig, OmegaMetric, OmegaTable, Pin,
    SearchOptions, SearchSpace, Sensitivities, limpq::Indicators,
};
use serde::Serialize;

use crate::args::{
    GlobalArgs, MethodArg, OmegaMetricArg, SearchArgs, UsageError, WeightQuantizerArg,
};
use crate::output::{self, Table, thousands};

/// What a method produced besides the plan.
enum Extra {
    None,
    Frontier {
        json: serde_json::Value,
        svg: String,
        points: usize,
        chosen: usize,
    },
    Solver(search::IlpStats),
    Limpq(search::IlpStats, serde_json::Value),
    Haq(Box<mpq::search::haq::HaqResult>),
    /// CW-HAWQ's result and its agent's warm-up episodes.
    Cw(Box<mpq::search::CwResult>, usize),
}

pub(crate) fn run(g: &GlobalArgs, a: &SearchArgs) -> anyhow::Result<()> {
    check_usage(a)?;
    let model = super::open_model(&a.model, g.seed)?;
    let layers = model.graph.layer_infos()?;
    let hw = a
        .hardware
        .as_deref()
        .map(HardwareModel::from_reference)
        .transpose()?;
    let indicators = match (a.method, &a.sensitivity) {
        (MethodArg::Limpq, Some(path)) => Some(Indicators::load(path)?),
        _ => None,
    };
    let cands = candidates(a, indicators.as_ref());
    let mut opts = search_options(a)?;
    if let Some(ind) = &indicators {
        let given: Vec<String> = opts.pins.iter().map(|p| p.layer.clone()).collect();
        let fixed = ind.pins(&layers)?;
        let last = layers.len().saturating_sub(1);
        opts.pins.extend(fixed.into_iter().filter(|p| {
            let i = layers.iter().position(|l| l.name == p.layer);
            !given.iter().any(|g| {
                *g == p.layer || (g == "first" && i == Some(0)) || (g == "last" && i == Some(last))
            })
        }));
    }
    let max_bops = match &a.bops_as {
        Some(wa) => Some(uniform_bops(&layers, wa, &opts)? / 1e9),
        None => a.max_bops,
    };
    let budget = Budget {
        avg_bits: a.avg_bits,
        max_size_mb: a.max_size_mb,
        compression: a.compression,
        max_bops_g: max_bops,
        max_latency_ms: a.max_latency_ms,
        max_energy_mj: a.max_energy_mj,
    };
    let mut space = SearchSpace::new(&layers, &cands, &budget, hw.as_ref(), &opts)?;

    // Pre-flight before any expensive work (weight errors, the search itself).
    let feasibility = space.feasibility();
    if let Err(e) = feasibility.check() {
        return Err(anyhow::Error::new(e).context(preflight_report(&feasibility, &opts)));
    }
    if !feasibility.budgets.is_empty() {
        output::status(g.quiet, &feasibility.to_string());
    }

    let channels = match (&a.sensitivity, a.method.channel_wise()) {
        (Some(path), true) => Some(super::cw_hawq::channel_table(
            &model,
            &layers,
            path,
            &cands,
            a.weight_range.range(),
        )?),
        _ => None,
    };
    let omega = match &a.sensitivity {
        Some(_) if indicators.is_some() => None,
        Some(_) if a.method.channel_wise() => None,
        Some(path) => {
            let metric = match a.omega_metric {
                Some(OmegaMetricArg::Trace) => OmegaMetric::Trace,
                Some(OmegaMetricArg::Eigen) => OmegaMetric::Eigen,
                None if a.method == MethodArg::HawqV1 => OmegaMetric::Eigen,
                None => OmegaMetric::Trace,
            };
            let cfg = OmegaConfig {
                metric,
                act_weight: a.act_weight,
            };
            Some(omega_table(
                &model,
                &layers,
                path,
                &cands,
                &opts,
                cfg,
                a.weight_range.range(),
            )?)
        }
        None => None,
    };
    if let Some(o) = &omega {
        space.set_omega(o)?;
    }
    if let Some(ind) = &indicators {
        search::limpq::set_limpq_omega(&mut space, ind, a.alpha)?;
    }

    let (mut plan, extra) = match a.method {
        MethodArg::Uniform => (space.uniform()?, Extra::None),
        MethodArg::Random => (space.random(g.seed, a.max_tries)?, Extra::None),
        MethodArg::HawqV1 => {
            let o = omega
                .as_ref()
                .expect("check_usage should have required --sensitivity for hawq-v1");
            (search::hawq_v1(&space, o)?, Extra::None)
        }
        MethodArg::Pareto => {
            let r = search::pareto(&space)?;
            let extra = Extra::Frontier {
                json: r.to_json(&space),
                svg: r.svg(),
                points: r.frontier.points.len(),
                chosen: r.chosen,
            };
            (r.plan, extra)
        }
        MethodArg::Ilp => {
            let (plan, stats) = search::ilp(&space)?;
            (plan, Extra::Solver(stats))
        }
        MethodArg::Haq => {
            let r = super::haq::search(g, a, &model, &space)?;
            (r.plan.clone(), Extra::Haq(Box::new(r)))
        }
        MethodArg::Limpq => {
            let ind = indicators
                .as_ref()
                .expect("check_usage should have required --sensitivity for limpq");
            let (plan, stats) = search::limpq::limpq(&space)?;
            let info = limpq_info(ind, &plan, a.alpha);
            (plan, Extra::Limpq(stats, info))
        }
        MethodArg::CwHawq | MethodArg::CwIlp => {
            let table = channels
                .as_ref()
                .expect("check_usage should have required --sensitivity for cw methods");
            if a.method == MethodArg::CwIlp {
                if a.ratio_grid == 0 {
                    return Err(UsageError("--ratio-grid must be at least 1".into()).into());
                }
                (search::cw_ilp(&space, table, a.ratio_grid)?, Extra::None)
            } else {
                let r = super::cw_hawq::search(g, a, &model, &space, table)?;
                (r.plan.clone(), Extra::Cw(Box::new(r), a.haq.warmup))
            }
        }
    };

    if a.method != MethodArg::Limpq {
        for l in &mut plan.layers {
            l.weight_range = a.weight_range.range();
        }
    }
    let hw_table = hw.as_ref().map(|h| h.table(&layers, &plan)).transpose()?;
    let policy = policy_file(&plan, &extra, &a.out);
    // The policy first: if its path cannot be written (a folder, say), nothing is.
    let mut files = vec![(a.out.clone(), pretty(&policy)?)];
    if let Extra::Frontier { json, svg, .. } = &extra {
        let mut frontier = json.clone();
        if let serde_json::Value::Object(m) = &mut frontier {
            m.insert("model".into(), a.model.model.clone().into());
            m.insert("constraints".into(), plan.constraints.clone());
            m.insert("policy".into(), a.out.display().to_string().into());
        }
        files.push((
            super::side_path(&a.out, "frontier.json"),
            pretty(&frontier)?,
        ));
        files.push((
            super::side_path(&a.out, "frontier.svg"),
            svg.as_bytes().to_vec(),
        ));
    }
    let agent = [(&policy.haq, "HAQ"), (&policy.cw_hawq, "CW-HAWQ")];
    for (section, title) in agent {
        if let Some(svg) = section
            .as_ref()
            .and_then(|sec| mpq::report::agent_curve(sec, title))
        {
            files.push((super::side_path(&a.out, "curve.svg"), svg.into_bytes()));
        }
    }
    super::write_files_atomic(&files)?;

    if g.json {
        return output::json(&Printed {
            policy: &policy,
            out: a.out.display().to_string(),
            preflight: &feasibility,
        });
    }
    let limpq = indicators.as_ref().map(|i| (i, a.alpha));
    print_human(
        a,
        &layers,
        &plan,
        (omega.as_ref(), limpq),
        hw_table.as_ref(),
        &extra,
    )
}

/// BOPs of the plan with every layer at `W/A` bits but the pinned ones (at their pins).
fn uniform_bops(layers: &[LayerInfo], wa: &str, opts: &SearchOptions) -> anyhow::Result<f64> {
    let bad = || {
        mpq::Error::config(
            "bops-as",
            format!("expected W/A bits (2..8 or 32), e.g. 3/4, got {wa:?}"),
        )
    };
    let p = Pin::parse(&format!("x={wa}")).map_err(|_| bad())?;
    let last = layers.len().saturating_sub(1);
    let mut plan = QuantPlan::uniform(layers, p.w_bits, p.a_bits);
    for (i, l) in plan.layers.iter_mut().enumerate() {
        if let Some(pin) = opts.pins.iter().find(|q| {
            q.layer == l.name || (q.layer == "first" && i == 0) || (q.layer == "last" && i == last)
        }) {
            l.w_bits = pin.w_bits;
            l.a_bits = pin.a_bits;
        }
    }
    Ok(mpq::cost::CostTable::new(layers, &plan)?.bops)
}

/// The `limpq` object of the policy: alpha, the cleaning's bans, and any banned width the
/// budget forced the plan to use.
fn limpq_info(ind: &Indicators, plan: &QuantPlan, alpha: f64) -> serde_json::Value {
    let bans: Vec<String> = ind
        .layers()
        .flat_map(|(n, l)| l.bans.iter().map(move |b| format!("{n}: {b}")))
        .collect();
    let forced: Vec<String> = ind
        .layers()
        .filter_map(|(n, l)| {
            let (w, a) = plan.bits(n);
            (l.banned_w_bits.contains(&w) || l.banned_a_bits.contains(&a))
                .then(|| format!("{n}: W{w}A{a}"))
        })
        .collect();
    serde_json::json!({
        "alpha": alpha,
        "bans": bans,
        "banned_choices_used": forced,
    })
}

/// The candidate sets: the flags, or the method's defaults (HAQ: every width 2..8, and
/// weights only with the k-means quantizer; LIMPQ: the trained widths).
fn candidates(a: &SearchArgs, ind: Option<&Indicators>) -> Candidates {
    if let Some(ind) = ind {
        let (w, act) = ind.candidates();
        return Candidates {
            w_bits: a.w_bits.clone().unwrap_or(w),
            a_bits: a.a_bits.clone().unwrap_or(act),
        };
    }
    let haq = a.method == MethodArg::Haq;
    let kmeans = haq && a.haq.weight_quantizer == WeightQuantizerArg::Kmeans;
    let w_default: Vec<u32> = if haq {
        (2..=8).collect()
    } else if a.method.channel_wise() {
        vec![2, 4, 8]
    } else {
        vec![2, 3, 4, 5, 6, 8]
    };
    let a_default: Vec<u32> = match (haq, kmeans) {
        (true, true) => vec![FULL_PRECISION],
        (true, false) => (2..=8).collect(),
        _ if a.method.channel_wise() => vec![8],
        _ => vec![4, 8],
    };
    Candidates {
        w_bits: a.w_bits.clone().unwrap_or(w_default),
        a_bits: a.a_bits.clone().unwrap_or(a_default),
    }
}

/// Usage problems found before any file is read.
fn check_usage(a: &SearchArgs) -> anyhow::Result<()> {
    if a.method.agent() && a.haq.data.is_none() {
        return Err(UsageError(format!(
            "--method {} needs --data (plans are scored on a split held out of its training \
             data)",
            a.method.name()
        ))
        .into());
    }
    if a.method != MethodArg::Haq && a.haq.resume {
        return Err(UsageError("--resume applies to --method haq only".into()).into());
    }
    if a.method.needs_sensitivity() && a.sensitivity.is_none() {
        let metric = match a.method {
            MethodArg::HawqV1 => "eigen",
            MethodArg::Limpq => "limpq",
            MethodArg::CwHawq | MethodArg::CwIlp => "channel-trace",
            _ => "trace",
        };
        return Err(UsageError(format!(
            "--method {} needs --sensitivity S.json (write one with `mpq analyze --metric {metric} \
             --out S.json`)",
            a.method.name()
        ))
        .into());
    }
    for (flag, v) in [
        ("--max-latency-ms", a.max_latency_ms),
        ("--max-energy-mj", a.max_energy_mj),
    ] {
        if v.is_some() && a.hardware.is_none() {
            return Err(UsageError(format!(
                "{flag} needs a hardware model: --hardware bitfusion|bismo|PATH.toml|PATH.csv"
            ))
            .into());
        }
    }
    Ok(())
}

/// Pins (`--pin`, `--pin-first-last`) and ties (`--tie`).
fn search_options(a: &SearchArgs) -> anyhow::Result<SearchOptions> {
    let mut pins = a
        .pin
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| Pin::parse(s))
        .collect::<mpq::Result<Vec<_>>>()?;
    if let Some(bits) = &a.pin_first_last {
        for end in ["first", "last"] {
            pins.push(Pin::parse(&format!("{end}={bits}")).map_err(|_| {
                mpq::Error::config(
                    "pin-first-last",
                    format!("expected W or W/A bits (2..8 or 32), got {bits:?}"),
                )
            })?);
        }
    }
    let ties = a
        .tie
        .iter()
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    let quantizer = match a.method {
        MethodArg::Haq => super::haq::quantizer(a),
        MethodArg::Limpq => mpq::plan::QuantizerKind::Lsq,
        _ => mpq::plan::QuantizerKind::Symmetric,
    };
    Ok(SearchOptions {
        pins,
        ties,
        quantizer,
    })
}

/// The pre-flight report as the context of an infeasible request.
fn preflight_report(f: &Feasibility, opts: &SearchOptions) -> String {
    let mut s = String::from("the request is infeasible (feasibility pre-flight):");
    for b in &f.budgets {
        let (word, status) = match (b.relation == ">=", b.feasible) {
            (true, true) => ("largest", "ok"),
            (true, false) => ("largest", "CANNOT BE MET"),
            (false, true) => ("smallest", "ok"),
            (false, false) => ("smallest", "CANNOT BE MET"),
        };
        s.push_str(&format!(
            "\n  {} {} {}: {word} feasible value {:.6} ({status})",
            b.budget, b.relation, b.limit, b.best
        ));
    }
    if !f.empty_layers.is_empty() {
        s.push_str(&format!(
            "\n  layers with no allowed candidate (pins and ties conflict): {}",
            f.empty_layers.join(", ")
        ));
    }
    let fixed = if opts.pins.is_empty() && opts.ties.is_empty() {
        ""
    } else {
        ", with the pins and ties given"
    };
    s.push_str(&format!(
        "\n  (smallest candidates: w-bits {}, a-bits {}{fixed})",
        f.w_min, f.a_min
    ));
    s
}

/// Ω of the sensitivity table at `path`, with `‖Q_b(W) − W‖²` computed from the model's
/// weights for every needed bit-width the table does not give.
fn omega_table(
    model: &Model,
    layers: &[LayerInfo],
    path: &Path,
    cands: &Candidates,
    opts: &SearchOptions,
    cfg: OmegaConfig,
    range: WeightRange,
) -> anyhow::Result<OmegaTable> {
    let mut sens = Sensitivities::load(path)?;
    let bits: BTreeSet<u32> = cands
        .w_bits
        .iter()
        .copied()
        .chain(opts.pins.iter().map(|p| p.w_bits))
        .filter(|&b| b != FULL_PRECISION)
        .collect();
    let mut missing: Vec<(String, Vec<u32>)> = Vec::new();
    for row in &sens.layers {
        if !layers.iter().any(|l| l.name == row.name) {
            continue; // OmegaTable::new reports it as an unknown layer.
        }
        let need: Vec<u32> = bits
            .iter()
            .copied()
            .filter(|&b| row.weight_error_at(b).is_none())
            .collect();
        if !need.is_empty() {
            missing.push((row.name.clone(), need));
        }
    }
    if !missing.is_empty() && model.quantized.is_some() {
        return Err(UsageError(format!(
            "{} has no weight_error for layer {} and the model is already quantized (a packed \
             file): give the float model, or per-bit weight_error entries in the sensitivity JSON",
            path.display(),
            missing[0].0
        ))
        .into());
    }
    for (name, need) in missing {
        for (b, e) in weight_errors(model, &name, &need, range)? {
            sens.set_weight_error(&name, b, e);
        }
    }
    Ok(OmegaTable::new(layers, &sens, cfg)?)
}

/// `‖Q_b(W) − W‖²` of `layer` for each of `bits`, with the quantizer a searched plan uses
/// (symmetric, per output channel, with `range`'s scale rule), on the unfolded weights whose
/// Hessian `mpq analyze` measured ([`mpq::quant::weight_error`]).
fn weight_errors(
    model: &Model,
    layer: &str,
    bits: &[u32],
    range: WeightRange,
) -> mpq::Result<Vec<(u32, f64)>> {
    let w = model
        .graph
        .params()
        .var(&format!("{layer}.weight"))?
        .as_tensor();
    bits.iter()
        .map(|&b| {
            let p = LayerPrecision {
                weight_range: range,
                ..LayerPrecision::new(layer, b, 8)
            };
            Ok((b, weight_error(w, &p)?))
        })
        .collect()
}

/// The policy file: the plan, plus the solver statistics (ilp) or where the frontier went
/// (pareto). Loads back as a [`QuantPlan`] (extra fields are ignored).
#[derive(Serialize)]
struct PolicyFile<'a> {
    #[serde(flatten)]
    plan: &'a QuantPlan,
    #[serde(skip_serializing_if = "Option::is_none")]
    solver: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frontier: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    haq: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limpq: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cw_hawq: Option<serde_json::Value>,
}

/// `--json` output: the policy file plus where it went and the pre-flight report.
#[derive(Serialize)]
struct Printed<'a> {
    #[serde(flatten)]
    policy: &'a PolicyFile<'a>,
    out: String,
    preflight: &'a Feasibility,
}

fn policy_file<'a>(plan: &'a QuantPlan, extra: &Extra, out: &Path) -> PolicyFile<'a> {
    let mut file = PolicyFile {
        plan,
        solver: None,
        frontier: None,
        haq: None,
        limpq: None,
        cw_hawq: None,
    };
    let name = |suffix: &str| {
        super::side_path(out, suffix)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match extra {
        Extra::None => {}
        Extra::Cw(r, warmup) => {
            file.cw_hawq = Some(super::cw_hawq::policy_section(
                r,
                *warmup,
                &name("curve.svg"),
            ));
        }
        Extra::Haq(r) => {
            let h = &r.history;
            let best = h.best_episode.and_then(|b| h.episodes.get(b));
            file.haq = Some(serde_json::json!({
                "fp_accuracy": h.fp_accuracy,
                "best_episode": h.best_episode,
                "best_accuracy": best.map(|b| b.accuracy),
                "best_reward": best.map(|b| b.reward),
                "episodes": h.episodes.len(),
                "steps_per_episode": h.steps_per_episode,
                "evaluations_seconds": r.eval_seconds,
                "resumed_episodes": r.resumed_episodes,
                "state": name("haq-state.json"),
                "curve": name("curve.svg"),
                "settings": h.settings,
                "history": h.episodes,
            }));
        }
        Extra::Solver(s) => file.solver = Some(solver_json(s)),
        Extra::Limpq(s, info) => {
            file.solver = Some(solver_json(s));
            file.limpq = Some(info.clone());
        }
        Extra::Frontier { points, chosen, .. } => {
            file.frontier = Some(serde_json::json!({
                "points": points,
                "chosen": chosen,
                "json": name("frontier.json"),
                "svg": name("frontier.svg"),
            }));
        }
    }
    file
}

fn solver_json(s: &search::IlpStats) -> serde_json::Value {
    serde_json::json!({
        "name": "mckp-branch-and-bound",
        "nodes": s.nodes,
        "proven_optimal": s.proven_optimal,
    })
}

fn pretty<T: Serialize>(v: &T) -> anyhow::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(v)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// A number with four significant digits (scientific when small or large).
pub(crate) fn num(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if (1e-3..1e5).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.3e}")
    }
}

fn print_human(
    a: &SearchArgs,
    layers: &[LayerInfo],
    plan: &QuantPlan,
    (omega, limpq): (Option<&OmegaTable>, Option<(&Indicators, f64)>),
    hw: Option<&HwTable>,
    extra: &Extra,
) -> anyhow::Result<()> {
    let mut header = vec!["layer", "params", "w_bits", "a_bits"];
    let per_channel = plan.layers.iter().any(|l| l.channel_w_bits.is_some());
    if per_channel {
        header.push("channels (bits:count)");
    }
    if omega.is_some() {
        header.push("omega");
    }
    if limpq.is_some() {
        header.push("importance");
    }
    if hw.is_some() {
        header.extend(["latency_ms", "energy_mj"]);
    }
    let mut t = Table::new(&header);
    for (i, l) in layers.iter().enumerate() {
        let (w, act) = plan.bits(&l.name);
        let mut row = vec![
            l.name.clone(),
            thousands(l.params as u64),
            w.to_string(),
            act.to_string(),
        ];
        if per_channel {
            row.push(
                plan.layers
                    .iter()
                    .find(|p| p.name == l.name)
                    .and_then(super::cw_hawq::channel_summary)
                    .unwrap_or_else(|| "-".into()),
            );
        }
        if let Some(o) = omega {
            row.push(if o.has_row(i) {
                num(o.omega(i, w, act)?)
            } else {
                "-".into()
            });
        }
        if let Some((ind, alpha)) = limpq {
            row.push(ind.cost(&l.name, w, act, alpha)?.map_or("-".into(), num));
        }
        if let Some(h) = hw {
            let r = &h.layers[i];
            row.push(num(r.latency_ms));
            row.push(r.energy_mj.map_or("-".into(), num));
        }
        t.row(row);
    }
    t.print()?;
    let mut summary = format!(
        "\n{}: {} bytes, {:.3} average weight bits, {:.4} GBOPs",
        plan.method,
        plan.size_bytes.unwrap_or(0),
        plan.avg_w_bits.unwrap_or(f64::NAN),
        plan.bops.unwrap_or(f64::NAN) / 1e9,
    );
    if let Some(o) = plan.omega {
        summary.push_str(&format!(", omega {}", num(o)));
    }
    if let Some(h) = hw {
        summary.push_str(&format!(", {} ms", num(h.latency_ms)));
        if let Some(e) = h.energy_mj {
            summary.push_str(&format!(", {} mJ", num(e)));
        }
        summary.push_str(&format!(" on {}", h.hardware));
    }
    summary.push_str(&format!(
        " ({:.3} s); written to {}",
        plan.seconds,
        a.out.display()
    ));
    output::line(&summary)?;
    match extra {
        Extra::None => {}
        Extra::Cw(r, _) => {
            if let Some(b) = r.episodes.get(r.best_episode) {
                output::line(&format!(
                    "CW-HAWQ: best episode {} of {}: {:.2}% on the held-out split (FP {:.2}%), \
                     reward {:.4}",
                    b.episode,
                    r.episodes.len(),
                    b.accuracy,
                    r.fp_accuracy,
                    b.reward
                ))?;
            }
        }
        Extra::Haq(r) => {
            let h = &r.history;
            if let Some(b) = h.best_episode.and_then(|b| h.episodes.get(b)) {
                output::line(&format!(
                    "HAQ: best episode {} of {}: {:.2}% on the held-out split (FP {:.2}%), \
                     reward {:.4}; {:.1} s scoring plans{}",
                    b.episode,
                    h.episodes.len(),
                    b.accuracy,
                    h.fp_accuracy,
                    b.reward,
                    r.eval_seconds,
                    if r.resumed_episodes > 0 {
                        format!(
                            ", {} episodes replayed from the saved state",
                            r.resumed_episodes
                        )
                    } else {
                        String::new()
                    }
                ))?;
            }
            output::line(&format!(
                "learning curve: {}; search state: {}",
                super::side_path(&a.out, "curve.svg").display(),
                super::side_path(&a.out, "haq-state.json").display()
            ))?;
        }
        Extra::Limpq(s, info) => {
            let bans = info["bans"].as_array().map_or(0, Vec::len);
            output::line(&format!(
                "LIMPQ: alpha {}, {} nodes ({}); {bans} indicator(s) banned by the \
                 monotonicity cleaning{}",
                a.alpha,
                s.nodes,
                if s.proven_optimal {
                    "optimal"
                } else {
                    "node limit reached"
                },
                if bans > 0 {
                    " (listed under limpq.bans in the policy)"
                } else {
                    ""
                }
            ))?
        }
        Extra::Solver(s) => output::line(&format!(
            "solver: exact multiple-choice knapsack branch and bound, {} nodes, {}",
            s.nodes,
            if s.proven_optimal {
                "optimal"
            } else {
                "node limit reached (best plan found, optimality not proven)"
            }
        ))?,
        Extra::Frontier { points, chosen, .. } => output::line(&format!(
            "frontier: {points} points, chosen #{chosen}; written to {} and {}",
            super::side_path(&a.out, "frontier.json").display(),
            super::side_path(&a.out, "frontier.svg").display()
        ))?,
    }
    if let Some(order) = &plan.finetune_order {
        output::line(&format!(
            "fine-tuning order (most sensitive first): {}",
            order.join(", ")
        ))?;
    }
    Ok(())
}
