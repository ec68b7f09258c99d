//! One module per subcommand; each parses nothing and prints everything.

pub(crate) mod analyze;
mod bench;
mod eval;
mod info;
mod quantize;
mod quickstart;
mod search;
mod train;

use candle::Device;
use mpq::model::{Model, ModelHint};

use crate::args::{Cli, Command, ModelArgs};
pub(crate) use quantize::QuantizeArgs;

pub(crate) fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Info(a) => info::run(&cli.global, a),
        Command::Train(a) => train::run(&cli.global, a),
        Command::Eval(a) => eval::run(&cli.global, a),
        Command::Analyze(a) => analyze::run(&cli.global, a),
        Command::Search(a) => search::run(&cli.global, a),
        Command::Quickstart(a) => quickstart::run(&cli.global, a),
        Command::Bench(a) => bench::run(&cli.global, a),
        Command::Quantize(a) => quantize::run(&cli.global, a),
    }
}

/// The compute device (CPU; CUDA when built with the `cuda` feature and a GPU is present).
pub(crate) fn device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

/// Opens `--model` with the fallbacks from the other model flags.
pub(crate) fn open_model(args: &ModelArgs, seed: u64) -> anyhow::Result<Model> {
    let hint = ModelHint {
        arch: args.arch.clone(),
        input_shape: args.input.as_ref().map(|s| s.0.clone()),
        classes: args.classes,
        width: args.width,
        seed,
    };
    Ok(Model::open(&args.model, &hint, &device())?)
}
