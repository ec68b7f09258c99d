//! Export of a quantized model as packed safetensors, and loading it back.
//!
//! Layout of `model.safetensors` (format 1), for every layer whose weights the plan
//! quantizes (`L` is the layer name, as in the plan):
//!
//! - `L.weight.codes`: `U8`, the integer codes bit-packed at exactly their width
//!   ([`pack`]), stored as `code − qmin` (so narrow symmetric codes `[−m, m]` become
//!   `[0, 2m]`), row-major, channel after channel, each channel at its own width when the
//!   plan has `channel_w_bits`;
//! - `L.weight.scale`: `F32 [C]` (per channel) or `[1]`; `L.weight.zero_point`: `F32`, same
//!   shape, only for quantizers with a zero point;
//! - for k-means layers (HAQ, docs/algorithms.md §4.9) instead: `L.weight.codes` holds each element's
//!   centroid index at `b` bits, and `L.weight.codebook` is `F32 [2^b]`, the centroids
//!   ascending (padded with the last one when the layer has fewer distinct weights);
//! - `L.input.scale` / `L.input.zero_point`: `F32 [1]`, the input-activation quantizer of
//!   layers whose activations the plan quantizes;
//! - every other parameter (biases, full-precision layers, unfolded BatchNorms) as `F32`.
//!
//! The metadata key `mpq` holds the model description with a `quantization` entry: the plan
//! and, per packed tensor, its shape, widths and code range ([`PackedMeta`]). Loading
//! dequantizes `x = s·(q − z)`, the arithmetic of the fake-quantization kernel (k-means
//! codes: `x = codebook[q]`, the simulation's shared centroids), so the reloaded weights are
//! bit-identical to the simulation's and give identical logits (HAWQ-V3's "simulation
//! equals deployment" requirement; Yao et al., ICML 2021).

pub mod pack;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle::{DType, Device, Tensor};
use serde::Serialize;

use crate::graph::{Graph, ParamKind};
use crate::meta::{META_KEY, ModelMeta};
use crate::quant::{Codebook, PlanHooks, QuantParams};
use crate::{Error, Result};
use pack::{BitReader, BitWriter};

pub use crate::meta::{PackedActivation, PackedMeta, PackedWeight};

/// Version of the packed layout described in the module docs.
pub const FORMAT: u32 = 1;

/// Sizes of a written packed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ExportStats {
    /// Bytes on disk (header included).
    pub file_bytes: u64,
    /// Bytes of the safetensors header (JSON + its 8-byte length).
    pub header_bytes: u64,
    /// Bytes of packed weight codes.
    pub code_bytes: u64,
    /// Bytes of weight scales and zero points (and k-means codebooks).
    pub weight_param_bytes: u64,
    /// Bytes of activation scales and zero points.
    pub activation_param_bytes: u64,
    /// Bytes of everything else stored in full precision (biases, FP32 layers, BatchNorm).
    pub other_bytes: u64,
}

fn layer_of(param: &str) -> Option<&str> {
    param.strip_suffix(".weight")
}

/// Packs `w` with `q`: the bit stream of `code − qmin_c` at each channel's width.
pub fn pack_weight(w: &Tensor, q: &QuantParams) -> Result<(Vec<u8>, PackedWeight)> {
    let v: Vec<f32> = w.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::NonFinite("weights to export".into()));
    }
    let ch = q.channels().max(1);
    let per = if ch > 1 { v.len() / ch } else { v.len().max(1) };
    let mut out = BitWriter::new();
    for (i, &x) in v.iter().enumerate() {
        let c = if ch > 1 { i / per } else { 0 };
        let code = q.code(x, c);
        let stored = code - q.range(c).0;
        out.push(stored as u32, q.bits_of(c));
    }
    let bytes = out.finish();
    let meta = PackedWeight {
        shape: w.dims().to_vec(),
        bits: q.bits,
        channel_bits: q.channel_bits.clone(),
        qmin: q.qmin,
        qmax: q.qmax,
        channels: ch,
        zero_point: q.zero_point.iter().any(|&z| z != 0.0),
        code_bytes: bytes.len() as u64,
        codebook: None,
    };
    Ok((bytes, meta))
}

/// Packs a k-means layer's weight of shape `shape`: its codes at `cb.bits` bits, and its
/// codebook padded to `2^bits` entries (with the last centroid, keeping it ascending).
pub fn pack_codebook(shape: &[usize], cb: &Codebook) -> Result<(Vec<u8>, Vec<f32>, PackedWeight)> {
    let entries = 1usize << cb.bits;
    let n: usize = shape.iter().product();
    if cb.codes.len() != n || cb.centroids.is_empty() || cb.centroids.len() > entries {
        return Err(Error::config(
            "codes",
            format!(
                "{} codes and {} centroids for {n} weights at {} bits",
                cb.codes.len(),
                cb.centroids.len(),
                cb.bits
            ),
        ));
    }
    if cb.centroids.iter().any(|x| !x.is_finite()) {
        return Err(Error::NonFinite("weights to export".into()));
    }
    let mut out = BitWriter::new();
    for &c in cb.codes.iter() {
        out.push(u32::from(c), cb.bits);
    }
    let bytes = out.finish();
    let mut book = cb.centroids.clone();
    let last = *book.last().expect("the codebook is not empty");
    book.resize(entries, last);
    let meta = PackedWeight {
        shape: shape.to_vec(),
        bits: cb.bits,
        channel_bits: None,
        qmin: 0.0,
        qmax: (entries - 1) as f32,
        channels: 1,
        zero_point: false,
        code_bytes: bytes.len() as u64,
        codebook: Some(entries),
    };
    Ok((bytes, book, meta))
}

/// Dequantizes packed codebook indices: `codebook[code]`.
pub fn unpack_codebook(bytes: &[u8], meta: &PackedWeight, codebook: &[f32]) -> Result<Vec<f32>> {
    if !(1..=16).contains(&meta.bits) {
        return Err(Error::config(
            "codes",
            format!("{} bits per code", meta.bits),
        ));
    }
    let n = code_count(bytes, meta, meta.bits)?;
    let mut r = BitReader::new(bytes);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let code = r.next(meta.bits)? as usize;
        let v = codebook.get(code).ok_or_else(|| {
            Error::config(
                "codes",
                format!("code {code} past a codebook of {}", codebook.len()),
            )
        })?;
        out.push(*v);
    }
    all_read(&r, bytes)?;
    Ok(out)
}

/// Dequantizes packed codes: `s_c·(q − z_c)` with `q = stored + qmin_c`.
pub fn unpack_weight(bytes: &[u8], meta: &PackedWeight, q: &QuantParams) -> Result<Vec<f32>> {
    let ch = meta.channels.max(1);
    // Every width must be one the bit reader takes, for every channel.
    let widths: &[u32] = match &q.channel_bits {
        Some(b) if b.len() != ch => {
            return Err(Error::config(
                "codes",
                format!("{} channel widths for {ch} channels", b.len()),
            ));
        }
        Some(b) => b,
        None => std::slice::from_ref(&q.bits),
    };
    if let Some(b) = widths.iter().find(|b| !(1..=32).contains(*b)) {
        return Err(Error::config("codes", format!("{b} bits per code")));
    }
    let min_bits = widths.iter().copied().min().unwrap_or(q.bits);
    let n = code_count(bytes, meta, min_bits)?;
    if !n.is_multiple_of(ch) || q.channels() != ch {
        return Err(Error::config(
            "codes",
            format!("{ch} channels do not divide {n} codes"),
        ));
    }
    let per = n / ch;
    let mut r = BitReader::new(bytes);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let c = if ch > 1 { i / per } else { 0 };
        let (lo, hi) = q.range(c);
        let stored = r.next(q.bits_of(c))?;
        let code = stored as f32 + lo;
        if code > hi {
            return Err(Error::config("codes", format!("code {code} above {hi}")));
        }
        out.push(q.dequant(code, c));
    }
    all_read(&r, bytes)?;
    Ok(out)
}

/// The number of codes of a weight of `meta.shape`, checked before anything is allocated:
/// the dequantized values must fit the memory budget ([`crate::limits`]) and `bytes` must
/// hold that many codes of at least `min_bits` bits.
fn code_count(bytes: &[u8], meta: &PackedWeight, min_bits: u32) -> Result<usize> {
    let n = crate::limits::elements(&meta.shape);
    crate::limits::check_alloc(
        &format!(
            "the packed weight of shape {}",
            crate::limits::shape_string(&meta.shape)
        ),
        n,
        4,
    )?;
    let available = (bytes.len() as u128) * 8 / u128::from(min_bits.max(1));
    if n > available {
        return Err(Error::config(
            "codes",
            format!(
                "{} bytes of codes cannot hold {n} codes of {min_bits} or more bits",
                bytes.len()
            ),
        ));
    }
    usize::try_from(n).map_err(|_| Error::config("codes", format!("{n} codes")))
}

/// Checks that unpacking consumed every byte of the packed codes.
fn all_read(r: &BitReader<'_>, bytes: &[u8]) -> Result<()> {
    if r.bytes_read() != bytes.len() {
        return Err(Error::config(
            "codes",
            format!(
                "{} bytes of codes, expected {}",
                bytes.len(),
                r.bytes_read()
            ),
        ));
    }
    Ok(())
}

fn f32_tensor(v: &[f32]) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, v.len(), &Device::Cpu)?)
}

/// Writes `graph` (the plan's graph from [`crate::quant::prepare_graph`], possibly
/// fine-tuned) quantized by `hooks` as a packed safetensors file at `path` (atomically).
/// `base` describes the model (architecture, input, normalisation).
pub fn save_packed(
    path: &Path,
    base: &ModelMeta,
    graph: &Graph,
    hooks: &PlanHooks,
) -> Result<ExportStats> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut weights = BTreeMap::new();
    let mut activations = BTreeMap::new();
    let mut stats = ExportStats {
        file_bytes: 0,
        header_bytes: 0,
        code_bytes: 0,
        weight_param_bytes: 0,
        activation_param_bytes: 0,
        other_bytes: 0,
    };
    for p in graph.params().iter() {
        let t = p.var.as_tensor();
        let codebook = match layer_of(&p.name) {
            Some(layer) if p.kind == ParamKind::Trainable => {
                hooks.weight_codebook(layer, t)?.map(|cb| (layer, cb))
            }
            _ => None,
        };
        if let Some((layer, cb)) = codebook {
            let (bytes, book, meta) = pack_codebook(t.dims(), &cb)?;
            stats.code_bytes += bytes.len() as u64;
            let n = bytes.len();
            tensors.push((
                format!("{layer}.weight.codes"),
                Tensor::from_vec(bytes, n, &Device::Cpu)?,
            ));
            stats.weight_param_bytes += 4 * book.len() as u64;
            tensors.push((format!("{layer}.weight.codebook"), f32_tensor(&book)?));
            weights.insert(layer.to_string(), meta);
            continue;
        }
        let packed = match layer_of(&p.name) {
            Some(layer) if p.kind == ParamKind::Trainable => {
                hooks.weight_quant_params(layer, t)?.map(|q| (layer, q))
            }
            _ => None,
        };
        match packed {
            Some((layer, q)) => {
                let (bytes, meta) = pack_weight(t, &q)?;
                stats.code_bytes += bytes.len() as u64;
                let n = bytes.len();
                tensors.push((
                    format!("{layer}.weight.codes"),
                    Tensor::from_vec(bytes, n, &Device::Cpu)?,
                ));
                tensors.push((format!("{layer}.weight.scale"), f32_tensor(&q.scale)?));
                stats.weight_param_bytes += 4 * q.scale.len() as u64;
                if meta.zero_point {
                    tensors.push((
                        format!("{layer}.weight.zero_point"),
                        f32_tensor(&q.zero_point)?,
                    ));
                    stats.weight_param_bytes += 4 * q.zero_point.len() as u64;
                }
                weights.insert(layer.to_string(), meta);
            }
            None => {
                stats.other_bytes += (t.elem_count() * t.dtype().size_in_bytes()) as u64;
                tensors.push((p.name.clone(), t.clone()));
            }
        }
    }
    for lp in &hooks.plan().layers {
        if let Some(q) = hooks.activation_params(&lp.name)? {
            tensors.push((format!("{}.input.scale", lp.name), f32_tensor(&q.scale)?));
            tensors.push((
                format!("{}.input.zero_point", lp.name),
                f32_tensor(&q.zero_point)?,
            ));
            stats.activation_param_bytes += 8;
            activations.insert(
                lp.name.clone(),
                PackedActivation {
                    bits: q.bits,
                    qmin: q.qmin,
                    qmax: q.qmax,
                },
            );
        }
    }
    let mut meta = base.clone();
    meta.quantization = Some(PackedMeta {
        format: FORMAT,
        plan: hooks.plan().clone(),
        weights,
        activations,
    });
    let mut md = HashMap::new();
    md.insert(META_KEY.to_string(), serde_json::to_string(&meta)?);
    crate::graph::save_tensors(path, tensors, md)?;
    stats.file_bytes = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    stats.header_bytes = stats.file_bytes
        - stats.code_bytes
        - stats.weight_param_bytes
        - stats.activation_param_bytes
        - stats.other_bytes;
    Ok(stats)
}

fn take(tensors: &mut HashMap<String, Tensor>, name: &str, path: &Path) -> Result<Tensor> {
    tensors.remove(name).ok_or_else(|| Error::MissingTensor {
        name: name.to_string(),
        path: path.to_path_buf(),
    })
}

fn floats(t: &Tensor, len: usize, name: &str, path: &Path) -> Result<Vec<f32>> {
    let v: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    if v.len() != len {
        return Err(Error::ShapeMismatch {
            name: format!("tensor {name:?} in {}", path.display()),
            expected: format!("{len} values"),
            got: format!("{} values", v.len()),
        });
    }
    Ok(v)
}

/// Rebuilds the graph of a packed file (`graph` is the freshly built architecture) with
/// dequantized weights, and the hooks that quantize its activations as simulated.
pub(crate) fn unpack(
    path: &Path,
    mut tensors: HashMap<String, Tensor>,
    meta: &PackedMeta,
    graph: Graph,
) -> Result<(Graph, PlanHooks)> {
    if meta.format != FORMAT {
        return Err(Error::corrupt(
            path,
            format!("packed format {} (this build reads {FORMAT})", meta.format),
        ));
    }
    let mut graph = crate::quant::prepare_graph(&graph, &meta.plan)?;
    meta.plan.validate(&graph.layer_infos()?)?;
    let corrupt = |name: &str, e: Error| Error::corrupt(path, format!("{name}: {e}"));
    for (layer, pw) in &meta.weights {
        let codes = take(&mut tensors, &format!("{layer}.weight.codes"), path)?;
        if codes.dtype() != DType::U8 {
            return Err(Error::corrupt(
                path,
                format!("{layer}.weight.codes is not U8"),
            ));
        }
        let bytes: Vec<u8> = codes.flatten_all()?.to_vec1()?;
        if let Some(entries) = pw.codebook {
            let bname = format!("{layer}.weight.codebook");
            let book = floats(&take(&mut tensors, &bname, path)?, entries, &bname, path)?;
            let values = unpack_codebook(&bytes, pw, &book).map_err(|e| corrupt(layer, e))?;
            let w = Tensor::from_vec(values, pw.shape.clone(), graph.device())?;
            tensors.insert(format!("{layer}.weight"), w);
            continue;
        }
        let sname = format!("{layer}.weight.scale");
        let scale = floats(
            &take(&mut tensors, &sname, path)?,
            pw.channels,
            &sname,
            path,
        )?;
        let zero_point = if pw.zero_point {
            let zname = format!("{layer}.weight.zero_point");
            floats(
                &take(&mut tensors, &zname, path)?,
                pw.channels,
                &zname,
                path,
            )?
        } else {
            vec![0.0; pw.channels]
        };
        let q = QuantParams {
            bits: pw.bits,
            channel_bits: pw.channel_bits.clone(),
            scale,
            zero_point,
            qmin: pw.qmin,
            qmax: pw.qmax,
            axis: (pw.channels > 1).then_some(0),
        };
        let values = unpack_weight(&bytes, pw, &q).map_err(|e| corrupt(layer, e))?;
        let w = Tensor::from_vec(values, pw.shape.clone(), graph.device())?;
        tensors.insert(format!("{layer}.weight"), w);
    }
    let mut acts = HashMap::new();
    for (layer, pa) in &meta.activations {
        let sname = format!("{layer}.input.scale");
        let zname = format!("{layer}.input.zero_point");
        let scale = floats(&take(&mut tensors, &sname, path)?, 1, &sname, path)?;
        let zero_point = floats(&take(&mut tensors, &zname, path)?, 1, &zname, path)?;
        acts.insert(
            layer.clone(),
            QuantParams {
                bits: pa.bits,
                channel_bits: None,
                scale,
                zero_point,
                qmin: pa.qmin,
                qmax: pa.qmax,
                axis: None,
            },
        );
    }
    graph.params_mut().assign_strict(path, tensors)?;
    let hooks = PlanHooks::frozen(&meta.plan, acts);
    Ok((graph, hooks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(shape: Vec<usize>, bits: u32, channels: usize) -> PackedWeight {
        PackedWeight {
            shape,
            bits,
            channel_bits: None,
            qmin: -8.0,
            qmax: 7.0,
            channels,
            zero_point: false,
            code_bytes: 4,
            codebook: None,
        }
    }

    #[test]
    fn declared_shapes_are_checked_before_allocating() {
        // A packed file whose metadata declares 2^40 codes: `Vec::with_capacity` aborted.
        let book = [0.0f32; 16];
        let huge = packed(vec![1 << 40], 4, 1);
        let err =
            crate::limits::with_memory_limit(1 << 30, || unpack_codebook(&[0; 4], &huge, &book))
                .unwrap_err();
        assert!(matches!(err, Error::MemoryLimit { .. }), "{err}");
        // Within the budget but more codes than the bytes hold: refused up front too.
        let err = unpack_codebook(&[0; 4], &packed(vec![1 << 20], 4, 1), &book).unwrap_err();
        assert!(
            err.to_string().contains("cannot hold 1048576 codes"),
            "{err}"
        );
        // A shape whose product overflows usize.
        let err = unpack_codebook(&[0; 4], &packed(vec![usize::MAX, 4], 4, 1), &book);
        assert!(err.is_err());
        // Per-channel widths that do not match the channels, or a width past 32 bits:
        // an index panic and a shift overflow before.
        let q = QuantParams {
            bits: 4,
            channel_bits: Some(vec![4]),
            scale: vec![1.0, 1.0],
            zero_point: vec![0.0, 0.0],
            qmin: -8.0,
            qmax: 7.0,
            axis: Some(0),
        };
        let err = unpack_weight(&[0; 4], &packed(vec![2, 4], 4, 2), &q).unwrap_err();
        assert!(
            err.to_string().contains("1 channel widths for 2 channels"),
            "{err}"
        );
        let q = QuantParams {
            bits: 64,
            channel_bits: None,
            ..q
        };
        let err = unpack_weight(&[0; 64], &packed(vec![2, 4], 64, 2), &q).unwrap_err();
        assert!(err.to_string().contains("64 bits per code"), "{err}");
        assert!(BitReader::new(&[0; 16]).next(64).is_err());
        // A well-formed stream still unpacks.
        let q = QuantParams {
            bits: 4,
            channel_bits: None,
            scale: vec![0.5],
            zero_point: vec![0.0],
            qmin: -8.0,
            qmax: 7.0,
            axis: None,
        };
        let v = unpack_weight(&[0x98, 0xff], &packed(vec![4], 4, 1), &q).unwrap();
        assert_eq!(v, vec![0.0, 0.5, 3.5, 3.5]);
    }
}
