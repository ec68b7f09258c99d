//! `mpq hw`: per-layer latency and energy of a model on a simulated accelerator, under a
//! policy or W8A8 (formulas in `docs/cost-models.md`).

use mpq::pipeline::HwRequest;

use crate::args::GlobalArgs;
use crate::args::quantize::HwArgs;
use crate::output;

pub(crate) fn run(g: &GlobalArgs, a: &HwArgs) -> anyhow::Result<()> {
    let r = mpq::pipeline::hw(&HwRequest {
        model: a.model.source(g.seed),
        hardware: a.hardware.clone(),
        policy: a.policy.clone(),
        export_csv: a.export_csv.clone(),
    })?;
    if g.json {
        return output::json(&r);
    }
    output::line(&mpq::report::text::hardware(&r.table, &r.bits_from))?;
    if let Some(p) = &r.export_csv {
        output::line(&format!("lookup table written to {p}"))?;
    }
    Ok(())
}
