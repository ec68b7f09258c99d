//! `mpq compare`: maps the flags to a [`CompareRequest`], runs it, and prints `compare.md`
//! (or, with `--json`, the comparison and what was measured), warning about every plan that
//! loses to uniform beyond noise.

use mpq::pipeline::{
    AgentOptions, BudgetSpec, CompareRequest, FinetuneOptions, OmegaOptions, SearchRequest,
};
use mpq::quant::CalibrationConfig;
use mpq::search::{Budget, Pin};
use serde::Serialize;

use crate::args::GlobalArgs;
use crate::args::compare::CompareArgs;
use crate::output::{self, Bars};

impl CompareArgs {
    fn budgets(&self) -> mpq::Result<Vec<BudgetSpec>> {
        let mut out = Vec::new();
        let mut limit = |set: fn(&mut Budget, f64), values: &[f64]| {
            for &v in values {
                let mut limits = Budget::default();
                set(&mut limits, v);
                out.push(BudgetSpec {
                    limits,
                    bops_as: None,
                });
            }
        };
        limit(|b, v| b.avg_bits = Some(v), &self.avg_bits);
        limit(|b, v| b.max_size_mb = Some(v), &self.max_size_mb);
        limit(|b, v| b.max_bops_g = Some(v), &self.max_bops);
        limit(|b, v| b.max_latency_ms = Some(v), &self.max_latency_ms);
        limit(|b, v| b.max_energy_mj = Some(v), &self.max_energy_mj);
        for s in &self.bops_as {
            out.push(BudgetSpec {
                limits: Budget::default(),
                bops_as: Some(Pin::parse_bits(s, "bops-as")?),
            });
        }
        Ok(out)
    }

    pub(crate) fn request(&self, seed: u64) -> mpq::Result<CompareRequest> {
        let source = self.hint.source(&self.model, seed);
        let mut agent = AgentOptions::new(self.data.clone());
        (agent.episodes, agent.val_samples, agent.warmup) =
            (self.episodes, self.val_samples, self.warmup);
        let extra = (self.alpha, 1_000, 8);
        let methods = (self.methods.iter())
            .map(|&k| super::method(k, agent.clone(), Default::default(), extra))
            .collect();
        let mut t = SearchRequest::new(source, mpq::pipeline::Method::Uniform);
        (t.w_bits, t.a_bits) = (self.w_bits.clone(), self.a_bits.clone());
        (t.hardware, t.weight_range) = (self.hardware.clone(), self.weight_range);
        t.pins = Pin::parse_all(&self.pin, self.pin_first_last.as_deref())?;
        t.formats = (self.formats.as_ref())
            .map(|f| f.iter().map(|s| Pin::parse_bits(s, "formats")).collect())
            .transpose()?;
        t.ties = (self.tie.iter())
            .map(|t| t.split(',').map(str::trim).filter(|s| !s.is_empty()))
            .map(|names| names.map(String::from).collect())
            .collect();
        t.omega = OmegaOptions::default();
        t.seed = seed;
        let plans = (self.plan.iter())
            .map(|p| match p.split_once('=') {
                Some((n, path)) if !n.trim().is_empty() && !path.is_empty() => {
                    Ok((n.trim().to_string(), path.into()))
                }
                _ => Err(mpq::Error::Usage(format!(
                    "--plan {p:?}: expected NAME=PATH.json"
                ))),
            })
            .collect::<mpq::Result<Vec<_>>>()?;
        Ok(CompareRequest {
            template: t,
            data: self.data.clone(),
            methods,
            budgets: self.budgets()?,
            plans,
            sensitivity: self.sensitivity.clone(),
            indicators: self.indicators.clone(),
            random_plans: self.random_plans,
            seeds: self.seeds,
            finetune: FinetuneOptions {
                epochs: if self.seeds == 0 {
                    0
                } else {
                    self.finetune_epochs
                },
                lr: self.lr,
                batch_size: self.batch_size,
                all_at_once: true,
                ..FinetuneOptions::default()
            },
            calibration: CalibrationConfig {
                samples: self.calib_samples,
                ..CalibrationConfig::default()
            },
            resamples: self.resamples,
            seed,
            out: self.out.clone(),
        })
    }
}

/// `--json`: the comparison and what this run did.
#[derive(Serialize)]
struct Printed<'a> {
    #[serde(flatten)]
    file: &'a mpq::compare::CompareFile,
    cells_run: usize,
    cells_reused: usize,
    written: Vec<String>,
    seconds: f64,
}

pub(crate) fn run(g: &GlobalArgs, a: &CompareArgs) -> anyhow::Result<()> {
    let req = a.request(g.seed)?;
    let r = mpq::pipeline::compare(&req, &mut Bars::new(g.quiet))?;
    for (budget, name) in r.file.losers() {
        output::warn(&format!(
            "{name} at `{budget}` is worse than uniform beyond noise (see compare.md)"
        ));
    }
    if g.json {
        return output::json(&Printed {
            file: &r.file,
            cells_run: r.cells_run,
            cells_reused: r.cells_reused,
            written: r.written.iter().map(|p| p.display().to_string()).collect(),
            seconds: r.seconds,
        });
    }
    output::line(&format!(
        "{}\n{} cells measured, {} kept from an earlier run ({:.1} s). Written: {}",
        mpq::compare::markdown(&r.file).trim_end(),
        r.cells_run,
        r.cells_reused,
        r.seconds,
        r.written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
