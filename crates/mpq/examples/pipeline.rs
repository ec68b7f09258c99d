//! The pipeline through the library's API: train LeNet-5 on the bundled MNIST subset, measure
//! its Hessian traces, search a plan at 3 average weight bits with the HAWQ-V3 integer
//! program, quantize it with a one-epoch fine-tune, and render the report. Run with
//! `cargo run --release -p mpq --example pipeline [DIR]` (default DIR: a temporary folder).
#![expect(
    clippy::print_stdout,
    reason = "an example that shows what each stage did"
)]

use mpq::pipeline::{self as p, Analysis, Method, ModelSource, TrainFrom};
use mpq::progress::NoProgress;
use mpq::run::RunPaths;
use mpq::sensitivity::Metric;

fn main() -> mpq::Result<()> {
    let dir = std::env::args().nth(1);
    let run = RunPaths::new(dir.map_or(std::env::temp_dir().join("mpq-pipeline"), Into::into));
    let (data, progress) = ("mnist10k", &mut NoProgress);

    let mut train = p::TrainRequest::new(TrainFrom::arch("lenet5"), data, run.model());
    train.config.epochs = 1;
    let trained = p::train(&train, progress)?;
    println!("trained: {:.2}% test accuracy", 100.0 * trained.accuracy);

    let model = ModelSource::new(run.model().display().to_string());
    let sens = run.file("sensitivity.json");
    let analyze =
        p::AnalyzeRequest::new(model.clone(), data, Analysis::hessian(Metric::Trace), &sens);
    println!(
        "{} Hessian-vector products",
        p::analyze(&analyze, progress)?.table.hvp_count
    );

    let mut search = p::SearchRequest::new(model.clone(), Method::Ilp);
    (search.sensitivity, search.out) = (Some(sens), Some(run.plan("ilp")));
    search.budget.limits.avg_bits = Some(3.0);
    let plan = p::search(&search, progress)?.policy.plan;
    let bits: Vec<u32> = plan.layers.iter().map(|l| l.w_bits).collect();
    println!(
        "plan: weight bits {bits:?}, {} bytes",
        plan.size_bytes.unwrap_or(0)
    );

    let mut quantize = p::QuantizeRequest::new(model, run.plan("ilp"), data, run.quantized("ilp"));
    quantize.finetune.epochs = 1;
    let q = p::quantize(&quantize, progress)?;
    println!(
        "quantized: {:.2}% after fine-tuning",
        100.0 * q.after_finetune.accuracy
    );

    let report = p::report(&p::ReportRequest { run: run.dir })?;
    println!("report: {}", report.path.display());
    Ok(())
}
