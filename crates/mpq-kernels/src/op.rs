//! The candle custom-op plumbing of the kernels, written once.
//!
//! candle's `CustomOp1/2/3` hand each input to `cpu_fwd` as a `(&CpuStorage, &Layout)` pair of
//! arguments and each input, the result and its gradient to `bwd` as separate arguments. The
//! ops of this crate all read contiguous `f32` (or `u8` mask) slices from their inputs and
//! return one `f32` buffer, so an op implements [`CpuOp<N>`] over an array of its `N` inputs
//! ([`Arg`]) and gradients ([`Grad`]), and [`Op`] turns it into candle's trait for `N` = 1, 2
//! or 3.

use candle::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail};

use crate::storage::slice_f32;

/// One input of a custom op: its CPU storage viewed through its layout.
#[derive(Clone, Copy)]
pub(crate) struct Arg<'a> {
    pub(crate) storage: &'a CpuStorage,
    pub(crate) layout: &'a Layout,
}

impl<'a> Arg<'a> {
    /// The contiguous `f32` data.
    pub(crate) fn f32(self) -> Result<&'a [f32]> {
        slice_f32(self.storage, self.layout)
    }

    /// The contiguous `u8` data (a mask); `what` names the op in the error.
    pub(crate) fn u8(self, what: &str) -> Result<&'a [u8]> {
        match (self.storage, self.layout.contiguous_offsets()) {
            (CpuStorage::U8(m), Some((a, b))) => Ok(&m[a..b]),
            _ => bail!("{what}: expected a contiguous u8 mask"),
        }
    }

    /// The input's dimensions.
    pub(crate) fn dims(self) -> &'a [usize] {
        self.layout.dims()
    }

    /// The input's shape (the output shape of the elementwise ops).
    pub(crate) fn shape(self) -> Shape {
        self.layout.shape().clone()
    }
}

/// What the backward pass of an `N`-input op gets: the inputs, the forward result and its
/// gradient.
pub(crate) struct Grad<'a, const N: usize> {
    pub(crate) args: [&'a Tensor; N],
    pub(crate) res: &'a Tensor,
    pub(crate) dy: &'a Tensor,
}

/// A custom op over `N` CPU inputs with an `f32` output.
pub(crate) trait CpuOp<const N: usize> {
    /// The op's name in candle's graph and errors.
    fn name(&self) -> &'static str;

    /// The output values and shape.
    fn forward(&self, args: [Arg<'_>; N]) -> Result<(Vec<f32>, Shape)>;

    /// The gradient of every input (`None`: not computed); unsupported unless overridden
    /// (ops applied outside autograd, `apply_op*_no_bwd`, never get here).
    fn backward(&self, g: Grad<'_, N>) -> Result<[Option<Tensor>; N]> {
        let _ = g;
        Err(candle::Error::BackwardNotSupported { op: self.name() })
    }
}

/// A [`CpuOp`] as candle's `CustomOp1`, `CustomOp2` or `CustomOp3`.
pub(crate) struct Op<T>(pub(crate) T);

/// Implements candle's `$trait` for [`Op`] over `CpuOp<$n>`: `$s`/`$l` name the storage and
/// layout arguments, `$a` the inputs and `$g` their gradients, `$out` the gradients as candle
/// returns them.
macro_rules! custom_op {
    ($trait:ident, $n:literal, $ret:ty, $out:expr, $(($s:ident, $l:ident, $a:ident, $g:ident)),+) => {
        impl<T: CpuOp<$n>> $trait for Op<T> {
            fn name(&self) -> &'static str {
                self.0.name()
            }

            fn cpu_fwd(&self, $($s: &CpuStorage, $l: &Layout),+) -> Result<(CpuStorage, Shape)> {
                let args = [$(Arg { storage: $s, layout: $l }),+];
                let (y, shape) = self.0.forward(args)?;
                Ok((CpuStorage::F32(y), shape))
            }

            fn bwd(&self, $($a: &Tensor,)+ res: &Tensor, dy: &Tensor) -> Result<$ret> {
                let args = [$($a),+];
                let [$($g),+] = self.0.backward(Grad { args, res, dy })?;
                Ok($out)
            }
        }
    };
}

custom_op!(CustomOp1, 1, Option<Tensor>, g1, (s1, l1, a1, g1));
custom_op!(
    CustomOp2,
    2,
    (Option<Tensor>, Option<Tensor>),
    (g1, g2),
    (s1, l1, a1, g1),
    (s2, l2, a2, g2)
);
custom_op!(
    CustomOp3,
    3,
    (Option<Tensor>, Option<Tensor>, Option<Tensor>),
    (g1, g2, g3),
    (s1, l1, a1, g1),
    (s2, l2, a2, g2),
    (s3, l3, a3, g3)
);

/// `op` on contiguous copies of `a` and `b`, outside autograd (a backward pass's kernel).
pub(crate) fn apply2_no_bwd(a: &Tensor, b: &Tensor, op: impl CpuOp<2>) -> Result<Tensor> {
    a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &Op(op))
}

/// `op` on contiguous copies of `a`, `b` and `c`, outside autograd.
pub(crate) fn apply3_no_bwd(
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    op: impl CpuOp<3>,
) -> Result<Tensor> {
    a.contiguous()?
        .apply_op3_no_bwd(&b.contiguous()?, &c.contiguous()?, &Op(op))
}

/// Checks that a backward op's gradient has as many elements as its input.
pub(crate) fn same_len(what: &str, x: &[f32], g: &[f32]) -> Result<()> {
    if x.len() != g.len() {
        bail!(
            "{what} backward: gradient has {} elements, input {}",
            g.len(),
            x.len()
        )
    }
    Ok(())
}
