//! `mpq info`: the layer table of a model.

use crate::args::GlobalArgs;
use crate::args::model::InfoArgs;
use crate::output;

pub(crate) fn run(g: &GlobalArgs, a: &InfoArgs) -> anyhow::Result<()> {
    let i = mpq::pipeline::info(&a.model.source(g.seed))?;
    if g.json {
        return output::json(&i);
    }
    let text = mpq::report::text::layers(&i.arch, &i.layers, i.params, &i.input_shape);
    output::line(&text)
}
