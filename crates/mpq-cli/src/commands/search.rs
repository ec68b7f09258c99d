//! `mpq search`: maps the flags to a [`SearchRequest`], runs it, and prints the policy (JSON)
//! or its per-layer table.

use mpq::pipeline::{
    AgentOptions, BudgetSpec, Method, OmegaOptions, SearchRequest, UniformReference,
};
use mpq::search::{Budget, Feasibility, Pin, Policy};
use serde::Serialize;

use super::copy_fields;
use crate::args::GlobalArgs;
use crate::args::search::SearchArgs;
use crate::output::{self, Bars};

impl SearchArgs {
    fn method(&self) -> Method {
        let a = &self.agent;
        let mut agent = AgentOptions::new(a.data.clone().unwrap_or_default());
        copy_fields!(
            agent,
            a,
            episodes,
            val_samples,
            calib_samples,
            finetune_steps
        );
        copy_fields!(
            agent,
            a,
            finetune_batch_size,
            finetune_lr,
            warmup,
            hidden1,
            hidden2
        );
        copy_fields!(
            agent,
            a,
            actor_lr,
            critic_lr,
            tau,
            discount,
            rl_batch_size,
            replay_size
        );
        copy_fields!(
            agent,
            a,
            sigma,
            sigma_decay,
            baseline_rate,
            updates_per_step,
            reward_scale
        );
        let haq = (a.weight_quantizer, a.state_flags);
        let extra = (self.alpha, self.max_tries, self.ratio_grid);
        super::method(self.method, agent, haq, extra)
    }

    pub(crate) fn request(&self, seed: u64) -> mpq::Result<SearchRequest> {
        let reference = self.model.clone().unwrap_or_default();
        let mut r = SearchRequest::new(self.hint.source(&reference, seed), self.method());
        let mut limits = Budget {
            max_bops_g: self.max_bops,
            ..Budget::default()
        };
        copy_fields!(
            limits,
            self,
            avg_bits,
            max_size_mb,
            compression,
            max_latency_ms,
            max_energy_mj,
            size_ratio,
            bops_ratio,
            latency_ratio,
            energy_ratio
        );
        let bops_as = self.bops_as.as_deref();
        let bops_as = bops_as.map(|s| Pin::parse_bits(s, "bops-as")).transpose()?;
        r.budget = BudgetSpec { limits, bops_as };
        copy_fields!(r, self, sensitivity, w_bits, a_bits, hardware, weight_range);
        r.pins = Pin::parse_all(&self.pin, self.pin_first_last.as_deref())?;
        r.formats = (self.formats.as_ref())
            .map(|f| f.iter().map(|s| Pin::parse_bits(s, "formats")).collect())
            .transpose()?;
        r.table = self.table.clone();
        r.ties = (self.tie.iter())
            .map(|t| t.split(',').map(str::trim).filter(|s| !s.is_empty()))
            .map(|names| names.map(String::from).collect())
            .collect();
        r.omega = OmegaOptions {
            metric: self.omega_metric,
            act_weight: self.act_weight,
        };
        (r.seed, r.out, r.resume) = (seed, Some(self.out.clone()), self.agent.resume);
        Ok(r)
    }
}

/// `--json`: the policy, where it went, the pre-flight report, the uniform plan of the same
/// budget and the warnings.
#[derive(Serialize)]
struct Printed<'a> {
    #[serde(flatten)]
    policy: &'a Policy,
    out: String,
    preflight: &'a Feasibility,
    #[serde(skip_serializing_if = "Option::is_none")]
    uniform: Option<&'a UniformReference>,
    warnings: &'a [String],
}

pub(crate) fn run(g: &GlobalArgs, a: &SearchArgs) -> anyhow::Result<()> {
    let req = a.request(g.seed)?;
    let r = mpq::pipeline::search(&req, &mut Bars::new(g.quiet))?;
    for w in &r.warnings {
        output::warn(w);
    }
    if g.json {
        let out = a.out.display().to_string();
        let (policy, preflight) = (&r.policy, &r.feasibility);
        return output::json(&Printed {
            policy,
            out,
            preflight,
            uniform: r.uniform.as_ref(),
            warnings: &r.warnings,
        });
    }
    let table = mpq::report::text::plan_table(&r.rows, r.hardware.as_ref());
    let mut lines = mpq::report::text::plan_lines(&r.policy, r.hardware.as_ref(), &a.out);
    if let (Some(u), Some(o)) = (&r.uniform, r.policy.plan.omega) {
        lines.push_str(&format!(
            "\nuniform within the same budget: W{}A{}, omega {:.4e} (this plan: {:.2}x)",
            u.w_bits,
            u.a_bits,
            u.omega,
            o / u.omega
        ));
    }
    output::line(&format!("{table}\n\n{lines}"))
}
