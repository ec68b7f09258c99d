//! `mpq eval`: test accuracy and loss of a model, FP32 or under a policy; size, BOPs and, with
//! `--hardware`, simulated latency and energy.

use mpq::pipeline::EvalRequest;

use crate::args::GlobalArgs;
use crate::args::quantize::EvalArgs;
use mpq::report::text::num;

use crate::output;

pub(crate) fn run(g: &GlobalArgs, a: &EvalArgs) -> anyhow::Result<()> {
    let r = mpq::pipeline::eval(&EvalRequest {
        model: a.model.source(g.seed),
        data: a.data.clone(),
        batch_size: a.batch_size,
        policy: a.policy.clone(),
        calib_samples: a.calib_samples,
        hardware: a.hardware.clone(),
        seed: g.seed,
    })?;
    if g.json {
        return output::json(&r);
    }
    let mut line = format!(
        "accuracy {:.2}%  loss {:.4}  samples {}  ({} weight bytes, {:.2} avg weight bits, {:.3e} BOPs",
        100.0 * r.accuracy,
        r.loss,
        r.samples,
        r.size_bytes,
        r.avg_w_bits,
        r.bops
    );
    if let (Some(l), Some(hw)) = (r.latency_ms, &r.hardware) {
        line.push_str(&format!(", {} ms", num(l)));
        if let Some(e) = r.energy_mj {
            line.push_str(&format!(", {} mJ", num(e)));
        }
        line.push_str(&format!(" on {hw} at batch {}", r.batch.unwrap_or(1)));
    }
    line.push(')');
    output::line(&line)
}
