//! The scalar fallback selected at start-up by `MPQ_KERNELS_SCALAR=1` (the choice is read
//! once per process, so the checks run in a child process of this test binary with the
//! variable set): conv2d (dense, strided, 1x1, dilated, grouped, depthwise), batch norm
//! (train and eval) and pooling match their `*_slow` references (max pooling: plain loops) in
//! values and gradients, and the child really ran other code than the SIMD path of the parent.

use std::process::Command;

use candle::{Result, Tensor, Var};
use mpq_kernels::{
    Conv2dParams, PoolParams, avg_pool2d, avg_pool2d_slow, batch_norm_eval, batch_norm_train,
    conv2d, max_pool2d, max_pool2d_slow, reference, simd,
};

mod common;

use common::{Rng, assert_close};

const ENV: &str = "MPQ_KERNELS_SCALAR";
const CHILD: &str = "scalar_path_matches_references";
const MARK: &str = "scalar fingerprint: ";

/// Fast vs slow in the value of `f(inputs)` and the gradients of `Σ f(inputs)·r` w.r.t.
/// every input; returns the fast value.
fn check(
    what: &str,
    inputs: &[Tensor],
    fast: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    slow: &dyn Fn(&[Tensor]) -> Result<Tensor>,
    rng: &mut Rng,
) -> Result<Tensor> {
    let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let (yf, ys) = (fast(&ts)?, slow(&ts)?);
    assert_close(&yf, &ys, 1e-4, &format!("{what}: value"))?;
    let r = rng.tensor(yf.dims())?;
    let gf = (&yf * &r)?.sum_all()?.backward()?;
    let gs = (&ys * &r)?.sum_all()?.backward()?;
    for (i, v) in vars.iter().enumerate() {
        let (a, e) = (gf.get(v).expect("fast grad"), gs.get(v).expect("slow grad"));
        assert_close(a, e, 1e-4, &format!("{what}: grad of input {i}"))?;
    }
    Ok(yf)
}

/// `[n, c, hw, hw]` input, `[o, c/g, k, k]` weight and (optionally) `[o]` bias, checked.
#[expect(clippy::too_many_arguments, reason = "one argument per shape field")]
fn check_conv(
    rng: &mut Rng,
    n: usize,
    c: usize,
    hw: usize,
    o: usize,
    k: usize,
    p: Conv2dParams,
    bias: bool,
) -> Result<Tensor> {
    let mut inputs = vec![
        rng.tensor(&[n, c, hw, hw])?,
        rng.tensor(&[o, c / p.groups, k, k])?,
    ];
    if bias {
        inputs.push(rng.tensor(&[o])?);
    }
    check(
        &format!("conv n{n} c{c} hw{hw} o{o} k{k} {p:?} bias {bias}"),
        &inputs,
        &|t| conv2d(&t[0], &t[1], t.get(2), &p),
        &|t| reference::conv2d_slow(&t[0], &t[1], t.get(2), &p),
        rng,
    )
}

/// The dense 3x3 conv whose output bits identify the code path (GEMM with or without FMA).
fn fingerprint_conv() -> Result<Tensor> {
    let mut rng = Rng(0x5ca1_ab1e);
    check_conv(
        &mut rng,
        4,
        16,
        16,
        16,
        3,
        Conv2dParams::square(1, 1, 1, 1),
        false,
    )
}

/// FNV-1a over the bits of every element.
fn fingerprint(t: &Tensor) -> Result<u64> {
    let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
    Ok(v.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ u64::from(x.to_bits())).wrapping_mul(0x0100_0000_01b3)
    }))
}

fn check_batch_norm(rng: &mut Rng, dims: &[usize]) -> Result<()> {
    let c = dims[1];
    let inputs = [
        rng.tensor(dims)?.affine(3.0, 1.5)?,
        rng.tensor(&[c])?,
        rng.tensor(&[c])?,
    ];
    let what = format!("batch norm {dims:?}");
    check(
        &format!("{what} train"),
        &inputs,
        &|t| Ok(batch_norm_train(&t[0], &t[1], &t[2], 1e-5)?.0),
        &|t| Ok(reference::batch_norm_train_slow(&t[0], &t[1], &t[2], 1e-5)?.0),
        rng,
    )?;
    let (_, mf, vf) = batch_norm_train(&inputs[0], &inputs[1], &inputs[2], 1e-5)?;
    let (_, ms, vs) = reference::batch_norm_train_slow(&inputs[0], &inputs[1], &inputs[2], 1e-5)?;
    assert_close(&mf, &ms, 1e-4, &format!("{what} mean"))?;
    assert_close(&vf, &vs, 1e-4, &format!("{what} var"))?;
    let (rm, rv) = (rng.tensor(&[c])?, (rng.tensor(&[c])?.abs()? + 0.5)?);
    check(
        &format!("{what} eval"),
        &inputs,
        &|t| batch_norm_eval(&t[0], &t[1], &t[2], &rm, &rv, 1e-5),
        &|t| reference::batch_norm_eval_slow(&t[0], &t[1], &t[2], &rm, &rv, 1e-5),
        rng,
    )?;
    Ok(())
}

fn pool_params(k: usize, s: usize, pad: usize) -> PoolParams {
    PoolParams {
        kernel: [k, k],
        stride: [s, s],
        padding: [pad, pad],
    }
}

/// Average pooling vs the reference (which covers kernel == stride).
fn check_avg_pool(rng: &mut Rng, dims: &[usize], k: usize, pad: usize) -> Result<()> {
    let p = pool_params(k, k, pad);
    check(
        &format!("avg pool {dims:?} {p:?}"),
        &[rng.tensor(dims)?],
        &|t| avg_pool2d(&t[0], &p),
        &|t| avg_pool2d_slow(&t[0], &p),
        rng,
    )?;
    Ok(())
}

/// Max pooling vs plain loops: each window's value is its maximum and its gradient goes to
/// the first maximum. (candle 0.11's own max-pool backward, behind `max_pool2d_slow`,
/// multiplies the gradient by the window's share of maxima, 1/k² for a unique maximum,
/// instead of dividing by it, so it cannot be the gradient oracle.)
fn check_max_pool(rng: &mut Rng, dims: &[usize], k: usize, s: usize, pad: usize) -> Result<()> {
    let p = pool_params(k, s, pad);
    let what = format!("max pool {dims:?} {p:?}");
    let x = Var::from_tensor(&rng.tensor(dims)?)?;
    let y = max_pool2d(&x, &p)?;
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = p.out_hw(h, w).expect("the window should fit");
    let r = rng.tensor(&[n, c, oh, ow])?;
    let grad = (&y * &r)?.sum_all()?.backward()?;
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let rs: Vec<f32> = r.flatten_all()?.to_vec1()?;
    let (mut want_y, mut want_dx) = (vec![0f32; n * c * oh * ow], vec![0f32; xs.len()]);
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<usize> = None;
                for ky in 0..k {
                    for kx in 0..k {
                        let (iy, ix) = (
                            (oy * s + ky) as isize - pad as isize,
                            (ox * s + kx) as isize - pad as isize,
                        );
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let i = plane * h * w + iy as usize * w + ix as usize;
                        if best.is_none_or(|b| xs[i] > xs[b]) {
                            best = Some(i);
                        }
                    }
                }
                let b = best.expect("every window should hold an input pixel");
                let o = (plane * oh + oy) * ow + ox;
                want_y[o] = xs[b];
                want_dx[b] += rs[o];
            }
        }
    }
    let want_y = Tensor::from_vec(want_y, y.dims(), y.device())?;
    let want_dx = Tensor::from_vec(want_dx, x.dims(), x.device())?;
    assert_close(&y, &want_y, 0.0, &format!("{what}: value"))?;
    let dx = grad.get(&x).expect("max pool grad");
    assert_close(dx, &want_dx, 1e-6, &format!("{what}: grad"))?;
    if k == s && pad == 0 {
        let slow = max_pool2d_slow(&x, &p)?;
        assert_close(&y, &slow, 0.0, &format!("{what}: value vs max_pool2d_slow"))?;
    }
    Ok(())
}

/// Runs only in the child process that [`env_var_selects_scalar_path`] starts.
#[test]
#[ignore = "run by env_var_selects_scalar_path in a child process with MPQ_KERNELS_SCALAR=1"]
#[expect(
    clippy::print_stdout,
    reason = "the fingerprint goes to the parent test through stdout"
)]
fn scalar_path_matches_references() -> Result<()> {
    if std::env::var(ENV).as_deref() != Ok("1") {
        println!("skipped: {ENV}=1 is not set (env_var_selects_scalar_path sets it)");
        return Ok(());
    }
    assert!(simd::force_scalar(), "{ENV}=1 should force the fallback");
    assert_eq!(simd::isa(), simd::Isa::Scalar);
    // The environment wins over the run-time switch.
    simd::set_force_scalar(false);
    assert_eq!(simd::isa(), simd::Isa::Scalar);

    let fp = fingerprint(&fingerprint_conv()?)?;
    let mut rng = Rng(0x5eed_5ca1);
    let sq = Conv2dParams::square;
    check_conv(&mut rng, 2, 8, 9, 12, 3, sq(2, 1, 1, 1), true)?;
    check_conv(&mut rng, 3, 8, 8, 16, 1, sq(2, 0, 1, 1), false)?;
    check_conv(&mut rng, 2, 3, 9, 5, 3, sq(1, 2, 2, 1), true)?;
    check_conv(&mut rng, 1, 4, 7, 6, 5, sq(2, 2, 1, 1), false)?;
    check_conv(&mut rng, 2, 6, 7, 4, 3, sq(1, 1, 1, 2), true)?;
    check_conv(&mut rng, 4, 8, 11, 8, 3, sq(1, 1, 1, 8), false)?;
    check_conv(&mut rng, 3, 8, 11, 8, 3, sq(2, 1, 1, 8), true)?;
    check_conv(&mut rng, 2, 6, 10, 6, 3, sq(2, 0, 1, 6), false)?;
    let mut p = sq(1, 0, 1, 1);
    p.stride = [2, 1];
    p.padding = [1, 0];
    check_conv(&mut rng, 2, 3, 8, 4, 3, p, true)?;
    for dims in [
        &[4usize, 6, 5, 7][..],
        &[8, 16, 12, 12],
        &[3, 2, 1, 9],
        &[5, 6],
    ] {
        check_batch_norm(&mut rng, dims)?;
    }
    check_max_pool(&mut rng, &[2, 3, 8, 8], 2, 2, 0)?;
    check_max_pool(&mut rng, &[2, 3, 10, 11], 3, 3, 0)?;
    check_max_pool(&mut rng, &[2, 3, 9, 9], 3, 2, 1)?;
    check(
        "relu",
        &[rng.tensor(&[3, 5, 7, 11])?],
        &|t| mpq_kernels::relu(&t[0]),
        &|t| t[0].relu(),
        &mut rng,
    )?;
    check_avg_pool(&mut rng, &[2, 3, 8, 8], 2, 0)?;
    check_avg_pool(&mut rng, &[2, 3, 10, 10], 3, 1)?;
    println!("{MARK}{fp:016x}");
    Ok(())
}

#[test]
fn env_var_selects_scalar_path() -> Result<()> {
    let exe = std::env::current_exe().expect("the test binary should know its path");
    let out = Command::new(exe)
        .args([
            CHILD,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ENV, "1")
        .output()
        .expect("the test binary should start again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ctx = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "scalar child failed:\n{ctx}");
    assert!(
        stdout.contains("1 passed"),
        "the scalar child did not run:\n{ctx}"
    );
    let child = stdout
        .lines()
        .find_map(|l| l.split_once(MARK).map(|(_, h)| h))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no fingerprint from the scalar child:\n{ctx}"));
    if simd::isa() != simd::Isa::Scalar {
        // The same conv here runs the SIMD GEMM (FMA): its rounding differs from the plain
        // loops, so equal bits would mean the child never left the SIMD path.
        let here = fingerprint(&fingerprint_conv()?)?;
        assert_ne!(
            here, child,
            "the scalar child computed bit-identical SIMD results"
        );
    }
    Ok(())
}
