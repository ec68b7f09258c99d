//! Tests for the quantization ops: uniform affine fake quantization (clipped straight-through
//! estimator) and LSQ (Esser et al., "Learned Step Size Quantization", ICLR 2020): forward
//! values bit for bit against references, round-half-to-even ties, gradients against
//! hand-computed literals and finite differences, the `f64` fallback path, and the helpers.

use candle::{DType, Device, Result, Tensor, Var};
use mpq_kernels::{
    fake_quant, fake_quant_slow, lsq, lsq_bounds, lsq_grad_scale, lsq_init_step, lsq_slow,
    round_half_even,
};

mod common;

use common::Rng;

fn t(v: &[f32], dims: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(v.to_vec(), dims, &Device::Cpu)
}

fn vals(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

fn assert_bitwise(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "{what}[{i}]: {x} vs {y}");
    }
}

/// Scalar reference of fake quantization for element value `x` with channel params `s`, `z`.
fn fq_scalar(x: f32, s: f32, z: f32, qmin: f32, qmax: f32) -> f32 {
    let q = (x / s).round_ties_even() + z;
    let q = if q < qmin { qmin } else { q };
    let q = if q > qmax { qmax } else { q };
    (q - z) * s
}

/// Channel of flat index `i` for `axis` of `dims`.
fn channel(dims: &[usize], axis: usize, i: usize) -> usize {
    let inner: usize = dims[axis + 1..].iter().product();
    (i / inner) % dims[axis]
}

#[test]
fn round_half_even_tensor_matches_std() -> Result<()> {
    let mut v: Vec<f32> = (-40..=40).map(|k| k as f32 * 0.25).collect();
    v.extend([
        -0.0,
        1e-3,
        -1e-3,
        0.49999997,
        -0.49999997,
        8388607.5,
        -8388607.5,
        1e7,
        2.5e-8,
    ]);
    let mut rng = Rng(7);
    v.extend((0..1000).map(|_| rng.uniform() * 100.0));
    let got = vals(&round_half_even(&t(&v, &[v.len()])?)?)?;
    let want: Vec<f32> = v.iter().map(|x| x.round_ties_even()).collect();
    assert_bitwise(&got, &want, "round_half_even");
    // Also in f64.
    let got64 = round_half_even(&t(&v, &[v.len()])?.to_dtype(DType::F64)?)?.to_vec1::<f64>()?;
    for (g, x) in got64.iter().zip(&v) {
        assert_eq!(*g, f64::from(*x).round_ties_even(), "f64 round of {x}");
    }
    Ok(())
}

#[test]
fn fake_quant_per_tensor_matches_references_bitwise() -> Result<()> {
    let mut rng = Rng(0x1234_5678);
    for &(n, s, z, qmin, qmax) in &[
        (10_000usize, 0.05f32, 0.0f32, -8.0f32, 7.0f32),
        (37, 0.1, 3.0, 0.0, 15.0),
        (20_001, 0.0371, -2.0, -128.0, 127.0),
        (1, 0.3, 0.0, -1.0, 1.0),
    ] {
        let x = rng.data(n, 1.5, s);
        let xt = t(&x, &[n])?;
        for st in [t(&[s], &[1])?, Tensor::new(s, &Device::Cpu)?] {
            let zt = t(&[z], &[1])?;
            let fast = vals(&fake_quant(&xt, &st, &zt, qmin, qmax, None)?)?;
            let slow = vals(&fake_quant_slow(&xt, &st, &zt, qmin, qmax, None)?)?;
            let want: Vec<f32> = x.iter().map(|&v| fq_scalar(v, s, z, qmin, qmax)).collect();
            assert_bitwise(&fast, &slow, "fast vs slow");
            assert_bitwise(&fast, &want, "fast vs scalar");
        }
    }
    Ok(())
}

#[test]
fn fake_quant_per_channel_matches_references_bitwise() -> Result<()> {
    let mut rng = Rng(99);
    for (dims, axis) in [
        (vec![16usize, 75], 0usize),
        (vec![8, 3, 3, 3], 0),
        (vec![32, 16, 1, 1], 0),
        (vec![2, 6, 5, 5], 1),
        (vec![4, 7], 1),
    ] {
        let n: usize = dims.iter().product();
        let c = dims[axis];
        let x = rng.data(n, 2.0, 0.0625);
        let scale: Vec<f32> = (0..c).map(|_| 0.02 + 0.1 * rng.uniform().abs()).collect();
        let zp: Vec<f32> = (0..c).map(|_| rng.below(5) as f32 - 2.0).collect();
        let xt = t(&x, &dims)?;
        let (st, zt) = (t(&scale, &[c])?, t(&zp, &[c])?);
        let fast = fake_quant(&xt, &st, &zt, -8.0, 7.0, Some(axis))?;
        assert_eq!(fast.dims(), &dims[..]);
        let fast = vals(&fast)?;
        let slow = vals(&fake_quant_slow(&xt, &st, &zt, -8.0, 7.0, Some(axis))?)?;
        let want: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = channel(&dims, axis, i);
                fq_scalar(v, scale[ch], zp[ch], -8.0, 7.0)
            })
            .collect();
        assert_bitwise(&fast, &slow, "per-channel fast vs slow");
        assert_bitwise(&fast, &want, "per-channel fast vs scalar");
        // A single-element zero-point broadcasts over the channels.
        let z0 = t(&[1.0], &[1])?;
        let fast = vals(&fake_quant(&xt, &st, &z0, -8.0, 7.0, Some(axis))?)?;
        let slow = vals(&fake_quant_slow(&xt, &st, &z0, -8.0, 7.0, Some(axis))?)?;
        assert_bitwise(&fast, &slow, "broadcast zero-point");
    }
    // A non-contiguous input goes through `contiguous()` first.
    let x = t(&rng.data(60, 1.0, 0.125), &[6, 10])?.t()?;
    let (st, zt) = (t(&[0.125; 10], &[10])?, t(&[0.0; 10], &[10])?);
    let fast = vals(&fake_quant(&x, &st, &zt, -4.0, 3.0, Some(0))?)?;
    let slow = vals(&fake_quant_slow(&x, &st, &zt, -4.0, 3.0, Some(0))?)?;
    assert_bitwise(&fast, &slow, "transposed input");
    Ok(())
}

#[test]
fn fake_quant_ties_round_half_to_even() -> Result<()> {
    // s = 0.25 is a power of two, so x/s is exactly k + 0.5.
    let x = [-0.625f32, -0.375, -0.125, 0.125, 0.375, 0.625, 0.875];
    let want = [-0.5f32, -0.5, -0.0, 0.0, 0.5, 0.5, 1.0];
    let (s, z) = (t(&[0.25], &[1])?, t(&[0.0], &[1])?);
    let fast = vals(&fake_quant(&t(&x, &[7])?, &s, &z, -128.0, 127.0, None)?)?;
    let slow = vals(&fake_quant_slow(
        &t(&x, &[7])?,
        &s,
        &z,
        -128.0,
        127.0,
        None,
    )?)?;
    assert_eq!(fast, want);
    assert_eq!(slow, want);
    Ok(())
}

#[test]
fn fake_quant_asymmetric_zero_point_and_clamping() -> Result<()> {
    // x/s = [-8, -1.2, 0, 2.8, 7.6, 20, 10.5]; codes + 5 = [-3, 4, 5, 8, 13, 25, 15];
    // clamped to [0, 15] minus 5, times s.
    let x = [-2.0f32, -0.3, 0.0, 0.7, 1.9, 5.0, 2.625];
    let want = [-1.25f32, -0.25, 0.0, 0.75, 2.0, 2.5, 2.5];
    let (s, z) = (t(&[0.25], &[1])?, t(&[5.0], &[1])?);
    let xt = t(&x, &[7])?;
    assert_eq!(vals(&fake_quant(&xt, &s, &z, 0.0, 15.0, None)?)?, want);
    assert_eq!(vals(&fake_quant_slow(&xt, &s, &z, 0.0, 15.0, None)?)?, want);
    // Gradient: 1 where the unclipped code lies in [0, 15] (the code 15 at 2.625 included).
    let xv = Var::from_tensor(&xt)?;
    let c = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], &[7])?;
    let loss = (fake_quant(xv.as_tensor(), &s, &z, 0.0, 15.0, None)? * &c)?.sum_all()?;
    let g = vals(loss.backward()?.get(xv.as_tensor()).expect("grad"))?;
    assert_eq!(g, [0.0, 2.0, 3.0, 4.0, 5.0, 0.0, 7.0]);
    Ok(())
}

#[test]
fn fake_quant_backward_is_clipped_ste() -> Result<()> {
    // s = 0.5, z = 0, codes in [-4, 3]: x/s inside [-4.5, 3.5) rounds into range.
    let x = [
        -5.0f32, -2.3, -2.0, -0.1, 0.0, 0.9, 1.5, 1.74, 1.76, 3.0, 100.0,
    ];
    let inside = [0.0f32, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0];
    let upstream: Vec<f32> = (0..x.len()).map(|i| 0.5 + i as f32).collect();
    let (s, z) = (t(&[0.5], &[1])?, t(&[0.0], &[1])?);
    let want: Vec<f32> = upstream.iter().zip(inside).map(|(g, m)| g * m).collect();
    for dtype in [DType::F32, DType::F64] {
        let xv = Var::from_tensor(&t(&x, &[x.len()])?.to_dtype(dtype)?)?;
        let y = fake_quant(xv.as_tensor(), &s, &z, -4.0, 3.0, None)?;
        let c = t(&upstream, &[x.len()])?.to_dtype(dtype)?;
        let grads = (y * c)?.sum_all()?.backward()?;
        let g = vals(grads.get(xv.as_tensor()).expect("grad"))?;
        assert_eq!(g, want, "{dtype:?}");
    }
    // Per-channel: channel 0 has s = 1 (codes 0, -2, 3: inside), channel 1 s = 0.01 (codes
    // 2, -3 inside, 100 clipped).
    let xv = Var::from_tensor(&t(&[0.5, -2.0, 3.0, 0.02, -0.03, 1.0], &[2, 3])?)?;
    let (s, z) = (t(&[1.0, 0.01], &[2])?, t(&[0.0, 0.0], &[2])?);
    let y = fake_quant(xv.as_tensor(), &s, &z, -4.0, 3.0, Some(0))?;
    let g = vals(y.sum_all()?.backward()?.get(xv.as_tensor()).expect("grad"))?;
    assert_eq!(g, [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
    Ok(())
}

#[test]
fn fake_quant_fallback_matches_fast() -> Result<()> {
    let mut rng = Rng(5);
    let x = rng.data(3 * 40, 1.0, 0.125);
    let xt = t(&x, &[3, 40])?;
    let (s, z) = (
        t(&[0.125, 0.0625, 0.25], &[3])?,
        t(&[1.0, 0.0, -1.0], &[3])?,
    );
    let fast = vals(&fake_quant(&xt, &s, &z, -8.0, 7.0, Some(0))?)?;
    let f64_path = vals(&fake_quant(
        &xt.to_dtype(DType::F64)?,
        &s,
        &z,
        -8.0,
        7.0,
        Some(0),
    )?)?;
    // Power-of-two scales: the f64 path computes the same values exactly.
    assert_eq!(fast, f64_path);
    Ok(())
}

#[test]
fn fake_quant_rejects_bad_arguments() -> Result<()> {
    let x = t(&[0.0; 6], &[2, 3])?;
    let one = t(&[1.0], &[1])?;
    let three = t(&[1.0; 3], &[3])?;
    assert!(fake_quant(&x, &three, &one, -1.0, 1.0, None).is_err());
    assert!(fake_quant(&x, &three, &one, -1.0, 1.0, Some(0)).is_err());
    assert!(fake_quant(&x, &one, &one, -1.0, 1.0, Some(2)).is_err());
    assert!(fake_quant(&x, &one, &one, 1.0, -1.0, None).is_err());
    assert!(fake_quant(&x, &three, &one, -1.0, 1.0, Some(1)).is_ok());
    Ok(())
}

/// The small LSQ case: x, s = 0.5, 2-bit signed (Qn = 2, Qp = 1), so x/s =
/// [-6.2, -0.8, 0.52, 1.48, 4.0]:
/// - -6.2 ≤ -Qn: ŷ = -Qn·s = -1.0, ∂ŷ/∂x = 0, ∂ŷ/∂s = -Qn = -2;
/// - -0.8 inside: round = -1, ŷ = -0.5, ∂ŷ/∂x = 1, ∂ŷ/∂s = -1 - (-0.8) = -0.2;
/// - 0.52 inside: round = 1, ŷ = 0.5, ∂ŷ/∂x = 1, ∂ŷ/∂s = 1 - 0.52 = 0.48;
/// - 1.48 and 4.0 ≥ Qp: ŷ = Qp·s = 0.5, ∂ŷ/∂x = 0, ∂ŷ/∂s = Qp = 1.
///
/// With upstream c = [0.5, -1, 2, 1.5, -0.25] and g = 0.25:
/// grad_x = c·∂ŷ/∂x = [0, -1, 2, 0, 0];
/// grad_s = g·Σ c·∂ŷ/∂s = 0.25·(-1 + 0.2 + 0.96 + 1.5 - 0.25) = 0.25·1.41 = 0.3525.
const LSQ_X: [f32; 5] = [-3.1, -0.4, 0.26, 0.74, 2.0];
const LSQ_C: [f32; 5] = [0.5, -1.0, 2.0, 1.5, -0.25];

fn lsq_case(
    x: &[f32],
    s: f32,
    c: &[f32],
    g: f32,
    dtype: DType,
) -> Result<(Vec<f32>, Vec<f32>, f32)> {
    let xv = Var::from_tensor(&t(x, &[x.len()])?.to_dtype(dtype)?)?;
    let sv = Var::from_tensor(&t(&[s], &[1])?.to_dtype(dtype)?)?;
    let (qn, qp) = lsq_bounds(2, true);
    let y = lsq(xv.as_tensor(), sv.as_tensor(), qn, qp, g)?;
    let ct = t(c, &[c.len()])?.to_dtype(dtype)?;
    let grads = (&y * ct)?.sum_all()?.backward()?;
    let gx = vals(grads.get(xv.as_tensor()).expect("grad x"))?;
    let gs = vals(grads.get(sv.as_tensor()).expect("grad s"))?;
    assert_eq!(gs.len(), 1);
    Ok((vals(&y)?, gx, gs[0]))
}

#[test]
fn lsq_gradients_match_hand_computed_literals() -> Result<()> {
    for dtype in [DType::F32, DType::F64] {
        let (y, gx, gs) = lsq_case(&LSQ_X, 0.5, &LSQ_C, 0.25, dtype)?;
        assert_eq!(y, [-1.0, -0.5, 0.5, 0.5, 0.5], "{dtype:?}");
        assert_eq!(gx, [0.0, -1.0, 2.0, 0.0, 0.0], "{dtype:?}");
        assert!((gs - 0.3525).abs() < 1e-6, "{dtype:?}: grad_s {gs}");
    }
    // The paper's g = 1/√(N·Qp) = 1/√5 here.
    let g = lsq_grad_scale(5, 1.0);
    let (_, _, gs) = lsq_case(&LSQ_X, 0.5, &LSQ_C, g, DType::F32)?;
    assert!((gs - 1.41 / 5f32.sqrt()).abs() < 1e-6, "grad_s {gs}");
    Ok(())
}

#[test]
fn lsq_step_gradient_matches_finite_differences() -> Result<()> {
    // Clipped elements: ŷ(s) = -Qn·s or Qp·s exactly, so the true forward is linear in s and
    // its central difference must equal -Qn or Qp. Inside the range the true forward
    // ŷ(s) = s·round(x/s) is piecewise linear with slope round(x/s) (rounding is locally
    // constant), while LSQ differentiates the straight-through surrogate in which round(u)
    // passes u's derivative: ŷ_ste(s) = s·(r + x/s − x/s₀) with r = round(x/s₀) held fixed,
    // whose derivative at s₀ is r − x/s₀ (the paper's eq. 3). So: clipped part against
    // differences of the op itself, inside part against differences of ŷ_ste in f64, and
    // the true inside slope is checked to be r (the −x/s term is what the STE adds).
    let (qn, qp) = lsq_bounds(2, true);
    let (s0, h, g) = (0.5f64, 1e-3f64, 0.25f32);
    let x = LSQ_X;
    let c = LSQ_C;
    let fwd = |s: f64| -> Result<Vec<f32>> {
        vals(&lsq(
            &t(&x, &[5])?.to_dtype(DType::F64)?,
            &Tensor::new(&[s], &Device::Cpu)?,
            qn,
            qp,
            g,
        )?)
    };
    let (yp, ym) = (fwd(s0 + h)?, fwd(s0 - h)?);
    let mut fd = 0f64;
    for i in 0..5 {
        let xi = f64::from(x[i]);
        let v = xi / s0;
        let slope_true = (f64::from(yp[i]) - f64::from(ym[i])) / (2.0 * h);
        if v <= -f64::from(qn) || v >= f64::from(qp) {
            fd += f64::from(c[i]) * slope_true;
        } else {
            let r = v.round_ties_even();
            assert!(
                (slope_true - r).abs() < 1e-4,
                "true inside slope {slope_true} vs {r}"
            );
            let ste = |s: f64| s * (r + xi / s - xi / s0);
            fd += f64::from(c[i]) * (ste(s0 + h) - ste(s0 - h)) / (2.0 * h);
        }
    }
    let want = (f64::from(g) * fd) as f32;
    for dtype in [DType::F32, DType::F64] {
        let (_, _, gs) = lsq_case(&x, s0 as f32, &c, g, dtype)?;
        assert!(
            (gs - want).abs() < 1e-4,
            "{dtype:?}: {gs} vs finite differences {want}"
        );
    }
    assert!((want - 0.3525).abs() < 1e-4);
    Ok(())
}

#[test]
fn lsq_fast_matches_slow_per_tensor_and_per_channel() -> Result<()> {
    let mut rng = Rng(42);
    for (dims, per_channel, bits, signed) in [
        (vec![20_000usize], false, 4u32, true),
        (vec![3, 5], false, 2, true),
        (vec![16, 3, 3, 3], true, 3, true),
        (vec![8, 100], true, 4, false),
        (vec![6, 7], false, 8, false),
    ] {
        let n: usize = dims.iter().product();
        let x = rng.data(n, 1.5, 0.1);
        let c0 = dims[0];
        let step: Vec<f32> = if per_channel {
            (0..c0).map(|_| 0.05 + 0.2 * rng.uniform().abs()).collect()
        } else {
            vec![0.1]
        };
        let sdims = if per_channel { vec![c0] } else { vec![] };
        let up: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
        let (qn, qp) = lsq_bounds(bits, signed);
        let g = lsq_grad_scale(n / step.len(), qp);
        let run = |slow: bool| -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
            let xv = Var::from_tensor(&t(&x, &dims)?)?;
            let sv = Var::from_tensor(&t(&step, &sdims)?)?;
            let y = if slow {
                lsq_slow(xv.as_tensor(), sv.as_tensor(), qn, qp, g)?
            } else {
                lsq(xv.as_tensor(), sv.as_tensor(), qn, qp, g)?
            };
            let grads = (&y * t(&up, &dims)?)?.sum_all()?.backward()?;
            let gs = grads.get(sv.as_tensor()).expect("grad s");
            assert_eq!(gs.dims(), &sdims[..]);
            Ok((
                vals(&y)?,
                vals(grads.get(xv.as_tensor()).expect("grad x"))?,
                vals(gs)?,
            ))
        };
        let (yf, gxf, gsf) = run(false)?;
        let (ys, gxs, gss) = run(true)?;
        // Equal values (`==`: the slow surrogate adds an exact zero, which may flip -0 to 0).
        assert_eq!(yf, ys, "{dims:?} values");
        assert_eq!(gxf, gxs, "{dims:?} grad x");
        assert_close(&gsf, &gss, 1e-4, "grad step");
        // Scalar reference of the forward.
        let inner = n / step.len();
        for (i, (&v, &y)) in x.iter().zip(&yf).enumerate() {
            let s = step[if per_channel { i / inner } else { 0 }];
            let q = (v / s).max(-qn).min(qp).round_ties_even() * s;
            assert_eq!(y, q, "element {i}");
        }
    }
    Ok(())
}

#[test]
fn lsq_rejects_bad_step_shapes() -> Result<()> {
    let x = t(&[0.0; 6], &[2, 3])?;
    assert!(lsq(&x, &t(&[1.0; 3], &[3])?, 2.0, 1.0, 1.0).is_err());
    assert!(lsq(&x, &t(&[1.0; 2], &[1, 2])?, 2.0, 1.0, 1.0).is_err());
    assert!(lsq(&x, &t(&[1.0; 2], &[2])?, 2.0, 1.0, 1.0).is_ok());
    assert!(lsq(&x, &Tensor::new(1f32, &Device::Cpu)?, 2.0, 1.0, 1.0).is_ok());
    Ok(())
}

#[test]
fn lsq_helpers() {
    assert_eq!(lsq_bounds(2, true), (2.0, 1.0));
    assert_eq!(lsq_bounds(4, true), (8.0, 7.0));
    assert_eq!(lsq_bounds(8, true), (128.0, 127.0));
    assert_eq!(lsq_bounds(1, false), (0.0, 1.0));
    assert_eq!(lsq_bounds(4, false), (0.0, 15.0));
    assert_eq!(lsq_bounds(8, false), (0.0, 255.0));
    assert!((lsq_grad_scale(5, 1.0) - 0.447_213_6).abs() < 1e-7);
    assert!((lsq_grad_scale(1000, 127.0) - 1.0 / (127_000f32).sqrt()).abs() < 1e-9);
    // mean|x| = (1 + 2 + 3 + 2) / 4 = 2; 2·2/√4 = 2.
    assert_eq!(lsq_init_step(&[1.0, -2.0, 3.0, -2.0], 4.0), 2.0);
    // mean|x| = 0.5, Qp = 15: 1/√15.
    assert!((lsq_init_step(&[0.5, -0.5], 15.0) - 1.0 / 15f32.sqrt()).abs() < 1e-7);
    assert_eq!(lsq_init_step(&[], 15.0), 0.0);
}

#[test]
#[should_panic(expected = "bits must be in 1..=24")]
fn lsq_bounds_rejects_zero_bits() {
    let _ = lsq_bounds(0, true);
}
