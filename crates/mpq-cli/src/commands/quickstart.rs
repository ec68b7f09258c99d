//! `mpq quickstart`: the whole pipeline on the bundled MNIST subset ([`mpq::pipeline::run_all`]:
//! train, analyze, every search method, quantize + fine-tune + export, results and report),
//! then its results table. `DIR/commands.sh` holds the `mpq` command of every stage.

use mpq::pipeline::RunAllRequest;

use crate::args::GlobalArgs;
use crate::args::runs::QuickstartArgs;
use crate::output::{self, Bars};

pub(crate) fn run(g: &GlobalArgs, a: &QuickstartArgs) -> anyhow::Result<()> {
    let req = RunAllRequest {
        out: a.out.clone(),
        fast: a.fast,
        seed: g.seed,
    };
    let r = mpq::pipeline::run_all(&req, &mut Bars::new(g.quiet))?;
    let s = &r.summary;
    if g.json {
        return output::json(s);
    }
    output::table(&mpq::report::text::results(s))?;
    output::line(&format!(
        "\nLeNet-5 on mnist10k, average 3 weight bits / 4-bit activations (haq: half the W8A8 \
         BitFusion latency). {:.1} s.\nReport: {}\nRun folder: {} (commands.sh re-runs any \
         stage; plans/ and quantized/ hold every plan, packed model and summary)",
        s.seconds,
        r.report.path.display(),
        r.dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use mpq::pipeline::{RunAllRequest, StageRequest, stages};

    use crate::args::{Cli, Command};

    /// Every line of `commands.sh`, parsed by the command line, asks for exactly the request
    /// the quickstart ran.
    #[test]
    fn every_stage_command_maps_to_the_stage_request() {
        for fast in [true, false] {
            let req = RunAllRequest {
                out: std::env::temp_dir().join("mpq-quickstart-stages-none"),
                fast,
                seed: 3,
            };
            let (_, train, stages) = stages(&req).unwrap();
            assert!(train.is_some() && stages.len() == 21);
            for stage in train.iter().chain(&stages) {
                let cli = Cli::try_parse_from(&stage.command)
                    .unwrap_or_else(|e| panic!("{:?}: {e}", stage.command));
                let seed = cli.global.seed;
                let same = match (&cli.command, &stage.request) {
                    (Command::Train(a), StageRequest::Train(r)) => a.request(seed) == *r,
                    (Command::Analyze(a), StageRequest::Analyze(r)) => {
                        a.request(seed).unwrap() == *r
                    }
                    (Command::Search(a), StageRequest::Search(r)) => {
                        a.request(seed).unwrap() == **r
                    }
                    (Command::Quantize(a), StageRequest::Quantize(r)) => a.request(seed) == *r,
                    (Command::Compare(a), StageRequest::Compare(r)) => {
                        a.request(seed).unwrap() == **r
                    }
                    _ => false,
                };
                assert!(
                    same,
                    "{:?} does not ask for {:?}",
                    stage.command, stage.request
                );
            }
        }
    }
}
