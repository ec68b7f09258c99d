//! The `mpq` binary: a thin command-line layer over the `mpq` library. It parses arguments,
//! prints tables or JSON, draws progress bars, and maps errors to exit codes
//! (0 success, 2 bad input, 1 anything else).

mod args;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match args::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Keep large freed buffers for the next pass instead of returning them to the kernel.
    mpq_kernels::tune_allocator();
    if let Some(limit) = &args.global.memory_limit {
        match mpq::limits::parse_size(limit) {
            Ok(bytes) => mpq::limits::set_memory_limit(bytes),
            Err(e) => {
                eprintln!("error: --memory-limit: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(n) = args.global.threads {
        match mpq::set_threads(n) {
            Ok(used) if used < n && !args.global.quiet => {
                eprintln!("note: --threads {n}: this machine has {used} CPUs, using {used}");
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match commands::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(exit_code(&err))
        }
    }
}

/// 2 for bad input (any `mpq::Error` that is an input error), 1 otherwise.
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<mpq::Error>() {
            return if e.is_input_error() { 2 } else { 1 };
        }
    }
    1
}

/// Whether the error is output cut by the reader (`mpq … --json | head`): the io error
/// itself, or inside a JSON writer's error (whose `source()` skips it) or the library's.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|e| e.io_error_kind() == Some(BrokenPipe))
            || matches!(
                c.downcast_ref::<mpq::Error>(),
                Some(mpq::Error::Io { err, .. }) if err.kind() == BrokenPipe
            )
    })
}
