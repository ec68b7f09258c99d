//! The graph executor with mpq-kernels' fused ops (conv, BN + ReLU fused where a ReLU is a
//! batch norm's only consumer, ReLU, pooling) against candle's stock ops, on ResNet-8
//! (fused and unfused BN/ReLU pairs, residual adds) in train and eval mode: same logits and
//! parameter gradients. Its own test binary, because the stock-ops switch is process-wide.

use candle::{Device, Tensor};
use mpq::graph::{Mode, set_stock_ops};
use mpq::zoo::{self, ZooConfig};

/// Logits and every trainable parameter's gradient of `Σ logits · r`.
fn run(model: &mpq::model::Model, x: &Tensor, r: &Tensor, mode: Mode) -> Vec<Vec<f32>> {
    let y = model.graph.forward(x, mode).unwrap();
    let grads = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = vec![y.flatten_all().unwrap().to_vec1::<f32>().unwrap()];
    for p in model.graph.params().iter() {
        if let Some(g) = grads.get(p.var.as_tensor()) {
            out.push(g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
    }
    out
}

#[test]
fn fused_kernels_match_stock_ops_in_train_and_eval_mode() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (6, 3, 12, 12), &dev).unwrap();
    let r = Tensor::randn(0f32, 1.0, (6, 5), &dev).unwrap();
    for mode in [Mode::Train, Mode::Eval] {
        // Fresh models with the same seed, so train-mode running-stat updates do not carry.
        let build = || zoo::build("resnet8", &ZooConfig::new([3, 12, 12], 5), 3).unwrap();
        set_stock_ops(false);
        let fast = run(&build(), &x, &r, mode);
        set_stock_ops(true);
        let stock = run(&build(), &x, &r, mode);
        set_stock_ops(false);
        assert_eq!(fast.len(), stock.len());
        assert!(
            fast.len() > 10,
            "gradients for the parameters should be present"
        );
        for (i, (a, b)) in fast.iter().zip(&stock).enumerate() {
            let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let err = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(
                err <= 1e-3 * scale,
                "{mode:?} tensor {i}: max error {err} (scale {scale})"
            );
        }
    }
}
