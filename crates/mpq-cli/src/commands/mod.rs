//! One module per subcommand; each parses nothing and prints everything.

pub(crate) mod analyze;
mod bench;
mod cw_hawq;
mod eval;
mod haq;
mod hw;
mod info;
mod quantize;
mod quickstart;
mod search;
mod train;

use std::path::{Path, PathBuf};

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
        Command::Hw(a) => hw::run(&cli.global, a),
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

/// The data set `data` names (`--data`), with seeded splits.
pub(crate) fn load_data(data: &str, seed: u64) -> anyhow::Result<mpq::data::DataSplits> {
    let opts = mpq::data::LoadOptions {
        seed,
        ..Default::default()
    };
    Ok(mpq::data::load(data, &opts)?)
}

/// `OUT` with its extension replaced by `suffix` (`p.json` -> `p.frontier.json`).
pub(crate) fn side_path(out: &Path, suffix: &str) -> PathBuf {
    out.with_extension(suffix)
}

/// Writes every `(path, bytes)` to a temporary file next to it, then renames them all into
/// place in order, so a failure leaves no half-written output (and none at all when the first
/// rename fails, so put the file most likely to fail, the user's `--out`, first).
pub(crate) fn write_files_atomic(files: &[(PathBuf, Vec<u8>)]) -> anyhow::Result<()> {
    let mut temps: Vec<PathBuf> = Vec::with_capacity(files.len());
    let cleanup = |temps: &[PathBuf]| {
        for t in temps {
            let _ = std::fs::remove_file(t);
        }
    };
    for (path, bytes) in files {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            cleanup(&temps);
            return Err(mpq::Error::io(dir, e).into());
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        temps.push(tmp.clone());
        if let Err(e) = std::fs::write(&tmp, bytes) {
            cleanup(&temps);
            return Err(mpq::Error::io(&tmp, e).into());
        }
    }
    for (i, ((path, _), tmp)) in files.iter().zip(&temps).enumerate() {
        std::fs::rename(tmp, path)
            .map_err(|e| mpq::Error::io(path, e))
            .inspect_err(|_| cleanup(&temps[i..]))?;
    }
    Ok(())
}
