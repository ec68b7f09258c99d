//! Constant tensors of an ONNX graph (initializers, `Constant` nodes, shape arithmetic) and
//! the folding that turns exporter boilerplate into plain numbers: the
//! `Shape → Gather → Unsqueeze → Concat → Reshape` chain of `x.view(x.size(0), -1)`, the
//! `ConstantOfShape`/`Slice`/`Transpose` chain PyTorch writes for `F.pad`, `Cast`s of scalars.
//!
//! The batch size is not known at import time: `Shape` of an activation yields [`BATCH`] for
//! axis 0, which survives gathers, unsqueezes and concatenations and is recognised by
//! `Reshape`; arithmetic on it is an error.

use super::proto::{TensorProto, data_type};

/// Stand-in for the (unknown) batch size inside folded shape constants.
pub(crate) const BATCH: f64 = -1_099_511_627_776.0;

/// A constant tensor, values held as `f64` (exact for every integer a shape holds).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Const {
    /// Dimensions (empty: a scalar).
    pub dims: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f64>,
    /// Whether the ONNX type is an integer (or bool) type.
    pub int: bool,
}

/// Why a constant could not be read or folded.
pub(crate) type FoldResult<T> = std::result::Result<T, String>;

/// The number of values of a constant of `dims` (named `what` in errors), checked against
/// the memory budget of [`crate::limits`] (8 bytes a value) before it is allocated.
pub(crate) fn check_len(what: &str, dims: &[usize]) -> FoldResult<usize> {
    count_len(what, dims, crate::limits::elements(dims))
}

/// [`check_len`] for `count` values of a constant whose shape is `dims`.
fn count_len(what: &str, dims: &[usize], count: u128) -> FoldResult<usize> {
    crate::limits::check_alloc(
        &format!(
            "the constant {what} of shape [{}]",
            crate::limits::shape_string(dims)
        ),
        count,
        8,
    )
    .map_err(|e| e.to_string())?;
    usize::try_from(count).map_err(|_| format!("{what}: shape {dims:?} is too large"))
}

impl Const {
    pub(crate) fn new(dims: Vec<usize>, data: Vec<f64>, int: bool) -> Const {
        Const { dims, data, int }
    }

    pub(crate) fn scalar(v: f64, int: bool) -> Const {
        Const::new(vec![], vec![v], int)
    }

    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    /// The values as `f32`.
    pub(crate) fn f32s(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }

    /// The values as integers (an error for non-integers or the batch stand-in).
    pub(crate) fn ints(&self) -> FoldResult<Vec<i64>> {
        self.data
            .iter()
            .map(|&v| {
                if v.fract() != 0.0 || v == BATCH {
                    Err(format!("expected integer constants, got {v}"))
                } else {
                    Ok(v as i64)
                }
            })
            .collect()
    }

    /// The single value of a scalar or one-element constant.
    pub(crate) fn single(&self) -> Option<f64> {
        (self.data.len() == 1).then(|| self.data[0])
    }

    /// Decodes an initializer or attribute tensor.
    pub(crate) fn from_proto(t: &TensorProto) -> FoldResult<Const> {
        if !t.external_data.is_empty() || t.data_location == 1 {
            return Err(format!(
                "tensor {:?} keeps its data in an external file (not supported)",
                t.name
            ));
        }
        let dims = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("tensor {:?}: dim {d}", t.name)))
            .collect::<FoldResult<Vec<usize>>>()?;
        let n = check_len(&format!("{:?}", t.name), &dims)?;
        let raw = &t.raw_data;
        // The number of values the tensor holds, known before decoding them.
        let held = match t.data_type {
            data_type::FLOAT | data_type::INT32 if !raw.is_empty() => raw.len() / 4,
            data_type::DOUBLE | data_type::INT64 if !raw.is_empty() => raw.len() / 8,
            data_type::FLOAT => t.float_data.len(),
            data_type::DOUBLE => t.double_data.len(),
            data_type::INT64 => t.int64_data.len(),
            data_type::INT32 | data_type::INT8 | data_type::UINT8 | 9 if raw.is_empty() => {
                t.int32_data.len()
            }
            data_type::INT8 | data_type::UINT8 | 9 => raw.len(),
            _ => n,
        };
        if held != n {
            return Err(format!(
                "tensor {:?} holds {held} values for shape {dims:?}",
                t.name
            ));
        }
        let (data, int): (Vec<f64>, bool) = match t.data_type {
            data_type::FLOAT if !raw.is_empty() => (
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                    .collect(),
                false,
            ),
            data_type::FLOAT => (t.float_data.iter().map(|&v| v as f64).collect(), false),
            data_type::DOUBLE if !raw.is_empty() => (
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                    .collect(),
                false,
            ),
            data_type::DOUBLE => (t.double_data.clone(), false),
            data_type::INT64 if !raw.is_empty() => (
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f64)
                    .collect(),
                true,
            ),
            data_type::INT64 => (t.int64_data.iter().map(|&v| v as f64).collect(), true),
            data_type::INT32 if !raw.is_empty() => (
                raw.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                    .collect(),
                true,
            ),
            // int32_data also carries the small integer types and bool.
            data_type::INT32 | data_type::INT8 | data_type::UINT8 | 9 if raw.is_empty() => {
                (t.int32_data.iter().map(|&v| v as f64).collect(), true)
            }
            data_type::INT8 => (raw.iter().map(|&b| b as i8 as f64).collect(), true),
            data_type::UINT8 | 9 => (raw.iter().map(|&b| b as f64).collect(), true),
            other => {
                return Err(format!(
                    "tensor {:?} has data type {other}, which is not supported",
                    t.name
                ));
            }
        };
        if data.len() != n {
            return Err(format!(
                "tensor {:?} holds {} values for shape {dims:?}",
                t.name,
                data.len()
            ));
        }
        Ok(Const::new(dims, data, int))
    }

    /// Row-major strides (saturating: only a constant with a zero dimension, and so no values
    /// to index, can have trailing dimensions whose product overflows).
    fn strides(dims: &[usize]) -> Vec<usize> {
        let mut s = vec![1usize; dims.len()];
        for i in (0..dims.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1].saturating_mul(dims[i + 1]);
        }
        s
    }

    /// `Gather` along `axis` with integer `indices`.
    pub(crate) fn gather(&self, indices: &Const, axis: i64) -> FoldResult<Const> {
        let r = self.dims.len();
        let axis = norm_axis(axis, r)?;
        let idx = indices.ints()?;
        let n = self.dims[axis] as i64;
        let mut dims = self.dims[..axis].to_vec();
        dims.extend_from_slice(&indices.dims);
        dims.extend_from_slice(&self.dims[axis + 1..]);
        let count = check_len("Gather", &dims)?;
        if count == 0 {
            return Ok(Const::new(dims, Vec::new(), self.int));
        }
        let outer: usize = self.dims[..axis].iter().product();
        let inner: usize = self.dims[axis + 1..].iter().product();
        let mut data = Vec::with_capacity(count);
        for o in 0..outer {
            for &i in &idx {
                let i = if i < 0 { i + n } else { i };
                if !(0..n).contains(&i) {
                    return Err(format!("gather index {i} out of range {n}"));
                }
                let base = (o * self.dims[axis] + i as usize) * inner;
                data.extend_from_slice(&self.data[base..base + inner]);
            }
        }
        Ok(Const::new(dims, data, self.int))
    }

    /// `Unsqueeze` at `axes` (of the output).
    pub(crate) fn unsqueeze(&self, axes: &[i64]) -> FoldResult<Const> {
        let r = self.dims.len() + axes.len();
        let mut axes = axes
            .iter()
            .map(|&a| norm_axis(a, r))
            .collect::<FoldResult<Vec<_>>>()?;
        axes.sort_unstable();
        if axes.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("unsqueeze with repeated axes {axes:?}"));
        }
        // Sorted, distinct and below the output rank: each insertion point exists.
        let mut dims = self.dims.clone();
        for a in axes {
            dims.insert(a, 1);
        }
        Ok(Const::new(dims, self.data.clone(), self.int))
    }

    /// `Squeeze` of `axes` (all size-1 axes when empty).
    pub(crate) fn squeeze(&self, axes: &[i64]) -> FoldResult<Const> {
        let r = self.dims.len();
        let axes = axes
            .iter()
            .map(|&a| norm_axis(a, r))
            .collect::<FoldResult<Vec<_>>>()?;
        let dims = self
            .dims
            .iter()
            .enumerate()
            .filter(|&(i, &d)| !(d == 1 && (axes.is_empty() || axes.contains(&i))))
            .map(|(_, &d)| d)
            .collect();
        Ok(Const::new(dims, self.data.clone(), self.int))
    }

    /// `Concat` along `axis`.
    pub(crate) fn concat(parts: &[&Const], axis: i64) -> FoldResult<Const> {
        let first = parts.first().ok_or("concat of nothing")?;
        let r = first.dims.len();
        let axis = norm_axis(axis, r)?;
        let mut dims = first.dims.clone();
        dims[axis] = 0;
        for p in parts {
            if p.dims.len() != r {
                return Err("concat of constants of different ranks".into());
            }
            let same = (0..r).all(|i| i == axis || p.dims[i] == first.dims[i]);
            if !same {
                return Err(format!(
                    "concat along axis {axis} of shapes {:?} and {:?}",
                    first.dims, p.dims
                ));
            }
            dims[axis] = dims[axis]
                .checked_add(p.dims[axis])
                .ok_or("concat: the axis overflows")?;
        }
        let count = check_len("Concat", &dims)?;
        let outer: usize = first.dims[..axis].iter().product();
        if count == 0 {
            return Ok(Const::new(dims, Vec::new(), parts.iter().all(|p| p.int)));
        }
        let mut data = Vec::with_capacity(count);
        for o in 0..outer {
            for p in parts {
                let chunk: usize = p.dims[axis..].iter().product();
                data.extend_from_slice(&p.data[o * chunk..(o + 1) * chunk]);
            }
        }
        Ok(Const::new(dims, data, parts.iter().all(|p| p.int)))
    }

    /// `Reshape` to `shape` (ONNX semantics: 0 copies, −1 infers).
    pub(crate) fn reshape(&self, shape: &[i64]) -> FoldResult<Const> {
        let dims = resolve_shape(&self.dims, shape)?;
        Ok(Const::new(dims, self.data.clone(), self.int))
    }

    /// `Transpose` with `perm` (reversed axes when empty).
    pub(crate) fn transpose(&self, perm: &[i64]) -> FoldResult<Const> {
        let r = self.dims.len();
        let perm: Vec<usize> = if perm.is_empty() {
            (0..r).rev().collect()
        } else {
            perm.iter()
                .map(|&p| norm_axis(p, r))
                .collect::<FoldResult<_>>()?
        };
        let mut seen = vec![false; r];
        if perm.len() != r || perm.iter().any(|&p| std::mem::replace(&mut seen[p], true)) {
            return Err(format!("transpose of rank {r} with perm {perm:?}"));
        }
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims[p]).collect();
        let src = Const::strides(&self.dims);
        let data = (0..self.len())
            .map(|k| {
                let mut rem = k;
                let mut off = 0;
                for (i, os) in Const::strides(&dims).iter().enumerate() {
                    off += (rem / os) * src[perm[i]];
                    rem %= os;
                }
                self.data[off]
            })
            .collect();
        Ok(Const::new(dims, data, self.int))
    }

    /// `Slice` (starts, ends, axes, steps as ONNX gives them).
    pub(crate) fn slice(
        &self,
        starts: &[i64],
        ends: &[i64],
        axes: Option<&[i64]>,
        steps: Option<&[i64]>,
    ) -> FoldResult<Const> {
        let r = self.dims.len();
        if starts.len() != ends.len()
            || axes.is_some_and(|a| a.len() != starts.len())
            || steps.is_some_and(|st| st.len() != starts.len())
            || (axes.is_none() && starts.len() > r)
        {
            return Err(format!(
                "slice of rank {r} with {} starts, {} ends, {:?} axes, {:?} steps",
                starts.len(),
                ends.len(),
                axes.map(<[i64]>::len),
                steps.map(<[i64]>::len)
            ));
        }
        // The index lists of every axis: as long as the dims (a constant with a zero dimension
        // holds no values, whatever its other dims).
        let index_count: u128 = self.dims.iter().map(|&d| d as u128).sum();
        count_len("Slice", &self.dims, index_count)?;
        let mut ranges: Vec<Vec<usize>> = self.dims.iter().map(|&d| (0..d).collect()).collect();
        for (k, (&s, &e)) in starts.iter().zip(ends).enumerate() {
            let a = match axes {
                Some(a) => norm_axis(a[k], r)?,
                None => k,
            };
            let step = steps.map_or(1, |st| st[k]);
            if step == 0 || step == i64::MIN {
                return Err(format!("slice step {step}"));
            }
            let d = self.dims[a] as i64;
            let clampi = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
            let fix = |v: i64| if v < 0 { v + d } else { v };
            let mut idx = Vec::new();
            if step > 0 {
                let (mut i, e) = (clampi(fix(s), 0, d), clampi(fix(e), 0, d));
                while i < e {
                    idx.push(i as usize);
                    i = i.saturating_add(step);
                }
            } else {
                let (mut i, e) = (clampi(fix(s), -1, d - 1), clampi(fix(e), -1, d - 1));
                while i > e {
                    idx.push(i as usize);
                    i = i.saturating_add(step);
                }
            }
            ranges[a] = idx;
        }
        let dims: Vec<usize> = ranges.iter().map(Vec::len).collect();
        let src = Const::strides(&self.dims);
        let n = check_len("Slice", &dims)?;
        let out_strides = Const::strides(&dims);
        let data = (0..n)
            .map(|k| {
                let mut rem = k;
                let mut off = 0;
                for (i, os) in out_strides.iter().enumerate() {
                    off += ranges[i][rem / os] * src[i];
                    rem %= os;
                }
                self.data[off]
            })
            .collect();
        Ok(Const::new(dims, data, self.int))
    }

    /// Element-wise binary operation with numpy broadcasting.
    pub(crate) fn binary(&self, other: &Const, op: &str) -> FoldResult<Const> {
        if self.data.contains(&BATCH) || other.data.contains(&BATCH) {
            return Err("arithmetic on the batch size (only static shapes fold)".into());
        }
        let r = self.dims.len().max(other.dims.len());
        let pad = |d: &[usize]| -> Vec<usize> {
            let mut v = vec![1; r - d.len()];
            v.extend_from_slice(d);
            v
        };
        let (a, b) = (pad(&self.dims), pad(&other.dims));
        let dims = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| match (x, y) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(format!(
                    "cannot broadcast {:?} with {:?}",
                    self.dims, other.dims
                )),
            })
            .collect::<FoldResult<Vec<_>>>()?;
        let (sa, sb, so) = (
            Const::strides(&a),
            Const::strides(&b),
            Const::strides(&dims),
        );
        let int = self.int && other.int;
        let n = check_len(op, &dims)?;
        let data = (0..n)
            .map(|k| {
                let (mut ia, mut ib, mut rem) = (0, 0, k);
                for i in 0..r {
                    let c = rem / so[i];
                    rem %= so[i];
                    ia += if a[i] == 1 { 0 } else { c * sa[i] };
                    ib += if b[i] == 1 { 0 } else { c * sb[i] };
                }
                let (x, y) = (self.data[ia], other.data[ib]);
                match op {
                    "Add" => x + y,
                    "Sub" => x - y,
                    "Mul" => x * y,
                    _ if int => (x / y).trunc(),
                    _ => x / y,
                }
            })
            .collect();
        Ok(Const::new(dims, data, int))
    }
}

/// An axis in `0..rank` from ONNX's possibly negative axis.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> FoldResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} out of range for rank {rank}"))
    }
}

/// The dims `Reshape` gives an input of `dims` for a target `shape` (0 copies, −1 infers).
pub(crate) fn resolve_shape(dims: &[usize], shape: &[i64]) -> FoldResult<Vec<usize>> {
    let product = |d: &[usize]| d.iter().try_fold(1usize, |a, &x| a.checked_mul(x));
    let bad = || format!("reshape {dims:?} to {shape:?}");
    let total = product(dims).ok_or_else(bad)?;
    let mut out = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            0 => out.push(*dims.get(i).ok_or("reshape: 0 beyond the input's rank")?),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            s if s > 0 => out.push(s as usize),
            s => return Err(format!("reshape: bad dimension {s}")),
        }
    }
    if let Some(i) = infer {
        let known = product(&out).ok_or_else(bad)?;
        if known == 0 || !total.is_multiple_of(known) {
            return Err(bad());
        }
        out[i] = total / known;
    }
    if product(&out) != Some(total) {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(dims: &[usize], v: &[f64]) -> Const {
        Const::new(dims.to_vec(), v.to_vec(), true)
    }

    #[test]
    fn pytorch_pad_chain_folds() {
        // F.pad(x, (1, 1, 2, 2)) on NCHW: [1,1,2,2,0,0,0,0] reshaped [-1,2], reversed, transposed.
        let pads = c(&[8], &[1., 1., 2., 2., 0., 0., 0., 0.]);
        let r = pads.reshape(&[-1, 2]).unwrap();
        let s = r
            .slice(&[-1], &[i64::MIN + 1], Some(&[0]), Some(&[-1]))
            .unwrap();
        assert_eq!(s.data, vec![0., 0., 0., 0., 2., 2., 1., 1.]);
        let t = s.transpose(&[1, 0]).unwrap().reshape(&[-1]).unwrap();
        assert_eq!(t.data, vec![0., 0., 2., 1., 0., 0., 2., 1.]);
    }

    #[test]
    fn malformed_folds_are_errors_not_panics() {
        // Each of these panicked (index out of range, overflow, bad insertion point).
        let a = c(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let b = c(&[3, 2], &[1., 2., 3., 4., 5., 6.]);
        let err = Const::concat(&[&a, &b], 0).unwrap_err();
        assert!(err.contains("concat along axis 0"), "{err}");
        assert!(a.slice(&[0, 0], &[1], None, None).is_err());
        assert!(a.slice(&[0], &[1], Some(&[0]), Some(&[])).is_err());
        assert!(a.slice(&[0], &[1], Some(&[]), None).is_err());
        assert!(a.slice(&[0, 0, 0], &[1, 1, 1], None, None).is_err());
        assert!(
            a.slice(&[0], &[i64::MAX], Some(&[0]), Some(&[i64::MAX]))
                .is_ok()
        );
        assert!(c(&[], &[1.]).unsqueeze(&[1, 1]).is_err());
        assert!(a.transpose(&[0, 0]).is_err());
        assert!(a.transpose(&[1]).is_err());
        assert!(resolve_shape(&[usize::MAX, 4], &[-1]).is_err());
        assert!(resolve_shape(&[0], &[i64::MAX, i64::MAX, 0]).is_err());
        let t = TensorProto {
            dims: vec![1 << 40, 1 << 40],
            data_type: data_type::FLOAT,
            ..Default::default()
        };
        assert!(Const::from_proto(&t).is_err());
        // An empty constant with huge dims: slicing it allocated an index per position.
        let empty = Const::new(vec![0, 1 << 50], vec![], false);
        crate::limits::with_memory_limit(1 << 20, || {
            let err = empty.slice(&[0], &[1], Some(&[1]), None).unwrap_err();
            assert!(crate::limits::is_limit_message(&err), "{err}");
        });
    }

    #[test]
    fn large_folds_are_refused_before_allocating() {
        crate::limits::with_memory_limit(1 << 20, || {
            let data = c(&[1000], &[0.; 1000]);
            let idx = Const::new(vec![1000], vec![0.; 1000], true);
            assert_eq!(data.gather(&idx, 0).unwrap().len(), 1000);
            let big_idx = Const::new(vec![200, 1000], vec![0.; 200_000], true);
            let wide = c(&[1, 1000], &[0.; 1000]);
            let err = wide.gather(&big_idx, 0).unwrap_err();
            assert!(crate::limits::is_limit_message(&err), "{err}");
            let col = c(&[1000, 1], &[0.; 1000]);
            let err = col.binary(&wide, "Add").unwrap_err();
            assert!(crate::limits::is_limit_message(&err), "{err}");
            assert!(err.contains("1000x1000"), "{err}");
            let t = TensorProto {
                dims: vec![1 << 20, 1 << 20],
                data_type: data_type::FLOAT,
                ..Default::default()
            };
            let err = Const::from_proto(&t).unwrap_err();
            assert!(crate::limits::is_limit_message(&err), "{err}");
        });
    }

    #[test]
    fn gather_concat_keep_the_batch() {
        let shape = c(&[4], &[BATCH, 16., 4., 4.]);
        let n = shape.gather(&Const::scalar(0.0, true), 0).unwrap();
        let n = n.unsqueeze(&[0]).unwrap();
        let all = Const::concat(&[&n, &c(&[1], &[-1.])], 0).unwrap();
        assert_eq!(all.data, vec![BATCH, -1.]);
        assert!(n.binary(&c(&[1], &[2.]), "Mul").is_err());
    }
}
