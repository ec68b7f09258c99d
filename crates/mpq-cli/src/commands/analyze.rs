//! `mpq analyze`: per-layer Hessian sensitivity (eigenvalues, traces, activation and channel
//! traces, densities) or LIMPQ's learned indicators, written as a sensitivity file.

use mpq::Versioned;
use mpq::pipeline::{Analysis, AnalyzeRequest};
use mpq::report::text as report;
use mpq::sensitivity::learned::LimpqConfig;
use mpq::sensitivity::{AnalyzeConfig, Estimator, FdScheme, Metric, SampleConfig};

use super::copy_fields;
use crate::args::GlobalArgs;
use crate::args::analyze::{AnalyzeArgs, EstimatorArg, SchemeArg};
use crate::output::{self, Bars};

impl AnalyzeArgs {
    pub(crate) fn request(&self, seed: u64) -> mpq::Result<AnalyzeRequest> {
        let analysis = if self.metric == Metric::Limpq {
            let mut config = LimpqConfig {
                bits: self.limpq_bits.clone(),
                mixed_pass: !self.no_mixed_pass,
                seed,
                ..LimpqConfig::default()
            };
            copy_fields!(
                config,
                self,
                epochs,
                data_fraction,
                batch_size,
                lr,
                lr_min,
                weight_decay
            );
            Analysis::Limpq {
                config,
                label_smoothing: self.label_smoothing,
            }
        } else {
            let mut sample = SampleConfig {
                seed,
                ..SampleConfig::default()
            };
            copy_fields!(sample, self, batches, batch_size, shuffle);
            Analysis::Hessian {
                config: self.hessian(seed)?,
                sample,
                split: self.split,
                svg: self.svg.clone(),
            }
        };
        Ok(AnalyzeRequest {
            model: self.model.source(seed),
            data: self.data.clone(),
            analysis,
            seed,
            out: self.out.clone(),
        })
    }

    fn hessian(&self, seed: u64) -> mpq::Result<AnalyzeConfig> {
        let mut c = AnalyzeConfig::new(self.metric);
        c.estimator = match self.estimator {
            EstimatorArg::Hutchinson => Estimator::Hutchinson,
            EstimatorArg::Exact => Estimator::Exact,
            EstimatorArg::Hutchpp => {
                return Err(mpq::Error::config("estimator", Estimator::HUTCHPP_REFUSAL));
            }
        };
        copy_fields!(c.trace, self, max_iter, tol, min_probes, probes);
        copy_fields!(c.power, self, max_iter, tol);
        copy_fields!(
            c,
            self,
            top_k,
            rel_step,
            precision,
            exact_max_params,
            micro_batch
        );
        (c.density.steps, c.density.runs) = (self.lanczos_steps, self.density_runs);
        c.scheme = match self.scheme {
            SchemeArg::Auto => None,
            SchemeArg::Central => Some(FdScheme::Central),
            SchemeArg::OneSided => Some(FdScheme::OneSided),
        };
        c.layers = (!self.layers.is_empty()).then(|| self.layers.clone());
        c.seed = seed;
        Ok(c)
    }
}

pub(crate) fn run(g: &GlobalArgs, a: &AnalyzeArgs) -> anyhow::Result<()> {
    let req = a.request(g.seed)?;
    let r = mpq::pipeline::analyze(&req, &mut Bars::new(g.quiet))?;
    if g.json {
        return output::raw(&r.table.to_bytes()?);
    }
    let text = match &req.analysis {
        Analysis::Limpq { config, .. } => report::indicators(&r.table, &config.bits, &a.out),
        Analysis::Hessian { .. } => report::sensitivity(&r.table, &a.out, r.density_svg.as_deref()),
    };
    output::line(&text)
}
