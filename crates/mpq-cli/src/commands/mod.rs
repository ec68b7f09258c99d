//! One module per subcommand: its flags, the request they map to, and how its outcome is
//! printed. Command modules never import one another.

pub(crate) mod analyze;
pub(crate) mod bench;
pub(crate) mod compare;
pub(crate) mod eval;
pub(crate) mod hw;
pub(crate) mod info;
pub(crate) mod quantize;
pub(crate) mod quickstart;
pub(crate) mod report;
pub(crate) mod search;
pub(crate) mod train;

use mpq::pipeline::{AgentOptions, HaqOptions, Method, MethodKind, WeightQuantizer};
use mpq::search::haq::FlagStyle;

use crate::args::{Cli, Command};

/// Copies the fields named from flags into a library config with fields of the same names.
macro_rules! copy_fields {
    ($into:expr, $from:expr, $($field:ident),+ $(,)?) => {
        $($into.$field = $from.$field.clone();)+
    };
}
pub(crate) use copy_fields;

pub(crate) fn run(cli: &Cli) -> anyhow::Result<()> {
    let g = &cli.global;
    match &cli.command {
        Command::Info(a) => info::run(g, a),
        Command::Train(a) => train::run(g, a),
        Command::Eval(a) => eval::run(g, a),
        Command::Analyze(a) => analyze::run(g, a),
        Command::Search(a) => search::run(g, a),
        Command::Hw(a) => hw::run(g, a),
        Command::Quickstart(a) => quickstart::run(g, a),
        Command::Report(a) => report::run(g, a),
        Command::Bench(a) => bench::run(g, a),
        Command::Compare(a) => compare::run(g, a),
        Command::Quantize(a) => quantize::run(g, a),
    }
}

/// The method `kind` with its options: the agent's, HAQ's quantizer and state flags, and
/// `(alpha, max_tries, ratio_grid)` of LIMPQ, random and cw-ilp.
pub(crate) fn method(
    kind: MethodKind,
    agent: AgentOptions,
    (weight_quantizer, state_flags): (WeightQuantizer, FlagStyle),
    (alpha, max_tries, ratio_grid): (f64, usize, usize),
) -> Method {
    match kind {
        MethodKind::Random => Method::Random { max_tries },
        MethodKind::HawqV1 => Method::HawqV1,
        MethodKind::Pareto => Method::Pareto,
        MethodKind::Ilp => Method::Ilp,
        MethodKind::Limpq => Method::Limpq { alpha },
        MethodKind::Haq => Method::Haq(HaqOptions {
            agent,
            weight_quantizer,
            state_flags,
        }),
        MethodKind::CwHawq => Method::CwHawq(agent),
        MethodKind::CwIlp => Method::CwIlp { ratio_grid },
        _ => Method::Uniform,
    }
}
