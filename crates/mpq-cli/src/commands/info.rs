//! `mpq info`: the layer table of a model.

use serde::Serialize;

use crate::args::{GlobalArgs, InfoArgs};
use crate::output::{self, Table, thousands};

#[derive(Serialize)]
struct InfoJson<'a> {
    model: &'a str,
    arch: &'a str,
    input_shape: &'a [usize],
    classes: usize,
    quantizable_layers: usize,
    params: usize,
    weight_params: usize,
    macs: u64,
    layers: &'a [mpq::graph::LayerInfo],
}

pub(crate) fn run(g: &GlobalArgs, a: &InfoArgs) -> anyhow::Result<()> {
    let model = super::open_model(&a.model, g.seed)?;
    let layers = model.graph.layer_infos()?;
    let macs: u64 = layers.iter().map(|l| l.macs).sum();
    let weight_params: usize = layers.iter().map(|l| l.params).sum();
    if g.json {
        return output::json(&InfoJson {
            model: &a.model.model,
            arch: &model.meta.arch,
            input_shape: model.graph.input_shape(),
            classes: model.meta.config.classes,
            quantizable_layers: layers.len(),
            params: model.num_params(),
            weight_params,
            macs,
            layers: &layers,
        });
    }
    let shape = |s: &[usize]| {
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x")
    };
    let mut t = Table::new(&[
        "#", "layer", "op", "weight", "params", "MACs", "input", "output",
    ]);
    for l in &layers {
        t.row(vec![
            l.index.to_string(),
            l.name.clone(),
            serde_json::to_value(l.op)?
                .as_str()
                .unwrap_or("?")
                .to_string(),
            shape(&l.weight_shape),
            thousands(l.params as u64),
            thousands(l.macs),
            shape(&l.input_shape),
            shape(&l.output_shape),
        ]);
    }
    t.print()?;
    output::line(&format!(
        "\n{}: {} quantizable layers, {} parameters ({} in layer weights), {} MACs per sample, input {}",
        model.meta.arch,
        layers.len(),
        thousands(model.num_params() as u64),
        thousands(weight_params as u64),
        thousands(macs),
        shape(model.graph.input_shape()),
    ))
}
