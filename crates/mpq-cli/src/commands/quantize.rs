//! `mpq quantize`: applies a policy (BatchNorm folding, calibration, optional QAT), exports
//! the packed model and checks that the written file reproduces the simulation.

use mpq::pipeline::{FinetuneOptions, QuantizeRequest};
use mpq::quant::{CalibrationConfig, RangeMethod};

use super::copy_fields;
use crate::args::GlobalArgs;
use crate::args::quantize::{CalibArg, QuantizeArgs};
use crate::output::{self, Bars, Table};

impl QuantizeArgs {
    pub(crate) fn request(&self, seed: u64) -> QuantizeRequest {
        let mut finetune = FinetuneOptions {
            epochs: self.finetune_epochs,
            ..FinetuneOptions::default()
        };
        copy_fields!(
            finetune,
            self,
            lr,
            batch_size,
            weight_decay,
            earlier_blocks,
            all_at_once
        );
        let method = match self.calib {
            CalibArg::Minmax => RangeMethod::MinMax,
            CalibArg::Percentile => RangeMethod::Percentile(self.percentile),
            CalibArg::Mse => RangeMethod::Mse,
        };
        QuantizeRequest {
            model: self.model.source(seed),
            policy: self.policy.clone(),
            data: self.data.clone(),
            finetune,
            quantizer: self.quantizer,
            no_fold_bn: self.no_fold_bn,
            calibration: CalibrationConfig {
                samples: self.calib_samples,
                method,
                ..CalibrationConfig::default()
            },
            seed,
            out: self.out.clone(),
        }
    }
}

pub(crate) fn run(g: &GlobalArgs, a: &QuantizeArgs) -> anyhow::Result<()> {
    let s = mpq::pipeline::quantize(&a.request(g.seed), &mut Bars::new(g.quiet))?;
    if g.json {
        return output::json(&s);
    }
    let mut t = Table::new("stage|accuracy|loss");
    let mut row = |stage: String, e: &mpq::train::EvalStats| {
        let (acc, loss) = (
            format!("{:.2}%", 100.0 * e.accuracy),
            format!("{:.4}", e.loss),
        );
        t.row(vec![stage, acc, loss]);
    };
    row("fp32".into(), &s.fp32);
    row("quantized (PTQ)".into(), &s.before_finetune);
    for st in &s.stages {
        row(
            format!(
                "stage {} {} ({}), after QAT",
                st.stage, st.block, st.earlier_blocks
            ),
            &st.after,
        );
    }
    if s.finetune_epochs > 0 {
        row(
            format!("after {} epochs QAT", s.finetune_epochs),
            &s.after_finetune,
        );
    }
    row("reloaded file".into(), &s.reloaded);
    output::table(&t)?;
    if let (Some(lr), Some(source)) = (s.finetune_lr, s.finetune_lr_source) {
        output::line(&format!("fine-tuning learning rate {lr:.3e} ({source})"))?;
    }
    let x = &s.export;
    output::line(&format!(
        "weights {} bytes ({:.2} avg bits, {:.1}x smaller than FP32), {:.3e} BOPs; file {} bytes \
         ({} codes + {} scales + {} other = {} predicted, + {} header); round trip bit-identical\n\
         wrote {}",
        s.size_bytes,
        s.avg_w_bits,
        s.compression,
        s.bops,
        x.file_bytes,
        x.code_bytes,
        x.weight_param_bytes + x.activation_param_bytes,
        x.other_bytes,
        s.stored_bytes,
        x.header_bytes,
        a.out.display()
    ))
}
