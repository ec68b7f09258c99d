//! Integration tests for the fast kernels: fast vs `*_slow` reference in values and
//! gradients on randomized shapes, gradients vs central finite differences, the scalar
//! fallback, and the non-f32 fallback path.

use candle::{DType, Device, Result, Tensor, Var};
use mpq_kernels::{Conv2dParams, batch_norm_eval, batch_norm_train, conv2d, reference, simd};

mod common;

use common::{Rng, assert_close};

#[derive(Clone, Copy, Debug)]
struct ConvCase {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: [usize; 2],
    p: Conv2dParams,
    bias: bool,
}

impl ConvCase {
    #[expect(clippy::too_many_arguments, reason = "one argument per shape field")]
    fn new(
        n: usize,
        c: usize,
        hw: usize,
        o: usize,
        k: usize,
        s: usize,
        pad: usize,
        g: usize,
    ) -> Self {
        Self {
            n,
            c,
            h: hw,
            w: hw,
            o,
            k: [k, k],
            p: Conv2dParams::square(s, pad, 1, g),
            bias: false,
        }
    }
    fn valid(&self) -> bool {
        let span = |k: usize, d: usize| d * (k - 1) + 1;
        self.h + 2 * self.p.padding[0] >= span(self.k[0], self.p.dilation[0])
            && self.w + 2 * self.p.padding[1] >= span(self.k[1], self.p.dilation[1])
    }
}

/// Fast vs slow: values and gradients of `sum(conv(x, w, b) * r)` w.r.t. x, w, b.
fn check_conv(case: &ConvCase, rng: &mut Rng, rtol: f64) -> Result<()> {
    let cg = case.c / case.p.groups;
    let x = Var::from_tensor(&rng.tensor(&[case.n, case.c, case.h, case.w])?)?;
    let w = Var::from_tensor(&rng.tensor(&[case.o, cg, case.k[0], case.k[1]])?)?;
    let b = Var::from_tensor(&rng.tensor(&[case.o])?)?;
    let bias = case.bias.then_some(b.as_tensor());
    let fast = conv2d(&x, &w, bias, &case.p)?;
    let slow = reference::conv2d_slow(&x, &w, bias, &case.p)?;
    let what = format!("{case:?}");
    assert_close(&fast, &slow, rtol, &format!("value {what}"))?;
    let r = rng.tensor(fast.dims())?;
    let gf = (&fast * &r)?.sum_all()?.backward()?;
    let gs = (&slow * &r)?.sum_all()?.backward()?;
    for (name, v) in [("dx", &x), ("dw", &w), ("db", &b)] {
        match (gf.get(v), gs.get(v)) {
            (Some(a), Some(e)) => assert_close(a, e, rtol, &format!("{name} {what}"))?,
            (None, None) => {}
            _ => panic!("{name} {what}: gradient present in only one of fast/slow"),
        }
    }
    Ok(())
}

fn fixed_conv_cases() -> Vec<ConvCase> {
    let mut v = vec![
        // ResNet-20-like layers (batch 4 exercises the batch-parallel path).
        ConvCase::new(4, 16, 32, 16, 3, 1, 1, 1),
        ConvCase::new(4, 16, 32, 32, 3, 2, 1, 1),
        ConvCase::new(4, 16, 32, 32, 1, 2, 0, 1),
        ConvCase::new(5, 32, 8, 64, 1, 1, 0, 1),
        ConvCase::new(2, 3, 9, 5, 3, 1, 0, 1),
        ConvCase::new(2, 3, 9, 5, 3, 1, 2, 1),
        ConvCase::new(1, 4, 7, 6, 5, 2, 2, 1),
        // The direct stride-1 kernel: partial output-channel blocks (20, 33), rows wider
        // than one 16-lane register with a partial tail (19, 17), 8-wide rows (masked), 5x5
        // and unpadded 3x3 (its input gradient pads by 2).
        ConvCase::new(3, 5, 19, 20, 3, 1, 1, 1),
        ConvCase::new(2, 40, 8, 36, 3, 1, 1, 1),
        ConvCase::new(2, 4, 17, 33, 5, 1, 2, 1),
        ConvCase::new(2, 7, 12, 18, 3, 1, 0, 1),
        // Strided 1x1 (a downsample shortcut; odd input, so the last row/column is skipped).
        ConvCase::new(3, 5, 9, 20, 1, 2, 0, 1),
        ConvCase::new(2, 4, 13, 6, 1, 3, 0, 1),
        // Strided dense convs as polyphase correlations: stride 3 (9 phases, some without
        // taps in the input gradient), 5x5 stride 2 on an even input, padding ≥ kernel.
        ConvCase::new(2, 5, 11, 7, 3, 3, 1, 1),
        ConvCase::new(2, 3, 10, 17, 5, 2, 2, 1),
        ConvCase::new(2, 3, 6, 4, 2, 2, 2, 1),
        // depthwise 3x3, stride 1 and 2
        ConvCase::new(4, 8, 11, 8, 3, 1, 1, 8),
        ConvCase::new(3, 8, 11, 8, 3, 2, 1, 8),
        ConvCase::new(4, 6, 10, 6, 3, 2, 0, 6),
        // depthwise stride 1 on rows wider than one 16-lane register (AVX-512 planes),
        // padded and unpadded (the input gradient then pads by 2).
        ConvCase::new(2, 5, 37, 5, 3, 1, 1, 5),
        ConvCase::new(3, 4, 19, 4, 3, 1, 0, 4),
        // grouped, channel multiplier
        ConvCase::new(2, 6, 7, 4, 3, 1, 1, 2),
        ConvCase::new(2, 3, 7, 6, 3, 1, 1, 3),
    ];
    let mut dil = ConvCase::new(3, 4, 9, 5, 3, 1, 2, 1);
    dil.p.dilation = [2, 2];
    v.push(dil);
    let mut asym = ConvCase::new(2, 3, 8, 4, 3, 1, 1, 1);
    asym.w = 11;
    asym.k = [3, 2];
    asym.p = Conv2dParams {
        stride: [2, 1],
        padding: [1, 0],
        dilation: [1, 2],
        groups: 1,
    };
    v.push(asym);
    // The direct kernels' masked runs across rows need output rows as wide as input rows,
    // not equal heights: "same" padding along the width only, and a 3x1 kernel; an unpadded
    // 1x3 kernel walks rows (its input gradient pads 2 columns, so rows are wider than input).
    for (k, padding, h, w) in [
        ([3, 3], [0, 1], 7, 19),
        ([3, 1], [1, 0], 9, 6),
        ([1, 3], [0, 0], 5, 21),
    ] {
        let mut c = ConvCase::new(2, 5, 1, 18, 1, 1, 0, 1);
        (c.h, c.w, c.k, c.p.padding) = (h, w, k, padding);
        v.push(c);
    }
    let with_bias: Vec<ConvCase> = v.iter().map(|c| ConvCase { bias: true, ..*c }).collect();
    v.extend(with_bias);
    v
}

fn random_conv_case(rng: &mut Rng) -> ConvCase {
    loop {
        let n = 1 + rng.below(5);
        let kind = rng.below(4);
        let c = 1 + rng.below(7);
        let (g, o) = match kind {
            0 => (c, c),                                             // depthwise
            1 if c.is_multiple_of(2) => (2, 2 * (1 + rng.below(3))), // grouped
            _ => (1, 1 + rng.below(9)),
        };
        let k = [1, 2, 3, 3, 5][rng.below(5)];
        let case = ConvCase {
            n,
            c,
            h: 1 + rng.below(13),
            w: 1 + rng.below(13),
            o,
            k: [k, [1, 3, k][rng.below(3)]],
            p: Conv2dParams {
                stride: [1 + rng.below(2), 1 + rng.below(2)],
                padding: [rng.below(3), rng.below(3)],
                dilation: [1 + rng.below(2), 1 + rng.below(2)],
                groups: g,
            },
            bias: rng.below(2) == 0,
        };
        if case.valid() {
            return case;
        }
    }
}

#[test]
fn conv2d_matches_reference_on_fixed_shapes() -> Result<()> {
    let mut rng = Rng(0x5eed_0001);
    for case in fixed_conv_cases() {
        check_conv(&case, &mut rng, 1e-4)?;
    }
    Ok(())
}

#[test]
fn conv2d_matches_reference_on_random_shapes() -> Result<()> {
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..60 {
        let case = random_conv_case(&mut rng);
        check_conv(&case, &mut rng, 1e-4)?;
    }
    Ok(())
}

#[test]
fn scalar_fallback_matches_reference() -> Result<()> {
    simd::set_force_scalar(true);
    assert_eq!(simd::isa(), simd::Isa::Scalar);
    let mut rng = Rng(0x5eed_0003);
    let result = (|| {
        for case in fixed_conv_cases() {
            check_conv(&case, &mut rng, 1e-4)?;
        }
        for dims in [[4usize, 5, 6, 7], [3, 2, 1, 9]] {
            check_bn(&dims, &mut rng)?;
        }
        Ok(())
    })();
    simd::set_force_scalar(false);
    result
}

#[test]
fn conv2d_accepts_strided_input_and_skips_untracked_input_grad() -> Result<()> {
    let mut rng = Rng(0x5eed_0004);
    let x = rng.tensor(&[3, 4, 9, 4])?.transpose(2, 3)?; // [3, 4, 4, 9], not contiguous
    let w = Var::from_tensor(&rng.tensor(&[5, 4, 3, 3])?)?;
    let p = Conv2dParams::square(1, 1, 1, 1);
    let fast = conv2d(&x, &w, None, &p)?;
    let slow = reference::conv2d_slow(&x, &w, None, &p)?;
    assert_close(&fast, &slow, 1e-4, "strided input")?;
    let gf = fast.sum_all()?.backward()?;
    let gs = slow.sum_all()?.backward()?;
    assert!(gf.get(&x).is_none());
    assert_close(gf.get(&w).expect("dw"), gs.get(&w).expect("dw"), 1e-4, "dw")?;
    Ok(())
}

#[test]
fn conv2d_falls_back_for_f64() -> Result<()> {
    let mut rng = Rng(0x5eed_0005);
    let x = rng.tensor(&[2, 3, 6, 6])?.to_dtype(DType::F64)?;
    let w = rng.tensor(&[4, 3, 3, 3])?.to_dtype(DType::F64)?;
    let b = rng.tensor(&[4])?.to_dtype(DType::F64)?;
    for p in [
        Conv2dParams::square(2, 1, 1, 1),
        Conv2dParams {
            stride: [1, 2],
            ..Default::default()
        },
    ] {
        let y = conv2d(&x, &w, Some(&b), &p)?;
        assert_eq!(y.dtype(), DType::F64);
        let fast = conv2d(
            &x.to_dtype(DType::F32)?,
            &w.to_dtype(DType::F32)?,
            Some(&b.to_dtype(DType::F32)?),
            &p,
        )?;
        assert_close(&fast, &y, 1e-5, "f64 fallback")?;
    }
    Ok(())
}

#[test]
fn conv2d_rejects_bad_shapes() {
    let x = Tensor::zeros((1, 4, 5, 5), DType::F32, &Device::Cpu).expect("zeros");
    let w = Tensor::zeros((6, 3, 3, 3), DType::F32, &Device::Cpu).expect("zeros");
    assert!(conv2d(&x, &w, None, &Conv2dParams::default()).is_err());
    let w = Tensor::zeros((6, 2, 3, 3), DType::F32, &Device::Cpu).expect("zeros");
    let p = Conv2dParams {
        groups: 2,
        ..Default::default()
    };
    assert!(conv2d(&x, &w, None, &p).is_ok());
    let b = Tensor::zeros(5, DType::F32, &Device::Cpu).expect("zeros");
    assert!(conv2d(&x, &w, Some(&b), &p).is_err());
    let w = Tensor::zeros((6, 2, 7, 7), DType::F32, &Device::Cpu).expect("zeros");
    assert!(conv2d(&x, &w, None, &p).is_err());
}

/// `L(v) = Σ f(v) · r` evaluated in f64.
fn loss(y: &Tensor, r: &[f64]) -> Result<f64> {
    let y: Vec<f64> = y.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    Ok(y.iter().zip(r).map(|(a, b)| a * b).sum())
}

/// Central differences of `f` w.r.t. every element of `inputs[which]` vs `analytic`.
fn check_fd(
    inputs: &[Tensor],
    which: usize,
    analytic: &Tensor,
    eps: f64,
    tol: f64,
    f: &dyn Fn(&[Tensor]) -> Result<f64>,
) -> Result<()> {
    let base: Vec<f64> = inputs[which]
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1()?;
    let an: Vec<f64> = analytic.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let scale = an.iter().fold(1f64, |m, v| m.max(v.abs()));
    let dtype = inputs[which].dtype();
    let dims = inputs[which].dims().to_vec();
    for i in 0..base.len() {
        let eval = |d: f64| -> Result<f64> {
            let mut v = base.clone();
            v[i] += d;
            let mut ins = inputs.to_vec();
            ins[which] = Tensor::from_vec(v, dims.as_slice(), &Device::Cpu)?.to_dtype(dtype)?;
            f(&ins)
        };
        let fd = (eval(eps)? - eval(-eps)?) / (2.0 * eps);
        assert!(
            (fd - an[i]).abs() <= tol * scale,
            "input {which} element {i}: finite difference {fd} vs analytic {}",
            an[i]
        );
    }
    Ok(())
}

#[test]
fn conv2d_grads_match_finite_differences() -> Result<()> {
    let mut rng = Rng(0x5eed_0006);
    let cases = [
        ConvCase::new(2, 3, 5, 2, 3, 2, 1, 1),
        ConvCase::new(2, 3, 5, 3, 3, 1, 1, 3),
        ConvCase::new(1, 2, 4, 3, 1, 1, 0, 1),
        // Dense 3x3 at stride 1 (the direct kernels' runs across rows).
        ConvCase::new(2, 3, 5, 4, 3, 1, 1, 1),
    ];
    // Every case with a bias.
    for case in cases.map(|c| ConvCase { bias: true, ..c }) {
        let cg = case.c / case.p.groups;
        let ins = [
            rng.tensor(&[case.n, case.c, case.h, case.w])?,
            rng.tensor(&[case.o, cg, case.k[0], case.k[1]])?,
            rng.tensor(&[case.o])?,
        ];
        let vars: Vec<Var> = ins.iter().map(Var::from_tensor).collect::<Result<_>>()?;
        let y = conv2d(&vars[0], &vars[1], Some(&vars[2]), &case.p)?;
        let r: Vec<f64> = rng
            .tensor(y.dims())?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        let rt = Tensor::from_vec(r.clone(), y.dims(), &Device::Cpu)?.to_dtype(DType::F32)?;
        let grads = (&y * &rt)?.sum_all()?.backward()?;
        let f = |t: &[Tensor]| loss(&conv2d(&t[0], &t[1], Some(&t[2]), &case.p)?, &r);
        for (i, v) in vars.iter().enumerate() {
            // The loss is linear in each argument, so a large step is exact up to rounding.
            check_fd(&ins, i, grads.get(v).expect("grad"), 0.5, 1e-4, &f)?;
        }
    }
    Ok(())
}

/// Fast vs slow batch norm (train and eval) in values, statistics and gradients.
fn check_bn(dims: &[usize], rng: &mut Rng) -> Result<()> {
    let c = dims[1];
    let x = Var::from_tensor(&rng.tensor(dims)?.affine(3.0, 1.5)?)?;
    let gamma = Var::from_tensor(&rng.tensor(&[c])?)?;
    let beta = Var::from_tensor(&rng.tensor(&[c])?)?;
    let (yf, mf, vf) = batch_norm_train(&x, &gamma, &beta, 1e-5)?;
    let (ys, ms, vs) = reference::batch_norm_train_slow(&x, &gamma, &beta, 1e-5)?;
    let what = format!("{dims:?}");
    assert_close(&yf, &ys, 1e-4, &format!("bn train y {what}"))?;
    assert_close(&mf, &ms, 1e-4, &format!("bn mean {what}"))?;
    assert_close(&vf, &vs, 1e-4, &format!("bn var {what}"))?;
    let r = rng.tensor(dims)?;
    let gf = (&yf * &r)?.sum_all()?.backward()?;
    let gs = (&ys * &r)?.sum_all()?.backward()?;
    for (name, v) in [("dx", &x), ("dgamma", &gamma), ("dbeta", &beta)] {
        let (a, e) = (gf.get(v).expect("fast grad"), gs.get(v).expect("slow grad"));
        assert_close(a, e, 1e-4, &format!("bn train {name} {what}"))?;
    }
    let rm = rng.tensor(&[c])?;
    let rv = (rng.tensor(&[c])?.abs()? + 0.5)?;
    let yf = batch_norm_eval(&x, &gamma, &beta, &rm, &rv, 1e-5)?;
    let ys = reference::batch_norm_eval_slow(&x, &gamma, &beta, &rm, &rv, 1e-5)?;
    assert_close(&yf, &ys, 1e-4, &format!("bn eval y {what}"))?;
    let gf = (&yf * &r)?.sum_all()?.backward()?;
    let gs = (&ys * &r)?.sum_all()?.backward()?;
    for (name, v) in [("dx", &x), ("dgamma", &gamma), ("dbeta", &beta)] {
        let (a, e) = (gf.get(v).expect("fast grad"), gs.get(v).expect("slow grad"));
        assert_close(a, e, 1e-4, &format!("bn eval {name} {what}"))?;
    }
    // The fused BN + ReLU ops against BN then ReLU (the reference composition).
    let (yf, _, _) = mpq_kernels::batch_norm_train_relu(&x, &gamma, &beta, 1e-5)?;
    let ys = reference::batch_norm_train_slow(&x, &gamma, &beta, 1e-5)?
        .0
        .relu()?;
    let yfe = mpq_kernels::batch_norm_eval_relu(&x, &gamma, &beta, &rm, &rv, 1e-5)?;
    let yse = reference::batch_norm_eval_slow(&x, &gamma, &beta, &rm, &rv, 1e-5)?.relu()?;
    for (mode, yf, ys) in [("train", &yf, &ys), ("eval", &yfe, &yse)] {
        assert_close(yf, ys, 1e-4, &format!("bn+relu {mode} y {what}"))?;
        let gf = (yf * &r)?.sum_all()?.backward()?;
        let gs = (ys * &r)?.sum_all()?.backward()?;
        for (name, v) in [("dx", &x), ("dgamma", &gamma), ("dbeta", &beta)] {
            let (a, e) = (gf.get(v).expect("fast grad"), gs.get(v).expect("slow grad"));
            assert_close(a, e, 1e-4, &format!("bn+relu {mode} {name} {what}"))?;
        }
    }
    Ok(())
}

#[test]
fn batch_norm_matches_reference() -> Result<()> {
    let mut rng = Rng(0x5eed_0007);
    for dims in [
        vec![8usize, 16, 32, 32],
        vec![4, 7, 5, 3],
        vec![1, 3, 1, 1],
        vec![5, 6],
        vec![2, 4, 3, 2, 2],
        vec![3, 64, 8, 8],
    ] {
        check_bn(&dims, &mut rng)?;
    }
    Ok(())
}

#[test]
fn batch_norm_grads_match_finite_differences() -> Result<()> {
    let mut rng = Rng(0x5eed_0008);
    let dims = [3usize, 2, 3, 2];
    let ins = [rng.tensor(&dims)?, rng.tensor(&[2])?, rng.tensor(&[2])?];
    let (rm, rv) = (rng.tensor(&[2])?, (rng.tensor(&[2])?.abs()? + 0.5)?);
    let r: Vec<f64> = rng
        .tensor(&dims)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1()?;
    let rt = Tensor::from_vec(r.clone(), &dims, &Device::Cpu)?.to_dtype(DType::F32)?;
    let ins64: Vec<Tensor> = ins
        .iter()
        .map(|t| t.to_dtype(DType::F64))
        .collect::<Result<_>>()?;
    let vars: Vec<Var> = ins.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    // Analytic gradients from the fast f32 ops; finite differences of the f64 reference.
    let (y, _, _) = batch_norm_train(&vars[0], &vars[1], &vars[2], 1e-3)?;
    let g = (&y * &rt)?.sum_all()?.backward()?;
    let f = |t: &[Tensor]| {
        loss(
            &reference::batch_norm_train_slow(&t[0], &t[1], &t[2], 1e-3)?.0,
            &r,
        )
    };
    for (i, v) in vars.iter().enumerate() {
        check_fd(&ins64, i, g.get(v).expect("grad"), 1e-5, 1e-4, &f)?;
    }
    let (rm64, rv64) = (rm.to_dtype(DType::F64)?, rv.to_dtype(DType::F64)?);
    let y = batch_norm_eval(&vars[0], &vars[1], &vars[2], &rm, &rv, 1e-3)?;
    let g = (&y * &rt)?.sum_all()?.backward()?;
    let f = |t: &[Tensor]| {
        loss(
            &reference::batch_norm_eval_slow(&t[0], &t[1], &t[2], &rm64, &rv64, 1e-3)?,
            &r,
        )
    };
    for (i, v) in vars.iter().enumerate() {
        check_fd(&ins64, i, g.get(v).expect("grad"), 1e-5, 1e-4, &f)?;
    }
    Ok(())
}

/// `fast` against candle's composition `slow` in value and gradient (exactly) on `x`, and
/// `fast`'s gradient at the points `at` (sum of outputs) equals `want`.
fn check_activation(
    what: &str,
    x: &Tensor,
    fast: &dyn Fn(&Tensor) -> Result<Tensor>,
    slow: &dyn Fn(&Tensor) -> Result<Tensor>,
    at: &[f32],
    want: &[f32],
    rng: &mut Rng,
) -> Result<()> {
    let x = Var::from_tensor(x)?;
    let (f, s) = (fast(&x)?, slow(&x)?);
    assert_close(&f, &s, 0.0, &format!("{what} value"))?;
    let r = rng.tensor(f.dims())?;
    let gf = (&f * &r)?.sum_all()?.backward()?;
    let gs = (&s * &r)?.sum_all()?.backward()?;
    let (a, e) = (
        gf.get(&x).expect("fast grad"),
        gs.get(&x).expect("slow grad"),
    );
    assert_close(a, e, 0.0, &format!("{what} gradient"))?;
    let z = Var::from_tensor(&Tensor::new(at, &Device::Cpu)?)?;
    let g = fast(&z)?.sum_all()?.backward()?;
    let dz: Vec<f32> = g.get(&z).expect("grad").to_vec1()?;
    assert_eq!(dz, want, "{what} gradient at {at:?}");
    Ok(())
}

#[test]
fn relu_and_relu6_match_candle_with_pytorchs_gradient_at_the_kinks() -> Result<()> {
    let mut rng = Rng(0x5eed_0007);
    // Odd lengths over several rayon blocks, continuous values (no exact 0 or 6); relu6's
    // spread over both clips. At the kinks no gradient passes (PyTorch's convention).
    let x = rng.tensor(&[3, 7, 41, 53])?;
    check_activation(
        "relu",
        &x,
        &|t| mpq_kernels::relu(t),
        &|t| t.relu(),
        &[-1.0, 0.0, 2.0],
        &[0.0, 0.0, 1.0],
        &mut rng,
    )?;
    let x = (rng.tensor(&[2, 5, 33, 29])? * 8.0)?;
    check_activation(
        "relu6",
        &x,
        &|t| mpq_kernels::relu6(t),
        &|t| t.relu()?.minimum(6f64),
        &[-1.0, 0.0, 3.0, 6.0, 7.0],
        &[0.0, 0.0, 1.0, 0.0, 0.0],
        &mut rng,
    )
}

#[test]
fn masked_matches_where_cond_in_value_and_gradient() -> Result<()> {
    let mut rng = Rng(0x5eed_0009);
    let dims = [3, 4, 37, 23];
    let z = Var::from_tensor(&rng.tensor(&dims)?)?;
    let mask = rng.tensor(&dims)?.gt(0.2)?;
    let zero = Tensor::zeros((), DType::F32, &Device::Cpu)?.broadcast_as(&dims[..])?;
    let (fast, slow) = (mpq_kernels::masked(&z, &mask)?, mask.where_cond(&z, &zero)?);
    assert_close(&fast, &slow, 0.0, "masked value")?;
    let r = rng.tensor(&dims)?;
    let gf = (&fast * &r)?.sum_all()?.backward()?;
    let gs = (&slow * &r)?.sum_all()?.backward()?;
    let (a, e) = (
        gf.get(&z).expect("fast grad"),
        gs.get(&z).expect("slow grad"),
    );
    assert_close(a, e, 0.0, "masked gradient")?;
    // A mask of another shape is an error, not a panic.
    assert!(mpq_kernels::masked(&z, &mask.narrow(0, 0, 1)?).is_err());
    Ok(())
}
