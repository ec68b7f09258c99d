//! Strided row copies for the polyphase form of strided convolutions (see `direct`): the
//! forward pass gathers every `s`-th input pixel into a phase row, the input gradient
//! scatters a phase row back into every `s`-th pixel of `dx`. Stride 2 (ResNet's
//! downsampling convs) runs as in-register permutes of 16 pixels, other strides and
//! CPUs without AVX-512 one value at a time (the scalar loops took 4% of a Hessian product).

use std::mem::MaybeUninit;

use crate::simd::{Isa, isa};

/// `dst[j] = src[j·s + b]` for `j < dst.len()` (which must satisfy `(len − 1)·s + b <
/// src.len()`).
pub(crate) fn gather_row(src: &[f32], s: usize, b: usize, dst: &mut [f32]) {
    let n = dst.len();
    if n == 0 {
        return;
    }
    assert!((n - 1) * s + b < src.len(), "phase row past its input row");
    #[cfg(target_arch = "x86_64")]
    if s == 2 && isa() == Isa::Avx512 {
        // SAFETY: AVX-512F was detected; the assert above bounds every lane read.
        unsafe { gather2(&src[b..], dst) };
        return;
    }
    for (d, &v) in dst.iter_mut().zip(src[b..].iter().step_by(s)) {
        *d = v;
    }
}

/// `dst[j·s + b] = src[j]` for `j < src.len()` (which must satisfy `(len − 1)·s + b <
/// dst.len()`); the other elements of `dst` untouched.
pub(crate) fn scatter_row(src: &[f32], s: usize, b: usize, dst: &mut [MaybeUninit<f32>]) {
    let n = src.len();
    if n == 0 {
        return;
    }
    assert!((n - 1) * s + b < dst.len(), "phase row past its output row");
    #[cfg(target_arch = "x86_64")]
    if s == 2 && isa() == Isa::Avx512 {
        // SAFETY: AVX-512F was detected; the assert above bounds every lane written.
        unsafe { scatter2(src, &mut dst[b..]) };
        return;
    }
    for (d, &v) in dst[b..].iter_mut().step_by(s).zip(src) {
        d.write(v);
    }
}

/// `dst[j] = src[2j]`, 16 values per two loads and a permute.
///
/// # Safety
/// AVX-512F; `2·(dst.len() − 1) < src.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather2(src: &[f32], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let lanes = |n: usize| -> __mmask16 { if n >= 16 { !0 } else { (1u16 << n) - 1 } };
    for j0 in (0..dst.len()).step_by(16) {
        let at = 2 * j0;
        let left = src.len() - at;
        // SAFETY: lanes past `src.len()` are masked off; stored lanes are below `dst.len()`.
        unsafe {
            let lo = _mm512_maskz_loadu_ps(lanes(left), src.as_ptr().add(at));
            let hi = _mm512_maskz_loadu_ps(
                lanes(left.saturating_sub(16)),
                src.as_ptr().wrapping_add(at + 16),
            );
            let v = _mm512_permutex2var_ps(lo, even, hi);
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(j0), lanes(dst.len() - j0), v);
        }
    }
}

/// `dst[2j] = src[j]`: each value duplicated into a lane pair by a permute, the even lanes
/// stored.
///
/// # Safety
/// AVX-512F; `2·(src.len() − 1) < dst.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scatter2(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::*;
    let lo_idx = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    let hi_idx = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    // Even lanes of the first `n` destination values.
    let lanes = |n: usize| -> __mmask16 {
        let m = if n >= 16 { !0u16 } else { (1u16 << n) - 1 };
        m & 0x5555
    };
    let out = dst.as_mut_ptr().cast::<f32>();
    for j0 in (0..src.len()).step_by(16) {
        let n = (src.len() - j0).min(16);
        let at = 2 * j0;
        // The destination values this block may write: `2·(n − 1) + 1` from `at`.
        let span = 2 * n - 1;
        // SAFETY: lanes past `n` sources are masked off on load; stored lanes are even
        // offsets below `span` from `at`, inside `dst`.
        unsafe {
            let v = _mm512_maskz_loadu_ps(
                if n >= 16 { !0 } else { (1u16 << n) - 1 },
                src.as_ptr().add(j0),
            );
            _mm512_mask_storeu_ps(out.add(at), lanes(span), _mm512_permutexvar_ps(lo_idx, v));
            if span > 16 {
                _mm512_mask_storeu_ps(
                    out.add(at + 16),
                    lanes(span - 16),
                    _mm512_permutexvar_ps(hi_idx, v),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_rows_match_the_plain_loops() {
        for s in 1..4 {
            for len in [1usize, 5, 16, 17, 31, 32, 33, 64, 70] {
                let src: Vec<f32> = (0..len).map(|i| i as f32 + 0.5).collect();
                for b in 0..s.min(len) {
                    let n = (len - b).div_ceil(s);
                    let mut got = vec![0f32; n];
                    gather_row(&src, s, b, &mut got);
                    let want: Vec<f32> = src[b..].iter().step_by(s).copied().collect();
                    assert_eq!(got, want, "gather s {s} len {len} b {b}");

                    let mut dst = vec![MaybeUninit::new(-1f32); len];
                    scatter_row(&want, s, b, &mut dst);
                    for (i, d) in dst.iter().enumerate() {
                        // SAFETY: every element was initialised above.
                        let v = unsafe { d.assume_init() };
                        let expect = if i >= b && (i - b) % s == 0 {
                            src[i]
                        } else {
                            -1.0
                        };
                        assert_eq!(v, expect, "scatter s {s} len {len} b {b} at {i}");
                    }
                }
            }
        }
    }
}
