//! Every node kind's forward and backward against plain-loop f64 references and central
//! finite differences, and BatchNorm's running statistics against PyTorch's definition.

use std::collections::BTreeMap;

use candle::{DType, Device, Tensor, Var};
use mpq::graph::{
    Conv2dSpec, ForwardOptions, Graph, GraphBuilder, Mode, NoHooks, NodeId, ParamKind, PoolSpec,
};

use crate::util::{as_f32, assert_close, numeric_grad, tensor, to_f64, uniform};

type Params = BTreeMap<String, Vec<f64>>;

/// Tolerances of f32 graph values against f64 references.
const FWD_ATOL: f64 = 1e-5;
const FWD_RTOL: f64 = 1e-5;
/// Tolerances of f32 autodiff gradients against f64 central differences.
const GRAD_ATOL: f64 = 2e-5;
const GRAD_RTOL: f64 = 2e-4;
/// Finite-difference step (the references run in f64).
const FD_EPS: f64 = 1e-6;

fn trainable(g: &Graph) -> Params {
    g.params()
        .iter()
        .filter(|p| p.kind == ParamKind::Trainable)
        .map(|p| (p.name.clone(), to_f64(p.var.as_tensor())))
        .collect()
}

fn set_param(g: &Graph, name: &str, values: &[f64]) {
    let var = g.params().var(name).expect("parameter should exist");
    let t = tensor(values, var.dims());
    var.set(&t).expect("set should succeed");
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Runs `g` on a random input of shape `x_shape` (inputs in `[lo, hi]`), compares the output
/// with `reference`, then compares the gradients of `sum(out * r)` (random `r`) w.r.t. the input
/// and every trainable parameter with central differences of the reference.
fn check_graph(
    g: &Graph,
    x_shape: &[usize],
    mode: Mode,
    (lo, hi): (f64, f64),
    seed: u64,
    reference: impl Fn(&[f64], &Params) -> Vec<f64>,
) {
    let n: usize = x_shape.iter().product();
    let x0 = as_f32(&uniform(n, lo, hi, seed));
    let x = Var::from_tensor(&tensor(&x0, x_shape)).unwrap();
    let p0 = trainable(g);

    let out = g.forward(x.as_tensor(), mode).unwrap();
    let expected = reference(&x0, &p0);
    assert_close(&to_f64(&out), &expected, FWD_ATOL, FWD_RTOL);

    let r = as_f32(&uniform(expected.len(), -1.0, 1.0, seed + 1));
    let loss = (&out * tensor(&r, out.dims())).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();

    let gx = grads
        .get(x.as_tensor())
        .expect("input should get a gradient");
    let fd_x = numeric_grad(|xs| dot(&reference(xs, &p0), &r), &x0, FD_EPS);
    assert_close(&to_f64(gx), &fd_x, GRAD_ATOL, GRAD_RTOL);

    for (name, values) in &p0 {
        let var = g.params().var(name).unwrap();
        let gp = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} should get a gradient"));
        let fd = numeric_grad(
            |v| {
                let mut p = p0.clone();
                p.insert(name.clone(), v.to_vec());
                dot(&reference(&x0, &p), &r)
            },
            values,
            FD_EPS,
        );
        assert_close(&to_f64(gp), &fd, GRAD_ATOL, GRAD_RTOL);
    }
}

// ---------------------------------------------------------------- references (NCHW, f64)

fn conv_ref(x: &[f64], xs: [usize; 4], w: &[f64], b: Option<&[f64]>, s: &Conv2dSpec) -> Vec<f64> {
    let [n, cin, h, wd] = xs;
    let (cout, g) = (s.out_channels, s.groups);
    let (cin_g, cout_g) = (cin / g, cout / g);
    let [kh, kw] = s.kernel;
    let oh = (h + 2 * s.padding[0] - s.dilation[0] * (kh - 1) - 1) / s.stride[0] + 1;
    let ow = (wd + 2 * s.padding[1] - s.dilation[1] * (kw - 1) - 1) / s.stride[1] + 1;
    let mut out = vec![0.0; n * cout * oh * ow];
    for ni in 0..n {
        for co in 0..cout {
            let grp = co / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[co]);
                    for ci in 0..cin_g {
                        let c = grp * cin_g + ci;
                        for ky in 0..kh {
                            let iy = (oy * s.stride[0] + ky * s.dilation[0]) as isize
                                - s.padding[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let ix = (ox * s.stride[1] + kx * s.dilation[1]) as isize
                                    - s.padding[1] as isize;
                                if ix < 0 || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x[((ni * cin + c) * h + iy as usize) * wd + ix as usize];
                                let wv = w[((co * cin_g + ci) * kh + ky) * kw + kx];
                                acc += xv * wv;
                            }
                        }
                    }
                    out[((ni * cout + co) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    out
}

fn pool_ref(x: &[f64], xs: [usize; 4], p: &PoolSpec, max: bool) -> Vec<f64> {
    let [n, c, h, w] = xs;
    let [kh, kw] = p.kernel;
    let oh = (h + 2 * p.padding[0] - kh) / p.stride[0] + 1;
    let ow = (w + 2 * p.padding[1] - kw) / p.stride[1] + 1;
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
                for ky in 0..kh {
                    for kx in 0..kw {
                        let iy = (oy * p.stride[0] + ky) as isize - p.padding[0] as isize;
                        let ix = (ox * p.stride[1] + kx) as isize - p.padding[1] as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let v = x[(plane * h + iy as usize) * w + ix as usize];
                        acc = if max { acc.max(v) } else { acc + v };
                    }
                }
                out.push(if max { acc } else { acc / (kh * kw) as f64 });
            }
        }
    }
    out
}

/// Per-channel mean and biased variance of `[N, C, H, W]`.
fn channel_stats(x: &[f64], [n, c, h, w]: [usize; 4]) -> (Vec<f64>, Vec<f64>) {
    let count = (n * h * w) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for (i, &v) in x.iter().enumerate() {
        mean[(i / (h * w)) % c] += v / count;
    }
    for (i, &v) in x.iter().enumerate() {
        let ch = (i / (h * w)) % c;
        var[ch] += (v - mean[ch]).powi(2) / count;
    }
    (mean, var)
}

#[allow(clippy::too_many_arguments)]
fn bn_ref(
    x: &[f64],
    [_, c, h, w]: [usize; 4],
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    var: &[f64],
    eps: f64,
) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / (h * w)) % c;
            gamma[ch] * (v - mean[ch]) / (var[ch] + eps).sqrt() + beta[ch]
        })
        .collect()
}

fn linear_ref(x: &[f64], n: usize, w: &[f64], b: Option<&[f64]>, out: usize) -> Vec<f64> {
    let inp = x.len() / n;
    let mut y = Vec::with_capacity(n * out);
    for ni in 0..n {
        for o in 0..out {
            let s: f64 = (0..inp).map(|i| x[ni * inp + i] * w[o * inp + i]).sum();
            y.push(s + b.map_or(0.0, |b| b[o]));
        }
    }
    y
}

// ---------------------------------------------------------------- convolution

fn check_conv(spec: Conv2dSpec, x_shape: [usize; 4], seed: u64) {
    let mut b = GraphBuilder::new(&x_shape[1..], &Device::Cpu, seed);
    let y = b.conv2d("conv", b.input(), spec).unwrap();
    let g = b.finish(y).unwrap();
    check_graph(&g, &x_shape, Mode::Train, (-1.0, 1.0), seed, |x, p| {
        conv_ref(
            x,
            x_shape,
            &p["conv.weight"],
            p.get("conv.bias").map(Vec::as_slice),
            &spec,
        )
    });
}

#[test]
fn conv2d_stride1_pad0_with_bias_matches_reference_and_finite_differences() {
    check_conv(Conv2dSpec::new(3, 4, 3, 1, 0, true), [2, 3, 6, 5], 1);
}

#[test]
fn conv2d_stride2_pad1_without_bias_matches_reference_and_finite_differences() {
    check_conv(Conv2dSpec::new(3, 4, 3, 2, 1, false), [2, 3, 7, 6], 2);
}

#[test]
fn conv2d_stride1_pad1_with_bias_matches_reference_and_finite_differences() {
    check_conv(Conv2dSpec::new(2, 3, 3, 1, 1, true), [2, 2, 5, 5], 3);
}

#[test]
fn conv2d_dilation2_matches_reference_and_finite_differences() {
    let mut spec = Conv2dSpec::new(2, 3, 3, 1, 1, true);
    spec.dilation = [2, 2];
    check_conv(spec, [2, 2, 7, 6], 4);
}

#[test]
fn conv2d_depthwise_matches_reference_and_finite_differences() {
    check_conv(
        Conv2dSpec::new(4, 4, 3, 1, 1, false).with_groups(4),
        [2, 4, 5, 5],
        5,
    );
    check_conv(
        Conv2dSpec::new(3, 3, 3, 2, 1, true).with_groups(3),
        [2, 3, 6, 7],
        6,
    );
}

#[test]
fn conv2d_grouped_matches_reference_and_finite_differences() {
    check_conv(
        Conv2dSpec::new(4, 6, 3, 1, 1, true).with_groups(2),
        [2, 4, 4, 4],
        7,
    );
}

#[test]
fn conv2d_1x1_stride2_matches_reference_and_finite_differences() {
    check_conv(Conv2dSpec::new(3, 5, 1, 2, 0, false), [2, 3, 6, 6], 8);
}

// ---------------------------------------------------------------- linear and flatten

#[test]
fn flatten_then_linear_with_bias_matches_reference_and_finite_differences() {
    let x_shape = [3, 2, 3, 2];
    let mut b = GraphBuilder::new(&x_shape[1..], &Device::Cpu, 11);
    let f = b.flatten(b.input()).unwrap();
    let y = b.linear("fc", f, 5, true).unwrap();
    let g = b.finish(y).unwrap();
    check_graph(&g, &x_shape, Mode::Train, (-1.0, 1.0), 11, |x, p| {
        linear_ref(x, 3, &p["fc.weight"], Some(&p["fc.bias"]), 5)
    });
}

#[test]
fn linear_without_bias_matches_reference_and_finite_differences() {
    let x_shape = [4, 7];
    let mut b = GraphBuilder::new(&x_shape[1..], &Device::Cpu, 12);
    let y = b.linear("fc", b.input(), 3, false).unwrap();
    let g = b.finish(y).unwrap();
    assert!(g.params().get("fc.bias").is_none());
    check_graph(&g, &x_shape, Mode::Train, (-1.0, 1.0), 12, |x, p| {
        linear_ref(x, 4, &p["fc.weight"], None, 3)
    });
}

#[test]
fn flatten_keeps_row_major_order() {
    let x_shape = [2, 3, 2, 2];
    let mut b = GraphBuilder::new(&x_shape[1..], &Device::Cpu, 0);
    let f = b.flatten(b.input()).unwrap();
    let g = b.finish(f).unwrap();
    let x0 = as_f32(&uniform(24, -1.0, 1.0, 13));
    let out = g.forward(&tensor(&x0, &x_shape), Mode::Eval).unwrap();
    assert_eq!(out.dims(), &[2, 12]);
    assert_eq!(to_f64(&out), x0);
}

// ---------------------------------------------------------------- batch norm

fn bn_graph(x_shape: [usize; 4], seed: u64) -> Graph {
    let mut b = GraphBuilder::new(&x_shape[1..], &Device::Cpu, seed);
    let y = b.batch_norm("bn", b.input()).unwrap();
    let g = b.finish(y).unwrap();
    let c = x_shape[1];
    set_param(&g, "bn.weight", &as_f32(&uniform(c, 0.5, 1.5, seed + 10)));
    set_param(&g, "bn.bias", &as_f32(&uniform(c, -0.5, 0.5, seed + 11)));
    g
}

#[test]
fn batch_norm_train_matches_reference_and_finite_differences() {
    let x_shape = [3, 2, 3, 3];
    let g = bn_graph(x_shape, 21);
    check_graph(&g, &x_shape, Mode::Train, (-2.0, 3.0), 21, |x, p| {
        let (mean, var) = channel_stats(x, x_shape);
        bn_ref(
            x,
            x_shape,
            &p["bn.weight"],
            &p["bn.bias"],
            &mean,
            &var,
            1e-5,
        )
    });
}

#[test]
fn batch_norm_eval_matches_reference_and_finite_differences() {
    let x_shape = [2, 3, 2, 3];
    let g = bn_graph(x_shape, 22);
    let rm = as_f32(&uniform(3, -0.5, 0.5, 23));
    let rv = as_f32(&uniform(3, 0.5, 2.0, 24));
    set_param(&g, "bn.running_mean", &rm);
    set_param(&g, "bn.running_var", &rv);
    check_graph(&g, &x_shape, Mode::Eval, (-2.0, 2.0), 22, |x, p| {
        bn_ref(x, x_shape, &p["bn.weight"], &p["bn.bias"], &rm, &rv, 1e-5)
    });
    // Eval mode leaves the running statistics alone.
    assert_eq!(to_f64(g.params().var("bn.running_mean").unwrap()), rm);
    assert_eq!(to_f64(g.params().var("bn.running_var").unwrap()), rv);
}

fn counter(g: &Graph) -> i64 {
    g.params()
        .var("bn.num_batches_tracked")
        .unwrap()
        .as_tensor()
        .to_dtype(DType::I64)
        .unwrap()
        .to_scalar::<i64>()
        .unwrap()
}

#[test]
fn batch_norm_follows_pytorch_running_statistics() {
    // x: [N=2, C=2, H=1, W=2]; channel 0 holds 1, 2, 3, 6; channel 1 holds -1, 1, 0, 4.
    let x_shape = [2, 2, 1, 2];
    let x = tensor(&[1.0, 2.0, -1.0, 1.0, 3.0, 6.0, 0.0, 4.0], &x_shape);
    let mut b = GraphBuilder::new(&x_shape[1..], &Device::Cpu, 0);
    let y = b.batch_norm("bn", b.input()).unwrap();
    let g = b.finish(y).unwrap();
    assert_eq!(counter(&g), 0);

    // Channel 0: mean 3, biased var (4+1+0+9)/4 = 3.5, unbiased 14/3.
    // Channel 1: mean 1, biased var (4+0+1+9)/4 = 3.5, unbiased 14/3.
    let out = to_f64(&g.forward(&x, Mode::Train).unwrap());
    let s = (3.5f64 + 1e-5).sqrt();
    let expected: Vec<f64> = [
        (1.0 - 3.0),
        (2.0 - 3.0),
        (-1.0 - 1.0),
        (1.0 - 1.0),
        (3.0 - 3.0),
        (6.0 - 3.0),
        (0.0 - 1.0),
        (4.0 - 1.0),
    ]
    .iter()
    .map(|v| v / s)
    .collect();
    assert_close(&out, &expected, 1e-5, 1e-5);

    let rm = to_f64(g.params().var("bn.running_mean").unwrap());
    let rv = to_f64(g.params().var("bn.running_var").unwrap());
    assert_close(&rm, &[0.3, 0.1], 1e-6, 1e-6);
    let rv_expected = 0.9 * 1.0 + 0.1 * 14.0 / 3.0;
    assert_close(&rv, &[rv_expected, rv_expected], 1e-6, 1e-6);
    assert_eq!(counter(&g), 1);

    // A second step: new = 0.9 old + 0.1 batch again.
    g.forward(&x, Mode::Train).unwrap();
    let rm2 = to_f64(g.params().var("bn.running_mean").unwrap());
    let rv2 = to_f64(g.params().var("bn.running_var").unwrap());
    assert_close(&rm2, &[0.9 * 0.3 + 0.3, 0.9 * 0.1 + 0.1], 1e-6, 1e-6);
    let rv2_expected = 0.9 * rv_expected + 0.1 * 14.0 / 3.0;
    assert_close(&rv2, &[rv2_expected, rv2_expected], 1e-6, 1e-6);
    assert_eq!(counter(&g), 2);

    // Eval mode normalises with the running statistics.
    let out = to_f64(&g.forward(&x, Mode::Eval).unwrap());
    let (m0, m1) = (rm2[0], rm2[1]);
    let s = (rv2_expected + 1e-5).sqrt();
    let expected: Vec<f64> = [
        1.0 - m0,
        2.0 - m0,
        -1.0 - m1,
        1.0 - m1,
        3.0 - m0,
        6.0 - m0,
        0.0 - m1,
        4.0 - m1,
    ]
    .iter()
    .map(|v| v / s)
    .collect();
    assert_close(&out, &expected, 1e-5, 1e-5);
    assert_eq!(counter(&g), 2, "eval mode must not count batches");
}

#[test]
fn batch_norm_train_without_running_stat_updates_leaves_buffers_alone() {
    let x_shape = [2, 2, 2, 2];
    let g = bn_graph(x_shape, 25);
    let x = tensor(&uniform(16, -1.0, 1.0, 26), &x_shape);
    let mut hooks = NoHooks;
    let mut opts = ForwardOptions::new(Mode::Train, &mut hooks);
    opts.update_running_stats = false;
    g.forward_with(&x, &mut opts).unwrap();
    assert_eq!(to_f64(g.params().var("bn.running_mean").unwrap()), [0.0; 2]);
    assert_eq!(to_f64(g.params().var("bn.running_var").unwrap()), [1.0; 2]);
    assert_eq!(counter(&g), 0);
}

// ---------------------------------------------------------------- activations

fn unary_graph(x_shape: &[usize], f: impl Fn(&mut GraphBuilder, NodeId) -> NodeId) -> Graph {
    let mut b = GraphBuilder::new(&x_shape[1..], &Device::Cpu, 0);
    let input = b.input();
    let y = f(&mut b, input);
    b.finish(y).unwrap()
}

#[test]
fn relu_matches_reference_and_finite_differences() {
    let x_shape = [2, 3, 4, 4];
    let g = unary_graph(&x_shape, |b, x| b.relu(x).unwrap());
    check_graph(&g, &x_shape, Mode::Train, (-1.0, 1.0), 31, |x, _| {
        x.iter().map(|v| v.max(0.0)).collect()
    });
}

#[test]
fn relu6_matches_reference_and_finite_differences() {
    let x_shape = [2, 3, 4, 4];
    let g = unary_graph(&x_shape, |b, x| b.relu6(x).unwrap());
    check_graph(&g, &x_shape, Mode::Train, (-3.0, 9.0), 32, |x, _| {
        x.iter().map(|v| v.clamp(0.0, 6.0)).collect()
    });
}

// ---------------------------------------------------------------- pooling

fn check_pool(p: PoolSpec, x_shape: [usize; 4], max: bool, seed: u64) {
    let g = unary_graph(&x_shape, |b, x| {
        if max {
            b.max_pool(x, p).unwrap()
        } else {
            b.avg_pool(x, p).unwrap()
        }
    });
    check_graph(&g, &x_shape, Mode::Train, (-1.0, 1.0), seed, |x, _| {
        pool_ref(x, x_shape, &p, max)
    });
}

/// Max pooling 3x3/2 pad 1 and 2x2/2; average pooling 3x3/2 pad 1 (counting the padding),
/// 2x2/2 and 3x3/1 pad 1.
#[test]
fn pooling_matches_reference_and_finite_differences() {
    // (window, input shape, max (else average), seed)
    for (p, x_shape, max, seed) in [
        (PoolSpec::new(3, 2, 1), [2, 3, 7, 6], true, 41),
        (PoolSpec::new(2, 2, 0), [2, 2, 6, 5], true, 42),
        (PoolSpec::new(3, 2, 1), [2, 3, 7, 6], false, 44),
        (PoolSpec::new(2, 2, 0), [2, 2, 6, 4], false, 45),
        (PoolSpec::new(3, 1, 1), [1, 2, 4, 5], false, 46),
    ] {
        check_pool(p, x_shape, max, seed);
    }
}

#[test]
fn max_pool_of_all_negative_input_ignores_padding() {
    // Padding acts as -inf: a window covering padding and negative values yields a negative.
    let x_shape = [1, 1, 3, 3];
    let p = PoolSpec::new(3, 2, 1);
    let g = unary_graph(&x_shape, |b, x| b.max_pool(x, p).unwrap());
    let x0 = as_f32(&uniform(9, -2.0, -1.0, 43));
    let out = to_f64(&g.forward(&tensor(&x0, &x_shape), Mode::Eval).unwrap());
    assert!(out.iter().all(|&v| v < 0.0), "{out:?}");
    assert_close(&out, &pool_ref(&x0, x_shape, &p, true), 0.0, 0.0);
}

#[test]
fn global_avg_pool_matches_reference_and_finite_differences() {
    let x_shape = [2, 3, 4, 5];
    let g = unary_graph(&x_shape, |b, x| b.global_avg_pool(x).unwrap());
    assert_eq!(g.infer_shapes().unwrap()[1], [3, 1, 1]);
    check_graph(&g, &x_shape, Mode::Train, (-1.0, 1.0), 47, |x, _| {
        x.chunks(20).map(|c| c.iter().sum::<f64>() / 20.0).collect()
    });
}

// ---------------------------------------------------------------- add

#[test]
fn add_sums_both_branches_and_accumulates_their_gradients() {
    let x_shape = [2, 2, 3, 3];
    let g = unary_graph(&x_shape, |b, x| {
        let r = b.relu(x).unwrap();
        b.add(x, r).unwrap()
    });
    check_graph(&g, &x_shape, Mode::Train, (-1.0, 1.0), 51, |x, _| {
        x.iter().map(|v| v + v.max(0.0)).collect()
    });
}

#[test]
fn add_of_mismatched_shapes_fails_at_build_time_naming_the_node() {
    let mut b = GraphBuilder::new(&[2, 4, 4], &Device::Cpu, 0);
    let p = b.max_pool(b.input(), PoolSpec::new(2, 2, 0)).unwrap();
    match b.add(b.input(), p) {
        Err(mpq::Error::ShapeMismatch { name, .. }) => assert!(name.contains("add"), "{name}"),
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
}

// ---------------------------------------------------------------- dropout

fn dropout_graph(features: usize, p: f64) -> Graph {
    unary_graph(&[1, features], |b, x| b.dropout(x, p).unwrap())
}

fn train_forward(g: &Graph, x: &Tensor, seed: u64) -> Tensor {
    let mut hooks = NoHooks;
    let mut opts = ForwardOptions::new(Mode::Train, &mut hooks);
    opts.dropout_seed = seed;
    g.forward_with(x, &mut opts).unwrap()
}

#[test]
fn dropout_is_identity_in_eval_mode() {
    let g = dropout_graph(50, 0.5);
    let x0 = as_f32(&uniform(200, -1.0, 1.0, 61));
    let out = g.forward(&tensor(&x0, &[4, 50]), Mode::Eval).unwrap();
    assert_eq!(to_f64(&out), x0);
}

#[test]
fn dropout_in_train_mode_is_seeded_scaled_and_drops_about_p() {
    let p = 0.3;
    let (n, f) = (10, 2000);
    let g = dropout_graph(f, p);
    let x0 = as_f32(&uniform(n * f, 0.5, 1.5, 62));
    let x = tensor(&x0, &[n, f]);
    let a = to_f64(&train_forward(&g, &x, 7));
    let b = to_f64(&train_forward(&g, &x, 7));
    let c = to_f64(&train_forward(&g, &x, 8));
    assert_eq!(a, b, "the same seed must give the same mask");
    assert_ne!(a, c, "another seed must give another mask");

    let scale = 1.0 / (1.0 - p);
    let mut dropped = 0usize;
    for (&y, &xv) in a.iter().zip(&x0) {
        if y == 0.0 {
            dropped += 1;
        } else {
            assert!(
                (y - xv * scale).abs() <= 1e-5 * y.abs(),
                "kept element {xv} became {y}, expected {}",
                xv * scale
            );
        }
    }
    let rate = dropped as f64 / (n * f) as f64;
    // 20,000 Bernoulli(0.3) draws: std ≈ 0.0032, so ±0.02 is over 6 sigma.
    assert!(
        (rate - p).abs() < 0.02,
        "drop rate {rate}, expected about {p}"
    );
}

#[test]
fn dropout_gradient_is_the_scaled_mask() {
    let p = 0.5;
    let g = dropout_graph(64, p);
    let x0 = as_f32(&uniform(128, 0.5, 1.5, 63));
    let x = Var::from_tensor(&tensor(&x0, &[2, 64])).unwrap();
    let y = train_forward(&g, x.as_tensor(), 3);
    let grads = y.sum_all().unwrap().backward().unwrap();
    let gx = to_f64(grads.get(x.as_tensor()).unwrap());
    let mask: Vec<f64> = to_f64(&y).iter().zip(&x0).map(|(y, x)| y / x).collect();
    assert_close(&gx, &mask, 1e-6, 1e-5);
    assert!(gx.iter().all(|&v| v == 0.0 || (v - 2.0).abs() < 1e-6));
}

#[test]
fn dropout_with_p_zero_is_identity_in_train_mode() {
    let g = dropout_graph(30, 0.0);
    let x0 = as_f32(&uniform(60, -1.0, 1.0, 64));
    let out = train_forward(&g, &tensor(&x0, &[2, 30]), 1);
    assert_eq!(to_f64(&out), x0);
}

// ---------------------------------------------------------------- cross-entropy

fn ce_ref(logits: &[f64], y: &[u32], k: usize, eps: f64) -> f64 {
    let n = y.len();
    let mut total = 0.0;
    for (i, &label) in y.iter().enumerate() {
        let row = &logits[i * k..(i + 1) * k];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        let nll = lse - row[label as usize];
        let uniform = row.iter().map(|v| lse - v).sum::<f64>() / k as f64;
        total += (1.0 - eps) * nll + eps * uniform;
    }
    total / n as f64
}

fn check_cross_entropy(eps: f64, seed: u64) {
    let (n, k) = (4, 5);
    let logits0 = as_f32(&uniform(n * k, -3.0, 3.0, seed));
    let labels: Vec<u32> = vec![0, 3, 4, 3];
    let logits = Var::from_tensor(&tensor(&logits0, &[n, k])).unwrap();
    let y = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
    let loss = mpq::train::cross_entropy(logits.as_tensor(), &y, eps).unwrap();
    assert_eq!(loss.dims(), &[] as &[usize]);
    let expected = ce_ref(&logits0, &labels, k, eps);
    assert_close(&to_f64(&loss), &[expected], 1e-6, 1e-5);

    let grads = loss.backward().unwrap();
    let g = to_f64(grads.get(logits.as_tensor()).unwrap());
    let fd = numeric_grad(|l| ce_ref(l, &labels, k, eps), &logits0, FD_EPS);
    assert_close(&g, &fd, 1e-5, 1e-3);
}

#[test]
fn cross_entropy_matches_reference_and_finite_differences() {
    check_cross_entropy(0.0, 71);
}

#[test]
fn cross_entropy_with_label_smoothing_matches_reference_and_finite_differences() {
    check_cross_entropy(0.1, 72);
}

#[test]
fn cross_entropy_of_confident_correct_logits_is_near_zero() {
    let logits = Tensor::new(&[[20f32, 0.0, 0.0], [0.0, 0.0, 20.0]], &Device::Cpu).unwrap();
    let y = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
    let loss = mpq::train::cross_entropy(&logits, &y, 0.0).unwrap();
    assert!(to_f64(&loss)[0] < 1e-7);
    let uniform = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    let loss = mpq::train::cross_entropy(&uniform, &y, 0.0).unwrap();
    assert_close(&to_f64(&loss), &[3f64.ln()], 1e-6, 1e-6);
}

// ---------------------------------------------------------------- a composed graph

#[test]
fn small_cnn_gradients_match_finite_differences_end_to_end() {
    // conv(s2,p1) → bn(train) → relu → maxpool → gap → flatten → linear.
    let x_shape = [3, 2, 8, 8];
    let conv = Conv2dSpec::new(2, 3, 3, 2, 1, true);
    let pool = PoolSpec::new(2, 2, 0);
    let mut b = GraphBuilder::new(&x_shape[1..], &Device::Cpu, 81);
    let y = b.conv2d("conv", b.input(), conv).unwrap();
    let y = b.batch_norm("bn", y).unwrap();
    let y = b.relu(y).unwrap();
    let y = b.max_pool(y, pool).unwrap();
    let y = b.global_avg_pool(y).unwrap();
    let y = b.flatten(y).unwrap();
    let y = b.linear("fc", y, 4, true).unwrap();
    let g = b.finish(y).unwrap();
    set_param(&g, "bn.weight", &as_f32(&uniform(3, 0.5, 1.5, 82)));
    set_param(&g, "bn.bias", &as_f32(&uniform(3, -0.2, 0.8, 83)));
    check_graph(&g, &x_shape, Mode::Train, (-1.0, 1.0), 81, |x, p| {
        let y = conv_ref(x, x_shape, &p["conv.weight"], Some(&p["conv.bias"]), &conv);
        let ys = [3, 3, 4, 4];
        let (mean, var) = channel_stats(&y, ys);
        let y = bn_ref(&y, ys, &p["bn.weight"], &p["bn.bias"], &mean, &var, 1e-5);
        let y: Vec<f64> = y.iter().map(|v| v.max(0.0)).collect();
        let y = pool_ref(&y, ys, &pool, true);
        let y: Vec<f64> = y.chunks(4).map(|c| c.iter().sum::<f64>() / 4.0).collect();
        linear_ref(&y, 3, &p["fc.weight"], Some(&p["fc.bias"]), 4)
    });
}
