//! HAWQ's block-wise fine-tuning in `mpq quantize` (docs/algorithms.md §1.5): the stages run
//! in the plan's order, which is descending Ω, and the summary logs every stage.

use mpq::Versioned;
use mpq::meta::ModelHint;
use mpq::pipeline::stages::EarlierBlocks;
use mpq::pipeline::{self, Method, ModelSource, QuantizeRequest, SearchRequest};
use mpq::progress::NoProgress;
use mpq::search::{Budget, OmegaConfig, OmegaTable};

use crate::util::temp_dir;

const DATA: &str = "synthetic:1x28x28:10:96";

#[test]
fn staged_hawq_fine_tuning_runs_the_stages_in_omega_order() {
    let dir = temp_dir("stages");
    let model = ModelSource {
        reference: "zoo:lenet5".into(),
        hint: ModelHint::default(),
    };
    let layers = model.open().unwrap().graph.layer_infos().unwrap();
    let sens = crate::formats::lenet_sensitivity(&dir, &layers);
    let mut req = SearchRequest::new(model.clone(), Method::HawqV1);
    req.sensitivity = Some(sens.clone());
    req.budget.limits = Budget::avg_bits(4.0);
    let policy = dir.join("hawq.json");
    req.out = Some(policy.clone());
    let plan = pipeline::search(&req, &mut NoProgress).unwrap().policy.plan;
    let order = plan
        .finetune_order
        .clone()
        .expect("hawq-v1 writes an order");

    // The order is descending Ω_i = Tr(H_i)/n · ‖Q_{b_i}(W_i) − W_i‖² at the plan's bits.
    let table = mpq::sensitivity::SensitivityTable::load(&sens).unwrap();
    let omega = OmegaTable::new(&layers, &table, OmegaConfig::default()).unwrap();
    let weight = |name: &str| {
        let i = layers.iter().position(|l| l.name == name).unwrap();
        omega
            .finetune_weight(i, layers[i].params, plan.bits(name).0)
            .unwrap()
    };
    let w: Vec<f64> = order.iter().map(|n| weight(n)).collect();
    assert!(w.windows(2).all(|p| p[0] >= p[1]), "{order:?}: {w:?}");
    assert!(w.first() > w.last(), "a trivial order: {w:?}");

    for earlier in [EarlierBlocks::Ste, EarlierBlocks::Frozen] {
        let out = dir.join(format!("q-{earlier:?}"));
        let mut q = QuantizeRequest::new(model.clone(), &policy, DATA, &out);
        q.finetune.epochs = 1;
        q.finetune.earlier_blocks = earlier;
        let s = pipeline::quantize(&q, &mut NoProgress).unwrap();
        // The stage log, read back from the written summary.
        let read = mpq::run::QuantizeSummary::load(out.join("summary.json")).unwrap();
        assert_eq!(read.stages, s.stages);
        let blocks: Vec<&str> = read.stages.iter().map(|st| st.block.as_str()).collect();
        assert_eq!(blocks, order.iter().map(String::as_str).collect::<Vec<_>>());
        for (t, st) in read.stages.iter().enumerate() {
            assert_eq!(st.stage, t + 1);
            assert_eq!(st.layers, vec![order[t].clone()]);
            assert_eq!(
                st.earlier_blocks,
                if earlier == EarlierBlocks::Ste {
                    "ste"
                } else {
                    "frozen"
                }
            );
        }
        assert_eq!(s.finetune_epochs, order.len());
        // The last stage quantizes the whole plan: its accuracy is the summary's.
        assert_eq!(read.stages.last().unwrap().after, read.after_finetune);
        assert!(read.roundtrip_bit_identical);
    }
    // Without an order, or asked to, every layer is fine-tuned at once.
    let mut q = QuantizeRequest::new(model, &policy, DATA, dir.join("q-all"));
    q.finetune.epochs = 1;
    q.finetune.all_at_once = true;
    let s = pipeline::quantize(&q, &mut NoProgress).unwrap();
    assert!(s.stages.is_empty());
    assert_eq!(s.finetune_epochs, 1);
}
