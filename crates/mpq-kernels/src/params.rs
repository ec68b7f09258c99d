//! Convolution parameters (`Conv2dParams`) and the validated geometry (`ConvGeom`) every
//! conv kernel works from.

use candle::{Result, Tensor, bail};

/// Parameters of a 2-D convolution, one value per spatial dimension (`[height, width]`).
///
/// Padding is symmetric per dimension (`padding[0]` rows above and below). Build it with
/// struct-update syntax: `Conv2dParams { stride: [2, 2], ..Default::default() }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Step between output positions, `[sh, sw]`.
    pub stride: [usize; 2],
    /// Zero padding on each side, `[ph, pw]`.
    pub padding: [usize; 2],
    /// Spacing between kernel taps, `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Number of channel groups; `1` for a dense conv, `channels` for depthwise.
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// Square parameters: the same stride, padding and dilation on both axes.
    pub fn square(stride: usize, padding: usize, dilation: usize, groups: usize) -> Self {
        Self {
            stride: [stride, stride],
            padding: [padding, padding],
            dilation: [dilation, dilation],
            groups,
        }
    }

    /// Whether both axes share one stride, padding and dilation (what candle's conv2d takes).
    pub fn is_square(&self) -> bool {
        self.stride[0] == self.stride[1]
            && self.padding[0] == self.padding[1]
            && self.dilation[0] == self.dilation[1]
    }
}

/// Fully resolved shapes of one conv2d call: input `[n, c, h, w]`, weight `[o, c/g, kh, kw]`,
/// output `[n, o, oh, ow]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) o: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) p: Conv2dParams,
}

impl ConvGeom {
    /// Validates the shapes of `x` and `w` against `p`.
    pub(crate) fn new(x: &Tensor, w: &Tensor, p: &Conv2dParams) -> Result<Self> {
        Self::from_dims(x.dims(), w.dims(), p)
    }

    pub(crate) fn from_dims(xd: &[usize], wd: &[usize], p: &Conv2dParams) -> Result<Self> {
        let (&[n, c, h, w], &[o, cg, kh, kw]) = (xd, wd) else {
            bail!("conv2d expects x [n, c, h, w] and w [o, c/g, kh, kw], got {xd:?} and {wd:?}")
        };
        let g = p.groups;
        if g == 0 || c % g != 0 || o % g != 0 || cg * g != c {
            bail!("conv2d: groups {g} incompatible with x {xd:?} and w {wd:?}")
        }
        if p.stride.contains(&0) || p.dilation.contains(&0) || kh == 0 || kw == 0 {
            bail!("conv2d: stride, dilation and kernel size must be positive ({p:?}, w {wd:?})")
        }
        let span_h = p.dilation[0] * (kh - 1) + 1;
        let span_w = p.dilation[1] * (kw - 1) + 1;
        let (hp, wp) = (h + 2 * p.padding[0], w + 2 * p.padding[1]);
        if hp < span_h || wp < span_w {
            bail!("conv2d: kernel {kh}x{kw} ({p:?}) larger than padded input {hp}x{wp}")
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            oh: (hp - span_h) / p.stride[0] + 1,
            ow: (wp - span_w) / p.stride[1] + 1,
            p: *p,
        })
    }

    /// Input channels per group.
    pub(crate) fn cg(&self) -> usize {
        self.c / self.p.groups
    }

    /// Output channels per group.
    pub(crate) fn og(&self) -> usize {
        self.o / self.p.groups
    }

    /// Rows of the im2col matrix of one group: `cg * kh * kw`.
    pub(crate) fn k(&self) -> usize {
        self.cg() * self.kh * self.kw
    }

    /// Input plane size `h * w`.
    pub(crate) fn hw(&self) -> usize {
        self.h * self.w
    }

    /// Output plane size `oh * ow`.
    pub(crate) fn ohw(&self) -> usize {
        self.oh * self.ow
    }

    /// A 1x1, stride-1, unpadded conv: the input plane is already the im2col matrix.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.p.stride == [1, 1] && self.p.padding == [0, 0]
    }

    /// One input and one output channel per group: handled by direct loops, not GEMM.
    pub(crate) fn is_depthwise(&self) -> bool {
        self.cg() == 1 && self.og() == 1
    }

    /// Output shape `[n, o, oh, ow]`.
    pub(crate) fn out_dims(&self) -> (usize, usize, usize, usize) {
        (self.n, self.o, self.oh, self.ow)
    }
}
