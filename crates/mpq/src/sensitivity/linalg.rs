//! Small dense linear algebra for the Hessian engine: symmetric eigenvalues by Householder
//! tridiagonalisation and the implicit QL algorithm (`tred2`/`tql2`, Wilkinson & Reinsch's
//! Handbook for Automatic Computation vol. II, as in EISPACK and JAMA), used by the `exact`
//! estimator (PyHessian: Yao et al. 2020) and by stochastic Lanczos quadrature (SLQ:
//! Ghorbani et al. 2019). Vectors are `f32` with `f64` accumulation, in a fixed order.

use crate::{Error, Result};

/// `Σ a_i b_i`, accumulated in f64 in index order.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Euclidean norm.
pub(crate) fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

/// `a *= s`.
pub(crate) fn scale(a: &mut [f32], s: f64) {
    for x in a {
        *x = (*x as f64 * s) as f32;
    }
}

/// `a -= s * b`.
pub(crate) fn sub_scaled(a: &mut [f32], s: f64, b: &[f32]) {
    for (x, &y) in a.iter_mut().zip(b) {
        *x = (*x as f64 - s * y as f64) as f32;
    }
}

/// Eigenvalues (ascending) of the symmetric `n`x`n` row-major matrix `a` (only its lower
/// triangle is read after symmetrisation by the caller).
pub(crate) fn sym_eigenvalues(a: &[f64], n: usize) -> Result<Vec<f64>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if a.iter().any(|x| !x.is_finite()) {
        return Err(Error::NonFinite("Hessian block (exact estimator)".into()));
    }
    let mut v = a.to_vec();
    let (mut d, mut e) = (vec![0.0; n], vec![0.0; n]);
    tred2(n, &mut v, &mut d, &mut e);
    tql2(n, &mut d, &mut e, None)?;
    Ok(d)
}

/// Eigenvalues (ascending) of the symmetric tridiagonal matrix with diagonal `diag` and
/// off-diagonal `off` (`off[i]` couples `i` and `i+1`), and the first component of each
/// (unit) eigenvector: the Gauss quadrature nodes and the square roots of the weights of
/// Lanczos quadrature.
pub(crate) fn tridiagonal_eigen(diag: &[f64], off: &[f64]) -> Result<(Vec<f64>, Vec<f64>)> {
    let n = diag.len();
    if n == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    if diag.iter().chain(off).any(|x| !x.is_finite()) {
        return Err(Error::NonFinite("Lanczos tridiagonal matrix".into()));
    }
    let mut d = diag.to_vec();
    // tql2 expects the sub-diagonal in e[1..n].
    let mut e = vec![0.0; n];
    e[1..n].copy_from_slice(&off[..n - 1]);
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    tql2(n, &mut d, &mut e, Some(&mut v))?;
    let first = (0..n).map(|k| v[k]).collect();
    Ok((d, first))
}

/// Householder reduction of the symmetric matrix in `v` (row-major `n`x`n`) to tridiagonal
/// form: diagonal in `d`, sub-diagonal in `e[1..n]`; `v` receives the orthogonal transform.
fn tred2(n: usize, v: &mut [f64], d: &mut [f64], e: &mut [f64]) {
    let at = |i: usize, j: usize| i * n + j;
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
    }
    for i in (1..n).rev() {
        let scale: f64 = d[..i].iter().map(|x| x.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
                v[at(j, i)] = 0.0;
            }
        } else {
            for dk in d[..i].iter_mut() {
                *dk /= scale;
                h += *dk * *dk;
            }
            let mut f = d[i - 1];
            let mut g = h.sqrt();
            if f > 0.0 {
                g = -g;
            }
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].fill(0.0);
            for j in 0..i {
                f = d[j];
                v[at(j, i)] = f;
                g = e[j] + v[at(j, j)] * f;
                for k in j + 1..i {
                    g += v[at(k, j)] * d[k];
                    e[k] += v[at(k, j)] * f;
                }
                e[j] = g;
            }
            f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                f = d[j];
                g = e[j];
                for k in j..i {
                    v[at(k, j)] -= f * e[k] + g * d[k];
                }
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
            }
        }
        d[i] = h;
    }
    for i in 0..n - 1 {
        v[at(n - 1, i)] = v[at(i, i)];
        v[at(i, i)] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[at(k, i + 1)] / h;
            }
            for j in 0..=i {
                let mut g = 0.0;
                for k in 0..=i {
                    g += v[at(k, i + 1)] * v[at(k, j)];
                }
                for k in 0..=i {
                    v[at(k, j)] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[at(k, i + 1)] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
        v[at(n - 1, j)] = 0.0;
    }
    v[at(n - 1, n - 1)] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL iterations on the tridiagonal matrix (`d`, `e[1..n]`); eigenvalues end up
/// sorted ascending in `d`, and, if given, the eigenvectors in the columns of `v` (which must
/// hold the transform that produced the tridiagonal matrix, or the identity).
fn tql2(n: usize, d: &mut [f64], e: &mut [f64], mut v: Option<&mut [f64]>) -> Result<()> {
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let (mut f, mut tst1) = (0.0f64, 0.0f64);
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            let mut iter = 0;
            loop {
                iter += 1;
                if iter > 100 {
                    return Err(Error::NonFinite(
                        "symmetric eigenvalue iteration did not converge".into(),
                    ));
                }
                let mut g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for di in d.iter_mut().take(n).skip(l + 2) {
                    *di -= h;
                }
                f += h;
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0f64, 1.0f64, 1.0f64);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0f64, 0.0f64);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    if let Some(v) = v.as_deref_mut() {
                        for k in 0..n {
                            let hk = v[k * n + i + 1];
                            v[k * n + i + 1] = s * v[k * n + i] + c * hk;
                            v[k * n + i] = c * v[k * n + i] - s * hk;
                        }
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    // Selection sort, ascending, moving eigenvectors along.
    for i in 0..n.saturating_sub(1) {
        let mut k = i;
        for j in i + 1..n {
            if d[j] < d[k] {
                k = j;
            }
        }
        if k != i {
            d.swap(i, k);
            if let Some(v) = v.as_deref_mut() {
                for row in 0..n {
                    v.swap(row * n + i, row * n + k);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigenvalues_of_a_known_matrix() {
        // [[2,1,0],[1,2,1],[0,1,2]]: 2 - √2, 2, 2 + √2.
        let a = [2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0];
        let ev = sym_eigenvalues(&a, 3).unwrap();
        let want = [2.0 - 2f64.sqrt(), 2.0, 2.0 + 2f64.sqrt()];
        for (x, y) in ev.iter().zip(want) {
            assert!((x - y).abs() < 1e-12, "{ev:?}");
        }
    }

    #[test]
    fn eigenvalues_of_a_rotated_diagonal_matrix() {
        // Q diag(λ) Qᵀ with a Householder Q = I - 2uuᵀ/‖u‖².
        let n = 7;
        let lambda: Vec<f64> = (0..n).map(|i| i as f64 * 1.5 - 4.0).collect();
        let u: Vec<f64> = (0..n).map(|i| (i as f64 * 0.7).sin() + 0.3).collect();
        let uu: f64 = u.iter().map(|x| x * x).sum();
        let q = |i: usize, j: usize| (i == j) as i32 as f64 - 2.0 * u[i] * u[j] / uu;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| q(i, k) * lambda[k] * q(j, k)).sum();
            }
        }
        let ev = sym_eigenvalues(&a, n).unwrap();
        for (x, y) in ev.iter().zip(&lambda) {
            assert!((x - y).abs() < 1e-10, "{ev:?} vs {lambda:?}");
        }
    }

    #[test]
    fn tridiagonal_nodes_and_weights() {
        // The 2x2 matrix [[1, 1], [1, 1]]: eigenvalues 0 and 2, first components ±1/√2.
        let (nodes, first) = tridiagonal_eigen(&[1.0, 1.0], &[1.0]).unwrap();
        assert!((nodes[0]).abs() < 1e-12 && (nodes[1] - 2.0).abs() < 1e-12);
        for c in first {
            assert!((c * c - 0.5).abs() < 1e-12);
        }
        // Weights of any tridiagonal matrix sum to 1.
        let (_, first) = tridiagonal_eigen(&[0.3, -1.0, 2.0, 0.5], &[0.2, 0.7, -0.4]).unwrap();
        let total: f64 = first.iter().map(|c| c * c).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }
}
