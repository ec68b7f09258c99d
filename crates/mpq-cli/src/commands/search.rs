//! `mpq search`: writes a policy (QuantPlan JSON) that meets a budget.

use mpq::search::{self, Budget, Candidates};

use crate::args::{GlobalArgs, MethodArg, SearchArgs};
use crate::output::{self, Table, thousands};

pub(crate) fn run(g: &GlobalArgs, a: &SearchArgs) -> anyhow::Result<()> {
    let model = super::open_model(&a.model, g.seed)?;
    let layers = model.graph.layer_infos()?;
    let budget = Budget {
        avg_bits: a.avg_bits,
        max_size_mb: a.max_size_mb,
        compression: a.compression,
        max_bops_g: a.max_bops,
        max_latency_ms: None,
        max_energy_mj: None,
    };
    for (name, v) in [
        ("avg-bits", a.avg_bits),
        ("max-size-mb", a.max_size_mb),
        ("compression", a.compression),
        ("max-bops", a.max_bops),
    ] {
        if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
            return Err(mpq::Error::config(name, "must be a positive number").into());
        }
    }
    let cands = Candidates {
        w_bits: a.w_bits.clone(),
        a_bits: a.a_bits.clone(),
    };
    let plan = match a.method {
        MethodArg::Uniform => search::uniform(&layers, &cands, &budget)?,
        MethodArg::Random => search::random(&layers, &cands, &budget, g.seed, a.max_tries)?,
    };
    plan.save(&a.out)?;
    if g.json {
        return output::json(&plan);
    }
    let mut t = Table::new(&["layer", "params", "w_bits", "a_bits"]);
    for (l, p) in layers.iter().zip(&plan.layers) {
        t.row(vec![
            l.name.clone(),
            thousands(l.params as u64),
            p.w_bits.to_string(),
            p.a_bits.to_string(),
        ]);
    }
    t.print()?;
    output::line(&format!(
        "\n{}: {} bytes, {:.3} average weight bits, {:.4} GBOPs; written to {}",
        plan.method,
        plan.size_bytes.unwrap_or(0),
        plan.avg_w_bits.unwrap_or(f64::NAN),
        plan.bops.unwrap_or(f64::NAN) / 1e9,
        a.out.display()
    ))
}
